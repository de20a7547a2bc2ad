"""Turning a loader's rows into a :class:`datasets.Dataset`.

Each format's loader only reads its release into a :class:`_Table` of raw
rows; :func:`_finalize` is the one place that parses the scores, checks the
image files and duplicates, normalizes on request and attaches the dataset's
registry facts (``dataset.info``), so every format behaves the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..registry import IQADatasetFacts, dataset_facts, normalize_mos
from .paths import _norm_rel, _rel_display
from .problems import _is_blank, _parse_number, _Problems

_INFO_KEY = "grmp_iqa"


@dataclasses.dataclass
class _Row:
    """One metadata row as a loader read it; the score is parsed and the file checked in :func:`_finalize`."""

    row: Optional[int]
    file_name: str  # as the metadata names it (for messages)
    path: Optional[str]  # resolved absolute path; None = could not be found
    mos: Any  # raw, parsed in _finalize
    fields: Dict[str, Any] = dataclasses.field(default_factory=dict)
    image_id: Optional[str] = None  # defaults to path relative to the root
    file_known: bool = True  # False: the file name could not be built (already reported)


@dataclasses.dataclass
class _Table:
    """A loader's result: its rows, extra columns, problems found so far, facts and loading details."""

    fmt: str
    root: str
    source: str
    rows: List[_Row]
    columns: Dict[str, str]  # extra column -> datasets Value dtype (or "raw_mos_std")
    problems: _Problems
    facts: IQADatasetFacts
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)


_COLUMN_ORDER = ("mos_std", "ref", "distortion", "distortion_id", "level", "scenes")


def _finalize(
    table: _Table,
    *,
    normalize: bool,
    check_files: bool,
    mos_range: Optional[Sequence[float]],
    higher_is_better: Optional[bool],
):
    """The :class:`datasets.Dataset` of ``table``, or one :class:`DatasetMetadataError` naming every bad row."""
    import datasets

    problems = table.problems
    seen: Dict[str, Tuple[Optional[int], str]] = {}
    mos_values: List[float] = []
    good_rows: List[_Row] = []
    for r in table.rows:
        ok = True
        if _is_blank(r.file_name):
            problems.add(r.row, "", "file name is empty")
            ok = False
        mos, err = _parse_number(r.mos, "MOS")
        if err:
            problems.add(r.row, r.file_name, err)
            ok = False
        if check_files and r.file_known and not _is_blank(r.file_name):
            if r.path is None or not os.path.isfile(r.path):
                shown = r.path if r.path is not None else r.file_name
                problems.add(r.row, r.file_name, f"image file not found: {shown}")
                ok = False
        if not _is_blank(r.file_name):
            key = os.path.normcase(os.path.abspath(r.path)) if r.path else _norm_rel(r.file_name).lower()
            if key in seen:
                first_row, first_name = seen[key]
                where = f"row {first_row}" if first_row is not None else "an earlier row"
                problems.add(r.row, r.file_name, f"duplicate row: same image file as {where} ({first_name})")
                ok = False
            else:
                seen[key] = (r.row, r.file_name)
        if ok:
            good_rows.append(r)
            mos_values.append(mos)
    problems.raise_if_any()

    facts = table.facts
    if mos_range is not None or higher_is_better is not None:
        facts = facts.replace(
            mos_range=tuple(float(v) for v in mos_range) if mos_range is not None else facts.mos_range,
            higher_is_better=higher_is_better if higher_is_better is not None else facts.higher_is_better,
        )

    data: Dict[str, list] = {
        "image": [r.path for r in good_rows],
        "image_id": [
            r.image_id if r.image_id is not None else _rel_display(r.path, table.root) for r in good_rows
        ],
        "mos": mos_values,
    }
    feats: Dict[str, Any] = {
        "image": datasets.Image(),
        "image_id": datasets.Value("string"),
        "mos": datasets.Value("float64"),
    }
    ordered = [c for c in _COLUMN_ORDER if c in table.columns] + [
        c for c in table.columns if c not in _COLUMN_ORDER
    ]
    for col in ordered:
        data[col] = [r.fields.get(col) for r in good_rows]
        dtype = table.columns[col]
        feats[col] = datasets.Value(dtype)

    normalization = None
    if normalize:
        if facts.mos_range is None or facts.higher_is_better is None:
            raise ValueError(
                f"normalize=True needs the score range and direction of {facts.name!r}, which are "
                "unknown; pass facts='<registry name>' or mos_range=(low, high) and higher_is_better=..."
            )
        raw = np.asarray(mos_values, dtype=np.float64)
        lo, hi = facts.mos_range
        unclipped = normalize_mos(raw, facts, clip=False)
        normed = np.clip(unclipped, 0.0, 1.0)
        n_clipped = int(np.sum((unclipped < 0.0) | (unclipped > 1.0)))
        data["mos"] = normed.tolist()
        data["mos_raw"] = raw.tolist()
        feats["mos_raw"] = datasets.Value("float64")
        if "mos_std" in data:
            data["mos_std_raw"] = data["mos_std"]
            data["mos_std"] = [None if s is None else float(s) / (hi - lo) for s in data["mos_std_raw"]]
            feats["mos_std_raw"] = datasets.Value("float64")
        normalization = {
            "formula": (
                f"mos = (published - {lo:g}) / ({hi:g} - {lo:g})"
                + ("" if facts.higher_is_better else ", then 1 - x (published score is lower-is-better)")
                + ", clipped to [0, 1]"
            ),
            "flipped": not facts.higher_is_better,
            "clipped_values": n_clipped,
            "published_values_in": "mos_raw",
            "mos_std": "divided by (high - low); published values in mos_std_raw" if "mos_std" in data else None,
        }
        # keep column order: image, image_id, mos, mos_raw, ...
        order = ["image", "image_id", "mos", "mos_raw"] + [
            c for c in data if c not in ("image", "image_id", "mos", "mos_raw")
        ]
        data = {c: data[c] for c in order}
        feats = {c: feats[c] for c in order}

    payload = {
        "format": table.fmt,
        "dataset": facts.name,
        "display_name": facts.display_name,
        "score_kind": facts.score_kind,
        "mos_normalized": bool(normalize),
        "mos_range": [0.0, 1.0] if normalize else (list(facts.mos_range) if facts.mos_range else None),
        "higher_is_better": True if normalize else facts.higher_is_better,
        "published_mos_range": list(facts.mos_range) if facts.mos_range else None,
        "published_higher_is_better": facts.higher_is_better,
        "normalization": normalization,
        "group_splits_by_reference": facts.group_splits_by_reference,
        "num_rows": len(good_rows),
        "root": table.root,
        "source": table.source,
        "details": table.details,
        "facts": facts.to_dict(),
    }
    features = datasets.Features(feats)
    info = datasets.DatasetInfo(
        features=features,
        description=json.dumps({_INFO_KEY: payload}, ensure_ascii=False, default=str),
        citation=facts.bibtex,
        homepage=facts.homepage,
        license=facts.license_note,
        dataset_name=facts.name,
    )
    return datasets.Dataset.from_dict(data, features=features, info=info)


def read_iqa_info(dataset) -> Dict[str, Any]:
    """The loading facts :func:`load_iqa_dataset` stored in ``dataset.info.description``.

    Keys include ``dataset``, ``format``, ``score_kind``, ``mos_normalized``,
    ``mos_range`` / ``higher_is_better`` (of the ``mos`` column as it is now),
    ``published_mos_range`` / ``published_higher_is_better``, ``normalization``,
    ``group_splits_by_reference``, ``source``, ``details`` and ``facts`` (the
    full registry record). Raises ``ValueError`` for datasets not built here.
    """
    try:
        return json.loads(dataset.info.description)[_INFO_KEY]
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise ValueError("this dataset was not built by load_iqa_dataset (no IQA info found)") from exc


def _generic_facts(fmt: str, data_dir: str) -> IQADatasetFacts:
    """Facts for a dataset the registry does not know: no score range or direction."""
    return IQADatasetFacts(
        name=fmt,
        display_name=os.path.basename(os.path.abspath(str(data_dir))) or fmt,
        score_kind="MOS",
        mos_range=None,
        higher_is_better=None,
        notes="Unknown dataset: score range and direction not recorded; pass facts=... to attach them.",
    )


def _resolve_facts(facts_opt, default: IQADatasetFacts) -> IQADatasetFacts:
    """The ``facts`` option looked up in the registry, else ``default``."""
    if facts_opt is None:
        return default
    return dataset_facts(facts_opt)
