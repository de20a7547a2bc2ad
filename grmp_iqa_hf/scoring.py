"""Score many image files robustly: every input gets a row, a broken file never stops the rest.

`model.predict` is the strict API (a bad input raises); this module is what `grmp-iqa score` and
`grmp-iqa evaluate` use over folders: images are decoded by DataLoader workers while the model runs, and each
file that cannot be read is reported with its reason.

Output files (`write_rows`): JSON (strict: NaN as null) is an object `{"provenance": {...}, "predictions":
[{"path", "score", "error"}, ...]}`; CSV is a plain table (`path,score,error`, readable by `pandas.read_csv`
and `csv` as is) with its provenance in the sidecar file `<output>.json` (e.g. `scores.csv.json`); Parquet
has the same columns (`score` float64, null when unreadable; `error` "" when scored) and its provenance as
JSON in the schema metadata under the key `grmp_iqa` (`pyarrow.parquet.read_schema(f).metadata[b"grmp_iqa"]`).
Rows of a Hub dataset (`score_stream`) are named by `row` (and the dataset's id column) instead of `path`.

`score_rows` scores rows of an `ImageCache` shared out over processes (the protocol runners' evaluation).
Both go through `modeling.prediction.batched_outputs`, the one batch-scoring loop (`model.predict` too).

torch and the models are imported inside the functions: the CLI finds the files before it loads anything.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .json_io import write_json

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".pbm"}
)


@dataclass
class ScoreRow:
    """One input: its path, its score (None when it could not be read) and the reason (empty when scored)."""

    path: str
    score: float | None
    error: str = ""


def find_images(paths) -> list[str]:
    """Expand inputs into image files: folders are walked recursively (sorted, hidden entries skipped,
    extensions matched case-insensitively); files named explicitly are kept whatever their extension,
    and so are paths that do not exist (they are reported as errors when scored)."""
    found: list[str] = []
    for path in map(str, paths):
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                        found.append(os.path.join(root, name))
        else:
            found.append(path)
    return found


def _load_and_preprocess(processor, item, load=None, crops: int = 1):
    from .modeling.image_processing_iqa import ImageLoadError, load_image

    try:
        image = load_image(item) if load is None else load(item)
        return processor(image, return_tensors="pt", crops=crops)["pixel_values"], ""
    except ImageLoadError as err:
        return None, err.reason
    except Exception as err:  # noqa: BLE001 - one odd file must not stop a folder; report what happened
        return None, f"{type(err).__name__}: {err}"


class _Decoded:
    """The items as a map-style dataset for `torch.utils.data.DataLoader`: item i -> (pixel values (crops, 3, S, S)
    or None, error). Picklable as long as `load` is (a module-level function), for workers that are spawned."""

    def __init__(self, items, processor, load, crops: int):
        self.items, self.processor, self.load, self.crops = items, processor, load, crops

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return _load_and_preprocess(self.processor, self.items[index], self.load, self.crops)


def _as_list(batch):
    return batch  # (pixels or None, error) pairs: unreadable items must survive collation


def score_files(model, files, batch_size: int = 32, device=None, num_workers: int = 2, progress: bool = True,
                load=None, names=None, crops: int = 1, dtype=None):
    """Score `files` with `model` (any model of this package). Returns one `ScoreRow` per file, in order.

    Images are decoded by a `torch.utils.data.DataLoader` with `num_workers` worker processes (0: in this
    process), which work ahead of the model, so decoding overlaps the forward pass. `load(item)` turns an item
    into an image for the processor (default `load_image`: items are paths), raising `ImageLoadError` for an
    unreadable one; it must be picklable (a module-level function) with workers. `names` are the rows' `path`s
    (default `str(item)`). `crops` and `dtype` as in `model.predict` (the mean over `crops` deterministic
    crops; the forward pass in `dtype`)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .modeling.prediction import batched_outputs

    files = list(files)
    if not files:
        return []
    loader = DataLoader(_Decoded(files, model.image_processor, load, crops), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_as_list,
                        persistent_workers=False, pin_memory=torch.cuda.is_available())
    batches = iter(loader)
    loaded: list[tuple] = []  # (pixels or None, error) per file, in order

    def load_batch(chunk):
        batch = next(batches)  # the DataLoader's batches are batched_outputs' chunks: same size, same order
        loaded.extend(batch)
        good = [pixels for pixels, _ in batch if pixels is not None]
        return torch.cat(good) if good else None  # unreadable files are left out, and get no score

    scores = batched_outputs(model, load_batch, files, batch_size, device, progress=progress, tqdm_class=tqdm,
                             dtype=dtype)["scores"].float()
    scores = iter(scores.view(-1, crops).mean(dim=1).cpu().tolist())
    names = [str(f) for f in files] if names is None else list(names)
    return [ScoreRow(path=name, score=None if pixels is None else next(scores), error=error)
            for name, (pixels, error) in zip(names, loaded)]


def score_stream(model, items, load, batch_size: int = 32, device=None, num_workers: int = 2, progress: bool = True,
                 total: int | None = None, chunk_batches: int = 8, crops: int = 1, dtype=None):
    """Score an iterable of `(name, item)` (e.g. the rows of a streamed dataset) without holding it all: chunks
    of `chunk_batches * batch_size` items go through `score_files` (so the batches are the ones `score_files`
    would make over the whole list). Yields one `ScoreRow` per item, in order."""
    from tqdm.auto import tqdm

    chunk: list = []
    with tqdm(total=total, desc="Scoring", unit="img", disable=not progress) as bar:

        def flush():
            rows = score_files(model, [item for _, item in chunk], batch_size=batch_size, device=device,
                               num_workers=num_workers, progress=False, load=load, names=[n for n, _ in chunk],
                               crops=crops, dtype=dtype)
            bar.update(len(rows))
            return rows

        for name, item in items:
            chunk.append((name, item))
            if len(chunk) == chunk_batches * batch_size:
                yield from flush()
                chunk = []
        if chunk:
            yield from flush()


def score_rows(model, cache, rows, accelerator=None, batch_size: int = 32, fields=("scores",)) -> dict:
    """`{field: float64 array}` of the model's outputs `fields` (e.g. `"scores"`, `"scene_logits"`) for the
    rows `rows` of an `ImageCache` (its centre crops, exactly `model.image_processor`).

    The rows are dealt round robin over processes (position `p` to process `p % world`), each process scores
    its share, and the results are summed back, so every process returns all of them, in `rows` order."""
    import numpy as np
    import torch

    from .distributed import reduce_sum
    from .modeling.prediction import batched_outputs

    rows = [int(r) for r in rows]
    if not rows:
        return {field: np.zeros(0) for field in fields}
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    mine = [p for p in range(len(rows)) if p % world == rank]
    # a process without a share (fewer rows than processes) scores row 0 only to learn each field's shape
    outputs = batched_outputs(model, lambda chunk: cache.batch([rows[p] for p in chunk]), mine or [0], batch_size,
                              fields=fields)
    tables = []
    for field in fields:
        values = outputs[field].double()
        table = torch.zeros((len(rows), *values.shape[1:]), dtype=torch.float64, device=values.device)
        if mine:
            table[torch.as_tensor(mine, device=values.device)] = values
        tables.append(table)
    return {field: table.cpu().numpy() for field, table in zip(fields, reduce_sum(accelerator, tables))}


def sidecar_path(output) -> Path:
    """Where the provenance of a CSV output goes: `scores.csv` -> `scores.csv.json`."""
    return Path(f"{output}.json")


OUTPUT_SUFFIXES = (".csv", ".json", ".parquet")
PARQUET_METADATA_KEY = b"grmp_iqa"


def _write_parquet(records: list[dict], columns: list[str], output: str, provenance: dict | None) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"score": pa.float64(), "error": pa.string(), "row": pa.int64()}
    table = pa.table({c: pa.array([r[c] for r in records], type=types.get(c)) for c in columns})
    if provenance is not None:
        metadata = {PARQUET_METADATA_KEY: json.dumps({"provenance": provenance}, default=str).encode()}
        table = table.replace_schema_metadata(metadata)
    partial = f"{output}.partial"
    pq.write_table(table, partial)
    os.replace(partial, output)  # no half-written file under the final name


def write_rows(rows: list[ScoreRow], output: str, extra_columns: dict[str, list] | None = None,
               provenance: dict | None = None, key_columns: dict[str, list] | None = None) -> None:
    """Write rows as CSV (`.csv`), JSON (`.json`) or Parquet (`.parquet`), with optional extra columns (name ->
    one value per row, e.g. the MOS) and the `provenance` record (see the module docstring for where it
    goes). `key_columns` (name -> one value per row, e.g. a Hub dataset's `row` and `file_name`) replace
    `path` as the columns naming each row."""
    suffix = Path(output).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"output must end in {', '.join(OUTPUT_SUFFIXES)}, got {output!r}")
    extra_columns = extra_columns or {}
    keys = key_columns or {"path": [row.path for row in rows]}
    columns = [*keys, "score", "error", *extra_columns]
    records = [{**{k: v[i] for k, v in keys.items()}, "score": row.score, "error": row.error,
                **{k: v[i] for k, v in extra_columns.items()}} for i, row in enumerate(rows)]
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        write_json(output, {"provenance": provenance, "predictions": records})
        return
    if suffix == ".parquet":
        _write_parquet(records, columns, output, provenance)
        return
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for record in records:
            record["score"] = "" if record["score"] is None else f"{record['score']:.6f}"
            writer.writerow(record)
    sidecar = sidecar_path(output)
    if provenance is not None:
        write_json(sidecar, {"provenance": provenance, "describes": Path(output).name})
    elif sidecar.is_file():
        sidecar.unlink()  # a stale record of an earlier run would describe these rows wrongly


def format_table(rows: list[ScoreRow]) -> str:
    """A plain-text table for the terminal."""
    width = max([len("path")] + [len(r.path) for r in rows])
    lines = [f"{'path':<{width}}  {'score':>8}  error"]
    for r in rows:
        score = "" if r.score is None else f"{r.score:.4f}"
        lines.append(f"{r.path:<{width}}  {score:>8}  {r.error}".rstrip())
    return "\n".join(lines)
