"""Correlation metrics for image quality assessment.

* ``srcc`` - Spearman rank-order correlation (prediction monotonicity),
* ``krcc`` - Kendall rank-order correlation (tau-b),
* ``plcc`` - Pearson linear correlation of the raw predictions,
* ``plcc_logistic`` - Pearson correlation after the 4-parameter logistic mapping
  of predictions to MOS recommended by VQEG and used in IQA papers,
* ``rmse`` - root mean squared error of the logistic-mapped predictions vs MOS,
  in MOS units.

The logistic is ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

An unconstrained least-squares fit of it can bend into a vertical step through
noise and report a high correlation for predictions unrelated to MOS (at
n = 20, a median of about 0.36 against a median |PLCC| of 0.18). The fit here is
bounded so that it cannot:

* the slope scale ``b4`` is between ``MIN_SLOPE_SCALE`` (1.5) and
  ``MAX_SLOPE_SCALE`` (20) standard deviations of the predictions, and the
  centre ``b3`` between their 10th and 90th percentiles (``CENTRE_QUANTILES``),
  so the curve cannot bend around a few extreme items;
* the curve's direction is that of SRCC (of PLCC when SRCC is 0): increasing
  for a positive relation, decreasing for a negative one;
* it is a least-squares fit searched globally: for each (b3, b4) the levels
  (b1, b2) are solved in closed form, and (b3, b4) are searched on a grid over
  the whole allowed box, refined three times around its best point (no local
  optimiser started from one guess).

The bounds cost a little where a real relation is steeper than they allow: the
logistic PLCC then comes out below an unbounded fit's (by 0.01-0.05 in our
checks on sharp sigmoids and exponentials), never above it by inflation.

``plcc_logistic`` keeps the orientation of the predictions, like ``plcc``: it
is ``sign(SRCC) * corr(f(pred), MOS)``, so it has SRCC's sign (for increasing
relations, the usual value). How the fit went is in every result:
``plcc_logistic_fit`` is ``"ok"``, ``"degenerate"`` (fitted, but the best curve
in SRCC's direction is flat) or ``"skipped"`` (too few items, constant input),
and ``plcc_logistic_fit_reason`` says why in words. ``plcc_logistic`` and
``rmse`` are numbers only when the fit is ``"ok"``, NaN otherwise.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple, Sequence

import numpy as np
from scipy import special, stats

__all__ = [
    "CENTRE_QUANTILES",
    "FIT_STATUSES",
    "LogisticFit",
    "MAX_SLOPE_SCALE",
    "METRICS",
    "MIN_FIT_ITEMS",
    "MIN_SLOPE_SCALE",
    "MetricInfo",
    "compute_metrics",
    "fit_logistic",
    "logistic4",
    "summarize",
    "try_fit_logistic",
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

#: values of ``plcc_logistic_fit``
FIT_STATUSES = ("ok", "degenerate", "skipped")
#: bounds of b4 in standard deviations of the predictions. The lower one (with
#: CENTRE_QUANTILES) keeps the median logistic PLCC of predictions unrelated to MOS
#: within 0.05 of the median |PLCC| down to n = 20 (about 0.035 above it there;
#: tests/test_metrics.py measures it); steeper curves are what turn noise into a step.
MIN_SLOPE_SCALE = 1.5
#: beyond this the curve is a straight line over the data (the linear limit)
MAX_SLOPE_SCALE = 20.0
#: b3 lies between these quantiles of the predictions
CENTRE_QUANTILES = (0.1, 0.9)
#: more items than the 4 parameters
MIN_FIT_ITEMS = 5

_NAN = float("nan")
_GRID_CENTRES = 13  # b3 values across its allowed range
_GRID_SCALES = 6  # b4 values, log-spaced between the bounds
_REFINE = 9  # points per axis of each refinement grid: each cuts the step by 4
_LEVELS = 4  # the grid and three refinements: steps of 1/64 of the first
_CHUNK = 1 << 20  # grid cells x items evaluated at once (bounds memory for large n)


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


class LogisticFit(NamedTuple):
    """Outcome of :func:`try_fit_logistic`.

    ``status`` is one of :data:`FIT_STATUSES` and ``reason`` says why in words.
    ``params`` (``[b1, b2, b3, b4]`` in the scale of the predictions, ``b4 > 0``)
    and ``mapped`` (the predictions through the curve) are set only when the
    status is ``"ok"``. ``direction`` is +1 / -1 (the curve's direction) or 0
    when the fit was skipped.
    """

    status: str
    reason: str
    params: np.ndarray | None = None
    mapped: np.ndarray | None = None
    direction: int = 0


def _signed_corr_grid(z: np.ndarray, mc: np.ndarray, centres: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """``corr(expit((z - b3) / b4), mos)`` up to the positive factor ``1 / |mc|``, for every
    (centre, scale) pair; ``mc`` is MOS minus its mean."""
    b3 = np.repeat(centres, scales.size)
    inv_b4 = np.tile(1.0 / scales, centres.size)
    out = np.empty(b3.size)
    n = z.size
    step = max(1, _CHUNK // max(n, 1))
    for lo in range(0, b3.size, step):
        hi = lo + step
        s = (z[None, :] - b3[lo:hi, None]) * inv_b4[lo:hi, None]
        special.expit(s, out=s)
        cov = s @ mc
        # s is in (0, 1) and b4 <= MAX_SLOPE_SCALE std keeps var(s) >= ~1e-4: the one-pass
        # variance loses only a few of 16 digits
        var = np.einsum("ij,ij->i", s, s) - s.sum(axis=1) ** 2 / n
        out[lo:hi] = np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    return out.reshape(centres.size, scales.size)


def _fit_arrays(p: np.ndarray, m: np.ndarray, srcc: float | None = None, plcc: float | None = None) -> LogisticFit:
    """The bounded fit on validated arrays (see the module docstring); ``srcc`` / ``plcc`` when
    already computed."""
    n = int(p.size)
    if n < MIN_FIT_ITEMS:
        return LogisticFit("skipped", f"{n} item(s): a 4-parameter logistic needs at least {MIN_FIT_ITEMS}")
    if _is_constant(p):
        return LogisticFit("skipped", "the predictions are all equal")
    if _is_constant(m):
        return LogisticFit("skipped", "the MOS are all equal")
    if srcc is None or plcc is None:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            srcc = float(stats.spearmanr(p, m)[0])
            plcc = float(stats.pearsonr(p, m)[0])
    direction = int(np.sign(srcc)) if np.isfinite(srcc) and srcc != 0 else int(np.sign(plcc))
    if direction == 0:
        return LogisticFit("degenerate", "SRCC and PLCC are both 0: no direction for the curve to follow")
    word = "increasing" if direction > 0 else "decreasing"
    source = f"SRCC = {srcc:+.3f}" if srcc != 0 else "PLCC, as SRCC is 0"

    # Work on standardised predictions: the bounds are in standard deviations.
    mu, sd = float(np.mean(p)), float(np.std(p))
    z = (p - mu) / sd
    mc = m - float(np.mean(m))
    lo3, hi3 = (float(v) for v in np.quantile(z, CENTRE_QUANTILES))
    lo4, hi4 = np.log(MIN_SLOPE_SCALE), np.log(MAX_SLOPE_SCALE)
    centres = np.linspace(lo3, hi3, _GRID_CENTRES)
    log_scales = np.linspace(lo4, hi4, _GRID_SCALES)
    d3, d4 = centres[1] - centres[0], log_scales[1] - log_scales[0]
    # Minimising the squared error over (b1, b2) for fixed (b3, b4) leaves
    # SSE = SS_mos * (1 - r^2), with r = corr(curve, MOS) of the curve's sign:
    # the best curve in `direction` maximises direction * r.
    for level in range(_LEVELS):
        score = direction * _signed_corr_grid(z, mc, centres, np.exp(log_scales))
        i, j = np.unravel_index(int(np.argmax(score)), score.shape)
        b3, log_b4 = float(centres[i]), float(log_scales[j])
        if level == _LEVELS - 1:
            break
        centres = np.clip(np.linspace(b3 - d3, b3 + d3, _REFINE), lo3, hi3)
        log_scales = np.clip(np.linspace(log_b4 - d4, log_b4 + d4, _REFINE), lo4, hi4)
        d3, d4 = d3 / ((_REFINE - 1) / 2), d4 / ((_REFINE - 1) / 2)

    s = special.expit((z - b3) / np.exp(log_b4))
    sc = s - s.mean()
    amplitude = float(sc @ mc) / float(sc @ sc)  # least squares for b1 - b2
    if not np.isfinite(amplitude) or direction * amplitude <= 0:
        return LogisticFit(
            "degenerate",
            f"the best {word} logistic (the direction of {source}) is flat: no {word} curve "
            f"fits the MOS better than their mean (PLCC = {plcc:+.3f})",
            direction=direction,
        )
    b2 = float(np.mean(m)) - amplitude * float(np.mean(s))
    params = np.array([b2 + amplitude, b2, mu + sd * b3, sd * float(np.exp(log_b4))], dtype=float)
    mapped = logistic4(p, *params)
    reason = f"{word} logistic (the direction of {source}) fitted to {n} items"
    if np.isclose(log_b4, lo4):
        reason += (f"; at the steepest slope allowed (b4 = {MIN_SLOPE_SCALE:g} x the standard deviation of "
                   "the predictions)")
    elif np.isclose(log_b4, hi4):
        reason += "; nearly a straight line over the data (b4 at its upper bound)"
    return LogisticFit("ok", reason, params, mapped, direction)


def try_fit_logistic(pred: Any, mos: Any) -> LogisticFit:
    """Fit the bounded 4-parameter logistic mapping predictions to MOS.

    Never raises for data it cannot fit: the result's ``status`` is
    ``"skipped"`` (fewer than ``MIN_FIT_ITEMS`` items, constant input) or
    ``"degenerate"`` (the best curve in SRCC's direction is flat), with the
    reason. Raises ``ValueError`` for invalid input (length mismatch, NaN/inf).
    """
    p, m = _validate(pred, mos)
    return _fit_arrays(p, m)


def fit_logistic(pred: Any, mos: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fit the bounded 4-parameter logistic mapping predictions to MOS.

    Returns ``(params, mapped_pred)`` with ``params = [b1, b2, b3, b4]`` in the
    scale of ``pred`` (``b4 > 0``), usable as ``logistic4(x, *params)``.
    Raises ``ValueError`` for invalid input and ``RuntimeError`` with the
    reason when the fit is skipped or degenerate (see :func:`try_fit_logistic`).
    """
    fit = try_fit_logistic(pred, mos)
    if fit.status != "ok":
        raise RuntimeError(f"logistic fit {fit.status}: {fit.reason}")
    return fit.params, fit.mapped


def compute_metrics(pred: Any, mos: Any) -> dict[str, Any]:
    """SRCC, KRCC, PLCC, logistic PLCC and RMSE of predictions vs MOS.

    Returns a dict with
      * float values for ``srcc``, ``krcc``, ``plcc``, ``plcc_logistic`` and
        ``rmse`` (RMSE in MOS units, after the logistic mapping),
      * ``n`` (int),
      * ``plcc_logistic_fit``: ``"ok"``, ``"degenerate"`` or ``"skipped"``, and
        ``plcc_logistic_fit_reason``: why, in words,
      * ``plcc_logistic_params``: ``[b1, b2, b3, b4]`` of the curve used (in
        the scale of ``pred``), or None.

    ``plcc_logistic`` has the sign of SRCC (see the module docstring).
    ``plcc_logistic`` and ``rmse`` are NaN unless the fit is ``"ok"``; with
    fewer than 3 items or constant predictions/MOS every metric is NaN.
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
        "plcc_logistic_fit": "skipped",
        "plcc_logistic_fit_reason": "",
        "plcc_logistic_params": None,
    }
    if n < 3 or _is_constant(p) or _is_constant(m):
        out["plcc_logistic_fit_reason"] = _fit_arrays(p, m).reason
        return out

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        out["srcc"] = float(stats.spearmanr(p, m)[0])
        out["krcc"] = float(stats.kendalltau(p, m)[0])
        out["plcc"] = float(stats.pearsonr(p, m)[0])
        fit = _fit_arrays(p, m, out["srcc"], out["plcc"])
        out["plcc_logistic_fit"], out["plcc_logistic_fit_reason"] = fit.status, fit.reason
        if fit.status == "ok":
            # np.corrcoef: scipy's pearsonr costs ~1 ms a call in validation alone (tests compare the two)
            out["plcc_logistic"] = fit.direction * float(np.corrcoef(fit.mapped, m)[0, 1])
            out["rmse"] = float(np.sqrt(np.mean((fit.mapped - m) ** 2)))
            out["plcc_logistic_params"] = [float(v) for v in fit.params]
    return out


def summarize(per_split: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median, mean and (population, ddof=0) std of each numeric metric over splits.

    NaN values are ignored per metric (a metric that is NaN in every split is
    NaN in the summary). Booleans and non-numeric values (e.g. ``plcc_logistic_fit``)
    are skipped; keys keep their first-seen order.
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

