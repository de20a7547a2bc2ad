"""Score a labelled IQA dataset with a model and report agreement with the human scores.

Used by `grmp-iqa evaluate`. Broken images are reported (with the reason) and left out of the metrics;
they never stop the run. The report records its provenance (model, commit, versions, device, dtype, time)
under `provenance` (see `grmp_iqa_hf.provenance`).

The data comes from a folder (`evaluate_model`) or a Hub dataset (`evaluate_hub_dataset`); both give the
same report (`build_report`): only where it came from differs (`data_dir` for a folder, `hub_dataset` for a
Hub split; the other one is None).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import provenance
from ..json_io import write_json
from ..data import image_paths, load_iqa_dataset, read_iqa_info
from ..scoring import score_files, score_stream
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
                   num_workers: int = 2, normalize: bool = False, data=None, crops: int = 1, **load_options) -> dict:
    """Score every image of a labelled dataset; return the report (metrics + per-image predictions).

    Lower-is-better labels (DMOS) are compared with the model's higher-is-better scores after the
    dataset's own orientation is recorded: metrics are computed against MOS flipped to higher-is-better
    (the report says so in `mos_higher_is_better` / `metrics_against`), so SRCC is positive for a good model.
    With `normalize=True` the labels are mapped to [0, 1], higher = better, first (RMSE is then in those
    units). `data` is the dataset from `load_evaluation_data`, when the caller loaded it already.
    """
    if data is None:
        data = load_evaluation_data(data_dir, dataset, normalize=normalize, **load_options)
    rows = score_files(model, image_paths(data), batch_size=batch_size, num_workers=num_workers, progress=progress,
                       crops=crops)
    return build_report(model, data, rows, normalize=normalize, dataset=dataset, data_dir=data_dir, crops=crops)


def load_hub_evaluation_data(source, normalize: bool = False, facts=None):
    """The labelled dataset of a Hub split (`data.hub_dataset.open_hub_dataset`) read without its images, in
    the form of `load_evaluation_data` (bad MOS raises `DatasetMetadataError` naming every bad row)."""
    from ..data.hub_dataset import iqa_dataset_from_rows

    return iqa_dataset_from_rows(source, list(source.rows(with_images=False)), facts=facts, normalize=normalize)


def evaluate_hub_dataset(model, source, batch_size: int = 32, progress: bool = True, num_workers: int = 2,
                         normalize: bool = False, facts=None, data=None, crops: int = 1) -> dict:
    """`evaluate_model` over a Hub split (`source`: `data.hub_dataset.open_hub_dataset(..., mos_column=...)`).

    The images are read in one pass over the split, streamed or from the cache as `source` was opened; the
    labels are checked (and normalised) like a folder's, before scoring when `data` (from
    `load_hub_evaluation_data`) is given, else after the pass (a streamed split is read once)."""
    from ..data.hub_dataset import iqa_dataset_from_rows, load_hub_item

    labels: list[dict] = []

    def items():
        for row in source.rows():
            labels.append({key: row[key] for key in ("row", "id", "mos")})  # not the image: a stream is not kept
            label = source.label(row["row"])
            yield label, (label, row["image"])

    rows = list(score_stream(model, items(), load_hub_item, batch_size=batch_size, num_workers=num_workers,
                             progress=progress, total=source.num_rows, crops=crops))
    if data is None:
        data = iqa_dataset_from_rows(source, labels, facts=facts, normalize=normalize)
    return build_report(model, data, rows, normalize=normalize, hub_dataset=source.describe(), crops=crops)


def build_report(model, data, rows, normalize: bool = False, dataset: str = "imagefolder", data_dir=None,
                 hub_dataset: dict | None = None, crops: int = 1) -> dict:
    """The report of `rows` (one `ScoreRow` per row of `data`, in order) against `data`'s MOS."""
    info = read_iqa_info(data)
    mos = np.asarray(data["mos"], dtype=np.float64)
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
        "data_dir": None if data_dir is None else str(data_dir),
        "hub_dataset": hub_dataset,
        "created": record["timestamp"],
        "n": int(metrics["n"]),
        **{k: metrics[k] for k in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")},
        # how the logistic fit went: plcc_logistic_fit (ok / degenerate / skipped), its reason, the curve used
        **{k: v for k, v in metrics.items() if k.startswith("plcc_logistic_")},
        "mos_higher_is_better": higher_is_better,
        "mos_normalized": bool(normalize),
        "crops": crops,  # test-time crops per image (1: the centre crop)
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
