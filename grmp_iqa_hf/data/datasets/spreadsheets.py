"""Releases whose scores are a spreadsheet (or its CSV / text export): CSIQ and SPAQ.

Rows are numbered as the sheet numbers them (.xlsx) or by their line (exports).
Reading .xlsx needs the ``xlsx`` extra (``openpyxl``); the exports do not.

* ``csiq``: ``csiq.DMOS.xlsx`` sheet ``all_by_image`` (else the first sheet
  with an image/dst_type/dmos header row) with columns image, dst_idx,
  dst_type, dst_lev, dmos_std, dmos; or a ``csiq_dmos.csv`` / ``.txt`` export
  in that column order. Images ``dst_imgs/<folder>/<image>.<TAG>.<level>.png``
  with noise -> awgn/AWGN, jpeg -> jpeg/JPEG, jpeg 2000 -> jpeg2000/jpeg2000,
  fnoise -> fnoise/fnoise, blur -> blur/BLUR, contrast -> contrast/contrast,
  looked up case-insensitively anywhere under ``dst_imgs/`` [folders, tags and
  columns: sure; the exact dst_type spellings are matched loosely].
* ``spaq``: ``Annotations/MOS and Image attribute scores.xlsx`` (Image name,
  MOS, Brightness, Colorfulness, Contrast, Noisiness, Sharpness), images in
  ``TestImage/`` [sure].
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from ..registry import CSIQ_DISTORTIONS, CSIQ_TYPE_ALIASES, dataset_facts
from .build import _resolve_facts, _Row, _Table
from .paths import _ci_path, _image_index, _image_path, _metadata_location
from .problems import _cell_text, _file_error, _is_blank, _parse_int, _Problems
from .tabular import _get, _read_csv_rows, _table_with_header
from .xlsx import read_xlsx_rows, xlsx_sheet_names

# --- CSIQ ------------------------------------------------------------------------

_CSIQ_COLUMNS = ("image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos")


def _csiq_records(path: str, sheet) -> Tuple[List[Tuple[int, Dict[str, Any]]], str]:
    """(row number, {column: value}) from the CSIQ DMOS spreadsheet or a CSV / text export."""
    low = path.lower()
    if low.endswith((".xlsx", ".xlsm")):
        if sheet is None:
            names = xlsx_sheet_names(path)
            preferred = [n for n in names if n.lower() == "all_by_image"]
            candidates = preferred + [n for n in names if n not in preferred]
        else:
            candidates = [sheet]
        for cand in candidates:
            cols, rows = _table_with_header(read_xlsx_rows(path, cand), ("image", "dmos", "dst_type"))
            if cols is not None:
                recs = [(r, {c: _get(v, cols, c) for c in _CSIQ_COLUMNS}) for r, v in rows]
                return recs, f"{os.path.basename(path)} [sheet {cand}]"
        raise _file_error(path, "no sheet has a header row with image, dst_type and dmos columns")
    # text / CSV export
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        lines = [(i, ln.rstrip("\r\n")) for i, ln in enumerate(f, start=1) if ln.strip()]
    recs: List[Tuple[int, Dict[str, Any]]] = []
    header: Optional[List[str]] = None
    for i, ln in lines:
        if low.endswith(".csv"):
            fields = next(csv.reader([ln]))
        elif "\t" in ln:
            fields = ln.split("\t")
        else:
            fields = ln.split()
            if len(fields) == 7:  # "jpeg 2000" split in two by whitespace
                fields = fields[:2] + [fields[2] + " " + fields[3]] + fields[4:]
        fields = [x.strip() for x in fields]
        if header is None and any(x.lower() == "dmos" for x in fields):
            header = [x.lower() for x in fields]
            continue
        names = header if header is not None else list(_CSIQ_COLUMNS)
        recs.append((i, {c: (fields[names.index(c)] if c in names and names.index(c) < len(fields) else None) for c in _CSIQ_COLUMNS}))
    return recs, os.path.basename(path)


def _load_csiq(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read CSIQ's DMOS file; the image path is built from image, dst_type and dst_lev."""
    root, meta = _metadata_location(
        data_dir, opts,
        ["csiq.DMOS.xlsx", "csiq_dmos.csv", "csiq_dmos.txt", "csiq.DMOS.csv", "csiq.DMOS.txt"],
        "CSIQ DMOS file",
        "CSIQ/{csiq.DMOS.xlsx (or csiq_dmos.csv / csiq_dmos.txt), dst_imgs/<type>/<image>.<TYPE>.<level>.png, src_imgs/}",
    )
    recs, source = _csiq_records(meta, opts.get("sheet"))
    problems = _Problems(meta)
    image_root = _ci_path(root, "dst_imgs") or _ci_path(root, "dst_imgs_all") or os.path.join(root, "dst_imgs")
    index = _image_index(image_root, opts)
    rows: List[_Row] = []
    for rownum, rec in recs:
        image = _cell_text(rec.get("image"))
        dst_type = _cell_text(rec.get("dst_type"))
        if not image and not dst_type and _is_blank(rec.get("dmos")) and _is_blank(rec.get("dst_lev")):
            continue  # empty spreadsheet row
        level, lerr = _parse_int(rec.get("dst_lev"), "dst_lev")
        idx, ierr = _parse_int(rec.get("dst_idx"), "dst_idx", required=False)
        canonical = CSIQ_TYPE_ALIASES.get(re.sub(r"[^a-z0-9]", "", dst_type.lower()))
        file_name = ""
        path = None
        if canonical and level is not None and image:
            folder, tag = CSIQ_DISTORTIONS[canonical]
            base = f"{image}.{tag}.{level}.png"
            file_name = f"dst_imgs/{folder}/{base}"
            path = _image_path(index, os.path.join(image_root, folder), base)
        shown = file_name or f"{image}.{dst_type}.{rec.get('dst_lev')}"
        if not image:
            problems.add(rownum, shown, "image (reference name) is empty")
        if lerr:
            problems.add(rownum, shown, lerr)
        if ierr:
            problems.add(rownum, shown, ierr)
        if canonical is None:
            problems.add(rownum, shown, f"unknown CSIQ distortion type {dst_type!r}")
        s = problems.optional_number(rownum, shown, rec.get("dmos_std"), "dmos_std")
        fields = {"ref": image or None, "distortion": dst_type or None, "distortion_id": idx, "level": level, "mos_std": s}
        rows.append(_Row(rownum, file_name or shown, path, rec.get("dmos"), fields, file_known=bool(file_name)))
    columns = {"mos_std": "float64", "ref": "string", "distortion": "string", "distortion_id": "int64", "level": "int64"}
    facts = _resolve_facts(opts.get("facts"), dataset_facts("csiq"))
    details = {
        "metadata": source,
        "row_numbers": "sheet row number (.xlsx) or line number (text export)",
        "distortion": "dst_type as written in the DMOS file",
    }
    return _Table("csiq", root, meta, rows, columns, problems, facts, details)


# --- SPAQ --------------------------------------------------------------------------

_SPAQ_ATTRS = ("brightness", "colorfulness", "contrast", "noisiness", "sharpness")


def _load_spaq(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read SPAQ's annotation sheet (MOS and the five attribute scores)."""
    root, meta = _metadata_location(
        data_dir, opts,
        ["Annotations/MOS and Image attribute scores.xlsx", "Annotations/MOS and Image attribute scores.csv"],
        "SPAQ annotation file",
        "SPAQ/{Annotations/MOS and Image attribute scores.xlsx, TestImage/00001.jpg ...}",
    )
    if not opts.get("metadata_file"):
        root = os.path.dirname(os.path.dirname(meta))  # the annotation file sits in SPAQ/Annotations/
    if meta.lower().endswith(".csv"):
        header, csv_rows = _read_csv_rows(meta)
        raw = [(1, header)] + [(line, vals) for line, vals in csv_rows]
    else:
        raw = read_xlsx_rows(meta, opts.get("sheet"))
    cols, rows_after = _table_with_header(raw, ("image name", "mos"))
    if cols is None:
        raise _file_error(meta, "no header row with 'Image name' and 'MOS' columns")
    image_dir = _ci_path(root, "TestImage") or os.path.join(root, "TestImage")
    index = _image_index(image_dir, opts)
    problems = _Problems(meta)
    attrs = [a for a in _SPAQ_ATTRS if a in cols]
    rows: List[_Row] = []
    for rownum, values in rows_after:
        name = _cell_text(_get(values, cols, "image name"))
        mos = _get(values, cols, "mos")
        if not name and _is_blank(mos):
            continue
        path = _image_path(index, image_dir, name)
        fields = {a: problems.optional_number(rownum, name, _get(values, cols, a), a) for a in attrs}
        rows.append(_Row(rownum, name, path, mos, fields))
    columns = {a: "float64" for a in attrs}
    facts = _resolve_facts(opts.get("facts"), dataset_facts("spaq"))
    details = {"row_numbers": "sheet row number (.xlsx) or CSV line number", "image_dir": "TestImage"}
    return _Table("spaq", root, meta, rows, columns, problems, facts, details)
