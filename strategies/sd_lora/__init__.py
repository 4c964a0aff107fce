"""SD-LoRA (Wu et al., ICLR 2025): frozen normalised LoRA directions with learnable per-task magnitudes."""
