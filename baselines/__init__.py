"""Baselines: SimpleCIL (frozen prototypes), L2P, CODA-Prompt and EASE.

Importing this package registers their light configs only; each strategy's heavy module is
imported when a run builds it.
"""

from baselines.coda_prompt import config as _coda_prompt  # noqa: F401
from baselines.ease import config as _ease  # noqa: F401
from baselines.l2p import config as _l2p  # noqa: F401
from baselines.simple_cil import config as _simple_cil  # noqa: F401
