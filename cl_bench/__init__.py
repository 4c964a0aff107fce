"""cl-bench: rehearsal-free class-incremental learning with pretrained ViTs, on Avalanche.

The methods live in the repository's top-level ``strategies/`` and ``baselines/`` folders and are
imported as ``cl_bench.strategies`` and ``cl_bench.baselines``: an installed package maps them
there (``pyproject.toml``), and in a checkout this package's search path also covers the folder
above it, so the checkout's own methods are found first.
"""

import warnings
from pathlib import Path as _Path

__version__ = "0.2.0"

_checkout = _Path(__file__).resolve().parent.parent
if all((_checkout / name / "__init__.py").is_file() for name in ("strategies", "baselines")) \
        and not (_Path(__file__).resolve().parent / "strategies").exists():
    __path__.append(str(_checkout))  # noqa: F821  (a package's search path)

# Avalanche imports qpsolvers for GEM/LaMAML, which this suite never runs; on import it warns that no
# QP solver is installed, on every command, with advice that does not apply here.
warnings.filterwarnings("ignore", message=r"no QP solver found", category=UserWarning)
