"""Score many image files robustly: every input gets a row, a broken file never stops the rest.

`model.predict` is the strict API (a bad input raises); this module is what `grmp-iqa score` and
`grmp-iqa evaluate` use over folders: images are decoded in a small thread pool while the model runs,
and each file that cannot be read is reported with its reason.

Output files (`write_rows`): JSON (strict: NaN as null) is an object `{"provenance": {...}, "predictions":
[{"path", "score", "error"}, ...]}`; CSV is a plain table (`path,score,error`, readable by `pandas.read_csv`
and `csv` as is) with its provenance in the sidecar file `<output>.json` (e.g. `scores.csv.json`).

`score_rows` scores rows of an `ImageCache` shared out over processes (the protocol runners' evaluation).
Both go through `modeling.prediction.batched_outputs`, the one batch-scoring loop (`model.predict` too).

torch and the models are imported inside the functions: the CLI finds the files before it loads anything.
"""

from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
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


def _load_and_preprocess(processor, path: str):
    from .modeling.image_processing_iqa import ImageLoadError, load_image

    try:
        return processor(load_image(path), return_tensors="pt")["pixel_values"][0], ""
    except ImageLoadError as err:
        return None, err.reason
    except Exception as err:  # noqa: BLE001 - one odd file must not stop a folder; report what happened
        return None, f"{type(err).__name__}: {err}"


def score_files(model, files, batch_size: int = 32, device=None, num_workers: int = 2, progress: bool = True):
    """Score `files` with `model` (any model of this package). Returns one `ScoreRow` per file, in order."""
    import torch
    from tqdm.auto import tqdm

    from .modeling.prediction import batched_outputs

    processor = model.image_processor
    loaded: list[tuple] = []  # (pixels or None, error) per file, in order
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:

        def submit(start: int) -> list:
            return [pool.submit(_load_and_preprocess, processor, f) for f in files[start : start + batch_size]]

        pending = submit(0)

        def load_batch(chunk):
            nonlocal pending
            loaded.extend(job.result() for job in pending)
            pending = submit(len(loaded))  # decode the next chunk while the model runs on this one
            good = [pixels for pixels, _ in loaded[len(loaded) - len(chunk) :] if pixels is not None]
            return torch.stack(good) if good else None  # unreadable files are left out, and get no score

        scores = batched_outputs(model, load_batch, files, batch_size, device, progress=progress,
                                 tqdm_class=tqdm)["scores"].float().cpu().tolist()
    scores = iter(scores)
    return [ScoreRow(path=path, score=None if pixels is None else next(scores), error=error)
            for path, (pixels, error) in zip(files, loaded)]


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


def write_rows(rows: list[ScoreRow], output: str, extra_columns: dict[str, list] | None = None,
               provenance: dict | None = None) -> None:
    """Write rows as CSV (`.csv`) or JSON (`.json`), with optional extra columns (name -> one value per
    row, e.g. the MOS) and the `provenance` record (see the module docstring for where it goes)."""
    suffix = Path(output).suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"output must end in .csv or .json, got {output!r}")
    extra_columns = extra_columns or {}
    records = [dict(asdict(row), **{k: v[i] for k, v in extra_columns.items()}) for i, row in enumerate(rows)]
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        write_json(output, {"provenance": provenance, "predictions": records})
        return
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "error", *extra_columns])
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
