"""Seeds, class orders and RNG state that checkpoints carry.

The class order has its own seed (protocol § Class order and seeds), so changing ``seed`` alone
changes inits and data order but keeps the classes of every experience.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

__all__ = ["SEEDS", "class_order", "seed_everything", "capture_rng_state", "restore_rng_state"]

#: The suite's 10-seed list for multi-seed runs: the CL-LoRA paper's two named seeds (0, 1993) and
#: the next eight after 1993, since the paper never listed its other eight (JiangpengHe/CL-LoRA #5, #8).
SEEDS: tuple[int, ...] = (0, 1993, 1994, 1995, 1996, 1997, 1998, 1999, 2000, 2001)


def class_order(n_classes: int, seed: int) -> list[int]:
    """``np.random.seed(seed); np.random.permutation(n_classes)``, without touching the global RNG.

    A negative seed keeps the natural order (VTAB, and the official CODA-Prompt code)."""
    if seed < 0:
        return list(range(n_classes))
    return np.random.RandomState(seed).permutation(n_classes).tolist()


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as tensors and plain values (``weights_only``-loadable)."""
    import torch

    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    import torch

    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
