"""Reading metadata tables: CSV and JSON Lines files, and header rows in sheets.

Rows keep the number a person would find them under (the file's line number,
the sheet's row number), because every problem is reported by that number.
"""

from __future__ import annotations

import csv
import json
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .problems import _cell_text, _file_error, _is_blank, _Problems


def _read_csv_rows(path: str) -> Tuple[List[str], List[Tuple[int, List[str]]]]:
    """``(header, [(line number, values), ...])`` of a CSV file; blank lines are skipped."""
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
        raise _file_error(path, "metadata file is empty")
    return header, rows


def _read_csv_with_columns(csv_path: str, required: Sequence[str]):
    """``(header, rows, {lower-case column name: index})`` of a CSV that must have ``required`` columns."""
    header, csv_rows = _read_csv_rows(csv_path)
    cols = {h.lower(): i for i, h in enumerate(header)}
    for need in required:
        if need not in cols:
            raise _file_error(csv_path, f"no {need!r} column (columns: {header})", row=1)
    return header, csv_rows, cols


def _read_jsonl_rows(path: str) -> Tuple[List[str], List[Tuple[int, Dict[str, Any]]]]:
    """``(keys in first-seen order, [(line number, object), ...])``; every bad line is reported."""
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
    """The cell of column ``name`` in a row, None when the column or the cell is missing."""
    j = cols.get(name)
    return values[j] if j is not None and j < len(values) else None
