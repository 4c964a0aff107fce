"""RanPAC (McDonnell et al., NeurIPS 2023): first-session PETL, then a frozen random projection and streaming ridge regression."""
