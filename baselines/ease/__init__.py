"""EASE: Expandable Subspace Ensemble (Zhou et al., CVPR 2024), faithful to the official code."""
