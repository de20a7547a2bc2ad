"""The ``pyiqa`` format: a pyiqa meta-info CSV (``meta_info_<Name>Dataset.csv``).

No-reference layout ``img_name,mos[,std,...]`` or full-reference
``ref_name,dist_name,mos|dmos`` (paths relative to ``image_dir``; a missing
extension is tried as .bmp/.png/.jpg...). The dataset is recognised from
``<Name>`` (pyiqa's KonIQ ``mos`` is the 0-100 z-score MOS) [sure for the files
checked: LIVEChallenge, KonIQ10k, CSIQ, LIVEIQA]. Rows are numbered by their
CSV line (the header is line 1).
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any, Dict, List

from ..registry import (
    CSIQ_TYPE_ALIASES, LIVE_DISTORTION_FOLDERS, IQADatasetFacts, dataset_facts, facts_for_pyiqa_meta_file,
)
from .build import _generic_facts, _Row, _Table
from .csv_txt import _kadid_name_fields, _tid_name_fields
from .paths import _abs_dir, _FileIndex, _norm_rel, _rel_display, _stem, _under
from .problems import _cell_text, _file_error, _Problems
from .tabular import _read_csv_rows

_CSIQ_NAME = re.compile(r"^(.+)\.([A-Za-z0-9]+)\.(\d+)\.\w+$")
_IMAGE_EXTS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def _parse_name_for(facts: IQADatasetFacts, name: str) -> Dict[str, Any]:
    """ref / distortion / level from a file name, for datasets with structured names."""
    base = posixpath.basename(name)
    out: Dict[str, Any] = {}
    if facts.name == "kadid10k":
        out = _kadid_name_fields(base) or {}
    elif facts.name == "tid2013":
        out = _tid_name_fields(base) or {}
    elif facts.name == "csiq":
        m = _CSIQ_NAME.match(base)
        if m:
            canonical = CSIQ_TYPE_ALIASES.get(re.sub(r"[^a-z0-9]", "", m.group(2).lower()))
            out = {"ref": m.group(1), "distortion": canonical or m.group(2), "level": int(m.group(3))}
    elif facts.name == "live":
        parts = _norm_rel(name).split("/")
        folders = {f for f, _ in LIVE_DISTORTION_FOLDERS}
        hit = [p for p in parts[:-1] if p.lower() in folders]
        if hit:
            out = {"distortion": hit[-1].lower()}
    return out


def _load_pyiqa(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read a pyiqa meta-info CSV; the dataset (and so its score scale) is recognised from the file name."""
    root = _abs_dir(data_dir)
    meta = opts.get("metadata_file")
    if meta is None:
        found = sorted(
            os.path.join(root, f) for f in (os.listdir(root) if os.path.isdir(root) else [])
            if re.match(r"meta_info_.*\.csv$", f)
        )
        if len(found) != 1:
            raise FileNotFoundError(
                f"pass metadata_file=...: expected exactly one meta_info_*.csv in {root}, found {len(found)}"
            )
        meta = found[0]
    meta = _under(root, meta)
    image_dir = opts.get("image_dir")
    image_dir = root if image_dir is None else _under(root, image_dir)
    facts_opt = opts.get("facts")
    facts = dataset_facts(facts_opt) if facts_opt is not None else (facts_for_pyiqa_meta_file(meta) or _generic_facts("pyiqa", root))
    if facts.pyiqa_mos_range is not None and opts.get("mos_range") is None:
        facts = facts.replace(mos_range=facts.pyiqa_mos_range)
    header, csv_rows = _read_csv_rows(meta)
    low = [h.lower() for h in header]
    full_reference = len(low) >= 3 and "ref" in low[0] and "dist" in low[1]
    name_col, mos_col = (1, 2) if full_reference else (0, 1)
    if len(header) <= mos_col:
        raise _file_error(meta, f"expected an image column then a score column, got header {header}", row=1)
    std_col = next((i for i, h in enumerate(low) if h in ("std", "mos_std", "sd")), None)
    extra = [i for i in range(len(header)) if i not in (0, name_col, mos_col, std_col)]
    problems = _Problems(meta)
    include_training = bool(opts.get("include_training", False))
    lazy_index: Dict[str, _FileIndex] = {}
    rows: List[_Row] = []
    dropped = 0
    structured = facts.name in ("kadid10k", "tid2013", "csiq", "live")
    for line, values in csv_rows:
        get = lambda i: values[i] if i is not None and i < len(values) else None  # noqa: E731
        name = _cell_text(get(name_col))
        if facts.name == "livec" and not include_training and re.fullmatch(r"t[1-7]\.bmp", posixpath.basename(name), re.I):
            dropped += 1
            continue
        path = os.path.join(image_dir, *_norm_rel(name).split("/")) if name else None
        if path and opts["check_files"] and not os.path.isfile(path):
            cands = [path + e for e in _IMAGE_EXTS] if not os.path.splitext(name)[1] else []
            hit = next((c for c in cands if os.path.isfile(c)), None)
            if hit is None:
                if "i" not in lazy_index:
                    lazy_index["i"] = _FileIndex(image_dir)
                idx = lazy_index["i"]
                hit = idx.find(name) or next((idx.find(name + e) for e in _IMAGE_EXTS if idx.find(name + e)), None)
            path = hit or path
        fields: Dict[str, Any] = {}
        if std_col is not None:
            fields["mos_std"] = problems.optional_number(line, name, get(std_col), header[std_col])
        if full_reference:
            fields["ref"] = _stem(_cell_text(get(0))) or None
        if structured:
            parsed = _parse_name_for(facts, name)
            for k in ("ref", "distortion", "distortion_id", "level"):
                if k == "ref" and fields.get("ref"):
                    continue
                fields[k] = parsed.get(k)
        for i in extra:
            fields[header[i]] = get(i)
        image_id = _rel_display(path, root) if path else _norm_rel(name)
        if image_id.startswith(".."):
            image_id = _norm_rel(name)
        rows.append(_Row(line, name, path, get(mos_col), fields, image_id=image_id))
    columns: Dict[str, str] = {}
    if std_col is not None:
        columns["mos_std"] = "float64"
    if full_reference or structured:
        columns["ref"] = "string"
    if structured:
        columns.update(distortion="string", distortion_id="int64", level="int64")
    for i in extra:
        columns[header[i]] = "string"
    details = {
        "layout": "full-reference (ref, dist, score)" if full_reference else "no-reference (image, score)",
        "image_dir": image_dir,
        "excluded_training_images": dropped,
        "row_numbers": "CSV line number (header = line 1)",
    }
    return _Table("pyiqa", root, meta, rows, columns, problems, facts, details)
