"""Evaluation plots (matplotlib, Agg canvas; never needs a display)."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .metrics import _validate, compute_metrics, fit_logistic, logistic4

__all__ = ["plot_scatter"]


def _fmt(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "nan" if math.isnan(v) else f"{v:.4f}"


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
        title: optional first title line; a second line gives n, SRCC and PLCC.
        metrics: precomputed :func:`compute_metrics` result (computed if None).

    Returns:
        ``path``, as given.

    Uses ``matplotlib.figure.Figure`` with the Agg canvas directly (no pyplot,
    no global backend change). The logistic curve is omitted when it cannot be
    fitted (fewer than 4 items, constant input, no convergence).
    """
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

    if p.size >= 4:
        try:
            params, _ = fit_logistic(p, m)
        except RuntimeError:
            params = None
        if params is not None:
            lo, hi = float(np.min(p)), float(np.max(p))
            xs = np.linspace(lo, hi, 256)
            ax.plot(xs, logistic4(xs, *params), color="tab:red", linewidth=2.0, label="logistic fit")
            ax.legend(loc="best", fontsize=8, frameon=False)

    ax.set_xlabel("Predicted quality score")
    ax.set_ylabel("MOS")
    n = metrics.get("n", int(p.size))
    stats_line = f"n={n}  SRCC={_fmt(metrics.get('srcc'))}  PLCC={_fmt(metrics.get('plcc'))}"
    if metrics.get("logistic_fit_ok"):
        stats_line += f"  PLCC(log)={_fmt(metrics.get('plcc_logistic'))}"
    ax.set_title(f"{title}\n{stats_line}" if title else stats_line, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()

    out = os.fspath(path)
    parent = os.path.dirname(out)
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return path
