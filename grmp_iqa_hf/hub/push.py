"""Push models and IQA datasets to the Hugging Face Hub (`grmp-iqa push`, `grmp-iqa push-dataset`).

A pushed model repository holds what `from_pretrained` needs (config, safetensors weights, the remote code
for `trust_remote_code=True`), the image processor and tokenizer files, the model card rendered from
`hub_cards/model_card.md`, and the report the card's results come from (`report.json`, local paths removed).
With `adapter_only=True` the weights are `adapter_model.safetensors`: only the tensors that differ from
the base CLIP, which `from_pretrained` downloads and rebuilds the model on.

The Hub client is `huggingface_hub.HfApi`; it honours `HF_ENDPOINT` and `HF_TOKEN` (or `hf auth login`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants

from ..data import load_iqa_dataset
from ..json_io import write_json
from ..models import TINY_BACKBONE, load_backbone, load_model
from .cards import load_report, render_dataset_card, render_model_card

logger = logging.getLogger(__name__)

# Remote files a model push replaces, so that switching between full and prompts-only weights (or
# dropping a code file) leaves no stale file behind.
REPLACED_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.py"]
# Report keys that hold local paths (not published).
_LOCAL_PATH_KEYS = {"data_dir", "output_dir", "model_dir", "path", "pristine_dir"}


class HubRequestError(RuntimeError):
    """The Hub could not be reached, or refused a request (authentication, permissions, conflicts)."""


def _hub_call(what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - every failure of a Hub request (HTTP or network) is reported as one
        raise HubRequestError(f"{what} failed at {constants.ENDPOINT}: {type(err).__name__}: {err}") from err


def _check_online() -> None:
    if constants.HF_HUB_OFFLINE:
        raise RuntimeError("HF_HUB_OFFLINE is set: pushing needs the Hub (unset it, or point HF_ENDPOINT at a "
                           "Hub server you can reach)")


def public_report(report):
    """`report` without local paths (data/output folders, per-image file paths): what gets published."""
    if isinstance(report, dict):
        out = {k: public_report(v) for k, v in report.items() if k not in _LOCAL_PATH_KEYS}
        if out.get("model_source") == "local" and "model" in out:  # a provenance record of a local folder
            out["model"] = os.path.basename(os.path.normpath(str(out["model"])))
        return out
    if isinstance(report, list):
        return [public_report(v) for v in report]
    return report


def save_tokenizer(model, model_dir, save_directory) -> bool:
    """Save the CLIP tokenizer next to the model: the one in `model_dir` if it has one, else the base
    model's. Returns False (after a warning) when neither can be loaded; the model does not need it to
    score images (its prompts are tokenized into the config), only to change its prompts."""
    from transformers import AutoTokenizer

    base = model.config.base_model_name_or_path
    for source in (model_dir, base):
        if not source:
            continue
        try:
            if source == TINY_BACKBONE:
                tokenizer = load_backbone(TINY_BACKBONE)[1]
            elif not (Path(source) / "tokenizer_config.json").is_file() and os.path.isdir(source):
                continue
            else:
                tokenizer = AutoTokenizer.from_pretrained(source, revision=model.config.base_model_revision
                                                          if source == base else None)
        except (OSError, ValueError, KeyError) as err:
            logger.info("no tokenizer from %s: %s", source, err)
            continue
        tokenizer.save_pretrained(save_directory)
        return True
    logger.warning("no tokenizer found in %s or the base model %s: pushing without tokenizer files", model_dir, base)
    return False


def stage_model(model_dir, repo_id: str, save_directory, report: dict | None = None, revision: str | None = None,
                adapter_only: bool = False, base_model: str | None = None, license: str = "apache-2.0",
                datasets=None) -> dict:
    """Write everything a model push uploads into `save_directory`; returns a summary (files, sizes)."""
    model = load_model(str(model_dir))
    save_directory = Path(save_directory)
    model.save_pretrained(save_directory, adapter_only=adapter_only, base_model=base_model)
    adapter_keys = []
    if adapter_only:
        from safetensors import safe_open

        with safe_open(save_directory / "adapter_model.safetensors", "pt") as f:
            adapter_keys = list(f.keys())
        model.config.base_model_name_or_path = json.loads((save_directory / "config.json").read_text())[
            "base_model_name_or_path"]
    save_tokenizer(model, model_dir, save_directory)
    card = render_model_card(model, repo_id, report=report, revision=revision, adapter_only=adapter_only,
                             adapter_keys=adapter_keys, license=license, datasets=datasets)
    card.save(save_directory / "README.md")
    if report is not None:
        write_json(save_directory / "report.json", public_report(report))
    files = sorted(p.name for p in save_directory.iterdir() if p.is_file())
    return {"files": files, "bytes": {name: (save_directory / name).stat().st_size for name in files},
            "card": card}


def push_model(model_dir, repo_id: str, report=None, private: bool | None = None, revision: str | None = None,
               adapter_only: bool = False, base_model: str | None = None, commit_message: str | None = None,
               license: str = "apache-2.0", datasets=None, token: str | None = None):
    """Push the model saved in `model_dir` to `repo_id`, with a model card; returns the `CommitInfo`.

    Args:
        report: a report dict or the path of a report JSON (`grmp-iqa evaluate`, few-shot or MP-IQE
            protocol); its SRCC / PLCC (and PLCC after the logistic fit, when that fit is `ok`) go into the
            card's `model-index`.
        private: create the repository private (ignored when it exists).
        revision: a branch to push to (created from `main` when missing).
        adapter_only: push only the tensors that differ from the base CLIP (`adapter_model.safetensors`).
        base_model: the base CLIP's Hub id (or directory) to compare against and record, when the one in the
            config is not where others can find it (e.g. a local copy of a Hub model).
        datasets: Hub dataset ids (ORG/NAME) for the card's `datasets` (default: none; loader names such as
            `livec` are not Hub ids).
    """
    _check_online()
    if isinstance(report, (str, os.PathLike)):
        report = load_report(report)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="grmp-iqa-push-") as stage:
        staged = stage_model(model_dir, repo_id, stage, report=report, revision=revision, adapter_only=adapter_only,
                             base_model=base_model, license=license, datasets=datasets)
        repo_id = _hub_call("creating the repository", api.create_repo, repo_id, private=private, exist_ok=True).repo_id
        if revision:
            _hub_call(f"creating branch {revision!r}", api.create_branch, repo_id, branch=revision, exist_ok=True)
        kind = "prompts-only checkpoint" if adapter_only else "model"
        return _hub_call(
            "uploading", api.upload_folder, repo_id=repo_id, folder_path=stage, revision=revision,
            delete_patterns=REPLACED_PATTERNS,
            commit_message=commit_message or f"Upload {kind} ({len(staged['files'])} files) with grmp-iqa push",
        )


DATASET_FORMATS = ("files", "parquet")


def parquet_dataset(data):
    """The dataset `push_dataset(format="parquet")` pushes, from `load_iqa_dataset("imagefolder", ...)`'s: `image`
    (the files, embedded byte for byte by `push_to_hub`), `file_name` (the path in the folder), `mos` and the
    other metadata columns; no local paths in its info."""
    import datasets

    from ..data import image_paths

    columns = {"image": image_paths(data), "file_name": list(data["image_id"]), "mos": list(data["mos"])}
    features = {"image": datasets.Image(), "file_name": datasets.Value("string"), "mos": data.features["mos"]}
    for name in data.column_names:
        if name not in ("image", "image_id", "mos"):
            columns[name], features[name] = list(data[name]), data.features[name]
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def push_dataset(data_dir, repo_id: str, dataset: str = "imagefolder", private: bool | None = None,
                 license: str | None = None, pretty_name: str | None = None, commit_message: str | None = None,
                 token: str | None = None, format: str = "files", split: str = "train"):
    """Push an IQA image folder (images + `metadata.csv`) as a Hub dataset with a dataset card.

    The metadata is checked first (every bad row is named in one `DatasetMetadataError`); `dataset` is a
    registry key (e.g. `livec`) whose facts (scale, direction, citation, licence) fill the card.
    `format="files"`: the folder's files are uploaded as they are (hidden files skipped), so
    `datasets.load_dataset(repo_id)` and this package's loaders read the repository like the folder.
    `format="parquet"`: the card is committed, then `parquet_dataset` goes up as split `split` with
    `Dataset.push_to_hub`, which keeps the card's text and adds its `dataset_info` / `configs` to the front
    matter (two commits; the second one's `CommitInfo` is returned).
    """
    if format not in DATASET_FORMATS:
        raise ValueError(f"format must be one of {DATASET_FORMATS}, got {format!r}")
    _check_online()
    data_dir = Path(data_dir)
    if not (data_dir / "metadata.csv").is_file():
        raise FileNotFoundError(f"{data_dir}: no metadata.csv (push-dataset takes an image folder with metadata.csv)")
    data = load_iqa_dataset("imagefolder", data_dir)  # raises DatasetMetadataError naming every bad row
    card = render_dataset_card(data_dir, repo_id, dataset=None if dataset == "imagefolder" else dataset,
                               license=license, pretty_name=pretty_name)
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card).encode())]
    api = HfApi(token=token)
    repo_id = _hub_call("creating the repository", api.create_repo, repo_id, repo_type="dataset", private=private,
                        exist_ok=True).repo_id
    if format == "parquet":
        _hub_call("uploading the dataset card", api.create_commit, repo_id=repo_id, repo_type="dataset",
                  operations=operations, commit_message="Dataset card (grmp-iqa push-dataset)")
        return _hub_call("pushing the parquet dataset", parquet_dataset(data).push_to_hub, repo_id, split=split,
                         private=private, token=token,
                         commit_message=commit_message or f"Upload IQA dataset ({len(data)} images, parquet)")
    for path in sorted(data_dir.rglob("*")):
        relative = path.relative_to(data_dir)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts) and str(relative) != "README.md":
            operations.append(CommitOperationAdd(path_in_repo=relative.as_posix(), path_or_fileobj=str(path)))
    return _hub_call("uploading", api.create_commit, repo_id=repo_id, repo_type="dataset", operations=operations,
                     commit_message=commit_message or f"Upload IQA dataset ({len(operations) - 1} files)")


__all__ = ["push_model", "push_dataset", "parquet_dataset", "DATASET_FORMATS", "stage_model", "public_report",
           "save_tokenizer", "HubRequestError"]
