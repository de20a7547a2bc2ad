"""The one JSON writer of the package: reports, run records, checkpoint state and score files.

Output is strict JSON (`allow_nan=False`): NaN and infinities are written as `null`, which every JSON
reader accepts (Python's `json` would otherwise write the non-standard `NaN`). numpy and torch scalars,
arrays, tuples, sets and paths become plain JSON values. Writes are atomic (a temporary file renamed
over the target), so a killed run never leaves half a file behind.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON types: NaN/inf floats -> None, numpy/torch scalars -> numbers, arrays,
    tuples and sets -> lists, paths -> strings, dict keys -> strings."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(value, key=repr)]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return to_jsonable(value.tolist())
    raise TypeError(f"cannot write a {type(value).__name__} as JSON: {value!r:.80}")


def dumps(payload: Any, indent: int | None = 1) -> str:
    """Strict JSON text of `payload` (see `to_jsonable`)."""
    return json.dumps(to_jsonable(payload), indent=indent, allow_nan=False)


def write_json(path, payload: Any, main_process: bool = True, indent: int | None = 1) -> Path:
    """Atomically write `payload` as strict JSON to `path` (parents created). Under several processes
    only the main one writes: pass `main_process=accelerator.is_main_process`."""
    path = Path(path)
    if main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            fh.write(dumps(payload, indent=indent))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    return path


__all__ = ["dumps", "to_jsonable", "write_json"]
