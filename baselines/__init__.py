"""Baselines: SimpleCIL (frozen prototypes), L2P, CODA-Prompt, EASE, DualPrompt, RanPAC, APER, and the
Joint and Finetune reference rows.

Importing this package registers their light configs only; each strategy's heavy module is
imported when a run builds it.
"""

from baselines.coda_prompt import config as _coda_prompt  # noqa: F401
from baselines.ease import config as _ease  # noqa: F401
from baselines.l2p import config as _l2p  # noqa: F401
from baselines.simple_cil import config as _simple_cil  # noqa: F401

from .aper import config as _aper  # noqa: F401
from .dual_prompt import config as _dual_prompt  # noqa: F401
from .finetune import config as _finetune  # noqa: F401
from .joint import config as _joint  # noqa: F401
from .ranpac import config as _ranpac  # noqa: F401
