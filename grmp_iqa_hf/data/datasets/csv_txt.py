"""Releases whose scores are a CSV or a whitespace-separated text file: KonIQ-10k, KADID-10k, TID2013.

Rows are numbered by their line in the score file (the CSV header is line 1).

* ``koniq10k``: ``koniq10k_scores_and_distributions.csv`` (image_name, c1..c5,
  c_total, MOS, SD, MOS_zscore), MOS on 1-5; images in ``1024x768/`` or
  ``512x384/``, found up to two levels below ``data_dir`` [sure].
* ``kadid10k``: ``dmos.csv`` (dist_img, ref_img, dmos, var) + ``images/``;
  ``I01_02_03.png`` = reference 01, type 02, level 03; ``dmos`` is 1-5 with
  higher = better [sure]; type names from the KADID paper's list [sure].
* ``tid2013``: ``mos_with_names.txt`` ("<mos> <name>" per line), ``mos_std.txt``
  (same order), ``distorted_images/``; ``i01_02_3.bmp`` = ref 01, type 02,
  level 3; names are matched case-insensitively (i25/I25, .bmp/.BMP) [sure];
  the 24 type names follow the TID2013 readme [sure for 1-17, fairly sure 18-24].
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any, Dict, List, Optional, Tuple

from ..registry import KADID10K_DISTORTIONS, TID2013_DISTORTIONS, dataset_facts
from .build import _resolve_facts, _Row, _Table
from .paths import _abs_dir, _ci_path, _find_dir, _image_index, _image_path, _metadata_location, _rel_display, _stem
from .problems import _cell_text, _parse_int, _parse_optional_number, _Problems
from .tabular import _read_csv_with_columns

_KADID_NAME = re.compile(r"^(I\d+)_(\d+)_(\d+)\.\w+$", re.I)
_TID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.\w+$", re.I)


def _name_fields(pattern, name: str, types: dict, ref) -> Optional[Dict[str, Any]]:
    """ref / distortion_id / distortion / level of a distorted-image file name `<ref>_<type>_<level>.<ext>`
    matched by `pattern`; None if the name does not follow it (``distortion`` is None for an unknown type)."""
    m = pattern.match(name)
    if not m:
        return None
    t = int(m.group(2))
    return {"ref": ref(m.group(1)), "distortion_id": t, "distortion": types.get(t), "level": int(m.group(3))}


def _kadid_name_fields(name: str) -> Optional[Dict[str, Any]]:
    """KADID-10k: ``I<ref>_<type>_<level>.png`` (see `_name_fields`)."""
    return _name_fields(_KADID_NAME, name, KADID10K_DISTORTIONS, str.upper)


def _tid_name_fields(name: str) -> Optional[Dict[str, Any]]:
    """TID2013: ``i<ref>_<type>_<level>.bmp``, the reference written ``I<two digits>`` (see `_name_fields`)."""
    return _name_fields(_TID_NAME, name, TID2013_DISTORTIONS, lambda ref: f"I{int(ref):02d}")


# --- KonIQ-10k -------------------------------------------------------------------

_KONIQ_CSV = "koniq10k_scores_and_distributions.csv"


def _load_koniq10k(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read KonIQ-10k's score CSV; the rating-count columns become int64 unless a version stores fractions."""
    root = _abs_dir(data_dir)
    _, csv_path = _metadata_location(
        root, opts, [_KONIQ_CSV], "KonIQ-10k score file",
        f"{_KONIQ_CSV} and 1024x768/ (or 512x384/) next to it or in subfolders",
    )
    resolution = str(opts.get("resolution", "1024x768"))
    image_dir = _find_dir(root, resolution)
    if image_dir is None:
        if opts["check_files"]:
            raise FileNotFoundError(f"no {resolution}/ image folder found in {root} (searched 2 levels down)")
        image_dir = os.path.join(root, resolution)
    problems = _Problems(csv_path)
    header, csv_rows, cols = _read_csv_with_columns(csv_path, ("image_name", "mos"))
    spec = [("sd", "mos_std", "float64"), ("mos_zscore", "mos_zscore", "float64")]
    spec += [(c, c, "int64") for c in ("c1", "c2", "c3", "c4", "c5", "c_total")]
    spec = [s for s in spec if s[0] in cols]
    index = _image_index(image_dir, opts)
    rows: List[_Row] = []
    for line, values in csv_rows:
        get = lambda k: values[cols[k]] if cols[k] < len(values) else None  # noqa: E731
        name = _cell_text(get("image_name"))
        path = _image_path(index, image_dir, name)
        fields: Dict[str, Any] = {}
        for src, dst, dtype in spec:
            if dtype == "int64":
                x, err = _parse_int(get(src), src, required=False)
                if err:  # the c1..c5 columns are rating counts in some versions, fractions in others
                    x, err = _parse_optional_number(get(src), src)
            else:
                x, err = _parse_optional_number(get(src), src)
            if err:
                problems.add(line, name, err)
            fields[dst] = x
        image_id = _rel_display(path, root) if path else posixpath.join(resolution, name)
        rows.append(_Row(line, name, path, get("mos"), fields, image_id=image_id))
    columns = {}
    for src, dst, dtype in spec:
        vals = [r.fields.get(dst) for r in rows]
        if dtype == "int64" and any(isinstance(v, float) and not float(v).is_integer() for v in vals if v is not None):
            dtype = "float64"
        if dtype == "int64":
            for r in rows:
                if r.fields.get(dst) is not None:
                    r.fields[dst] = int(r.fields[dst])
        columns[dst] = dtype
    facts = _resolve_facts(opts.get("facts"), dataset_facts("koniq10k"))
    details = {"resolution": resolution, "image_dir": _rel_display(image_dir, root), "row_numbers": "CSV line number (header = line 1)"}
    return _Table("koniq10k", root, csv_path, rows, columns, problems, facts, details)


# --- KADID-10k -------------------------------------------------------------------


def _load_kadid10k(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read KADID-10k's ``dmos.csv``; reference, type and level come from the file names."""
    root, csv_path = _metadata_location(
        data_dir, opts, ["dmos.csv"], "KADID-10k dmos.csv", "kadid10k/{dmos.csv, images/I01_01_01.png ...}"
    )
    image_dir = _ci_path(root, "images") or os.path.join(root, "images")
    problems = _Problems(csv_path)
    header, csv_rows, cols = _read_csv_with_columns(csv_path, ("dist_img", "dmos"))
    index = _image_index(image_dir, opts)
    rows: List[_Row] = []
    for line, values in csv_rows:
        get = lambda k: (values[cols[k]] if k in cols and cols[k] < len(values) else None)  # noqa: E731
        name = _cell_text(get("dist_img"))
        path = _image_path(index, image_dir, name)
        fields: Dict[str, Any] = {"ref": None, "distortion": None, "distortion_id": None, "level": None}
        parsed = _kadid_name_fields(posixpath.basename(name))
        if parsed:
            fields.update(parsed)
            if parsed["distortion"] is None:
                problems.add(line, name, f"unknown KADID-10k distortion type {parsed['distortion_id']} (expected 1-25)")
        elif name:
            problems.add(line, name, "file name does not follow I<ref>_<type>_<level>.png")
        ref_img = _cell_text(get("ref_img"))
        if ref_img:
            fields["ref"] = _stem(ref_img).upper()
        fields["mos_var"] = problems.optional_number(line, name, get("var"), "var")
        rows.append(_Row(line, name, path, get("dmos"), fields))
    columns = {"ref": "string", "distortion": "string", "distortion_id": "int64", "level": "int64", "mos_var": "float64"}
    facts = _resolve_facts(opts.get("facts"), dataset_facts("kadid10k"))
    details = {
        "score_column": "dmos (a 1-5 score where higher is better, despite the name)",
        "mos_var": "the 'var' column of dmos.csv, as published",
        "row_numbers": "CSV line number (header = line 1)",
    }
    return _Table("kadid10k", root, csv_path, rows, columns, problems, facts, details)


# --- TID2013 ---------------------------------------------------------------------


def _load_tid2013(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read TID2013's ``mos_with_names.txt`` (and ``mos_std.txt`` when it has one value per entry)."""
    root, mos_path = _metadata_location(
        data_dir, opts, ["mos_with_names.txt"], "TID2013 mos_with_names.txt",
        "tid2013/{mos_with_names.txt, mos_std.txt, distorted_images/, reference_images/}",
    )
    image_dir = _ci_path(root, "distorted_images") or os.path.join(root, "distorted_images")
    problems = _Problems(mos_path)
    with open(mos_path, encoding="utf-8-sig", errors="replace") as f:
        lines = [(i, ln.split()) for i, ln in enumerate(f, start=1) if ln.strip()]
    std_values: Optional[List[Tuple[int, str]]] = None
    std_path = _ci_path(os.path.dirname(mos_path), "mos_std.txt")
    if std_path and os.path.isfile(std_path):
        with open(std_path, encoding="utf-8-sig", errors="replace") as f:
            std_values = [(i, ln.strip()) for i, ln in enumerate(f, start=1) if ln.strip()]
        if len(std_values) != len(lines):
            problems.add(None, os.path.basename(std_path),
                         f"mos_std.txt has {len(std_values)} values but mos_with_names.txt has {len(lines)} entries")
            std_values = None
    index = _image_index(image_dir, opts)
    rows: List[_Row] = []
    for k, (line, parts) in enumerate(lines):
        if len(parts) != 2:
            problems.add(line, " ".join(parts[1:]), f"expected '<mos> <file name>', got {' '.join(parts)!r}")
            continue
        score, name = parts
        path = _image_path(index, image_dir, name)
        fields: Dict[str, Any] = {"ref": None, "distortion": None, "distortion_id": None, "level": None}
        parsed = _tid_name_fields(name)
        if parsed:
            fields.update(parsed)
            if parsed["distortion"] is None:
                problems.add(line, name, f"unknown TID2013 distortion type {parsed['distortion_id']} (expected 1-24)")
        else:
            problems.add(line, name, "file name does not follow i<ref>_<type>_<level>.bmp")
        if std_values is not None:
            fields["mos_std"] = problems.optional_number(
                line, name, std_values[k][1], "MOS standard deviation (mos_std.txt)")
        rows.append(_Row(line, name, path, score, fields))
    columns = {"ref": "string", "distortion": "string", "distortion_id": "int64", "level": "int64"}
    if std_values is not None:
        columns["mos_std"] = "float64"
    facts = _resolve_facts(opts.get("facts"), dataset_facts("tid2013"))
    details = {
        "row_numbers": "line number in mos_with_names.txt",
        "mos_std_file": _rel_display(std_path, root) if std_values is not None else None,
        "ref": "I<nn>, upper case whatever the file name's case",
    }
    return _Table("tid2013", root, mos_path, rows, columns, problems, facts, details)
