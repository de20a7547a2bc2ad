"""Correlation metrics for image quality assessment.

* ``srcc`` - Spearman rank-order correlation (prediction monotonicity),
* ``krcc`` - Kendall rank-order correlation (tau-b),
* ``plcc`` - Pearson linear correlation of the raw predictions,
* ``plcc_logistic`` - Pearson correlation after the 4-parameter logistic mapping
  of predictions to MOS recommended by VQEG and used in IQA papers,
* ``rmse`` - root mean squared error of the logistic-mapped predictions vs MOS.

The logistic is ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "METRICS",
    "MetricInfo",
    "compute_metrics",
    "fit_logistic",
    "logistic4",
    "summarize",
]


class MetricInfo(NamedTuple):
    """Description of a metric: display name and direction (pyiqa's ``lower_better`` = not this)."""

    display_name: str
    higher_is_better: bool


#: name -> (display name, higher_is_better)
METRICS: dict[str, MetricInfo] = {
    "srcc": MetricInfo("SRCC", True),
    "krcc": MetricInfo("KRCC", True),
    "plcc": MetricInfo("PLCC", True),
    "plcc_logistic": MetricInfo("PLCC (logistic)", True),
    "rmse": MetricInfo("RMSE", False),
}

_NAN = float("nan")


def logistic4(x: Any, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    Evaluated with :func:`scipy.special.expit`, so it never overflows.
    """
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (b1 - b2) * special.expit((x - b3) / abs(b4)) + b2


def _to_1d(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of numbers: {exc}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    elif arr.ndim > 1:
        squeezed = np.squeeze(arr)
        if squeezed.ndim > 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        arr = squeezed.reshape(-1)
    return arr


def _validate(pred: Any, mos: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _to_1d(pred, "pred")
    m = _to_1d(mos, "mos")
    if p.shape[0] != m.shape[0]:
        raise ValueError(f"length mismatch: pred has {p.shape[0]} items, mos has {m.shape[0]}")
    for name, arr in (("pred", p), ("mos", m)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            shown = bad[:10].tolist()
            more = f" (first 10 of {bad.size})" if bad.size > 10 else ""
            raise ValueError(
                f"{name} has {bad.size} non-finite value(s) (NaN/inf) at indices {shown}{more}"
            )
    return p, m


def _is_constant(a: np.ndarray) -> bool:
    return a.size == 0 or bool(np.all(a == a[0]))


def _fit_logistic_arrays(p: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit on validated arrays; raises RuntimeError when no usable fit is found."""
    if p.size < 4:
        raise RuntimeError(f"need at least 4 items to fit a 4-parameter logistic, got {p.size}")
    if _is_constant(p) or _is_constant(m):
        raise RuntimeError("cannot fit a logistic to constant predictions or constant MOS")

    # Fit on standardized predictions for conditioning, then map params back.
    mu, sd = float(np.mean(p)), float(np.std(p))
    z = (p - mu) / sd
    hi, lo = float(np.max(m)), float(np.min(m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        rho = stats.spearmanr(p, m)[0]
    if np.isfinite(rho) and rho < 0:  # decreasing relation: start from a decreasing curve
        hi, lo = lo, hi

    best: tuple[float, np.ndarray] | None = None
    # b3 = mean(pred), b4 = std(pred)/4 (and a couple of wider slopes), in z units
    for b4 in (0.25, 1.0, 0.1):
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                params, _ = optimize.curve_fit(
                    logistic4, z, m, p0=[hi, lo, 0.0, b4], maxfev=20000
                )
        except (RuntimeError, ValueError, TypeError, np.linalg.LinAlgError, FloatingPointError):
            continue
        if not np.all(np.isfinite(params)) or params[3] == 0:
            continue
        mapped = logistic4(z, *params)
        if not np.all(np.isfinite(mapped)):
            continue
        sse = float(np.sum((mapped - m) ** 2))
        if best is None or sse < best[0]:
            best = (sse, params)
    if best is None:
        raise RuntimeError("logistic fit did not converge")
    b1, b2, b3, b4 = (float(v) for v in best[1])
    params = np.array([b1, b2, mu + sd * b3, sd * abs(b4)], dtype=float)
    mapped = logistic4(p, *params)
    return params, mapped


def fit_logistic(pred: Any, mos: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fit the 4-parameter logistic mapping predictions to MOS.

    Returns ``(params, mapped_pred)`` with ``params = [b1, b2, b3, b4]`` in the
    scale of ``pred`` (``b4 > 0``), usable as ``logistic4(x, *params)``.
    Raises ``ValueError`` for invalid input and ``RuntimeError`` when the fit
    is impossible (fewer than 4 items, constant input) or does not converge.
    """
    p, m = _validate(pred, mos)
    return _fit_logistic_arrays(p, m)


def compute_metrics(pred: Any, mos: Any) -> dict[str, Any]:
    """SRCC, KRCC, PLCC, logistic PLCC and RMSE of predictions vs MOS.

    Returns a dict with float values for ``srcc``, ``krcc``, ``plcc``,
    ``plcc_logistic``, ``rmse``, plus ``n`` (int) and ``logistic_fit_ok`` (bool).
    With fewer than 3 items or constant predictions/MOS the metrics are NaN.
    If the logistic fit fails, ``plcc_logistic`` and ``rmse`` fall back to the
    raw predictions (identity mapping) and ``logistic_fit_ok`` is False.
    Raises ``ValueError`` on length mismatch or non-finite values.
    """
    p, m = _validate(pred, mos)
    n = int(p.size)
    out: dict[str, Any] = {
        "srcc": _NAN,
        "krcc": _NAN,
        "plcc": _NAN,
        "plcc_logistic": _NAN,
        "rmse": _NAN,
        "n": n,
        "logistic_fit_ok": False,
    }
    if n < 3 or _is_constant(p) or _is_constant(m):
        return out

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        out["srcc"] = float(stats.spearmanr(p, m)[0])
        out["krcc"] = float(stats.kendalltau(p, m)[0])
        out["plcc"] = float(stats.pearsonr(p, m)[0])

        mapped = p
        try:
            _, fitted = _fit_logistic_arrays(p, m)
            if not _is_constant(fitted):
                mapped = fitted
                out["logistic_fit_ok"] = True
        except RuntimeError:
            pass
        out["plcc_logistic"] = (
            float(stats.pearsonr(mapped, m)[0]) if out["logistic_fit_ok"] else out["plcc"]
        )
        out["rmse"] = float(np.sqrt(np.mean((mapped - m) ** 2)))
    return out


def summarize(per_split: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, mean and (population, ddof=0) std of each numeric metric over splits.

    NaN values are ignored per metric (a metric that is NaN in every split is
    NaN in the summary). Booleans (e.g. ``logistic_fit_ok``) and non-numeric
    values are skipped; keys keep their first-seen order.
    """
    if len(per_split) == 0:
        raise ValueError("summarize() needs at least one split result")
    keys: list[str] = []
    for res in per_split:
        for k, v in res.items():
            if k in keys:
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                continue
            keys.append(k)
    summary: dict[str, dict[str, float]] = {"median": {}, "mean": {}, "std": {}}
    for k in keys:
        vals = []
        for res in per_split:
            v = res.get(k, _NAN)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                v = _NAN
            vals.append(float(v))
        arr = np.asarray(vals, dtype=float)
        arr = arr[~np.isnan(arr)]
        if arr.size == 0:
            summary["median"][k] = summary["mean"][k] = summary["std"][k] = _NAN
            continue
        summary["median"][k] = float(np.median(arr))
        summary["mean"][k] = float(np.mean(arr))
        summary["std"][k] = float(np.std(arr))
    return summary

