"""Every name users can type: the core's benches and backbones, then the method packages, which
register themselves. The composition root of the entry points (``sweeps/*.py``, the tests); the
core modules never import it, so no import circle runs through the methods.

Nothing here imports torch: strategies and baselines register typed configs and name their
heavy builders as ``"module:attribute"``.
"""

import cl_bench.backbones  # noqa: F401
import cl_bench.benches  # noqa: F401
import cl_bench.baselines  # noqa: F401
import cl_bench.strategies  # noqa: F401
