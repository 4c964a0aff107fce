"""APER / ADAM (Zhou et al., IJCV 2024): first-session PETL, then cosine prototypes over [frozen ; adapted] ViT features."""
