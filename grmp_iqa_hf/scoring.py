"""Score many image files robustly: every input gets a row, a broken file never stops the rest.

`model.predict` is the strict API (a bad input raises); this module is what `grmp-iqa score` and
`grmp-iqa evaluate` use over folders: images are decoded in a small thread pool while the model runs,
and each file that cannot be read is reported with its reason.

Output files (`write_rows`): JSON is an object `{"provenance": {...}, "predictions": [{"path", "score",
"error"}, ...]}`; CSV is a plain table (`path,score,error`, readable by `pandas.read_csv` and `csv` as is)
with its provenance in the sidecar file `<output>.json` (e.g. `scores.csv.json`).

torch and the models are imported inside the functions: the CLI finds the files before it loads anything.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

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

    device = torch.device(device) if device is not None else next(model.parameters()).device
    processor = model.image_processor
    was_training = model.training
    model.eval()
    rows: list[ScoreRow] = []
    bar = tqdm(total=len(files), desc="Scoring", unit="img", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            chunks = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
            # decode the next chunk while the model runs on the current one
            pending = [pool.submit(_load_and_preprocess, processor, f) for f in chunks[0]] if chunks else []
            for index, chunk in enumerate(chunks):
                loaded = [job.result() for job in pending]
                if index + 1 < len(chunks):
                    pending = [pool.submit(_load_and_preprocess, processor, f) for f in chunks[index + 1]]
                good = [i for i, (pixels, _) in enumerate(loaded) if pixels is not None]
                scores = {}
                if good:
                    batch = torch.stack([loaded[i][0] for i in good]).to(device)
                    with torch.no_grad():
                        values = model(pixel_values=batch).scores.float().cpu().tolist()
                    scores = dict(zip(good, values))
                for i, path in enumerate(chunk):
                    rows.append(ScoreRow(path=path, score=scores.get(i), error=loaded[i][1]))
                bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return rows


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
        with open(output, "w") as f:
            json.dump({"provenance": provenance, "predictions": records}, f, indent=1)
        return
    with open(output, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "score", "error", *extra_columns])
        writer.writeheader()
        for record in records:
            record["score"] = "" if record["score"] is None else f"{record['score']:.6f}"
            writer.writerow(record)
    sidecar = sidecar_path(output)
    if provenance is not None:
        sidecar.write_text(json.dumps({"provenance": provenance, "describes": Path(output).name}, indent=1))
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
