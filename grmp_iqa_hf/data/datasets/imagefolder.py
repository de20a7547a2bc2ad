"""The ``imagefolder`` format: a folder of images and a ``metadata.csv`` / ``metadata.jsonl``.

``metadata.csv`` (or ``.jsonl``) has ``file_name`` (relative to ``data_dir``)
and ``mos``; ``mos_std`` is read as float, ``level`` as int, every other
column is kept as the raw string (e.g. ``scenes="human;night"``).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from .build import _generic_facts, _resolve_facts, _Row, _Table
from .paths import _abs_dir, _norm_rel, _under
from .problems import _cell_text, _file_error, _parse_int, _Problems
from .tabular import _read_csv_rows, _read_jsonl_rows

_IMAGEFOLDER_TYPES = {"mos_std": "float64", "level": "int64"}


def _load_imagefolder(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read ``metadata.csv`` / ``metadata.jsonl`` (or the ``metadata_file`` option) of an image folder."""
    root = _abs_dir(data_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data_dir does not exist or is not a folder: {root}")
    meta = opts.get("metadata_file")
    if meta is None:
        for cand in ("metadata.csv", "metadata.jsonl"):
            if os.path.isfile(os.path.join(root, cand)):
                meta = os.path.join(root, cand)
                break
        if meta is None:
            raise FileNotFoundError(f"no metadata.csv or metadata.jsonl in {root}")
    meta = _under(root, meta)
    problems = _Problems(meta)
    if meta.lower().endswith(".jsonl"):
        header, records = _read_jsonl_rows(meta)
    else:
        header, csv_rows = _read_csv_rows(meta)
        records = []
        for line, values in csv_rows:
            if len(values) > len(header):
                problems.add(line, values[0] if values else "", f"row has {len(values)} fields, header has {len(header)}")
            records.append((line, {h: (values[i] if i < len(values) else None) for i, h in enumerate(header)}))
    keys = {h.lower(): h for h in header}
    for need in ("file_name", "mos"):
        if need not in keys:
            raise _file_error(meta, f"no {need!r} column (columns: {header})", row=1)
    fn_key, mos_key = keys["file_name"], keys["mos"]
    extra = [h for h in header if h not in (fn_key, mos_key) and h.lower() not in ("image", "image_id")]
    columns = {h: _IMAGEFOLDER_TYPES.get(h, "string") for h in extra}
    rows: List[_Row] = []
    for line, rec in records:
        name = _cell_text(rec.get(fn_key))
        path = os.path.join(root, *_norm_rel(name).split("/")) if name else None
        fields: Dict[str, Any] = {}
        for h in extra:
            v = rec.get(h)
            if columns[h] == "float64":
                fields[h] = problems.optional_number(line, name, v, h)
            elif columns[h] == "int64":
                x, err = _parse_int(v, h, required=False)
                if err:
                    problems.add(line, name, err)
                fields[h] = x
            else:
                fields[h] = None if v is None else (v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v))
        rows.append(_Row(line, name, path, rec.get(mos_key), fields, image_id=_norm_rel(name) if name else ""))
    facts = _resolve_facts(opts.get("facts"), _generic_facts("imagefolder", root))
    return _Table("imagefolder", root, meta, rows, columns, problems, facts)
