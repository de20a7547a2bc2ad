"""Inference throughput of the quality models against CLIP's own image tower, measured in one run.

At ViT-B/16 size (random weights: the cost does not depend on their values), on the same batches:
- `clip_image_features`: `CLIPModel.get_image_features` (the floor: what any CLIP scorer must pay);
- `grmp_coop`: GRMP-IQA with text context only (`num_visual_prompts=0`): text features are cached, so it
  should cost the image tower alone;
- `grmp_vpt100`: GRMP-IQA with 100 deep visual prompts (297 tokens instead of 197 per layer); the blocks
  compute only the rows that are read (`skip_unused_queries`, the default): the last block the CLS query, the
  others every row but the prompts, which the next block replaces;
- `grmp_vpt100_all_queries`: the same model computing every row of every block (before that change);
- `mp_iqe`: MP-IQE with its default config (100 deep visual prompts, 9 + 11 cached prompt features as
  queries of a 2-layer multimodal encoder over the 196 patch tokens, then the quality head);
- `grmp_vpt100_bf16`: `grmp_vpt100` under `torch.autocast(dtype=torch.bfloat16)` (what `predict(dtype=
  torch.bfloat16)` does with fp32 weights); `bf16_vs_fp32` is its throughput relative to `grmp_vpt100`
  (CPUs without bf16 units can be slower in bf16);
- `predict_crops`: `model.predict` end to end (decoding, resizing, cropping, the forward pass) on `--batch-size`
  photo-sized images with `crops=5` against `crops=1`: `five_crops_cost` is the time ratio (about 5 expected).

Timings are interleaved (one batch of each model per round) and the median per model is reported, so
machine noise hits all of them alike. Ratios are throughput relative to `clip_image_features`.

    python benchmarks/inference.py --json            # ViT-B/16, batch 8
    python benchmarks/inference.py --size tiny       # seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from grmp_iqa_hf import GRMPIQAModel, MPIQEModel
from grmp_iqa_hf.testing import tiny_clip_config, tiny_tokenizer
from transformers import CLIPModel

VIT_B16 = {
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                    "num_attention_heads": 8, "max_position_embeddings": 77},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
    "projection_dim": 512,
}


def build_backbone(size: str):
    tokenizer = tiny_tokenizer()  # the tokenizer does not affect image-side cost
    overrides = VIT_B16 if size == "base" else {}
    torch.manual_seed(0)
    return CLIPModel(tiny_clip_config(tokenizer, **overrides)).eval(), tokenizer


def timed(fn, device: str) -> float:
    """Wall seconds of `fn()`, synchronising CUDA before and after so queued kernels are counted."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_info(benchmark: str, size: str, device: str) -> dict:
    """The fields every benchmark's JSON starts with: what ran, where."""
    return {
        "benchmark": benchmark,
        "size": "ViT-B/16" if size == "base" else "tiny",
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def candidates(clip, tokenizer, device) -> dict:
    """name -> callable(pixel_values), every module on `device`. Extended by later models (MP-IQE)."""
    coop = GRMPIQAModel.from_clip(clip, tokenizer, num_visual_prompts=0).to(device).eval()
    vpt = GRMPIQAModel.from_clip(clip, tokenizer, num_visual_prompts=100).to(device).eval()
    vpt_full = GRMPIQAModel.from_clip(clip, tokenizer, num_visual_prompts=100).to(device).eval()
    vpt_full.skip_unused_queries = False
    mp_iqe = MPIQEModel.from_clip(clip, tokenizer).to(device).eval()
    clip = clip.to(device)
    return {
        "clip_image_features": lambda px: clip.get_image_features(pixel_values=px).pooler_output,
        "grmp_coop": lambda px: coop(pixel_values=px).scores,
        "grmp_vpt100": lambda px: vpt(pixel_values=px).scores,
        "grmp_vpt100_all_queries": lambda px: vpt_full(pixel_values=px).scores,
        "mp_iqe": lambda px: mp_iqe(pixel_values=px).scores,
        "grmp_vpt100_bf16": lambda px: _autocast_bf16(vpt, px, device),
    }


def _autocast_bf16(model, pixel_values, device):
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        return model(pixel_values=pixel_values).scores


def crops_cost(clip, tokenizer, device, batch_size: int, rounds: int) -> dict:
    """Median seconds of `predict(images, crops=1)` and `crops=5` (interleaved), and their ratio."""
    import numpy as np

    model = GRMPIQAModel.from_clip(clip, tokenizer, num_visual_prompts=100).to(device).eval()
    rng = np.random.default_rng(0)
    side = clip.config.vision_config.image_size
    images = [rng.integers(0, 256, (side * 2, side * 3, 3), dtype=np.uint8) for _ in range(batch_size)]
    times = {1: [], 5: []}
    model.predict(images[:1])  # warm-up
    for _ in range(rounds):
        for crops in times:
            times[crops].append(timed(lambda: model.predict(images, batch_size=batch_size, crops=crops), device))
    median = {crops: statistics.median(t) for crops, t in times.items()}
    return {"seconds_crops_1": round(median[1], 4), "seconds_crops_5": round(median[5], 4),
            "five_crops_cost": round(median[5] / median[1], 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["base", "tiny"], default="base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's; 1 avoids thread "
                                                     "contention on a shared machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    clip, tokenizer = build_backbone(args.size)
    models = candidates(clip, tokenizer, args.device)
    image_size = clip.config.vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(args.batch_size, 3, image_size, image_size, generator=generator).to(args.device)

    times = {name: [] for name in models}
    with torch.inference_mode():
        for fn in models.values():  # warm-up (also fills the text-feature caches)
            fn(pixel_values)
        for _ in range(args.rounds):
            for name, fn in models.items():
                times[name].append(timed(lambda: fn(pixel_values), args.device))
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["clip_image_features"]
    result = {
        **run_info("inference", args.size, args.device),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "seconds_per_batch": {k: round(v, 4) for k, v in median.items()},
        "images_per_second": {k: round(args.batch_size / v, 3) for k, v in median.items()},
        "throughput_ratio_vs_clip": {k: round(base / v, 3) for k, v in median.items() if k != "clip_image_features"},
        "bf16_vs_fp32": round(median["grmp_vpt100"] / median["grmp_vpt100_bf16"], 3),
        "predict_crops": crops_cost(clip, tokenizer, args.device, args.batch_size, args.rounds),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
