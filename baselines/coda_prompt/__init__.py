"""CODA-Prompt (Smith et al., CVPR 2023), faithful to the official code (GT-RIPL/CODA-Prompt)."""
