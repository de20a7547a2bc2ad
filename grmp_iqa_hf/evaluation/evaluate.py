"""Score a labelled IQA dataset with a model and report agreement with the human scores.

Used by `grmp-iqa evaluate`. Broken images are reported (with the reason) and left out of the metrics;
they never stop the run. The report records its provenance (model, commit, versions, device, dtype, time)
under `provenance` (see `grmp_iqa_hf.provenance`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import provenance
from ..json_io import write_json
from ..data import image_paths, load_iqa_dataset, read_iqa_info
from ..scoring import score_files
from .metrics import compute_metrics
from .plots import plot_scatter


def mos_sign(higher_is_better) -> float:
    """+1 for higher-is-better labels (or unknown direction), -1 for lower-is-better (DMOS)."""
    return -1.0 if higher_is_better is False else 1.0


def load_evaluation_data(data_dir, dataset: str = "imagefolder", normalize: bool = False, **load_options):
    """The labelled dataset `evaluate_model` scores (checked: bad metadata raises `DatasetMetadataError`
    naming every bad row). `normalize=True` maps the scores to [0, 1], higher = better (DMOS flipped, the
    registry's nominal range)."""
    return load_iqa_dataset(dataset, data_dir, normalize=normalize, **load_options)


def evaluate_model(model, data_dir, dataset: str = "imagefolder", batch_size: int = 32, progress: bool = True,
                   num_workers: int = 2, normalize: bool = False, data=None, **load_options) -> dict:
    """Score every image of a labelled dataset; return the report (metrics + per-image predictions).

    Lower-is-better labels (DMOS) are compared with the model's higher-is-better scores after the
    dataset's own orientation is recorded: metrics are computed against MOS flipped to higher-is-better
    (the report says so in `mos_higher_is_better` / `metrics_against`), so SRCC is positive for a good model.
    With `normalize=True` the labels are mapped to [0, 1], higher = better, first (RMSE is then in those
    units). `data` is the dataset from `load_evaluation_data`, when the caller loaded it already.
    """
    if data is None:
        data = load_evaluation_data(data_dir, dataset, normalize=normalize, **load_options)
    info = read_iqa_info(data)
    files = image_paths(data)
    mos = np.asarray(data["mos"], dtype=np.float64)
    rows = score_files(model, files, batch_size=batch_size, num_workers=num_workers, progress=progress)
    ok = np.array([row.score is not None for row in rows], dtype=bool)
    pred = np.array([row.score if row.score is not None else np.nan for row in rows], dtype=np.float64)
    higher_is_better = info.get("higher_is_better")
    sign = mos_sign(higher_is_better)
    metrics = compute_metrics(pred[ok], sign * mos[ok])
    record = provenance.collect(model)
    return {
        "model": record["model"] or "",
        "model_type": model.config.model_type,
        "dataset": info.get("dataset", dataset),
        "dataset_name": info.get("display_name"),
        "data_dir": str(data_dir),
        "created": record["timestamp"],
        "n": int(metrics["n"]),
        **{k: metrics[k] for k in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")},
        # how the logistic fit went: plcc_logistic_fit (ok / degenerate / skipped), its reason, the curve used
        **{k: v for k, v in metrics.items() if k.startswith("plcc_logistic_")},
        "mos_higher_is_better": higher_is_better,
        "mos_normalized": bool(normalize),
        "metrics_against": "mos" if sign > 0 else "-mos (lower-is-better labels flipped)",
        "num_images": len(rows),
        "num_failed": int((~ok).sum()),
        "failed": [{"path": row.path, "error": row.error} for row in rows if row.error],
        "provenance": record,
        "predictions": [
            {"image_id": image_id, "path": row.path, "score": row.score, "mos": float(m), "error": row.error}
            for image_id, row, m in zip(data["image_id"], rows, mos)
        ],
    }


def write_report(report: dict, output=None, plot=None) -> None:
    """Write the JSON report (NaN as null) when `output` is given and, when asked, the scatter plot of
    prediction vs MOS."""
    if output is not None:
        write_json(output, report)
    if plot:
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        scored = [p for p in report["predictions"] if p["score"] is not None]
        sign = mos_sign(report["mos_higher_is_better"])
        title = f"{report['dataset_name'] or report['dataset']} - {report['model_type']}"
        plot_scatter([p["score"] for p in scored], [sign * p["mos"] for p in scored], plot, title=title)
