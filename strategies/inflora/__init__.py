"""InfLoRA (Liang & Li, CVPR 2024): interference-free LoRA with designed down-projections and DualGPM."""
