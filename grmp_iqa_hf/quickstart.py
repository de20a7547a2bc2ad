"""`grmp-iqa quickstart`: the whole pipeline offline, in minutes, on an embedded default.

1. Pristine photos shipped with scikit-image, distorted by the synthetic engine (25 types x 5 levels);
   labels from the distortion level. Split by reference photo, so no content is on both sides.
2. A GRMP-IQA model around the backbone (`tiny-random` by default: a small random CLIP built offline;
   real CLIP weights need the Hub), scored zero-shot.
3. Prompt tuning of the text context and visual prompts on the training photos.
4. `save_pretrained`, reload with `from_pretrained`, score the held-out files, write `scores.csv`,
   print SRCC before and after training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from .data import build_synthetic_dataset, image_paths, load_pristine_images, make_splits
from .evaluation import compute_metrics
from .modeling.modeling_grmp_iqa import GRMPIQAModel
from .models import TINY_BACKBONE, build_model
from .scoring import score_files, write_rows
from .training.prompt_tuning import pixel_cache, train_prompts


def _say(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def run_quickstart(
    output_dir,
    backbone: str = TINY_BACKBONE,
    seed: int = 0,
    epochs: int | None = None,
    device: str | None = None,
    photo_size: int = 160,
    batch_size: int = 32,
    learning_rate: float = 1e-2,
) -> dict:
    """Run the quickstart and return its summary (also written to `<output_dir>/quickstart.json`)."""
    started = time.perf_counter()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if epochs is None:
        epochs = 20 if backbone == TINY_BACKBONE else 3

    _say(f"1/4 building the synthetic dataset from scikit-image photos into {out / 'data'}")
    pristine = load_pristine_images(size=photo_size)
    dataset = build_synthetic_dataset(pristine, label="level", seed=seed, include_reference=True,
                                      output_dir=out / "data")
    files = image_paths(dataset)
    mos = np.asarray(dataset["mos"], dtype=np.float64)
    split = make_splits(dataset, num_splits=1, train_ratio=2 / 3, seed=seed, group_by="ref")[0]
    test_refs = sorted(set(dataset.select(split.test)["ref"]))
    _say(f"   {len(dataset)} images of {len(pristine)} photos; train {len(split.train)}, "
         f"test {len(split.test)} (held-out photos: {', '.join(test_refs)})")

    _say(f"2/4 building GRMP-IQA around backbone {backbone!r}")
    model = build_model(backbone, seed=seed)
    if device:
        model = model.to(device)
    test_files = [files[i] for i in split.test]
    before = compute_metrics([r.score for r in score_files(model, test_files, progress=False)], mos[split.test])
    _say(f"   zero-shot SRCC on held-out photos: {before['srcc']:.4f}")

    _say(f"3/4 prompt tuning for {epochs} epochs ({sum(p.numel() for p in model.parameters() if p.requires_grad):,} "
         "trainable parameters)")
    pixels = pixel_cache(model, [files[i] for i in split.train])
    accelerator = Accelerator(cpu=(device or "cpu") == "cpu")
    history = train_prompts(model, pixels, mos[split.train], epochs=epochs, batch_size=batch_size,
                            learning_rate=learning_rate, seed=seed, accelerator=accelerator)
    _say(f"   training loss {history[0]['loss']:.4f} -> {history[-1]['loss']:.4f}")

    _say("4/4 saving, reloading with from_pretrained and scoring the held-out files")
    model_dir = out / "model"
    model.config.training_info = {"stage": "quickstart prompt tuning", "epochs": epochs, "seed": seed,
                                  "data": "scikit-image photos + synthetic distortions"}
    model.save_pretrained(model_dir)
    reloaded = GRMPIQAModel.from_pretrained(model_dir)
    if device:
        reloaded = reloaded.to(device)
    rows = score_files(reloaded, test_files, batch_size=batch_size, progress=False)
    write_rows(rows, str(out / "scores.csv"), extra_columns={"mos": mos[split.test].tolist()})
    after = compute_metrics([r.score for r in rows], mos[split.test])
    summary = {
        "backbone": backbone,
        "seed": seed,
        "num_images": len(dataset),
        "train_images": len(split.train),
        "test_images": len(split.test),
        "test_photos": test_refs,
        "srcc_zero_shot": before["srcc"],
        "srcc_after_prompt_tuning": after["srcc"],
        "plcc_after_prompt_tuning": after["plcc"],
        "history": history,
        "model_dir": str(model_dir),
        "scores_csv": str(out / "scores.csv"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "quickstart.json").write_text(json.dumps(summary, indent=2))
    _say(f"SRCC on held-out photos: zero-shot {before['srcc']:.4f} -> prompt-tuned {after['srcc']:.4f} "
         f"(PLCC {after['plcc']:.4f})")
    _say(f"checkpoint: {model_dir}   scores: {out / 'scores.csv'}   ({summary['seconds']} s)")
    if backbone == TINY_BACKBONE:
        _say("note: 'tiny-random' is a small randomly initialised CLIP (real weights need the Hub), so these "
             "numbers only show that the pipeline learns, not real-world accuracy.")
    return summary
