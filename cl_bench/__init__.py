"""cl-bench: rehearsal-free class-incremental learning with pretrained ViTs, on Avalanche."""

__version__ = "0.1.0"
