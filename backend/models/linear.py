"""A ridge regression on standardised features, in numpy: small enough to read, fast enough to
score one feature row in microseconds, and honest about what it learned (its metrics are measured
on a later, held-out slice of time, never on shuffled rows)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec
import numpy as np

KIND = "linear-ridge"


class LinearModel(msgspec.Struct, kw_only=True, dict=True):
    """The artifact: what serving needs to turn a feature row into a score."""

    features: list[str]
    mean: list[float]
    std: list[float]
    coef: list[float]
    intercept: float
    pred_std: float
    """Spread of the training predictions: scores are predictions in these units (a z-score)."""
    kind: str = KIND

    def __post_init__(self) -> None:
        n = len(self.features)
        if n == 0 or not (len(self.mean) == len(self.std) == len(self.coef) == n):
            raise ValueError(
                f"model has {n} features but {len(self.mean)} means, "
                f"{len(self.std)} stds, {len(self.coef)} coefficients"
            )
        vals = [*self.mean, *self.std, *self.coef, self.intercept, self.pred_std]
        if not all(math.isfinite(v) for v in vals):
            raise ValueError("model has non-finite parameters")
        self._mean = np.asarray(self.mean)
        self._w = np.asarray(self.coef) / np.asarray(self.std)
        self._b = self.intercept - float(self._mean @ self._w)

    def to_bytes(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearModel:
        """Decode an artifact; a clear ValueError for anything that is not a usable model."""
        try:
            return msgspec.json.decode(data, type=cls)
        except msgspec.ValidationError as exc:
            raise ValueError(f"not a {KIND} artifact: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ValueError(f"artifact is not JSON: {exc}") from None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted label for each row of `x` (columns in `features` order)."""
        return x @ self._w + self._b

    def score(self, values: Mapping[str, float]) -> float:
        """One row's score: the prediction in units of the training predictions' spread.

        Raises KeyError naming the first missing feature."""
        pred = self._b
        for name, w in zip(self.features, self._w, strict=True):
            pred += w * values[name]
        return float(pred / self.pred_std) if self.pred_std > 0 else 0.0


def fit(
    x: np.ndarray, y: np.ndarray, features: list[str], *, ridge: float = 1.0, test_frac: float = 0.25
) -> tuple[LinearModel, dict[str, float]]:
    """Fit on the earlier part of the rows (already in time order), measure on the later part."""
    n = len(y)
    if n < 20:
        raise ValueError(f"only {n} labelled rows: need at least 20 to train and test")
    if x.shape != (n, len(features)):
        raise ValueError(f"x has shape {x.shape}, expected ({n}, {len(features)})")
    split = max(10, int(n * (1 - test_frac)))
    xtr, ytr, xte, yte = x[:split], y[:split], x[split:], y[split:]
    mean = xtr.mean(axis=0)
    std = xtr.std(axis=0)
    std[std == 0] = 1.0
    z = (xtr - mean) / std
    yc = ytr - ytr.mean()
    coef = np.linalg.solve(z.T @ z + ridge * np.eye(len(features)), z.T @ yc)
    pred_tr = z @ coef + ytr.mean()
    model = LinearModel(
        features=list(features),
        mean=mean.tolist(),
        std=std.tolist(),
        coef=coef.tolist(),
        intercept=float(ytr.mean()),
        pred_std=float(pred_tr.std()),
    )
    pred = model.predict(xte)
    metrics = {"n_train": float(split), "n_test": float(n - split)}
    metrics["ic"] = _corr(pred, yte)
    metrics["hit_rate"] = float(np.mean(np.sign(pred) == np.sign(yte))) if len(yte) else 0.0
    ss = float(((yte - yte.mean()) ** 2).sum())
    metrics["r2"] = 1.0 - float(((yte - pred) ** 2).sum()) / ss if ss > 0 else 0.0
    metrics["train_ic"] = _corr(pred_tr, ytr)
    return model, metrics


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])
