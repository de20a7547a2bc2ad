"""Metadata problems and the cell-value parsers that find them.

Every loader collects what is wrong with its metadata in one :class:`_Problems`
and raises a single :class:`DatasetMetadataError` naming every bad row, so a
user fixes a release in one pass; nothing is silently dropped.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


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


def _file_error(source: str, message: str, row: Optional[int] = None) -> DatasetMetadataError:
    """The error for a problem with a whole metadata file (no column, no sheet, ...)."""
    return DatasetMetadataError([MetadataProblem(row, "", message, source)], source)


class _Problems:
    """The problems of one metadata file, collected while its rows are read."""

    def __init__(self, source: str):
        self.source = source
        self.items: List[MetadataProblem] = []

    def add(self, row: Optional[int], file_name: str, message: str) -> None:
        self.items.append(MetadataProblem(row, str(file_name or ""), message, self.source))

    def optional_number(self, row: Optional[int], file_name: str, value: Any, what: str) -> Optional[float]:
        """``value`` parsed by :func:`_parse_optional_number`; a bad value is recorded and gives None."""
        x, err = _parse_optional_number(value, what)
        if err:
            self.add(row, file_name, err)
        return x

    def raise_if_any(self) -> None:
        if self.items:
            items = sorted(self.items, key=lambda p: (p.row is not None, p.row or 0))
            raise DatasetMetadataError(items, self.source)


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
