"""Imports the light registration modules, so every strategy, bench and backbone name is known.

Nothing here imports torch: strategies and baselines register typed configs and name their
heavy builders as ``"module:attribute"``.
"""

import baselines  # noqa: F401
import cl_bench.backbones  # noqa: F401
import cl_bench.benches  # noqa: F401
import strategies  # noqa: F401
