"""CL-LoRA and its LoRA relatives (InfLoRA, SD-LoRA), imported as ``cl_bench.strategies``; importing
it registers their typed configs (the heavy strategy modules load when a run builds one)."""

if __name__ != "cl_bench.strategies":
    raise ImportError(f"import cl_bench.strategies, not {__name__}: the methods are part of the cl_bench package")

from cl_bench.strategies.cl_lora import config as _cl_lora  # noqa: E402,F401
from cl_bench.strategies.inflora import config as _inflora  # noqa: E402,F401
from cl_bench.strategies.sd_lora import config as _sd_lora  # noqa: E402,F401
