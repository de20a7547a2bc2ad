"""Evaluation plots (matplotlib, Agg canvas; never needs a display)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .metrics import _validate, compute_metrics, logistic4, try_fit_logistic

__all__ = ["plot_scatter", "scatter_figure"]


def _fmt(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "nan" if math.isnan(v) else f"{v:.4f}"


def _curve(p: np.ndarray, m: np.ndarray, metrics: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """The logistic that gave ``metrics``' logistic PLCC and RMSE, or None and a note saying why
    there is none."""
    status = metrics.get("plcc_logistic_fit")
    if status is None:  # metrics from elsewhere: fit again, as compute_metrics does
        fit = try_fit_logistic(p, m)
        status, reason, params = fit.status, fit.reason, fit.params
    else:
        reason, params = metrics.get("plcc_logistic_fit_reason", ""), metrics.get("plcc_logistic_params")
        if status == "ok" and params is None:
            params = try_fit_logistic(p, m).params
    if status != "ok" or params is None:
        return None, f"no logistic curve: fit {status}" + (f" ({reason})" if reason else "")
    return np.asarray(params, dtype=float), ""


def scatter_figure(
    pred: Any,
    mos: Any,
    title: str | None = None,
    metrics: dict[str, Any] | None = None,
):
    """The ``matplotlib.figure.Figure`` of :func:`plot_scatter`, not saved."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_scatter needs matplotlib; install it with `pip install matplotlib`"
        ) from exc

    p, m = _validate(pred, mos)
    if metrics is None:
        metrics = compute_metrics(p, m)

    fig = Figure(figsize=(5.5, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    size = 12 if p.size <= 2000 else 4
    ax.scatter(p, m, s=size, alpha=0.6, edgecolors="none", color="tab:blue", label="images")

    params, note = _curve(p, m, metrics)
    if params is not None:
        xs = np.linspace(float(np.min(p)), float(np.max(p)), 256)
        ax.plot(xs, logistic4(xs, *params), color="tab:red", linewidth=2.0, label="logistic fit")
        ax.legend(loc="best", fontsize=8, frameon=False)
    elif p.size:
        ax.text(0.02, 0.98, note, transform=ax.transAxes, fontsize=7, va="top", ha="left", wrap=True,
                color="dimgray")

    ax.set_xlabel("Predicted quality score")
    ax.set_ylabel("MOS")
    n = metrics.get("n", int(p.size))
    stats_line = f"n={n}  SRCC={_fmt(metrics.get('srcc'))}  PLCC={_fmt(metrics.get('plcc'))}"
    if params is not None:
        stats_line += f"  PLCC(log)={_fmt(metrics.get('plcc_logistic'))}  RMSE={_fmt(metrics.get('rmse'))}"
    ax.set_title(f"{title}\n{stats_line}" if title else stats_line, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def plot_scatter(
    pred: Any,
    mos: Any,
    path: str | os.PathLike,
    title: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> str | os.PathLike:
    """Scatter plot of predictions vs MOS with the fitted 4-parameter logistic.

    Args:
        pred: predicted quality scores (1-D).
        mos: ground-truth mean opinion scores (1-D, same length).
        path: output PNG file (parent folders are created).
        title: optional first title line; a second line gives n, SRCC and PLCC
            (and the logistic PLCC and RMSE when the fit is ok).
        metrics: precomputed :func:`compute_metrics` result for these data
            (computed if None).

    Returns:
        ``path``, as given.

    The curve drawn is the one behind the logistic PLCC and RMSE: the bounded
    fit, from ``metrics["plcc_logistic_params"]``. When the fit was skipped or
    degenerate no curve is drawn and a note in the plot says why. Uses
    ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot, no
    global backend change).
    """
    fig = scatter_figure(pred, mos, title=title, metrics=metrics)
    out = os.fspath(path)
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return path
