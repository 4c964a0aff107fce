"""CL-LoRA. Importing this package registers its light config only."""

from strategies.cl_lora import config as _cl_lora  # noqa: F401
