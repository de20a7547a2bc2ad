"""Score a labelled IQA dataset with a model and report agreement with the human scores.

Used by `grmp-iqa evaluate`. Broken images are reported (with the reason) and left out of the metrics;
they never stop the run.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from ..data import image_paths, load_iqa_dataset, read_iqa_info
from ..scoring import score_files
from .metrics import compute_metrics
from .plots import plot_scatter


def mos_sign(higher_is_better) -> float:
    """+1 for higher-is-better labels (or unknown direction), -1 for lower-is-better (DMOS)."""
    return -1.0 if higher_is_better is False else 1.0


def evaluate_model(model, data_dir, dataset: str = "imagefolder", batch_size: int = 32, progress: bool = True,
                   **load_options) -> dict:
    """Score every image of a labelled dataset; return the report (metrics + per-image predictions).

    Lower-is-better labels (DMOS) are compared with the model's higher-is-better scores after the
    dataset's own orientation is recorded: metrics are computed against MOS flipped to higher-is-better
    (the report says so in `mos_higher_is_better` / `metrics_against`), so SRCC is positive for a good model.
    """
    data = load_iqa_dataset(dataset, data_dir, **load_options)
    info = read_iqa_info(data)
    files = image_paths(data)
    mos = np.asarray(data["mos"], dtype=np.float64)
    rows = score_files(model, files, batch_size=batch_size, progress=progress)
    ok = np.array([row.score is not None for row in rows], dtype=bool)
    pred = np.array([row.score if row.score is not None else np.nan for row in rows], dtype=np.float64)
    higher_is_better = info.get("higher_is_better")
    sign = mos_sign(higher_is_better)
    metrics = compute_metrics(pred[ok], sign * mos[ok])
    return {
        "model": str(getattr(model.config, "name_or_path", "") or ""),
        "model_type": model.config.model_type,
        "dataset": info.get("dataset", dataset),
        "dataset_name": info.get("display_name"),
        "data_dir": str(data_dir),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n": int(metrics["n"]),
        **{k: metrics[k] for k in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")},
        "logistic_fit_ok": bool(metrics.get("logistic_fit_ok", False)),
        "mos_higher_is_better": higher_is_better,
        "metrics_against": "mos" if sign > 0 else "-mos (lower-is-better labels flipped)",
        "num_images": len(rows),
        "num_failed": int((~ok).sum()),
        "failed": [{"path": row.path, "error": row.error} for row in rows if row.error],
        "predictions": [
            {"image_id": image_id, "path": row.path, "score": row.score, "mos": float(m), "error": row.error}
            for image_id, row, m in zip(data["image_id"], rows, mos)
        ],
    }


def json_safe(value):
    """`value` with NaN/inf floats as None (strict JSON) and numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_report(report: dict, output, plot=None) -> None:
    """Write the JSON report (NaN as null) and, when asked, the scatter plot of prediction vs MOS."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(json_safe(report), indent=1, allow_nan=False))
    if plot:
        scored = [p for p in report["predictions"] if p["score"] is not None]
        sign = mos_sign(report["mos_higher_is_better"])
        title = f"{report['dataset_name'] or report['dataset']} - {report['model_type']}"
        plot_scatter([p["score"] for p in scored], [sign * p["mos"] for p in scored], plot, title=title)
