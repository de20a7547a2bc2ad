"""Hub datasets as a data source: `grmp-iqa evaluate --hub-dataset` and `grmp-iqa score --hub-dataset`.

`open_hub_dataset(repo_id, split, ...)` loads one split with `datasets.load_dataset` (so the datasets / Hub
cache under `HF_HOME` and `HF_HUB_OFFLINE` apply as usual) with the image column left undecoded
(`datasets.Image(decode=False)`): each row's bytes (or file) are decoded by `load_hub_image` through the
package's `load_image` (EXIF orientation, RGB, `ImageLoadError`), so one broken image is reported for its row
and never stops the rest.

Streaming (`streaming=None`, the default, decides): a split is streamed when its size is known and over
`STREAMING_THRESHOLD_BYTES`, or unknown while the Hub is reachable; it is downloaded into the cache otherwise,
and always with `HF_HUB_OFFLINE=1` (streaming needs the Hub).

Usage errors (`HubDatasetError`, a `ValueError`) say what exists: a missing column lists the columns, a
missing split the splits, a missing repository says so.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

#: Splits larger than this (bytes, as the dataset's card records them) are streamed by default.
STREAMING_THRESHOLD_BYTES = 2 * 1024**3
#: Columns that name a row's image, first match wins (the row index is always kept too).
ID_COLUMNS = ("image_id", "file_name", "filename", "id", "name")
_COMMIT = re.compile(r"@([0-9a-f]{40})")


class HubDatasetError(ValueError):
    """A Hub dataset cannot be used as asked: repository, split or column not found (a usage error)."""


@dataclasses.dataclass
class HubImageDataset:
    """One split of a Hub dataset, its image column undecoded; `rows()` iterates it in row order."""

    repo_id: str
    split: str
    dataset: Any  # datasets.Dataset or IterableDataset
    image_column: str
    mos_column: Optional[str]
    id_column: Optional[str]
    streaming: bool
    revision: Optional[str] = None  # as asked
    commit: Optional[str] = None  # as resolved, when the loader says
    config: Optional[str] = None
    num_rows: Optional[int] = None

    def label(self, index: int) -> str:
        """How a row is named in messages and outputs: `test[12]`."""
        return f"{self.split}[{index}]"

    def rows(self, with_images: bool = True) -> Iterator[Dict[str, Any]]:
        """`{"row", "id", "image", "mos"}` per row, in order (`image` is the undecoded value)."""
        columns = [c for c in (self.image_column if with_images else None, self.mos_column, self.id_column) if c]
        data = self.dataset.select_columns(columns)
        for index, example in enumerate(data):
            yield {"row": index, "id": None if self.id_column is None else example[self.id_column],
                   "image": example.get(self.image_column), "mos": example.get(self.mos_column)}

    def describe(self) -> Dict[str, Any]:
        """Where the data came from (for reports and score files)."""
        return {"repo_id": self.repo_id, "split": self.split, "config": self.config, "revision": self.revision,
                "commit": self.commit, "streaming": self.streaming, "num_rows": self.num_rows,
                "image_column": self.image_column, "mos_column": self.mos_column, "id_column": self.id_column}


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _builder(repo_id: str, config: Optional[str], revision: Optional[str]):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    try:
        return datasets.load_dataset_builder(repo_id, name=config, revision=revision)
    except DatasetNotFoundError as err:
        from huggingface_hub import constants

        where = "in the local cache (HF_HUB_OFFLINE is set)" if _offline() else f"on the Hub at {constants.ENDPOINT}"
        raise HubDatasetError(f"dataset repository {repo_id!r} not found {where}: {err}") from err
    except (ConnectionError, FileNotFoundError) as err:
        if _offline():
            raise HubDatasetError(f"dataset {repo_id!r} is not in the cache and HF_HUB_OFFLINE is set: {err}") from err
        raise
    except ValueError as err:  # e.g. an unknown config name: datasets lists the available ones
        raise HubDatasetError(f"dataset {repo_id!r}: {err}") from err


def _splits(builder) -> Tuple[List[str], Dict[str, Optional[int]]]:
    """The split names the builder knows and each one's size in bytes (None when unknown)."""
    known = builder.info.splits or {}
    sizes = {name: (info.num_bytes or None) for name, info in known.items()}
    for name in (getattr(builder.config, "data_files", None) or {}):
        sizes.setdefault(str(name), None)
    return list(sizes), sizes


def choose_split(split: Optional[str], available: List[str], repo_id: str) -> str:
    """`split`, or by default the only split (else `test`); a missing one lists what exists."""
    if split is None:
        if len(available) == 1:
            return available[0]
        if "test" in available:
            return "test"
        raise HubDatasetError(f"dataset {repo_id!r} has splits {available}: choose one with --split")
    if available and split not in available:
        raise HubDatasetError(f"dataset {repo_id!r} has no split {split!r}; available splits: {available}")
    return split


def should_stream(size_bytes: Optional[int], offline: bool, threshold: int = STREAMING_THRESHOLD_BYTES) -> bool:
    """The default: stream a split over `threshold` bytes, or of unknown size while online; never offline."""
    if offline:
        return False
    return size_bytes is None or size_bytes > threshold


def _check_column(name: str, columns: List[str], what: str, repo_id: str, split: str) -> None:
    if name not in columns:
        raise HubDatasetError(f"dataset {repo_id!r} (split {split!r}) has no {what} column {name!r}; "
                              f"columns: {columns}")


def open_hub_dataset(repo_id: str, split: Optional[str] = None, image_column: str = "image",
                     mos_column: Optional[str] = None, revision: Optional[str] = None,
                     streaming: Optional[bool] = None, config: Optional[str] = None) -> HubImageDataset:
    """Load one split of a Hub dataset for scoring (see the module docstring).

    Args:
        split: the split; default: the only one, else `test`.
        mos_column: the human scores' column, checked when given (evaluation).
        streaming: None chooses (`should_stream`); True / False force it.
        config: the dataset's configuration (subset) name.

    Raises:
        HubDatasetError: repository, split or column not found (the message lists what exists).
    """
    import datasets

    builder = _builder(repo_id, config, revision)
    available, sizes = _splits(builder)
    split = choose_split(split, available, repo_id)
    offline = _offline()
    if streaming is None:
        streaming = should_stream(sizes.get(split), offline)
    elif streaming and offline:
        raise HubDatasetError("streaming needs the Hub, and HF_HUB_OFFLINE is set (use --no-streaming: the cache)")
    try:
        if streaming:
            data = builder.as_streaming_dataset(split=split)
        else:
            builder.download_and_prepare()
            data = builder.as_dataset(split=split)
    except (KeyError, ValueError) as err:  # a split the card did not list but the files do not have either
        raise HubDatasetError(f"dataset {repo_id!r}: cannot load split {split!r} ({err}); "
                              f"available splits: {available}") from err
    features = data.features
    if features is None:  # a stream of unknown schema: learn the columns from its first row
        data = data._resolve_features()
        features = data.features
    columns = list(features)
    _check_column(image_column, columns, "image", repo_id, split)
    if mos_column is not None:
        _check_column(mos_column, columns, "MOS", repo_id, split)
    if isinstance(features[image_column], datasets.Image):
        data = data.cast_column(image_column, datasets.Image(decode=False))
    id_column = next((c for c in ID_COLUMNS if c in columns and c not in (image_column, mos_column)), None)
    # the commit the files were resolved at: in the builder's Hub path online, its cache key (`hash`) offline
    commit = _COMMIT.search(f"{getattr(builder, 'base_path', '')} @{getattr(builder, 'hash', '')}")
    num_rows = None if streaming else len(data)
    if num_rows is None and builder.info.splits and split in builder.info.splits:
        num_rows = builder.info.splits[split].num_examples or None
    return HubImageDataset(repo_id=repo_id, split=split, dataset=data, image_column=image_column,
                           mos_column=mos_column, id_column=id_column, streaming=bool(streaming), revision=revision,
                           commit=commit.group(1) if commit else None, config=builder.config.name,
                           num_rows=num_rows)


def _read_remote(path: str) -> bytes:
    """The bytes of an image a streamed file-based dataset names by URL (e.g. `hf://datasets/...`)."""
    import fsspec

    with fsspec.open(path, "rb") as f:
        return f.read()


def load_hub_item(item) -> Any:
    """`(label, image value)` -> RGB PIL image (`load_hub_image`): the `load` of `scoring.score_stream` for Hub rows,
    a module-level function so that DataLoader workers can receive it."""
    label, value = item
    return load_hub_image(value, label)


def load_hub_image(value: Any, name: str):
    """One row's image value (`{"bytes", "path"}` as `datasets.Image(decode=False)` gives it, bytes, a path, a
    PIL image) -> an RGB PIL image, through `load_image`; raises `ImageLoadError` naming `name`."""
    from ..modeling.image_loading import ImageLoadError, load_image

    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data, path = bytes(value), None
    elif isinstance(value, str):
        data, path = None, value
    elif value is None:
        raise ImageLoadError(name, "no image in this row")
    else:
        return load_image(value, name=name)
    if data is None:
        if not path:
            raise ImageLoadError(name, "no image in this row (neither bytes nor a path)")
        if "://" not in path:
            return load_image(path, name=name)  # a file the loader extracted into the cache
        try:
            data = _read_remote(path)
        except (OSError, ValueError) as err:
            raise ImageLoadError(name, f"cannot fetch {path}: {err}") from err
    return load_image(data, name=name)  # the encoded bytes: load_image decodes, orients, converts, names errors


def iqa_dataset_from_rows(source: HubImageDataset, rows: List[Dict[str, Any]], facts=None, normalize: bool = False):
    """The labelled dataset of `rows` (`{"row", "id", "mos"}`) in the form `load_iqa_dataset` gives (same MOS
    checks, normalisation and facts), so the evaluation core treats it like a folder. Image ids are the id
    column's values (else the row labels); the image column is empty (images are read from `source`)."""
    from .datasets.build import _finalize, _generic_facts, _resolve_facts, _Row, _Table
    from .datasets.problems import _Problems

    where = f"hf://datasets/{source.repo_id}" + (f"@{source.commit}" if source.commit else "") + f" ({source.split})"
    table_rows = []
    for row in rows:
        ident = source.label(row["row"]) if row["id"] is None else str(row["id"])
        # the 1-based row of the split names bad rows, as a line number names them in a metadata file
        table_rows.append(_Row(row["row"] + 1, ident, None, row["mos"], image_id=ident))
    default = _generic_facts("hub", source.repo_id).replace(display_name=source.repo_id)
    table = _Table("hub", source.repo_id, where, table_rows, {}, _Problems(where), _resolve_facts(facts, default),
                   details={"hub_dataset": source.describe()})
    return _finalize(table, normalize=normalize, check_files=False, mos_range=None, higher_is_better=None)


__all__ = ["HubDatasetError", "HubImageDataset", "open_hub_dataset", "load_hub_image", "iqa_dataset_from_rows",
           "choose_split", "should_stream", "STREAMING_THRESHOLD_BYTES", "ID_COLUMNS"]
