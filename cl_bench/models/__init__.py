"""Adapters, prompts and heads injected into the stock timm VisionTransformer."""
