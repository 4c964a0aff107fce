"""L2P: Learning to Prompt (Wang et al., CVPR 2022), faithful to l2p-pytorch / PILOT."""
