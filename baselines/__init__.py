"""Baselines: SimpleCIL (frozen prototypes), L2P, CODA-Prompt, EASE, DualPrompt, RanPAC, APER, and the
Joint and Finetune reference rows, imported as ``cl_bench.baselines``; importing it registers their
light configs only (each strategy's heavy module is imported when a run builds it)."""

if __name__ != "cl_bench.baselines":
    raise ImportError(f"import cl_bench.baselines, not {__name__}: the methods are part of the cl_bench package")

from cl_bench.baselines.aper import config as _aper  # noqa: E402,F401
from cl_bench.baselines.coda_prompt import config as _coda_prompt  # noqa: E402,F401
from cl_bench.baselines.dual_prompt import config as _dual_prompt  # noqa: E402,F401
from cl_bench.baselines.ease import config as _ease  # noqa: E402,F401
from cl_bench.baselines.finetune import config as _finetune  # noqa: E402,F401
from cl_bench.baselines.joint import config as _joint  # noqa: E402,F401
from cl_bench.baselines.l2p import config as _l2p  # noqa: E402,F401
from cl_bench.baselines.ranpac import config as _ranpac  # noqa: E402,F401
from cl_bench.baselines.simple_cil import config as _simple_cil  # noqa: E402,F401
