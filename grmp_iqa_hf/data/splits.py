"""Random train/val/test splits for IQA benchmarks.

The protocol is the one used throughout the blind-IQA literature: for each of
``num_splits`` repetitions, the items (or, with ``group_by``, whole groups of
items such as all distorted versions of one reference image) are randomly
permuted, the first ``train_ratio`` of them form the *training pool* and the
rest the *test set*.  Results are reported as the median over the splits.

On top of that:

* ``num_train=N`` (few-shot setting) draws exactly ``N`` training items from the
  pool; unused pool items are **not** added to the test set.
* ``train_fraction=f`` (data-efficiency setting) keeps a fraction ``f`` of the
  pool (of its groups when ``group_by`` is given).
* ``val_ratio=r`` holds out a fraction ``r`` of the training set (after
  ``num_train`` / ``train_fraction``) as a validation set for model selection.
  Validation items are removed from ``train`` (``train`` and ``val`` are
  disjoint, and ``train | val`` is the drawn training set).

Randomness of split ``i`` comes only from ``numpy.random.default_rng([seed, i])``
so split ``i`` does not depend on ``num_splits``.  Within a split, random draws
happen in a fixed order (pool/test permutation, then pool sub-sampling, then
validation), so the test set of split ``i`` does not depend on ``num_train``,
``train_fraction`` or ``val_ratio``, and the training sets for increasing
``num_train`` (or ``train_fraction``) are nested.

Split files: pyiqa stores splits as a pickle of
``{split_index: {"train": [...], "val": [...], "test": [...]}}``.  We never
unpickle files; :func:`save_splits` / :func:`load_splits` read and write the
same structure as JSON (with string keys, as JSON requires).
:func:`splits_to_columns` / :func:`splits_from_columns` convert to and from one
column per split (``split_0``, ``split_1``, ...) with values
``"train"``/``"val"``/``"test"``/``""``, for CSV meta files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "Split",
    "make_splits",
    "save_splits",
    "load_splits",
    "splits_to_columns",
    "splits_from_columns",
    "SPLIT_PARTS",
]

#: The parts of a split, in the order used by mapping access and JSON files.
SPLIT_PARTS: tuple[str, ...] = ("train", "val", "test")

_COLUMN_RE = re.compile(r"^split_(\d+)$")


def _as_index_array(values: Any, name: str) -> np.ndarray:
    if values is None:
        values = []
    arr = np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0:
        out = np.zeros(0, dtype=np.int64)
    elif arr.dtype.kind in "iu":
        out = arr.astype(np.int64)
    else:
        out = _object_to_int64(arr.astype(object), name)
    if out.size and out.min() < 0:
        raise ValueError(f"Split.{name} contains negative indices")
    out = np.sort(out)
    if out.size > 1 and np.any(out[1:] == out[:-1]):
        raise ValueError(f"Split.{name} contains duplicate indices")
    out.setflags(write=False)
    return out


def _object_to_int64(arr: np.ndarray, name: str) -> np.ndarray:
    out = np.empty(arr.shape[0], dtype=np.int64)
    for k, v in enumerate(arr):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            # accept integral floats (e.g. 3.0) but nothing else
            if isinstance(v, (float, np.floating)) and float(v).is_integer():
                v = int(v)
            else:
                raise TypeError(f"Split.{name} must contain integer indices, got {v!r}")
        out[k] = int(v)
    return out


@dataclass(frozen=True, eq=False)
class Split(Mapping):
    """One train/val/test split: sorted, read-only ``int64`` index arrays.

    Usable as a mapping over ``("train", "val", "test")`` (``split["train"]``,
    ``dict(split)``), like one entry of a pyiqa split file.
    """

    index: int
    train: np.ndarray
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", int(self.index))
        for name in SPLIT_PARTS:
            object.__setattr__(self, name, _as_index_array(getattr(self, name), name))
        for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
            common = np.intersect1d(getattr(self, a), getattr(self, b))
            if common.size:
                raise ValueError(
                    f"Split {self.index}: {common.size} indices are in both {a!r} and {b!r} "
                    f"(e.g. {common[:5].tolist()})"
                )

    # --- mapping protocol -------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        if key not in SPLIT_PARTS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(SPLIT_PARTS)

    def __len__(self) -> int:
        return len(SPLIT_PARTS)

    def __contains__(self, key: object) -> bool:
        return key in SPLIT_PARTS

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return self.index == other.index and all(
            np.array_equal(getattr(self, p), getattr(other, p)) for p in SPLIT_PARTS
        )

    __hash__ = None  # type: ignore[assignment]  # arrays: not hashable

    def __repr__(self) -> str:
        return (
            f"Split(index={self.index}, train={self.train.size} items, "
            f"val={self.val.size} items, test={self.test.size} items)"
        )

    # --- helpers ------------------------------------------------------------
    @property
    def sizes(self) -> dict[str, int]:
        """Number of items per part."""
        return {p: int(getattr(self, p).size) for p in SPLIT_PARTS}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: ``{"index": i, "train": [...], "val": [...], "test": [...]}``."""
        out: dict[str, Any] = {"index": self.index}
        for p in SPLIT_PARTS:
            out[p] = getattr(self, p).tolist()
        return out


# ---------------------------------------------------------------------------
# making splits
# ---------------------------------------------------------------------------


def _num_items(dataset: Any) -> int:
    if isinstance(dataset, (bool, np.bool_)):
        raise TypeError("dataset must be a dataset-like object or an int, not a bool")
    if isinstance(dataset, (int, np.integer)):
        n = int(dataset)
        if n < 0:
            raise ValueError(f"number of items must be >= 0, got {n}")
        return n
    try:
        return len(dataset)
    except TypeError as exc:
        raise TypeError(
            "dataset must be an int (number of items) or support len() "
            f"(e.g. a datasets.Dataset), got {type(dataset).__name__}"
        ) from exc


def _column_values(dataset: Any, column: Any, n: int) -> list:
    if isinstance(column, str):
        if isinstance(dataset, (int, np.integer)):
            raise ValueError(
                f"group_by={column!r} needs a dataset with columns, but got an int; "
                "pass the dataset or a sequence of group labels instead"
            )
        try:
            col = dataset[column]
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            names = getattr(dataset, "column_names", None)
            hint = f" (available columns: {names})" if names is not None else ""
            raise KeyError(f"group_by column {column!r} not found in dataset{hint}") from exc
    else:
        col = column  # a sequence of group labels
    try:
        values = col[:]  # fast path for datasets' lazy Column
    except Exception:  # noqa: BLE001 - any column-like object
        values = col
    values = list(values)
    if len(values) != n:
        raise ValueError(f"group_by has {len(values)} labels but the dataset has {n} items")
    return values


def _group_members(labels: list) -> list[np.ndarray]:
    """Item indices of each group, groups in order of first appearance."""
    ids: dict[Any, int] = {}
    inverse = np.empty(len(labels), dtype=np.int64)
    for i, lab in enumerate(labels):
        try:
            key = lab.item() if isinstance(lab, np.generic) else lab
            hash(key)
        except TypeError:
            key = repr(lab)
        inverse[i] = ids.setdefault(key, len(ids))
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(ids))
    return np.split(order, np.cumsum(counts)[:-1]) if len(ids) else []


def _num_train_units(n_units: int, train_ratio: float) -> int:
    k = int(round(train_ratio * n_units))
    if train_ratio < 1.0 and n_units >= 2:
        k = min(max(k, 1), n_units - 1)  # keep both sides non-empty
    return max(min(k, n_units), 0)


def make_splits(
    dataset: Any,
    num_splits: int = 10,
    train_ratio: float = 0.8,
    seed: int = 2024,
    group_by: str | Sequence | None = None,
    num_train: int | None = None,
    val_ratio: float = 0.0,
    train_fraction: float | None = None,
) -> list[Split]:
    """Make ``num_splits`` random train/(val)/test splits.

    Args:
        dataset: a ``datasets.Dataset`` (or anything with ``len()`` and column
            access ``dataset[column]``), or an int (number of items).
        num_splits: number of random splits.
        train_ratio: fraction in (0, 1] of the items (of the groups, with
            ``group_by``) forming the training pool; the rest is the test set.
        seed: base seed; split ``i`` uses ``numpy.random.default_rng([seed, i])``.
        group_by: column name (e.g. ``"ref"``) or a sequence of per-item labels;
            whole groups go to one side (and, for ``val``, whole groups of the
            training set are held out).
        num_train: draw exactly this many training items from the pool
            (few-shot); error if the pool is smaller. Unused pool items are not
            added to the test set.
        val_ratio: fraction in [0, 1) of the training set held out as
            validation (at least one item/group when > 0); removed from ``train``.
        train_fraction: fraction in (0, 1] of the pool (of its groups, with
            ``group_by``) used for training; mutually exclusive with ``num_train``.

    Returns:
        A list of :class:`Split` with ``index`` 0 .. num_splits-1.
    """
    n = _num_items(dataset)
    if isinstance(num_splits, bool) or not isinstance(num_splits, (int, np.integer)) or num_splits < 1:
        raise ValueError(f"num_splits must be a positive int, got {num_splits!r}")
    if not (0.0 < float(train_ratio) <= 1.0):
        raise ValueError(f"train_ratio must be in (0, 1], got {train_ratio!r}")
    if not (0.0 <= float(val_ratio) < 1.0):
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio!r}")
    if num_train is not None and train_fraction is not None:
        raise ValueError("num_train and train_fraction are mutually exclusive")
    if num_train is not None:
        if isinstance(num_train, bool) or not isinstance(num_train, (int, np.integer)) or num_train < 1:
            raise ValueError(f"num_train must be a positive int, got {num_train!r}")
        num_train = int(num_train)
    if train_fraction is not None and not (0.0 < float(train_fraction) <= 1.0):
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if n < 1:
        raise ValueError("cannot split an empty dataset")

    if group_by is not None:
        groups = _group_members(_column_values(dataset, group_by, n))
    else:
        groups = None
    n_units = len(groups) if groups is not None else n
    n_pool_units = _num_train_units(n_units, float(train_ratio))

    def items_of(units: np.ndarray) -> np.ndarray:
        if groups is None:
            return np.asarray(units, dtype=np.int64)
        if len(units) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([groups[u] for u in units]).astype(np.int64)

    splits: list[Split] = []
    for i in range(int(num_splits)):
        rng = np.random.default_rng([int(seed), i])
        # 1) pool / test over units (items or groups)
        perm = rng.permutation(n_units)
        pool_units, test_units = perm[:n_pool_units], perm[n_pool_units:]
        test = items_of(test_units)
        # 2) sub-sampling of the pool (always drawn so later draws are stable)
        pool_items = rng.permutation(items_of(pool_units))
        if num_train is not None:
            if num_train > pool_items.size:
                raise ValueError(
                    f"num_train={num_train} but the training pool of split {i} has only "
                    f"{pool_items.size} items (n={n}, train_ratio={train_ratio})"
                )
            train = pool_items[:num_train]
        elif train_fraction is not None:
            k = max(1, int(round(float(train_fraction) * len(pool_units))))
            train = items_of(pool_units[:k])  # pool_units is already a random order
        else:
            train = pool_items
        # 3) validation hold-out from the training set
        val = np.zeros(0, dtype=np.int64)
        if val_ratio > 0:
            train, val = _hold_out(train, float(val_ratio), groups, rng, i)
        splits.append(Split(index=i, train=train, test=test, val=val))
    return splits


def _hold_out(
    train: np.ndarray,
    val_ratio: float,
    groups: list[np.ndarray] | None,
    rng: np.random.Generator,
    split_index: int,
) -> tuple[np.ndarray, np.ndarray]:
    train = np.sort(np.asarray(train, dtype=np.int64))
    if groups is None:
        n_val = max(1, int(round(val_ratio * train.size)))
        if n_val >= train.size:
            raise ValueError(
                f"split {split_index}: val_ratio={val_ratio} leaves no training items "
                f"(training set has {train.size} items)"
            )
        perm = rng.permutation(train)
        return perm[n_val:], perm[:n_val]
    # grouped: hold out whole groups present in the training set
    group_of = np.empty(sum(g.size for g in groups), dtype=np.int64)
    for gi, members in enumerate(groups):
        group_of[members] = gi
    train_groups = np.unique(group_of[train])
    n_val = max(1, int(round(val_ratio * train_groups.size)))
    if n_val >= train_groups.size:
        raise ValueError(
            f"split {split_index}: val_ratio={val_ratio} leaves no training groups "
            f"(training set has {train_groups.size} groups)"
        )
    val_groups = rng.permutation(train_groups)[:n_val]
    in_val = np.isin(group_of[train], val_groups)
    return train[~in_val], train[in_val]


# ---------------------------------------------------------------------------
# JSON split files (pyiqa structure, no pickle)
# ---------------------------------------------------------------------------


def _normalize_id(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    return str(value)


def _ids_list(ids: Iterable) -> list:
    try:
        values = ids[:]  # type: ignore[index]  # datasets Column fast path
    except Exception:  # noqa: BLE001
        values = ids
    return [_normalize_id(v) for v in values]


def _check_unique(id_list: list) -> None:
    seen: set = set()
    dups = []
    for v in id_list:
        if v in seen:
            dups.append(v)
        seen.add(v)
    if dups:
        raise ValueError(f"ids must be unique; {len(dups)} duplicates, e.g. {dups[:5]}")


def _coerce_split(split: Any) -> Split:
    """Accept a Split or a dict such as ``Split.to_dict()``."""
    if isinstance(split, Split):
        return split
    if isinstance(split, Mapping) and "index" in split:
        return Split(
            index=split["index"],
            train=split.get("train"),
            test=split.get("test"),
            val=split.get("val"),
        )
    raise TypeError(f"expected a Split (or a dict with 'index'), got {type(split).__name__}")


def save_splits(splits: Sequence[Split], path: str | os.PathLike, ids: Sequence | None = None) -> str:
    """Write splits as JSON ``{"<index>": {"train": [...], "val": [...], "test": [...]}}``.

    With ``ids`` (the dataset's image identifiers, one per item) the file stores
    identifiers instead of indices, which survives re-ordering of the meta file.
    Returns the path written (as ``str``).
    """
    id_list = _ids_list(ids) if ids is not None else None
    if id_list is not None:
        _check_unique(id_list)
    data: dict[str, dict[str, list]] = {}
    for split in splits:
        split = _coerce_split(split)
        if str(split.index) in data:
            raise ValueError(f"duplicate split index {split.index}")
        entry = {}
        for part in SPLIT_PARTS:
            idx = getattr(split, part)
            if id_list is not None:
                if idx.size and idx.max() >= len(id_list):
                    raise ValueError(
                        f"split {split.index} refers to item {int(idx.max())} but only "
                        f"{len(id_list)} ids were given"
                    )
                entry[part] = [id_list[j] for j in idx]
            else:
                entry[part] = idx.tolist()
        data[str(split.index)] = entry
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")
    return path


def load_splits(path: str | os.PathLike, ids: Sequence | None = None) -> list[Split]:
    """Read a JSON split file written by :func:`save_splits` (or converted from pyiqa).

    Accepts ``{index: {"train", "val", "test"}}`` (``"val"`` optional) or a list
    of such entries. With ``ids``, stored identifiers are mapped back to
    indices; unknown identifiers raise a ``ValueError`` naming them.
    """
    with open(os.fspath(path), "r", encoding="utf-8") as fh:
        data = json.load(fh)
    if isinstance(data, list):
        items = [(e.get("index", k), e) for k, e in enumerate(data)]
    elif isinstance(data, dict):
        items = list(data.items())
    else:
        raise ValueError(f"{path}: expected a JSON object {{split_index: {{train, val, test}}}}")

    lookup: dict[Any, int] | None = None
    if ids is not None:
        id_list = _ids_list(ids)
        _check_unique(id_list)
        lookup = {v: k for k, v in enumerate(id_list)}

    splits = []
    for key, entry in items:
        try:
            index = int(key)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: split key {key!r} is not an integer") from exc
        if not isinstance(entry, dict) or "train" not in entry or "test" not in entry:
            raise ValueError(f"{path}: split {key!r} must be an object with 'train' and 'test' lists")
        unknown = [p for p in entry if p not in SPLIT_PARTS and p != "index"]
        if unknown:
            raise ValueError(f"{path}: split {key!r} has unknown parts {unknown}")
        parts = {}
        for part in SPLIT_PARTS:
            values = entry.get(part) or []
            if lookup is not None:
                missing = [v for v in values if _normalize_id(v) not in lookup]
                if missing:
                    raise ValueError(
                        f"{path}: split {key!r} part {part!r} has {len(missing)} ids not in the "
                        f"dataset, e.g. {missing[:5]}"
                    )
                parts[part] = [lookup[_normalize_id(v)] for v in values]
            else:
                bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)]
                if bad:
                    raise ValueError(
                        f"{path}: split {key!r} part {part!r} contains non-integer entries "
                        f"(e.g. {bad[:3]}); pass ids=... to map identifiers back to indices"
                    )
                parts[part] = values
        splits.append(Split(index=index, **parts))
    splits.sort(key=lambda s: s.index)
    return splits


# ---------------------------------------------------------------------------
# column form (pyiqa-like CSV)
# ---------------------------------------------------------------------------


def splits_to_columns(splits: Sequence[Split], n: int) -> dict[str, list[str]]:
    """One column per split, ``split_<index>``, of length ``n`` with values
    ``"train"``, ``"val"``, ``"test"`` or ``""`` (item unused in that split)."""
    n = int(n)
    columns: dict[str, list[str]] = {}
    for split in map(_coerce_split, splits):
        name = f"split_{split.index}"
        if name in columns:
            raise ValueError(f"duplicate split index {split.index}")
        col = [""] * n
        for part in SPLIT_PARTS:
            idx = split[part]
            if idx.size and idx.max() >= n:
                raise ValueError(
                    f"split {split.index} refers to item {int(idx.max())} but n={n}"
                )
            for j in idx.tolist():
                col[j] = part
        columns[name] = col
    return columns


def splits_from_columns(columns: Mapping[str, Sequence]) -> list[Split]:
    """Inverse of :func:`splits_to_columns`.

    Columns not named ``split_<k>`` are ignored (so a whole CSV read as
    ``{column: values}`` can be passed). Empty strings, ``None`` and NaN mean
    "unused"; other values must be ``train``/``val``/``test`` (case-insensitive).
    """
    found = []
    for name, values in columns.items():
        m = _COLUMN_RE.match(str(name))
        if m:
            found.append((int(m.group(1)), name, values))
    if not found:
        raise ValueError("no 'split_<k>' columns found")
    found.sort(key=lambda t: t[0])
    splits = []
    for index, name, values in found:
        try:
            values = values[:]  # datasets Column fast path
        except Exception:  # noqa: BLE001
            pass
        parts: dict[str, list[int]] = {p: [] for p in SPLIT_PARTS}
        for j, v in enumerate(values):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            s = str(v).strip().lower()
            if s == "":
                continue
            if s not in parts:
                raise ValueError(
                    f"column {name!r} row {j}: invalid value {v!r} "
                    "(expected 'train', 'val', 'test' or '')"
                )
            parts[s].append(j)
        splits.append(Split(index=index, **parts))
    return splits
