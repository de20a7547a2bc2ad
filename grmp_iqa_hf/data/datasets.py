"""Offline loaders for image quality assessment (IQA) datasets.

:func:`load_iqa_dataset` reads a dataset release from a local folder, in the
layout its authors publish it (or a plain ``imagefolder`` / pyiqa meta-info
CSV), and returns a :class:`datasets.Dataset` with at least

* ``image``: a :class:`datasets.Image` feature built from file paths, so
  images are decoded lazily, only when a row is accessed;
* ``image_id``: the image's path relative to the dataset root (posix
  separators), a stable identifier for reports;
* ``mos``: the score exactly as published (float64); never rescaled unless
  ``normalize=True`` is asked for;

plus, where the dataset has them: ``mos_std``, ``ref`` (reference / content
id), ``distortion`` (the distortion name as the dataset names it),
``distortion_id``, ``level`` (int) and ``scenes``, and a few dataset-specific
columns (documented per loader below).

The dataset's registry facts (score range and direction, citation, licence
note, ...) travel with it: ``dataset.info.description`` is a JSON document
(read it back with :func:`read_iqa_info`), ``dataset.info.citation`` holds the
BibTeX entry, ``dataset.info.license`` the licence note and
``dataset.info.homepage`` the release's web page.

Bad metadata (missing image files, empty / NaN / non-numeric scores,
duplicate rows, ...) raises a single :class:`DatasetMetadataError` that lists
every offending row; nothing is silently dropped.

Nothing here touches the network.

Format facts the loaders rely on (confidence in brackets)
---------------------------------------------------------
* ``imagefolder``: ``metadata.csv`` (or ``.jsonl``) with ``file_name`` (relative
  to ``data_dir``) and ``mos``; ``mos_std`` is read as float, ``level`` as int,
  every other column is kept as the raw string (e.g. ``scenes="human;night"``).
* ``livec``: ``ChallengeDB_release/Data/AllImages_release.mat`` (cell array,
  1169 names), ``AllMOS_release.mat`` (1x1169), ``AllStdDev_release.mat``;
  images in ``Images/``, the 7 rater-training images t1..t7 (the first 7
  entries) in ``Images/trainingImages/`` and excluded by default -> 1162 rows
  [sure; every public loader drops entries 0..6].
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
* ``csiq``: ``csiq.DMOS.xlsx`` sheet ``all_by_image`` (else the first sheet
  with an image/dst_type/dmos header row) with columns image, dst_idx,
  dst_type, dst_lev, dmos_std, dmos; or a ``csiq_dmos.csv`` / ``.txt`` export
  in that column order. Images ``dst_imgs/<folder>/<image>.<TAG>.<level>.png``
  with noise -> awgn/AWGN, jpeg -> jpeg/JPEG, jpeg 2000 -> jpeg2000/jpeg2000,
  fnoise -> fnoise/fnoise, blur -> blur/BLUR, contrast -> contrast/contrast,
  looked up case-insensitively anywhere under ``dst_imgs/`` [folders, tags and
  columns: sure; the exact dst_type spellings are matched loosely].
* ``live``: ``dmos.mat`` (``dmos``, ``orgs``; 1x982), ``refnames_all.mat``
  (``refnames_all``, cell 1x982); scores are the concatenation jp2k(227),
  jpeg(233), wn(174), gblur(174), fastfading(174), entry N of a folder being
  ``<folder>/imgN.bmp``; ``orgs == 1`` marks the reference copies, excluded by
  default [sure: widely used, and the counts add up to 982]. Each folder's
  ``info.txt`` ("<ref>.bmp imgN.bmp <param>") is used to cross-check the order
  and fill ``distortion_param`` [fairly sure of its format; the parser only
  relies on finding an ``imgN.bmp`` and a ``<ref>.bmp`` token per line].
* ``spaq``: ``Annotations/MOS and Image attribute scores.xlsx`` (Image name,
  MOS, Brightness, Colorfulness, Contrast, Noisiness, Sharpness), images in
  ``TestImage/`` [sure].
* ``pyiqa``: ``meta_info_<Name>Dataset.csv``; no-reference layout
  ``img_name,mos[,std,...]`` or full-reference ``ref_name,dist_name,mos|dmos``
  (paths relative to ``image_dir``; a missing extension is tried as .bmp/.png/
  .jpg...). The dataset is recognised from ``<Name>`` (pyiqa's KonIQ ``mos``
  is the 0-100 z-score MOS) [sure for the files checked: LIVEChallenge,
  KonIQ10k, CSIQ, LIVEIQA].
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import posixpath
import re
import warnings
import zipfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union
from xml.etree import ElementTree as ET

import numpy as np

from .registry import (
    CSIQ_DISTORTIONS,
    CSIQ_TYPE_ALIASES,
    KADID10K_DISTORTIONS,
    LIVE_DISTORTION_FOLDERS,
    TID2013_DISTORTIONS,
    IQADatasetFacts,
    dataset_facts,
    facts_for_pyiqa_meta_file,
    normalize_mos,
)

__all__ = [
    "load_iqa_dataset",
    "DatasetMetadataError",
    "MetadataProblem",
    "read_iqa_info",
    "read_xlsx_rows",
    "xlsx_sheet_names",
    "SUPPORTED_FORMATS",
]

#: Values accepted for ``name`` by :func:`load_iqa_dataset` (registry aliases
#: such as ``"clive"``, ``"KonIQ-10k"`` or ``"liveiqa"`` are accepted too).
SUPPORTED_FORMATS: Tuple[str, ...] = (
    "imagefolder",
    "livec",
    "koniq10k",
    "kadid10k",
    "tid2013",
    "csiq",
    "live",
    "spaq",
    "pyiqa",
)

_INFO_KEY = "grmp_iqa"


# =============================================================================
# errors
# =============================================================================


@dataclasses.dataclass(frozen=True)
class MetadataProblem:
    """One problem found in a dataset's metadata.

    ``row`` is the row as a person would find it in ``source``: the 1-based
    line number for text / CSV files (the header is line 1), the sheet row
    number for ``.xlsx`` files, the 1-based entry index (MATLAB style) for
    ``.mat`` arrays; ``None`` for problems that concern the whole file.
    """

    row: Optional[int]
    file_name: str
    message: str
    source: str = ""

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        name = f" ({self.file_name})" if self.file_name else ""
        return f"{where}{name}: {self.message}"


class DatasetMetadataError(ValueError):
    """Raised once per load with every problem found in the metadata.

    ``err.problems`` is the list of :class:`MetadataProblem`.
    """

    def __init__(self, problems: Sequence[MetadataProblem], source: str = ""):
        self.problems: List[MetadataProblem] = list(problems)
        self.source = source
        counts: Dict[str, int] = {}
        for p in self.problems:
            kind = p.message.split(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
        summary = "; ".join(f"{n} x {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines = [
            f"{len(self.problems)} problem(s) in the metadata of {source or 'the dataset'} ({summary}):"
        ]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return (self.__class__, (self.problems, self.source))


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: List[MetadataProblem] = []

    def add(self, row: Optional[int], file_name: str, message: str) -> None:
        self.items.append(MetadataProblem(row, str(file_name or ""), message, self.source))

    def raise_if_any(self) -> None:
        if self.items:
            items = sorted(self.items, key=lambda p: (p.row is not None, p.row or 0))
            raise DatasetMetadataError(items, self.source)


# =============================================================================
# small parsing helpers
# =============================================================================


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _parse_number(value: Any, what: str) -> Tuple[Optional[float], Optional[str]]:
    """Parse a required number: returns (value, None) or (None, problem message)."""
    if _is_blank(value):
        return None, f"{what} is empty"
    if isinstance(value, (bool, np.bool_)):
        return None, f"{what} is not a number: {value!r}"
    if isinstance(value, (int, float, np.integer, np.floating)):
        x = float(value)
    else:
        text = str(value).strip()
        try:
            x = float(text)
        except ValueError:
            return None, f"{what} is not a number: {text!r}"
    if math.isnan(x):
        return None, f"{what} is NaN"
    if math.isinf(x):
        return None, f"{what} is infinite"
    return x, None


def _parse_optional_number(value: Any, what: str) -> Tuple[Optional[float], Optional[str]]:
    """Like :func:`_parse_number` but empty / NaN mean 'not given' (None)."""
    if _is_blank(value):
        return None, None
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None, None
    if isinstance(value, str) and value.strip().lower() in ("nan", "na", "n/a"):
        return None, None
    return _parse_number(value, what)


def _parse_int(value: Any, what: str, required: bool = True) -> Tuple[Optional[int], Optional[str]]:
    if _is_blank(value):
        return None, (f"{what} is empty" if required else None)
    x, err = _parse_number(value, what)
    if err:
        return None, err
    if x != int(x):
        return None, f"{what} is not an integer: {value!r}"
    return int(x), None


def _cell_text(value: Any) -> str:
    """Text of a metadata cell; integral floats (xlsx numbers) lose their '.0'."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    return str(value).strip()


def _stem(name: str) -> str:
    base = posixpath.basename(str(name).replace("\\", "/"))
    return os.path.splitext(base)[0]


def _norm_rel(name: str) -> str:
    return posixpath.normpath(str(name).strip().replace("\\", "/")).lstrip("/")


def _ci_path(base: str, rel: str) -> Optional[str]:
    """``base/rel`` resolved case-insensitively, component by component; None if absent."""
    cur = base
    for part in [p for p in rel.replace("\\", "/").split("/") if p]:
        cand = os.path.join(cur, part)
        if os.path.exists(cand):
            cur = cand
            continue
        try:
            entries = os.listdir(cur)
        except OSError:
            return None
        matches = sorted(e for e in entries if e.lower() == part.lower())
        if not matches:
            return None
        cur = os.path.join(cur, matches[0])
    return cur


class _FileIndex:
    """Case-insensitive index of the files under ``top`` (recursive)."""

    def __init__(self, top: Optional[str]):
        self.top = top
        self.by_rel: Dict[str, str] = {}
        self.by_base: Dict[str, List[str]] = {}
        if top and os.path.isdir(top):
            for dirpath, _dirs, files in os.walk(top, followlinks=True):
                for f in files:
                    full = os.path.join(dirpath, f)
                    rel = os.path.relpath(full, top).replace(os.sep, "/")
                    self.by_rel.setdefault(rel.lower(), full)
                    self.by_base.setdefault(f.lower(), []).append(full)

    def find(self, name: str) -> Optional[str]:
        key = _norm_rel(name).lower()
        hit = self.by_rel.get(key)
        if hit:
            return hit
        cands = self.by_base.get(posixpath.basename(key), [])
        return cands[0] if len(cands) == 1 else None


def _find_file(
    data_dir: str, candidates: Sequence[str], what: str, layout_hint: str
) -> Tuple[str, str]:
    """Find the first of ``candidates`` (relative paths) in ``data_dir`` or one of its
    immediate subfolders (case-insensitively). Returns ``(root, path)``."""
    data_dir = os.path.abspath(os.path.expanduser(str(data_dir)))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data_dir does not exist or is not a folder: {data_dir}")
    roots = [data_dir]
    try:
        roots += [
            os.path.join(data_dir, d)
            for d in sorted(os.listdir(data_dir))
            if os.path.isdir(os.path.join(data_dir, d)) and not d.startswith(".")
        ]
    except OSError:
        pass
    for cand in candidates:
        for root in roots:
            hit = _ci_path(root, cand)
            if hit and os.path.isfile(hit):
                return root, hit
    raise FileNotFoundError(
        f"no {what} found in {data_dir} or its subfolders (looked for {', '.join(candidates)}). "
        f"Expected layout: {layout_hint}"
    )


def _read_csv_with_columns(csv_path: str, required: Sequence[str]):
    """``(header, rows, {lower-case column name: index})`` of a CSV that must have ``required`` columns."""
    header, csv_rows = _read_csv_rows(csv_path)
    cols = {h.lower(): i for i, h in enumerate(header)}
    for need in required:
        if need not in cols:
            raise DatasetMetadataError([MetadataProblem(1, "", f"no {need!r} column (columns: {header})", csv_path)], csv_path)
    return header, csv_rows, cols


def _metadata_location(
    data_dir: str, opts: Dict[str, Any], candidates: Sequence[str], what: str, layout_hint: str
) -> Tuple[str, str]:
    """``(root, metadata path)``: the ``metadata_file`` option (relative to ``data_dir``) when given,
    else the first of ``candidates`` found by :func:`_find_file`."""
    if opts.get("metadata_file"):
        root = os.path.abspath(os.path.expanduser(str(data_dir)))
        path = str(opts["metadata_file"])
        return root, path if os.path.isabs(path) else os.path.join(root, path)
    return _find_file(data_dir, candidates, what, layout_hint)


def _rel_display(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel.replace(os.sep, "/")


# =============================================================================
# .xlsx reading (stdlib only: an .xlsx file is a zip of XML parts)
# =============================================================================


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xlsx_sheets(zf: zipfile.ZipFile) -> List[Tuple[str, str]]:
    """(sheet name, part name inside the zip) in workbook order."""
    names = set(zf.namelist())
    rels: Dict[str, str] = {}
    if "xl/_rels/workbook.xml.rels" in names:
        for el in ET.fromstring(zf.read("xl/_rels/workbook.xml.rels")).iter():
            if _local(el.tag) == "Relationship" and el.get("Id") and el.get("Target"):
                target = el.get("Target").replace("\\", "/")
                if target.startswith("/"):
                    part = target.lstrip("/")
                else:
                    part = posixpath.normpath(posixpath.join("xl", target))
                rels[el.get("Id")] = part
    sheets: List[Tuple[str, str]] = []
    if "xl/workbook.xml" in names:
        for el in ET.fromstring(zf.read("xl/workbook.xml")).iter():
            if _local(el.tag) != "sheet":
                continue
            rid = next((v for k, v in el.attrib.items() if k.startswith("{") and _local(k) == "id"), None)
            part = rels.get(rid) if rid else None
            if part is None or part not in names:
                continue
            sheets.append((el.get("name", ""), part))
    if not sheets:  # no usable workbook.xml: fall back to the worksheet parts themselves
        parts = sorted(
            (n for n in names if re.match(r"xl/worksheets/sheet\d+\.xml$", n)),
            key=lambda n: int(re.findall(r"\d+", n)[-1]),
        )
        sheets = [(posixpath.splitext(posixpath.basename(p))[0], p) for p in parts]
    return sheets


def _xlsx_shared_strings(zf: zipfile.ZipFile) -> List[str]:
    if "xl/sharedStrings.xml" not in zf.namelist():
        return []
    out: List[str] = []
    for si in ET.fromstring(zf.read("xl/sharedStrings.xml")):
        if _local(si.tag) == "si":
            out.append(_xlsx_rich_text(si))
    return out


def _xlsx_rich_text(el: ET.Element) -> str:
    """Text of an <si> / <is> element: its <t>, or the <t> of its <r> runs (not <rPh>)."""
    parts: List[str] = []
    for child in el:
        tag = _local(child.tag)
        if tag == "t":
            parts.append(child.text or "")
        elif tag == "r":
            parts.extend(t.text or "" for t in child if _local(t.tag) == "t")
    return "".join(parts)


def _xlsx_col_index(ref: str) -> int:
    letters = re.match(r"[A-Za-z]+", ref)
    if not letters:
        raise ValueError(f"bad cell reference {ref!r}")
    n = 0
    for ch in letters.group(0).upper():
        n = n * 26 + (ord(ch) - 64)
    return n - 1


def _xlsx_cell_value(c: ET.Element, shared: List[str]) -> Any:
    ctype = c.get("t", "n")
    v_el = next((ch for ch in c if _local(ch.tag) == "v"), None)
    v = v_el.text if v_el is not None else None
    if ctype == "s":
        return shared[int(v)] if v is not None else None
    if ctype == "inlineStr":
        is_el = next((ch for ch in c if _local(ch.tag) == "is"), None)
        return _xlsx_rich_text(is_el) if is_el is not None else None
    if ctype in ("str", "e", "d"):
        return v
    if ctype == "b":
        return None if v is None else bool(int(v))
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return v


def xlsx_sheet_names(path: str) -> List[str]:
    """Names of the worksheets of an .xlsx file, in workbook order."""
    with zipfile.ZipFile(path) as zf:
        return [name for name, _ in _xlsx_sheets(zf)]


def read_xlsx_rows(path: str, sheet: Union[None, int, str] = None) -> List[Tuple[int, List[Any]]]:
    """Read one worksheet of an .xlsx file with the standard library only.

    Returns ``[(row_number, values), ...]`` for the rows present in the sheet,
    ``row_number`` being the 1-based row number Excel shows and ``values`` a
    list indexed by column (A = 0), with ``None`` for empty cells. Numbers come
    back as ``float``, text as ``str``, booleans as ``bool``; formulas give their
    cached value. ``sheet`` is a sheet name (case-insensitive), a 0-based index,
    or ``None`` for the first sheet.
    """
    with zipfile.ZipFile(path) as zf:
        sheets = _xlsx_sheets(zf)
        if not sheets:
            raise ValueError(f"{path}: no worksheet found")
        if sheet is None:
            part = sheets[0][1]
        elif isinstance(sheet, int):
            part = sheets[sheet][1]
        else:
            match = [p for n, p in sheets if n.lower() == str(sheet).lower()]
            if not match:
                raise KeyError(f"{path}: no sheet named {sheet!r} (sheets: {[n for n, _ in sheets]})")
            part = match[0]
        shared = _xlsx_shared_strings(zf)
        root = ET.fromstring(zf.read(part))
    rows: List[Tuple[int, List[Any]]] = []
    last_row = 0
    for row_el in root.iter():
        if _local(row_el.tag) != "row":
            continue
        r = int(row_el.get("r")) if row_el.get("r") else last_row + 1
        last_row = r
        cells: Dict[int, Any] = {}
        next_col = 0
        for c in row_el:
            if _local(c.tag) != "c":
                continue
            col = _xlsx_col_index(c.get("r")) if c.get("r") else next_col
            next_col = col + 1
            cells[col] = _xlsx_cell_value(c, shared)
        values = [None] * (max(cells) + 1 if cells else 0)
        for col, val in cells.items():
            values[col] = val
        rows.append((r, values))
    return rows


def _table_with_header(
    rows: Iterable[Tuple[int, List[Any]]], required: Sequence[str]
) -> Tuple[Optional[Dict[str, int]], List[Tuple[int, List[Any]]]]:
    """Find the first row whose (lower-cased, stripped) cells contain all of
    ``required``; returns ({column name: index}, rows after it)."""
    rows = list(rows)
    for i, (_r, values) in enumerate(rows):
        header = [_cell_text(v).lower() for v in values]
        if all(name in header for name in required):
            cols: Dict[str, int] = {}
            for j, name in enumerate(header):
                if name and name not in cols:
                    cols[name] = j
            return cols, rows[i + 1:]
    return None, rows


def _get(values: List[Any], cols: Dict[str, int], name: str) -> Any:
    j = cols.get(name)
    return values[j] if j is not None and j < len(values) else None


# =============================================================================
# rows -> datasets.Dataset
# =============================================================================


@dataclasses.dataclass
class _Row:
    row: Optional[int]
    file_name: str  # as the metadata names it (for messages)
    path: Optional[str]  # resolved absolute path; None = could not be found
    mos: Any  # raw, parsed in _finalize
    fields: Dict[str, Any] = dataclasses.field(default_factory=dict)
    image_id: Optional[str] = None  # defaults to path relative to the root
    file_known: bool = True  # False: the file name could not be built (already reported)


@dataclasses.dataclass
class _Table:
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


# =============================================================================
# loaders
# =============================================================================


def _generic_facts(fmt: str, data_dir: str) -> IQADatasetFacts:
    return IQADatasetFacts(
        name=fmt,
        display_name=os.path.basename(os.path.abspath(str(data_dir))) or fmt,
        score_kind="MOS",
        mos_range=None,
        higher_is_better=None,
        notes="Unknown dataset: score range and direction not recorded; pass facts=... to attach them.",
    )


def _resolve_facts(facts_opt, default: IQADatasetFacts) -> IQADatasetFacts:
    if facts_opt is None:
        return default
    return dataset_facts(facts_opt)


# --- imagefolder ---------------------------------------------------------------

_IMAGEFOLDER_TYPES = {"mos_std": "float64", "level": "int64"}


def _read_csv_rows(path: str) -> Tuple[List[str], List[Tuple[int, List[str]]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header: Optional[List[str]] = None
        rows: List[Tuple[int, List[str]]] = []
        for values in reader:
            if header is None:
                if not values or all(_is_blank(v) for v in values):
                    continue
                header = [v.strip() for v in values]
                continue
            if not values or all(_is_blank(v) for v in values):
                continue
            rows.append((reader.line_num, values))
    if header is None:
        raise DatasetMetadataError([MetadataProblem(None, "", "metadata file is empty", path)], path)
    return header, rows


def _read_jsonl_rows(path: str) -> Tuple[List[str], List[Tuple[int, Dict[str, Any]]]]:
    rows = []
    keys: List[str] = []
    probs = _Problems(path)
    with open(path, encoding="utf-8-sig") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                probs.add(i, "", f"invalid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                probs.add(i, "", "line is not a JSON object")
                continue
            for k in obj:
                if k not in keys:
                    keys.append(k)
            rows.append((i, obj))
    probs.raise_if_any()
    return keys, rows


def _load_imagefolder(data_dir: str, opts: Dict[str, Any]) -> _Table:
    root = os.path.abspath(os.path.expanduser(str(data_dir)))
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
    elif not os.path.isabs(str(meta)):
        meta = os.path.join(root, str(meta))
    meta = str(meta)
    problems = _Problems(meta)
    if meta.lower().endswith(".jsonl"):
        header, raw_rows = _read_jsonl_rows(meta)
        records = [(line, obj) for line, obj in raw_rows]
    else:
        header, csv_rows = _read_csv_rows(meta)
        records = []
        for line, values in csv_rows:
            if len(values) > len(header):
                problems.add(line, values[0] if values else "", f"row has {len(values)} fields, header has {len(header)}")
            records.append((line, {h: (values[i] if i < len(values) else None) for i, h in enumerate(header)}))
    keys = {h.lower(): h for h in header}
    if "file_name" not in keys:
        raise DatasetMetadataError(
            [MetadataProblem(1, "", f"no 'file_name' column (columns: {header})", meta)], meta
        )
    if "mos" not in keys:
        raise DatasetMetadataError([MetadataProblem(1, "", f"no 'mos' column (columns: {header})", meta)], meta)
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
                x, err = _parse_optional_number(v, h)
                if err:
                    problems.add(line, name, err)
                fields[h] = x
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


# --- LIVE In the Wild (ChallengeDB_release) -------------------------------------


def _mat_values(arr: Any) -> List[Any]:
    """Flatten a MATLAB numeric array or cell array loaded by scipy.io.loadmat."""
    a = np.asarray(arr)
    if a.dtype.kind == "U" and a.ndim <= 1:  # a single char array / list of strings
        return [str(x) for x in a.ravel()] if a.ndim == 1 else [str(a)]
    return [_mat_scalar(x) for x in a.ravel(order="F")]


def _mat_scalar(x: Any) -> Any:
    while isinstance(x, np.ndarray):
        if x.size == 0:
            return None
        if x.dtype.kind == "U":
            return "".join(str(v) for v in x.ravel())
        x = x.ravel()[0]
    if isinstance(x, (np.str_, str)):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return float(x)
    return x


def _loadmat(path: str) -> Dict[str, Any]:
    import scipy.io

    return scipy.io.loadmat(path)


def _mat_key(mat: Dict[str, Any], key: str, path: str) -> Any:
    if key in mat:
        return mat[key]
    lower = {k.lower(): k for k in mat if not k.startswith("__")}
    if key.lower() in lower:
        return mat[lower[key.lower()]]
    raise DatasetMetadataError(
        [MetadataProblem(None, "", f"no variable {key!r} in {os.path.basename(path)} (variables: {sorted(lower.values())})", path)],
        path,
    )


_LIVEC_TRAINING = 7


def _load_livec(data_dir: str, opts: Dict[str, Any]) -> _Table:
    root, mos_path = _find_file(
        data_dir,
        ["Data/AllMOS_release.mat"],
        "LIVE Challenge release (Data/AllMOS_release.mat)",
        "ChallengeDB_release/{Images/, Images/trainingImages/, Data/AllImages_release.mat, "
        "Data/AllMOS_release.mat, Data/AllStdDev_release.mat}",
    )
    data = os.path.dirname(mos_path)
    names_path = _ci_path(data, "AllImages_release.mat")
    std_path = _ci_path(data, "AllStdDev_release.mat")
    if names_path is None:
        raise FileNotFoundError(f"missing {os.path.join(data, 'AllImages_release.mat')}")
    source = os.path.relpath(names_path, root) + " + " + os.path.relpath(mos_path, root)
    problems = _Problems(source)
    names = _mat_values(_mat_key(_loadmat(names_path), "AllImages_release", names_path))
    mos = _mat_values(_mat_key(_loadmat(mos_path), "AllMOS_release", mos_path))
    std = _mat_values(_mat_key(_loadmat(std_path), "AllStdDev_release", std_path)) if std_path else None
    if len(names) != len(mos) or (std is not None and len(std) != len(names)):
        problems.add(
            None, "",
            f"array lengths differ: AllImages_release {len(names)}, AllMOS_release {len(mos)}"
            + (f", AllStdDev_release {len(std)}" if std is not None else ""),
        )
        problems.raise_if_any()
    include_training = bool(opts.get("include_training", False))
    first = [str(n or "") for n in names[:_LIVEC_TRAINING]]
    if not all(re.fullmatch(r"t\d+\.bmp", n, re.I) for n in first):
        warnings.warn(
            f"LIVE Challenge: the first {_LIVEC_TRAINING} entries are expected to be the training images "
            f"t1.bmp..t7.bmp, found {first}; they are {'kept' if include_training else 'excluded'} anyway.",
            stacklevel=3,
        )
    images_dir = _ci_path(root, "Images") or os.path.join(root, "Images")
    index = _FileIndex(images_dir) if opts["check_files"] else None
    rows: List[_Row] = []
    for i, name in enumerate(names):
        if i < _LIVEC_TRAINING and not include_training:
            continue
        name = "" if name is None else str(name).strip()
        if index is not None:
            path = index.find(name) if name else None
        else:
            sub = "trainingImages" if i < _LIVEC_TRAINING else ""
            path = os.path.join(images_dir, sub, name) if sub else os.path.join(images_dir, name)
        fields = {}
        if std is not None:
            s, err = _parse_optional_number(std[i], "MOS standard deviation")
            if err:
                problems.add(i + 1, name, err)
            fields["mos_std"] = s
        rows.append(_Row(i + 1, name, path, mos[i], fields))
    columns = {"mos_std": "float64"} if std is not None else {}
    facts = _resolve_facts(opts.get("facts"), dataset_facts("livec"))
    details = {
        "row_numbers": "1-based entry index in the .mat arrays",
        "excluded_training_images": 0 if include_training else min(_LIVEC_TRAINING, len(names)),
        "entries_in_mat": len(names),
    }
    return _Table("livec", root, source, rows, columns, problems, facts, details)


# --- KonIQ-10k -------------------------------------------------------------------

_KONIQ_CSV = "koniq10k_scores_and_distributions.csv"


def _find_dir(data_dir: str, name: str, depth: int = 2) -> Optional[str]:
    """A folder called ``name`` (case-insensitive) at most ``depth`` levels below data_dir."""
    frontier = [os.path.abspath(str(data_dir))]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            hit = _ci_path(d, name)
            if hit and os.path.isdir(hit):
                return hit
            try:
                nxt += [os.path.join(d, e) for e in sorted(os.listdir(d)) if os.path.isdir(os.path.join(d, e))]
            except OSError:
                pass
        frontier = nxt
    return None


def _load_koniq10k(data_dir: str, opts: Dict[str, Any]) -> _Table:
    root = os.path.abspath(os.path.expanduser(str(data_dir)))
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
    index = _FileIndex(image_dir) if opts["check_files"] else None
    rows: List[_Row] = []
    for line, values in csv_rows:
        get = lambda k: values[cols[k]] if cols[k] < len(values) else None  # noqa: E731
        name = _cell_text(get("image_name"))
        path = (index.find(name) if name else None) if index is not None else os.path.join(image_dir, name)
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

_KADID_NAME = re.compile(r"^(I\d+)_(\d+)_(\d+)\.\w+$", re.I)
_TID_NAME = re.compile(r"^i(\d+)_(\d+)_(\d+)\.\w+$", re.I)
_CSIQ_NAME = re.compile(r"^(.+)\.([A-Za-z0-9]+)\.(\d+)\.\w+$")


def _load_kadid10k(data_dir: str, opts: Dict[str, Any]) -> _Table:
    root, csv_path = _metadata_location(
        data_dir, opts, ["dmos.csv"], "KADID-10k dmos.csv", "kadid10k/{dmos.csv, images/I01_01_01.png ...}"
    )
    image_dir = _ci_path(root, "images") or os.path.join(root, "images")
    problems = _Problems(csv_path)
    header, csv_rows, cols = _read_csv_with_columns(csv_path, ("dist_img", "dmos"))
    index = _FileIndex(image_dir) if opts["check_files"] else None
    rows: List[_Row] = []
    for line, values in csv_rows:
        get = lambda k: (values[cols[k]] if k in cols and cols[k] < len(values) else None)  # noqa: E731
        name = _cell_text(get("dist_img"))
        path = (index.find(name) if name else None) if index is not None else os.path.join(image_dir, name)
        fields: Dict[str, Any] = {"ref": None, "distortion": None, "distortion_id": None, "level": None}
        m = _KADID_NAME.match(posixpath.basename(name))
        if m:
            ref, dtype, level = m.group(1).upper(), int(m.group(2)), int(m.group(3))
            fields.update(ref=ref, distortion_id=dtype, level=level)
            if dtype in KADID10K_DISTORTIONS:
                fields["distortion"] = KADID10K_DISTORTIONS[dtype]
            else:
                problems.add(line, name, f"unknown KADID-10k distortion type {dtype} (expected 1-25)")
        elif name:
            problems.add(line, name, "file name does not follow I<ref>_<type>_<level>.png")
        ref_img = _cell_text(get("ref_img"))
        if ref_img:
            fields["ref"] = _stem(ref_img).upper()
        x, err = _parse_optional_number(get("var"), "var")
        if err:
            problems.add(line, name, err)
        fields["mos_var"] = x
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
    index = _FileIndex(image_dir) if opts["check_files"] else None
    rows: List[_Row] = []
    for k, (line, parts) in enumerate(lines):
        if len(parts) != 2:
            problems.add(line, " ".join(parts[1:]), f"expected '<mos> <file name>', got {' '.join(parts)!r}")
            continue
        score, name = parts
        path = index.find(name) if index is not None else os.path.join(image_dir, name)
        fields: Dict[str, Any] = {"ref": None, "distortion": None, "distortion_id": None, "level": None}
        m = _TID_NAME.match(name)
        if m:
            dtype = int(m.group(2))
            fields.update(ref=f"I{int(m.group(1)):02d}", distortion_id=dtype, level=int(m.group(3)))
            if dtype in TID2013_DISTORTIONS:
                fields["distortion"] = TID2013_DISTORTIONS[dtype]
            else:
                problems.add(line, name, f"unknown TID2013 distortion type {dtype} (expected 1-24)")
        else:
            problems.add(line, name, "file name does not follow i<ref>_<type>_<level>.bmp")
        if std_values is not None:
            x, err = _parse_optional_number(std_values[k][1], "MOS standard deviation (mos_std.txt)")
            if err:
                problems.add(line, name, err)
            fields["mos_std"] = x
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
        raise DatasetMetadataError(
            [MetadataProblem(None, "", "no sheet has a header row with image, dst_type and dmos columns", path)], path
        )
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
    root, meta = _metadata_location(
        data_dir, opts,
        ["csiq.DMOS.xlsx", "csiq_dmos.csv", "csiq_dmos.txt", "csiq.DMOS.csv", "csiq.DMOS.txt"],
        "CSIQ DMOS file",
        "CSIQ/{csiq.DMOS.xlsx (or csiq_dmos.csv / csiq_dmos.txt), dst_imgs/<type>/<image>.<TYPE>.<level>.png, src_imgs/}",
    )
    recs, source = _csiq_records(meta, opts.get("sheet"))
    problems = _Problems(meta)
    image_root = _ci_path(root, "dst_imgs") or _ci_path(root, "dst_imgs_all") or os.path.join(root, "dst_imgs")
    index = _FileIndex(image_root) if opts["check_files"] else None
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
            path = index.find(base) if index is not None else os.path.join(image_root, folder, base)
        shown = file_name or f"{image}.{dst_type}.{rec.get('dst_lev')}"
        if not image:
            problems.add(rownum, shown, "image (reference name) is empty")
        if lerr:
            problems.add(rownum, shown, lerr)
        if ierr:
            problems.add(rownum, shown, ierr)
        if canonical is None:
            problems.add(rownum, shown, f"unknown CSIQ distortion type {dst_type!r}")
        s, serr = _parse_optional_number(rec.get("dmos_std"), "dmos_std")
        if serr:
            problems.add(rownum, shown, serr)
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


# --- LIVE IQA release 2 -------------------------------------------------------------


def _read_live_info(path: Optional[str]) -> Dict[int, Tuple[Optional[str], Optional[float]]]:
    """imgN -> (reference file name, distortion parameter) from a LIVE folder's info.txt."""
    out: Dict[int, Tuple[Optional[str], Optional[float]]] = {}
    if not path or not os.path.isfile(path):
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            toks = line.split()
            img = [t for t in toks if re.fullmatch(r"img\d+\.bmp", t, re.I)]
            if len(img) != 1:
                continue
            k = int(re.findall(r"\d+", img[0])[0])
            refs = [t for t in toks if t.lower().endswith(".bmp") and t != img[0]]
            param = None
            for t in toks:
                try:
                    param = float(t)
                    break
                except ValueError:
                    pass
            out[k] = (refs[0] if refs else None, param)
    return out


def _load_live(data_dir: str, opts: Dict[str, Any]) -> _Table:
    realigned = bool(opts.get("realigned", False))
    dmos_name = "dmos_realigned.mat" if realigned else "dmos.mat"
    root, dmos_path = _find_file(
        data_dir, [dmos_name], f"LIVE {dmos_name}",
        "databaserelease2/{jp2k/, jpeg/, wn/, gblur/, fastfading/ (info.txt + imgN.bmp), refimgs/, "
        "dmos.mat, dmos_realigned.mat, refnames_all.mat}",
    )
    ref_path = _ci_path(root, "refnames_all.mat")
    if ref_path is None:
        raise FileNotFoundError(f"missing refnames_all.mat in {root}")
    source = os.path.relpath(dmos_path, root)
    problems = _Problems(source)
    mat = _loadmat(dmos_path)
    dmos = _mat_values(_mat_key(mat, "dmos_new" if realigned else "dmos", dmos_path))
    orgs = _mat_values(_mat_key(mat, "orgs", dmos_path))
    std = _mat_values(mat["dmos_std"]) if realigned and "dmos_std" in mat else None
    refnames = _mat_values(_mat_key(_loadmat(ref_path), "refnames_all", ref_path))
    expected = sum(n for _, n in LIVE_DISTORTION_FOLDERS)
    arrays = [("dmos", dmos), ("orgs", orgs), ("refnames_all", refnames)] + ([("dmos_std", std)] if std is not None else [])
    for what, arr in arrays:
        if len(arr) != expected:
            problems.add(None, what, f"{what} has {len(arr)} entries, expected {expected} "
                         "(jp2k 227 + jpeg 233 + wn 174 + gblur 174 + fastfading 174)")
    problems.raise_if_any()
    include_refs = bool(opts.get("include_references", False))
    verify = bool(opts.get("verify_info_txt", True))
    rows: List[_Row] = []
    offset = 0
    any_info = False
    n_refs = 0
    for folder, count in LIVE_DISTORTION_FOLDERS:
        fdir = _ci_path(root, folder) or os.path.join(root, folder)
        info = _read_live_info(_ci_path(fdir, "info.txt") if os.path.isdir(fdir) else None)
        any_info = any_info or bool(info)
        index = _FileIndex(fdir) if opts["check_files"] else None
        for k in range(1, count + 1):
            i = offset + k - 1
            is_ref = bool(orgs[i]) if orgs[i] is not None else False
            n_refs += is_ref
            if is_ref and not include_refs:
                continue
            base = f"img{k}.bmp"
            name = f"{folder}/{base}"
            path = index.find(base) if index is not None else os.path.join(fdir, base)
            refname = str(refnames[i] or "")
            info_ref, param = info.get(k, (None, None))
            if verify and info_ref and refname and _stem(info_ref).lower() != _stem(refname).lower():
                problems.add(i + 1, name, f"info.txt names reference {info_ref!r} but refnames_all.mat entry "
                             f"{i + 1} is {refname!r} (score order does not match the folders?; "
                             "verify_info_txt=False skips this check)")
            fields = {"ref": _stem(refname) or None, "distortion": folder, "distortion_param": param}
            if std is not None:
                fields["mos_std"] = std[i]
            if include_refs:
                fields["is_reference"] = is_ref
            rows.append(_Row(i + 1, name, path, dmos[i], fields))
        offset += count
    columns: Dict[str, str] = {"ref": "string", "distortion": "string"}
    if std is not None:
        columns["mos_std"] = "float64"
    if any_info:
        columns["distortion_param"] = "float64"
    else:
        for r in rows:
            r.fields.pop("distortion_param", None)
    if include_refs:
        columns["is_reference"] = "bool"
    facts = _resolve_facts(opts.get("facts"), dataset_facts("live"))
    details = {
        "score_file": dmos_name,
        "row_numbers": "1-based entry index in the .mat arrays",
        "folder_order": [f"{f}({n})" for f, n in LIVE_DISTORTION_FOLDERS],
        "reference_copies_excluded": 0 if include_refs else n_refs,
        "distortion_param": "numeric parameter from the folder's info.txt" if any_info else None,
    }
    return _Table("live", root, source, rows, columns, problems, facts, details)


# --- SPAQ --------------------------------------------------------------------------

_SPAQ_ATTRS = ("brightness", "colorfulness", "contrast", "noisiness", "sharpness")


def _load_spaq(data_dir: str, opts: Dict[str, Any]) -> _Table:
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
        raise DatasetMetadataError(
            [MetadataProblem(None, "", "no header row with 'Image name' and 'MOS' columns", meta)], meta
        )
    image_dir = _ci_path(root, "TestImage") or os.path.join(root, "TestImage")
    index = _FileIndex(image_dir) if opts["check_files"] else None
    problems = _Problems(meta)
    attrs = [a for a in _SPAQ_ATTRS if a in cols]
    rows: List[_Row] = []
    for rownum, values in rows_after:
        name = _cell_text(_get(values, cols, "image name"))
        mos = _get(values, cols, "mos")
        if not name and _is_blank(mos):
            continue
        path = (index.find(name) if name else None) if index is not None else os.path.join(image_dir, name)
        fields = {}
        for a in attrs:
            x, err = _parse_optional_number(_get(values, cols, a), a)
            if err:
                problems.add(rownum, name, err)
            fields[a] = x
        rows.append(_Row(rownum, name, path, mos, fields))
    columns = {a: "float64" for a in attrs}
    facts = _resolve_facts(opts.get("facts"), dataset_facts("spaq"))
    details = {"row_numbers": "sheet row number (.xlsx) or CSV line number", "image_dir": "TestImage"}
    return _Table("spaq", root, meta, rows, columns, problems, facts, details)


# --- pyiqa meta-info CSV --------------------------------------------------------------

_IMAGE_EXTS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def _parse_name_for(facts: IQADatasetFacts, name: str) -> Dict[str, Any]:
    """ref / distortion / level from a file name, for datasets with structured names."""
    base = posixpath.basename(name)
    out: Dict[str, Any] = {}
    if facts.name == "kadid10k":
        m = _KADID_NAME.match(base)
        if m:
            t = int(m.group(2))
            out = {"ref": m.group(1).upper(), "distortion_id": t, "distortion": KADID10K_DISTORTIONS.get(t), "level": int(m.group(3))}
    elif facts.name == "tid2013":
        m = _TID_NAME.match(base)
        if m:
            t = int(m.group(2))
            out = {"ref": f"I{int(m.group(1)):02d}", "distortion_id": t, "distortion": TID2013_DISTORTIONS.get(t), "level": int(m.group(3))}
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
    root = os.path.abspath(os.path.expanduser(str(data_dir)))
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
    elif not os.path.isabs(str(meta)):
        meta = os.path.join(root, str(meta))
    meta = str(meta)
    image_dir = opts.get("image_dir")
    image_dir = root if image_dir is None else (
        str(image_dir) if os.path.isabs(str(image_dir)) else os.path.join(root, str(image_dir))
    )
    facts_opt = opts.get("facts")
    facts = dataset_facts(facts_opt) if facts_opt is not None else (facts_for_pyiqa_meta_file(meta) or _generic_facts("pyiqa", root))
    if facts.pyiqa_mos_range is not None and opts.get("mos_range") is None:
        facts = facts.replace(mos_range=facts.pyiqa_mos_range)
    header, csv_rows = _read_csv_rows(meta)
    low = [h.lower() for h in header]
    full_reference = len(low) >= 3 and "ref" in low[0] and "dist" in low[1]
    name_col, mos_col = (1, 2) if full_reference else (0, 1)
    if len(header) <= mos_col:
        raise DatasetMetadataError([MetadataProblem(1, "", f"expected an image column then a score column, got header {header}", meta)], meta)
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
            x, err = _parse_optional_number(get(std_col), header[std_col])
            if err:
                problems.add(line, name, err)
            fields["mos_std"] = x
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


# =============================================================================
# public entry point
# =============================================================================

_LOADERS: Dict[str, Callable[[str, Dict[str, Any]], _Table]] = {
    "imagefolder": _load_imagefolder,
    "livec": _load_livec,
    "koniq10k": _load_koniq10k,
    "kadid10k": _load_kadid10k,
    "tid2013": _load_tid2013,
    "csiq": _load_csiq,
    "live": _load_live,
    "spaq": _load_spaq,
    "pyiqa": _load_pyiqa,
}

_COMMON_OPTIONS = {"normalize", "check_files", "metadata_file", "facts", "mos_range", "higher_is_better"}
_FORMAT_OPTIONS = {
    "imagefolder": set(),
    "livec": {"include_training"},
    "koniq10k": {"resolution"},
    "kadid10k": set(),
    "tid2013": set(),
    "csiq": {"sheet"},
    "live": {"include_references", "realigned", "verify_info_txt"},
    "spaq": {"sheet"},
    "pyiqa": {"image_dir", "include_training"},
}


def _format_key(name: str) -> str:
    squashed = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if squashed in ("imagefolder", "folder"):
        return "imagefolder"
    if squashed in ("pyiqa", "pyiqametainfo", "metainfo"):
        return "pyiqa"
    try:
        return dataset_facts(name).name
    except KeyError:
        raise ValueError(
            f"unknown IQA dataset format {name!r}; supported: {', '.join(SUPPORTED_FORMATS)}"
        ) from None


def image_paths(dataset) -> List[str]:
    """The file path of every row's image, without decoding any image."""
    import datasets

    return [item["path"] for item in dataset.cast_column("image", datasets.Image(decode=False))["image"]]


def load_iqa_dataset(name: str, data_dir: Union[str, os.PathLike], **options: Any):
    """Load an IQA dataset from a local folder as a :class:`datasets.Dataset`.

    Args:
        name: the format / dataset, one of :data:`SUPPORTED_FORMATS`
            (``"imagefolder"``, ``"livec"``, ``"koniq10k"``, ``"kadid10k"``,
            ``"tid2013"``, ``"csiq"``, ``"live"``, ``"spaq"``, ``"pyiqa"``) or a
            registry alias (``"clive"``, ``"KonIQ-10k"``, ``"liveiqa"``, ...).
        data_dir: the folder of the release; for the authors' layouts it may
            also be the folder that contains the release folder (e.g. the
            parent of ``ChallengeDB_release``).

    Options (all keyword-only):
        normalize (bool, False): map ``mos`` to ``[0, 1]`` with higher = better
            using the registry's range and direction (DMOS datasets are flipped;
            values outside the nominal range are clipped and counted). The
            published scores are kept in ``mos_raw`` (and ``mos_std_raw``), and
            the description records what was done.
        check_files (bool, True): check that every image file exists (file
            names are matched case-insensitively for the authors' layouts).
            Images are never opened or decoded here.
        metadata_file (path, None): use this metadata file instead of the
            default one (``imagefolder``: ``metadata.csv``; ``pyiqa``: the
            meta-info CSV; also accepted by koniq10k, kadid10k, tid2013, csiq,
            spaq). Relative paths are relative to ``data_dir``.
        facts (str | IQADatasetFacts, None): registry facts to attach (for
            ``imagefolder`` / ``pyiqa``: e.g. ``facts="livec"``).
        mos_range ((low, high), None), higher_is_better (bool, None): override
            the facts' score range / direction.
        include_training (livec, pyiqa; False): keep LIVE Challenge's 7
            rater-training images t1..t7.
        resolution (koniq10k; "1024x768"): image folder, "1024x768" or "512x384".
        sheet (csiq, spaq; None): worksheet name or index of the .xlsx file.
        include_references (live; False): keep the 203 reference copies
            (``orgs == 1``); adds an ``is_reference`` column.
        realigned (live; False): read ``dmos_realigned.mat`` (``dmos_new``)
            instead of ``dmos.mat``.
        verify_info_txt (live; True): cross-check reference names in each
            folder's ``info.txt`` against ``refnames_all.mat``.
        image_dir (pyiqa; data_dir): folder the meta-info paths are relative to.

    Returns:
        a :class:`datasets.Dataset` (see the module docstring for columns).

    Raises:
        DatasetMetadataError: listing every bad metadata row.
        FileNotFoundError: the release's metadata file cannot be found.
        ValueError / TypeError: unknown format or option.
    """
    fmt = _format_key(name)
    allowed = _COMMON_OPTIONS | _FORMAT_OPTIONS[fmt]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"load_iqa_dataset({fmt!r}) got unknown option(s) {unknown}; accepted: {sorted(allowed)}")
    opts = dict(options)
    opts.setdefault("check_files", True)
    opts["check_files"] = bool(opts["check_files"])
    table = _LOADERS[fmt](os.fspath(data_dir), opts)
    return _finalize(
        table,
        normalize=bool(opts.get("normalize", False)),
        check_files=opts["check_files"],
        mos_range=opts.get("mos_range"),
        higher_is_better=opts.get("higher_is_better"),
    )
