"""onnxruntime against torch on CPU, at ViT-B/16 size (random weights: the cost does not depend on their values).

Each model (GRMP-IQA and MP-IQE with their default configs) is exported with `grmp_iqa_hf.export.export_onnx`
(dynamic batch) and timed on the same batches of random pixels: the torch forward under `inference_mode`
and the onnxruntime session (CPU provider), both on `--threads` intra-op threads. Timings are interleaved
(one batch of each per round) and the median is reported; `onnx_speedup` is torch seconds / onnxruntime
seconds (> 1: onnxruntime is faster). `max_abs_score_difference` checks that both compute the same scores.

    python benchmarks/onnx.py --json --threads 2          # ViT-B/16, batch 8
    python benchmarks/onnx.py --size tiny --rounds 2      # seconds, for a smoke test
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# This file is called onnx.py: run as a script, its folder would come first on sys.path and `import onnx`
# (in torch's exporter and ours) would import this file. Drop the folder; load the shared helpers by path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
_spec = importlib.util.spec_from_file_location("benchmark_inference", _HERE / "inference.py")
inference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inference)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from grmp_iqa_hf import GRMPIQAModel, MPIQEModel  # noqa: E402
from grmp_iqa_hf.export import OnnxScorer, export_onnx  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["base", "tiny"], default="base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="intra-op threads for both torch and onnxruntime (default: torch's)")
    parser.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    clip, tokenizer = inference.build_backbone(args.size)
    models = {"grmp_iqa": GRMPIQAModel.from_clip(clip, tokenizer).eval(),
              "mp_iqe": MPIQEModel.from_clip(clip, tokenizer).eval()}
    image_size = clip.config.vision_config.image_size
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(args.batch_size, 3, image_size, image_size, generator=generator)
    pixels_np = pixel_values.numpy()

    runners, export_seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            start = time.perf_counter()
            path = export_onnx(model, Path(tmp) / name / "model.onnx", dynamic_batch=True, exporter=args.exporter)
            export_seconds[name] = time.perf_counter() - start
            scorer = OnnxScorer(path, threads=args.threads)
            runners[f"{name}_torch"] = lambda px=pixel_values, m=model: m(pixel_values=px).scores.numpy()
            runners[f"{name}_onnx"] = lambda px=pixels_np, s=scorer: s.run(px)["scores"]

        times = {name: [] for name in runners}
        with torch.inference_mode():
            outputs = {name: fn() for name, fn in runners.items()}  # warm-up
            for _ in range(args.rounds):
                for name, fn in runners.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        **inference.run_info("onnx", args.size, "cpu"),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "exporter": args.exporter,
        "export_seconds": {k: round(v, 1) for k, v in export_seconds.items()},
        "seconds_per_batch": {k: round(v, 4) for k, v in median.items()},
        "images_per_second": {k: round(args.batch_size / v, 3) for k, v in median.items()},
        "onnx_speedup": {name: round(median[f"{name}_torch"] / median[f"{name}_onnx"], 3) for name in models},
        "max_abs_score_difference": {
            name: float(np.abs(outputs[f"{name}_torch"] - outputs[f"{name}_onnx"]).max()) for name in models},
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
