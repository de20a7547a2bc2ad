"""Model and dataset cards for the Hub, rendered from the Jinja2 templates in `hub_cards/`.

The model card's YAML front matter is built with `huggingface_hub.ModelCardData`; its `model-index`
holds SRCC / PLCC / PLCC after logistic fit (Hub metric ids `spearmanr`, `pearsonr`) from a report of
`grmp-iqa evaluate` (one dataset, all images) or of a few-shot / MP-IQE protocol run (the median over
splits). The values are written unrounded, so the card's SRCC equals the report's.

The logistic PLCC (and the RMSE of the card's table) are published only when the report says the fit
went well: `plcc_logistic_fit == "ok"` for an `evaluate` report, and in every split for a protocol report
(a median over the splits whose fit worked would drop the worst ones). Reports that do not record the fit
(older versions) publish neither. `datasets:` holds only Hub dataset ids given by the caller
(`--dataset-id ORG/NAME`), never this package's loader names (`imagefolder`, `livec`).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import transformers
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .. import __version__
from ..data.registry import DATASET_REGISTRY
from ..evaluation.metrics import MIN_SLOPE_SCALE
from ..hub_cards import DATASET_CARD_TEMPLATE, MODEL_CARD_TEMPLATE
from ..methods import METHODS
from ..models import TINY_BACKBONE

PACKAGE_URL = "https://pypi.org/project/grmp-iqa-hf/"
TASK_TAG = "image-quality-assessment"
# The metrics of the card's model-index: (report key, Hub metric id, readable name).
MODEL_INDEX_METRICS = (
    ("srcc", "spearmanr", "SRCC"),
    ("plcc", "pearsonr", "PLCC"),
    ("plcc_logistic", "pearsonr", "PLCC after logistic fit"),
)
# Published only when the logistic fit is ok (see the module docstring).
LOGISTIC_METRICS = ("plcc_logistic", "rmse")
TABLE_METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")
# Each method's card text (name, paper, description, citation, its own lines) is in `methods.METHODS`.


# ---------------------------------------------------------------------------- reports


def _evaluate_fit(report: dict) -> dict:
    """`{"ok": bool, "note": str}` for the logistic fit of an `evaluate` report."""
    status = report.get("plcc_logistic_fit")
    if status == "ok":
        return {"ok": True, "note": ""}
    if status is None:
        return {"ok": False, "note": "The report does not record how the logistic fit went (it predates "
                                     "`plcc_logistic_fit`), so no logistic PLCC or RMSE is given."}
    reason = report.get("plcc_logistic_fit_reason")
    return {"ok": False, "note": f"The logistic fit was {status}" + (f" ({reason})" if reason else "")
                                 + ", so no logistic PLCC or RMSE is given."}


def _protocol_fit(splits: list) -> dict:
    """`{"ok": bool, "note": str}`: ok only when the fit was ok in every split."""
    bad = [s for s in splits if s.get("plcc_logistic_fit") != "ok"]
    if not bad:
        return {"ok": True, "note": ""}
    statuses = sorted({str(s.get("plcc_logistic_fit") or "not recorded") for s in bad})
    return {"ok": False,
            "note": f"The logistic fit was not ok in {len(bad)} of {len(splits)} splits ({', '.join(statuses)}); "
                    "a median over the others would leave out the worst splits, so no logistic PLCC or RMSE "
                    "is given."}


def _published_metrics(values: dict, fit: dict) -> dict:
    return {k: (None if k in LOGISTIC_METRICS and not fit["ok"] else values.get(k)) for k in TABLE_METRICS}


def hub_dataset_ids(datasets) -> list[str]:
    """The card's `datasets:`: Hub dataset ids `ORG/NAME` (duplicates dropped). Raises `ValueError` for
    anything else, loader names of this package (`imagefolder`, `livec`) in particular."""
    ids: list[str] = []
    for name in [datasets] if isinstance(datasets, str) else list(datasets or []):
        hint = ""
        if isinstance(name, str) and (name in DATASET_REGISTRY or name == "imagefolder"):
            hint = f" ({name!r} is a loader name of this package, not a Hub dataset)"
        if not isinstance(name, str) or name.count("/") != 1:
            raise ValueError(f"a dataset id for the card must be a Hub dataset id ORG/NAME, got {name!r}{hint}")
        try:
            validate_repo_id(name)
        except HFValidationError as err:
            raise ValueError(f"a dataset id for the card must be a Hub dataset id ORG/NAME: {err}") from None
        if name not in ids:
            ids.append(name)
    return ids


def report_results(report: dict) -> dict:
    """What a card needs from a report: dataset, protocol and metrics.

    Accepts the report of `grmp-iqa evaluate` (`srcc` etc. at the top level) and the reports of the
    few-shot / MP-IQE protocol runners (`median` over `splits`). Raises `ValueError` otherwise.
    """
    if not isinstance(report, dict):
        raise ValueError(f"a report must be a JSON object, got {type(report).__name__}")
    if "median" in report and "splits" in report:
        config = report.get("config") or {}
        dataset = report.get("dataset") or config.get("dataset_name") or config.get("dataset") or "unknown"
        n_train = config.get("num_images") or config.get("num_train")
        train_text = f"{n_train} training images" if n_train else (
            f"{config.get('train_fraction'):.0%} of the images for training" if config.get("train_fraction") else
            "a train/test split")
        splits = report.get("num_splits", len(report["splits"]))
        n_test = [s.get("n_test") for s in report["splits"] if s.get("n_test") is not None]
        fit = _protocol_fit(report["splits"])
        return {
            "kind": "protocol",
            "dataset": str(dataset),
            "split": "test",
            "protocol": f"{train_text}, median over {splits} random splits (model selection: "
                        f"{report.get('selection', 'n/a')})",
            "n": f"{int(sum(n_test) / len(n_test))} test per split" if n_test else "",
            "metrics": _published_metrics(report["median"], fit),
            "logistic_fit": fit,
            "method": report.get("method") or config.get("method"),
            "description": f"Few-shot protocol on {dataset}: train on {train_text}, test on the remaining "
                           f"images, repeated over {splits} random splits; the table gives the median.",
            "lower_is_better_labels": False,
        }
    if "srcc" in report:
        dataset = report.get("dataset") or "unknown"
        fit = _evaluate_fit(report)
        return {
            "kind": "evaluate",
            "dataset": str(dataset),
            "dataset_name": report.get("dataset_name"),
            "split": "all",
            "protocol": "all images, no training on this dataset" if not report.get("split") else report["split"],
            "n": report.get("n", ""),
            "metrics": _published_metrics(report, fit),
            "logistic_fit": fit,
            "description": f"`grmp-iqa evaluate` on {report.get('dataset_name') or dataset} "
                           f"({report.get('n')} images scored, {report.get('num_failed', 0)} unreadable).",
            "lower_is_better_labels": report.get("mos_higher_is_better") is False,
        }
    raise ValueError("not a report of this package: expected `srcc` (grmp-iqa evaluate) or `median` and "
                     "`splits` (few-shot / MP-IQE protocol)")


def load_report(path) -> dict:
    """Read a report JSON file, with a clear error when it is not one."""
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read report {path}: {err}") from err
    report_results(report)  # validates
    return report


def eval_results(results: dict, model_name: str, dataset_id: str | None = None) -> list[EvalResult]:
    """The card's `model-index` entries: one per metric of `MODEL_INDEX_METRICS` that is a finite number
    (the logistic PLCC only when its fit was ok: `report_results` leaves it out otherwise). The dataset's
    `type` is `dataset_id` (the Hub id of the evaluation data) when given, else the report's dataset key."""
    facts = DATASET_REGISTRY.get(results["dataset"])
    entries = []
    for key, metric_id, name in MODEL_INDEX_METRICS:
        value = results["metrics"].get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        entries.append(EvalResult(
            task_type=TASK_TAG, task_name="Image Quality Assessment",
            dataset_type=dataset_id or results["dataset"],
            dataset_name=results.get("dataset_name") or (facts.display_name if facts else results["dataset"]),
            dataset_split=results["split"],
            metric_type=metric_id, metric_name=name, metric_value=float(value),
            metric_config=results["protocol"],
        ))
    return entries


# ---------------------------------------------------------------------------- model cards


def _fmt(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _is_hub_id(name) -> bool:
    # "org/name" that is not a local path: something the Hub can resolve for others
    return bool(name) and name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/"))


def _model_details(model, method_details: dict) -> dict:
    config = model.config
    vision = config.clip_config.vision_config
    total = sum(p.numel() for p in model.parameters())
    outside = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("clip."))
    if config.num_visual_prompts:
        visual = f"{config.num_visual_prompts} tokens in each of {config.num_prompted_layers} vision layers"
    else:
        visual = "none"
    return {
        "vision_layers": vision.num_hidden_layers, "vision_width": vision.hidden_size,
        "image_size": config.image_size, "text_prompts": method_details["text_prompts"], "visual_prompts": visual,
        "preprocessing": (f"resize ({config.resize_mode}, {config.resize_size} px, {config.resample}), centre crop "
                          f"{config.image_size}, {config.image_normalization} normalisation"),
        "total_parameters": f"{total:,}", "prompt_parameters": f"{outside:,}",
    }


def _training_section(config) -> dict | None:
    info = config.training_info
    if not info:
        return None
    stage = info.get("stage") or info.get("method") or "training"
    data = info.get("data") or info.get("dataset")
    summary = f"Stage: {stage}." + (f" Data: {data}." if data else "")
    return {"summary": summary, "json": json.dumps(info, indent=2, default=str)}


def model_card_context(model, repo_id: str, report: dict | None = None, revision: str | None = None,
                       adapter_only: bool = False, adapter_keys=(), license: str = "apache-2.0",
                       datasets=None) -> dict:
    """Everything `hub_cards/model_card.md` uses, plus `card_data` (a `ModelCardData`)."""
    config = model.config
    if config.model_type not in METHODS:
        raise ValueError(f"no card for model type {config.model_type!r}; known: {sorted(METHODS)}")
    method = METHODS[config.model_type]
    method_details = method.card_details(config)  # the method's own card lines
    model_name = repo_id.split("/")[-1]
    base = config.base_model_name_or_path
    tiny = base == TINY_BACKBONE or not base
    results = report_results(report) if report is not None else None
    dataset_ids = hub_dataset_ids(datasets)
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        base_model=base if _is_hub_id(base) else None,
        datasets=dataset_ids or None,
        tags=[TASK_TAG, "blind-image-quality-assessment", "clip", "prompt-learning", method.tag, "grmp-iqa-hf",
              "custom_code", *(["adapter"] if adapter_only else [])],
        model_name=model_name,
        eval_results=(eval_results(results, model_name, dataset_ids[0] if len(dataset_ids) == 1 else None)
                      if results else None),
    )
    dataset_bibtex = []
    facts = DATASET_REGISTRY.get(results["dataset"]) if results else None
    if facts and facts.bibtex:  # the evaluation dataset's citation
        dataset_bibtex.append(facts.bibtex.strip())
    if results:
        rows = [{
            "dataset": results.get("dataset_name") or results["dataset"], "protocol": results["protocol"],
            "n": results["n"], **{k: _fmt(results["metrics"].get(k)) for k in TABLE_METRICS},
        }]
        direction = ("The dataset's labels are lower-is-better (DMOS); they were flipped before computing the "
                     "correlations, so higher is better throughout." if results["lower_is_better_labels"] else
                     "Higher is better for every column except RMSE.")
        results = {"rows": rows, "description": results["description"], "direction_note": direction,
                   "logistic_note": results["logistic_fit"]["note"]}
    training = _training_section(config)
    revision_text = f" (revision `{config.base_model_revision}`)" if config.base_model_revision else ""
    return {
        "card_data": card_data,
        "model_name": model_name,
        "repo_id": repo_id,
        "revision": revision,
        "class_name": type(model).__name__,
        "method": method,
        "tiny_backbone": tiny,
        "base_model_text": (f"`{base}`{revision_text}" if base else "unknown"),
        "details": _model_details(model, method_details),
        "weights_text": ("prompts only (`adapter_model.safetensors`, "
                         f"{len(adapter_keys)} tensors), rebuilt on the base model at load time" if adapter_only
                         else "full model (`model.safetensors`)"),
        "adapter_only": adapter_only,
        "adapter_clip_tensors": any(k.startswith("clip.") for k in adapter_keys),
        "reconstruction_notes": method_details.get("reconstruction_notes", ""),
        "training": training,
        "results": results,
        "training_data_text": ("the training data recorded above" if training else "the data the prompts were tuned on"),
        "dataset_bibtex": dataset_bibtex,
        "package_url": PACKAGE_URL,
        "logistic_min_slope": f"{MIN_SLOPE_SCALE:g}",
        "package_version": __version__,
        "transformers_version": transformers.__version__,
    }


def render_model_card(model, repo_id: str, **options) -> ModelCard:
    """The model card (a `huggingface_hub.ModelCard`; `.save(path)` / `str(card)`) of `model` pushed as
    `repo_id`; `options` as in `model_card_context`."""
    context = model_card_context(model, repo_id, **options)
    card_data = context.pop("card_data")
    return ModelCard(_tidy(ModelCard.from_template(card_data, template_path=str(MODEL_CARD_TEMPLATE), **context)))


def _tidy(card) -> str:
    # template conditionals leave runs of blank lines: keep at most one
    return re.sub(r"\n{3,}", "\n\n", str(card)).rstrip() + "\n"


# ---------------------------------------------------------------------------- dataset cards


def dataset_card_context(data_dir, repo_id: str, dataset: str | None = None, license: str | None = None,
                         pretty_name: str | None = None) -> dict:
    """Everything `hub_cards/dataset_card.md` uses, for an image folder with `metadata.csv`; `dataset` is a
    registry key (e.g. `livec`) whose recorded facts (score scale, direction, citation, licence) are used."""
    import csv

    data_dir = Path(data_dir)
    metadata = data_dir / "metadata.csv"
    with open(metadata, newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        num_images = sum(1 for _ in reader)
    if "file_name" not in columns:
        raise ValueError(f"{metadata}: no `file_name` column (columns: {columns})")
    facts = DATASET_REGISTRY.get(dataset) if dataset else None
    score_column = "mos" if "mos" in columns else ("dmos" if "dmos" in columns else columns[1])
    others = [c for c in columns if c not in ("file_name", score_column)]
    license_files = sorted(p.name for p in data_dir.glob("LICEN[CS]E*"))
    license_text = (facts.license_note if facts and facts.license_note else
                    "See the licence of the original release.")
    if license_files:
        license_text += " The release's own terms are in " + ", ".join(f"`{n}`" for n in license_files) + "."
    direction = ("higher is better" if (facts is None or facts.higher_is_better is not False) else
                 "lower is better")
    card_data = DatasetCardData(
        license=license or "other",
        pretty_name=pretty_name or (facts.display_name if facts else repo_id.split("/")[-1]),
        task_categories=["image-classification"],
        tags=[TASK_TAG, "blind-image-quality-assessment", "mos", "grmp-iqa-hf"],
        size_categories=[_size_category(num_images)],
    )
    return {
        "card_data": card_data,
        "pretty_name": card_data.pretty_name,
        "repo_id": repo_id,
        "description": (f"{facts.display_name}: {facts.citation}" if facts else
                        "An image quality assessment dataset: images with subjective quality scores."),
        "num_images": num_images,
        "score_column": score_column,
        "score_kind": facts.score_kind if facts else "subjective quality score",
        "mos_range": list(facts.mos_range) if facts and facts.mos_range else None,
        "direction": direction,
        "other_columns": ", ".join(f"`{c}`" for c in others) or "none",
        "columns_text": ", ".join(columns[1:]),
        "homepage": facts.homepage if facts else "",
        "license_text": license_text,
        "bibtex": facts.bibtex.strip() if facts and facts.bibtex else "",
        "local_dir": repo_id.split("/")[-1],
        "package_url": PACKAGE_URL,
    }


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def render_dataset_card(data_dir, repo_id: str, **options) -> DatasetCard:
    """The dataset card of an IQA image folder pushed as `repo_id`; `options` as in `dataset_card_context`."""
    context = dataset_card_context(data_dir, repo_id, **options)
    card_data = context.pop("card_data")
    return DatasetCard(_tidy(DatasetCard.from_template(card_data, template_path=str(DATASET_CARD_TEMPLATE), **context)))
