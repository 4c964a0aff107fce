"""cl-bench: rehearsal-free class-incremental learning with pretrained ViTs, on Avalanche."""

import warnings

__version__ = "0.1.0"

# Avalanche imports qpsolvers for GEM/LaMAML, which this suite never runs; on import it warns that no
# QP solver is installed, on every command, with advice that does not apply here.
warnings.filterwarnings("ignore", message=r"no QP solver found", category=UserWarning)
