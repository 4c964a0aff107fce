"""CL-LoRA and the LoRA family, imported as ``cl_bench.strategies``; importing it registers their
typed configs (the heavy strategy modules load when a run builds one)."""

if __name__ != "cl_bench.strategies":
    raise ImportError(f"import cl_bench.strategies, not {__name__}: the methods are part of the cl_bench package")

from cl_bench.strategies.cl_lora import config as _cl_lora  # noqa: E402,F401
