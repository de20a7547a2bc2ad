"""Reading .xlsx worksheets (CSIQ's and SPAQ's score sheets) with ``openpyxl``.

``openpyxl`` is an optional extra (``pip install "grmp-iqa-hf[xlsx]"``): it is
imported only when a workbook is read, so every other format loads without it.
Workbooks are opened read-only with cached formula values (``data_only=True``),
because the loaders want the numbers a person sees, not the formulas.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from typing import Any, List, Tuple, Union

_INSTALL_HINT = 'pip install "grmp-iqa-hf[xlsx]"'


def _open_workbook(path: Union[str, os.PathLike]):
    """``path`` opened read-only with values only; a clear error when openpyxl is missing or the file is no workbook."""
    try:
        import openpyxl
        from openpyxl.utils.exceptions import InvalidFileException
    except ImportError as exc:
        raise ImportError(
            f"reading the spreadsheet {os.fspath(path)} needs openpyxl, which is not installed: {_INSTALL_HINT}"
        ) from exc
    try:
        with warnings.catch_warnings():
            # styles, data validation, ... that openpyxl cannot keep: irrelevant to reading cell values
            warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")
            return openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile) as exc:
        raise ValueError(f"{os.fspath(path)}: not a readable .xlsx workbook ({exc})") from exc


def xlsx_sheet_names(path: Union[str, os.PathLike]) -> List[str]:
    """Names of the worksheets of an .xlsx file, in workbook order."""
    wb = _open_workbook(path)
    try:
        return [ws.title for ws in wb.worksheets]
    finally:
        wb.close()


def _cell_value(value: Any) -> Any:
    # every number is a float, as Excel stores it (openpyxl gives integral numbers as int)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def read_xlsx_rows(path: Union[str, os.PathLike], sheet: Union[None, int, str] = None) -> List[Tuple[int, List[Any]]]:
    """Read one worksheet of an .xlsx file (needs the ``xlsx`` extra, ``openpyxl``).

    Returns ``[(row_number, values), ...]`` for the rows that hold a value,
    ``row_number`` being the 1-based row number Excel shows and ``values`` a
    list indexed by column (A = 0) up to the row's last non-empty cell, with
    ``None`` for empty cells. Numbers come back as ``float``, text as ``str``,
    booleans as ``bool`` (and date-formatted cells as ``datetime``); formulas
    give their cached value. ``sheet`` is a sheet name (case-insensitive), a
    0-based index, or ``None`` for the first sheet.
    """
    wb = _open_workbook(path)
    try:
        sheets = wb.worksheets
        if not sheets:
            raise ValueError(f"{os.fspath(path)}: no worksheet found")
        if sheet is None:
            ws = sheets[0]
        elif isinstance(sheet, int):
            ws = sheets[sheet]
        else:
            match = [s for s in sheets if s.title.lower() == str(sheet).lower()]
            if not match:
                raise KeyError(f"{os.fspath(path)}: no sheet named {sheet!r} (sheets: {[s.title for s in sheets]})")
            ws = match[0]
        # the stored dimensions may be wrong (some writers leave A1:A1): read every cell that is there
        ws.reset_dimensions()
        rows: List[Tuple[int, List[Any]]] = []
        # without dimensions openpyxl yields every row from 1 on, missing ones as (), so numbering is positional
        for row_number, cells in enumerate(ws.iter_rows(values_only=True), start=1):
            values = [_cell_value(v) for v in cells]
            while values and values[-1] is None:
                values.pop()
            if values:
                rows.append((row_number, values))
        return rows
    finally:
        wb.close()
