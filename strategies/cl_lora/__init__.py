"""CL-LoRA (He, Duan, Zhu, CVPR 2025) as an Avalanche strategy with two plugins."""
