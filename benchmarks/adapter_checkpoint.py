"""Prompts-only (adapter) checkpoints vs full checkpoints: bytes on disk, save / load seconds, and whether
the reloaded model scores identically. Prints JSON.

    python benchmarks/adapter_checkpoint.py --size base --json     # ViT-B/16, 100 visual prompts (issue 7)

The base CLIP (random weights of the real ViT-B/16 shape: no real weights can be downloaded here) is
saved to a temporary directory and the model is built from it, so `from_pretrained(adapter_dir)` rebuilds
the model from that directory as it would from a Hub id. `--fine-tune-blocks K` also changes the top K
vision blocks, which then go into the adapter too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import build_backbone, run_info  # noqa: E402

from grmp_iqa_hf import GRMPIQAModel, MPIQEModel  # noqa: E402

MODELS = {"grmp_iqa": GRMPIQAModel, "mp_iqe": MPIQEModel}


def directory_bytes(path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(Path(path).iterdir()) if p.suffix == ".safetensors"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "base"], default="base")
    parser.add_argument("--method", choices=sorted(MODELS), default="grmp_iqa")
    parser.add_argument("--num-visual-prompts", type=int, default=100)
    parser.add_argument("--fine-tune-blocks", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="JSON only")
    args = parser.parse_args(argv)

    clip, tokenizer = build_backbone(args.size)
    result = run_info("adapter_checkpoint", args.size, "cpu")
    result.update(method=args.method, num_visual_prompts=args.num_visual_prompts, fine_tune_blocks=args.fine_tune_blocks)
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = os.path.join(tmp, "base")
        clip.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
        torch.manual_seed(0)
        model = MODELS[args.method].from_clip(base_dir, num_visual_prompts=args.num_visual_prompts).eval()
        with torch.no_grad():  # trained prompts (and blocks) differ from their initial values
            for name, param in model.named_parameters():
                if not name.startswith("clip."):
                    param.add_(torch.randn_like(param) * 0.1)
            layers = model.clip.vision_model.encoder.layers
            for layer in list(layers)[len(layers) - args.fine_tune_blocks:] if args.fine_tune_blocks else []:
                for param in layer.parameters():
                    param.add_(torch.randn_like(param) * 1e-3)

        size = model.config.image_size
        pixel_values = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model(pixel_values=pixel_values).scores

        timings, sizes, diffs = {}, {}, {}
        for kind, adapter_only in (("full", False), ("adapter", True)):
            out = os.path.join(tmp, kind)
            start = time.perf_counter()
            model.save_pretrained(out, adapter_only=adapter_only)
            timings[f"{kind}_save_s"] = round(time.perf_counter() - start, 3)
            sizes[kind] = directory_bytes(out)
            start = time.perf_counter()
            loaded = MODELS[args.method].from_pretrained(out)
            timings[f"{kind}_load_s"] = round(time.perf_counter() - start, 3)
            with torch.no_grad():
                diffs[kind] = float((loaded(pixel_values=pixel_values).scores - expected).abs().max())
    full_bytes, adapter_bytes = sum(sizes["full"].values()), sum(sizes["adapter"].values())
    result.update(
        full_bytes=full_bytes,
        adapter_bytes=adapter_bytes,
        adapter_mb=round(adapter_bytes / 1e6, 3),
        adapter_over_full=round(adapter_bytes / full_bytes, 5),
        adapter_within_8mb=adapter_bytes <= 8_000_000,
        max_abs_score_diff=diffs,
        files=sizes,
        **timings,
    )
    print(json.dumps(result, indent=None if args.json else 1))
    return result


if __name__ == "__main__":
    main()
