"""A cheap model of validation accuracy over keep ratios: the sensitivity table as prior, a GP for the rest.

``accuracy(x) ~ a - b * D(x) + f(x)`` where ``x`` holds the groups' kept fractions, ``D(x)`` is the sum of
the groups' predicted drops from the sensitivity table (PSViT's additive model), ``a, b`` are fitted by ridge
regression towards the table's own belief (``a`` = base val accuracy, ``b`` = 1), and ``f`` is a Gaussian
process on the residuals (squared-exponential kernel, one length scale and signal variance picked by marginal
likelihood on a small grid). Observation noise is binomial: ``p (1 - p) / n_val``.

The mean alone is what PSViT's greedy allocation optimizes; ``b`` learns how much the one-group-at-a-time drops
under-state the drop when many groups are pruned together, and the GP learns where the additive model is wrong.

When bit-widths are searched too, ``x`` has a second column per group, its bit-width as :func:`bits_feature`
(``log2(bits) / 5``: 1 at 32 bits, 0.4 at 4), and ``D(x)`` adds the bits grid's drops
(:meth:`~psvit.sensitivity.SensitivityTable.predicted_bits_drop`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from psvit.sensitivity import SensitivityTable

#: Grids searched by marginal likelihood: length scale (kept-fraction units) and signal std (accuracy units).
LENGTH_SCALES = (0.1, 0.2, 0.35, 0.6)
SIGNAL_STDS = (0.005, 0.02, 0.05, 0.15)
#: Ridge strength of the mean's prior (in pseudo-observations).
PRIOR_WEIGHT = 2.0


def bits_feature(bits: int) -> float:
    """A bit-width as a surrogate input in (0, 1]: ``log2(bits) / 5``."""
    return math.log2(bits) / 5


def feature_bits(value: float) -> int:
    """The bit-width of a :func:`bits_feature` value."""
    return round(2 ** (5 * value))


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """EI of maximizing, per candidate."""
    sd = np.maximum(sd, 1e-9)
    z = (mu - best) / sd
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return (mu - best) * cdf + sd * pdf


@dataclass
class AccuracySurrogate:
    """Fit with :meth:`fit`, then :meth:`predict` mean and standard deviation of the latent accuracy."""

    table: SensitivityTable
    names: Sequence[str]
    n_val: int
    with_bits: bool = False  #: whether ``x`` has a bit-width column per group after the keep ratios
    a: float = 0.0
    b: float = 1.0
    length_scale: float = LENGTH_SCALES[1]
    signal_std: float = SIGNAL_STDS[1]
    _x: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    _alpha: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _chol: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def drop(self, x: np.ndarray) -> np.ndarray:
        """``D(x)``: the table's additive predicted drop, per row of ``x``."""
        k = len(self.names)
        return np.array(
            [
                sum(self.table.predicted_drop(n, float(v)) for n, v in zip(self.names, row[:k]))
                + (
                    sum(self.table.predicted_bits_drop(n, feature_bits(v)) for n, v in zip(self.names, row[k:]))
                    if self.with_bits
                    else 0.0
                )
                for row in x
            ]
        )

    def _mean(self, x: np.ndarray) -> np.ndarray:
        return self.a - self.b * self.drop(x)

    def _kernel(self, x1: np.ndarray, x2: np.ndarray, length_scale: float, signal_std: float) -> np.ndarray:
        d2 = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1)
        return signal_std**2 * np.exp(-0.5 * d2 / length_scale**2)

    def _noise(self, y: np.ndarray) -> np.ndarray:
        p = np.clip(y, 0.02, 0.98)
        return p * (1 - p) / max(self.n_val, 1)

    def fit(self, x: np.ndarray, y: np.ndarray) -> AccuracySurrogate:
        """Fit the mean's ``a, b`` and the GP's hyperparameters to observed kept fractions ``x`` and accuracies."""
        x, y = np.asarray(x, float), np.asarray(y, float)
        d = self.drop(x)
        a0 = self.table.base_val_acc
        # ridge: minimize |y - a + b d|^2 + w (a - a0)^2 + w (b - 1)^2, in closed form
        design = np.stack([np.ones_like(d), -d], 1)
        lhs = design.T @ design + PRIOR_WEIGHT * np.eye(2)
        rhs = design.T @ y + PRIOR_WEIGHT * np.array([a0, 1.0])
        self.a, self.b = (float(v) for v in np.linalg.solve(lhs, rhs))
        self.b = max(self.b, 0.0)
        residual = y - self._mean(x)
        noise = self._noise(y)
        best = None
        for ls in LENGTH_SCALES:
            for ss in SIGNAL_STDS:
                k = self._kernel(x, x, ls, ss) + np.diag(noise)
                chol = np.linalg.cholesky(k + 1e-10 * np.eye(len(x)))
                alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, residual))
                nll = 0.5 * residual @ alpha + np.log(np.diag(chol)).sum()
                if best is None or nll < best[0]:
                    best = (nll, ls, ss, chol, alpha)
        _, self.length_scale, self.signal_std, self._chol, self._alpha = best
        self._x = x
        return self

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the latent (noise-free) accuracy at each row of ``x``."""
        x = np.asarray(x, float)
        mu = self._mean(x)
        if not len(self._x):
            return mu, np.full(len(x), self.signal_std)
        ks = self._kernel(x, self._x, self.length_scale, self.signal_std)
        mu = mu + ks @ self._alpha
        v = np.linalg.solve(self._chol, ks.T)
        var = np.maximum(self.signal_std**2 - (v**2).sum(0), 1e-12)
        return mu, np.sqrt(var)
