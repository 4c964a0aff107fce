"""RanPAC's analytic classifier (spec more_baselines_prompt_analytic.md §3.3), as plain functions
and one module holding its state.

After the first-session adaptation (``baselines.first_session``) nothing is trained by SGD:
- a fixed random projection ``W ~ N(0, 1)^{D x M}`` and ``H = ReLU(F W)``;
- streaming sums ``G += H^T H`` and ``Q += H^T Y`` (Y one-hot over the output columns);
- per experience, ``lambda`` chosen from ``10^-8 .. 10^8`` on that experience's features only (first
  80 % of its rows fit, the rest validate, mean squared error; ``np.argmin`` semantics: the first
  minimum wins, and a NaN loss wins, as in the reference);
- ``W_o = ((G + lambda I)^-1 Q)^T`` by an LU solve, and logits ``H W_o^T``.

Precision: the reference works in float32 on the CPU; ``dtype=torch.float64`` is the stable choice.
Output columns are the suite's class positions; adding columns later is exact (a new column of Q is
zero until its class arrives, and each column of ``W_o`` is solved independently).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RIDGE_LAMBDAS", "LAMBDA_FIT_FRACTION", "random_projection", "project", "one_hot", "ridge_weights",
           "select_ridge_lambda", "RanPACClassifier"]

#: The reference's candidates ``10.0 ** np.arange(-8, 9)``.
RIDGE_LAMBDAS: tuple[float, ...] = tuple(float(v) for v in 10.0 ** np.arange(-8, 9))
#: Rows of the current experience's features that fit the candidate ridge (the rest validate it).
LAMBDA_FIT_FRACTION = 0.8


def random_projection(in_features: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``W ~ N(0, 1)`` of shape (in_features, size), float32 on the CPU; ``generator=None`` draws
    from the global RNG as the reference does."""
    return torch.randn(in_features, size, generator=generator)


def project(features: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """``ReLU(F W)`` in the projection's dtype."""
    return F.relu(features.to(projection.dtype) @ projection)


def one_hot(columns: torch.Tensor, n_columns: int, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(columns.long(), n_columns).to(dtype)


def ridge_weights(gram: torch.Tensor, cross: torch.Tensor, lam: float) -> torch.Tensor:
    """``((G + lambda I)^-1 Q)^T`` by ``torch.linalg.solve`` (LU), in G's dtype."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + lam * eye, cross).T


def select_ridge_lambda(H: torch.Tensor, Y: torch.Tensor, lambdas: tuple[float, ...] = RIDGE_LAMBDAS,
                        fit_fraction: float = LAMBDA_FIT_FRACTION, ignore_nan: bool = False) -> tuple[float, list[float]]:
    """The reference's lambda search on one experience's projected features ``H`` and targets ``Y``
    (rows in loader order): fit on the first ``int(fit_fraction * N)`` rows, score the mean squared
    error on the rest. Returns the chosen lambda and every candidate's loss.

    Ties go to the smallest lambda; a NaN loss wins unless ``ignore_nan`` (then a NaN never wins,
    and all-NaN raises ``FloatingPointError``)."""
    n_fit = int(H.shape[0] * fit_fraction)
    fit, val = H[:n_fit], H[n_fit:]
    gram, cross = fit.T @ fit, fit.T @ Y[:n_fit]
    losses = [F.mse_loss(val @ ridge_weights(gram, cross, lam).T, Y[n_fit:]).item() for lam in lambdas]
    values = np.array(losses)
    if ignore_nan:
        if np.isnan(values).all():
            raise FloatingPointError("every ridge candidate gave a NaN validation loss")
        return lambdas[int(np.nanargmin(values))], losses
    return lambdas[int(np.argmin(values))], losses


class RanPACClassifier(nn.Module):
    """W, G, Q and W_o as buffers (W_o rows: output columns). G alone is ``M^2`` floats:
    400 MB at the paper's M = 10,000 in float32."""

    def __init__(self, in_features: int, projection_size: int = 10_000, dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None, cosine: bool = False) -> None:
        super().__init__()
        self.cosine = cosine
        self.register_buffer("projection", random_projection(in_features, projection_size, generator).to(dtype))
        self.register_buffer("gram", torch.zeros(projection_size, projection_size, dtype=dtype))
        self.register_buffer("cross", torch.zeros(projection_size, 0, dtype=dtype))
        self.register_buffer("weight", torch.zeros(0, projection_size, dtype=dtype))
        self.lambdas: list[float] = []

    @property
    def n_columns(self) -> int:
        return self.cross.shape[1]

    def grow(self, n_columns: int) -> None:
        """Zero columns of Q up to ``n_columns`` output columns (exact: see the module docstring)."""
        extra = n_columns - self.n_columns
        if extra > 0:
            self.cross = torch.cat([self.cross, self.cross.new_zeros(self.cross.shape[0], extra)], dim=1)

    def accumulate(self, features: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add a batch's ``H^T H`` and ``H^T Y`` to G and Q; returns its ``H`` and ``Y``."""
        H = project(features.to(self.projection.device), self.projection)
        Y = one_hot(columns.to(H.device), self.n_columns, H.dtype)
        self.gram += H.T @ H
        self.cross += H.T @ Y
        return H, Y

    def solve(self, lam: float) -> None:
        """``W_o`` from everything accumulated so far, with ridge ``lam``."""
        self.weight = ridge_weights(self.gram, self.cross, lam)
        self.lambdas.append(lam)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Scores ``H W_o^T`` over the solved columns (``cosine``: PILOT's ``cos(H, W_o)`` instead)."""
        H = project(features.to(self.projection.device), self.projection)
        if self.cosine:
            return F.linear(F.normalize(H, dim=1), F.normalize(self.weight, dim=1))
        return H @ self.weight.T

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("cross", "weight"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None:
                setattr(self, name, torch.empty_like(incoming, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
