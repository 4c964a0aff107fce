"""CL-LoRA and its LoRA relatives. Importing this package registers their light configs only."""

from strategies.cl_lora import config as _cl_lora  # noqa: F401

from .inflora import config as _inflora  # noqa: F401
from .sd_lora import config as _sd_lora  # noqa: F401
