"""`grmp-iqa serve` throughput: dynamic batching against one request at a time, at 16 concurrent clients.

A real uvicorn server on 127.0.0.1 (a background thread of this process) scores one image per request for
`--clients` client threads sharing `--requests` requests. Measured in one run, on the same model and files:
- `batched`: the server as shipped (`--max-batch-size 32 --max-wait-ms 10`): concurrent requests' images are
  scored together;
- `one_at_a_time`: the same server with `max_batch_size=1`: the model scores one request at a time;
- `sequential`: the batched server with one client (no concurrency at all), for reference.
`ratio` is requests/s of `batched` over `one_at_a_time` (the issue's acceptance: >= 1.5 on the tiny model).

    python benchmarks/serve.py                       # tiny model, 200 requests per configuration
    python benchmarks/serve.py --size base           # ViT-B/16 dimensions, random weights
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


from grmp_iqa_hf import GRMPIQAModel  # noqa: E402
from grmp_iqa_hf.serve import create_app  # noqa: E402
from grmp_iqa_hf.serve.client import ScoreClient, running_server  # noqa: E402


def build_model(size: str = "tiny", device: str = "cpu"):
    """A GRMP-IQA model around a random CLIP: the tiny test CLIP, or ViT-B/16 dimensions (`size="base"`)."""
    import importlib.util

    # `inference` (the shared ViT-B/16 backbone) by path: a tests process imports this module, and putting the
    # benchmarks folder on its sys.path would shadow packages (benchmarks/onnx.py is not `onnx`)
    spec = importlib.util.spec_from_file_location("inference", Path(__file__).resolve().parent / "inference.py")
    inference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inference)
    clip, tokenizer = inference.build_backbone(size)
    torch.manual_seed(0)
    return GRMPIQAModel.from_clip(clip, tokenizer, num_visual_prompts=6, ctx_init="a photo of a").to(device).eval()


def write_images(folder, count: int = 8, seed: int = 0) -> list[Path]:
    """`count` random JPEG and PNG files of a few sizes (the server decodes every request's upload)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        height, width = 96 + 16 * (i % 3), 128 + 8 * (i % 4)
        paths.append(Path(folder) / f"bench{i}.{'jpg' if i % 2 else 'png'}")
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def load(url: str, files, clients: int = 16, requests: int = 200) -> dict:
    """`clients` threads share `requests` requests of one file each (file `i % len(files)` for request `i`).
    Returns the wall time, the answers (request index -> (status, body)) and the latencies."""
    datas = [(Path(f).name, Path(f).read_bytes()) for f in files]
    answers: dict[int, tuple[int, dict | None]] = {}
    latencies: list[float] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client():
        session = ScoreClient(url)
        try:
            while True:
                with lock:
                    index = next(counter, None)
                if index is None:
                    return
                began = time.perf_counter()
                try:
                    response = session.post_files([datas[index % len(datas)]])
                    answer = (response.status, response.json() if response.body else None)
                except Exception as err:  # noqa: BLE001 - counted as unanswered, never hidden
                    answer = (0, {"error": f"{type(err).__name__}: {err}"})
                with lock:
                    answers[index] = answer
                    latencies.append(time.perf_counter() - began)
        finally:
            session.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "answers": answers, "latencies": latencies}


def summary(run: dict, requests: int) -> dict:
    ok = sum(1 for status, _ in run["answers"].values() if status == 200)
    latencies = sorted(run["latencies"])
    return {"requests": requests, "ok": ok, "seconds": round(run["seconds"], 3),
            "requests_per_s": round(requests / run["seconds"], 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None}


def measure(model, files, clients: int = 16, requests: int = 200, max_batch_size: int = 32,
            max_wait_ms: float = 10.0, sequential: bool = True) -> dict:
    """Throughput of the server around `model` with and without dynamic batching (see the module text)."""
    result = {}
    configurations = [("one_at_a_time", 1, clients), ("batched", max_batch_size, clients)]
    if sequential:
        configurations.append(("sequential", max_batch_size, 1))
    for name, batch, concurrency in configurations:
        app = create_app(model, max_batch_size=batch, max_wait_ms=max_wait_ms, max_queue=max(256, 4 * clients))
        with running_server(app) as url:
            load(url, files, clients=concurrency, requests=2 * concurrency)  # warm-up: connections, first batches
            before = app.state.service.batcher.stats()
            run = load(url, files, clients=concurrency, requests=requests)
            stats = app.state.service.batcher.stats()
            batches, busy = stats["batches"] - before["batches"], stats["busy_s"] - before["busy_s"]
        result[name] = {**summary(run, requests), "clients": concurrency, "max_batch_size": batch,
                        "mean_batch": round((stats["images"] - before["images"]) / max(1, batches), 2),
                        "largest_batch": stats["largest_batch"],
                        # the model thread's share of the wall time, and its time per batch
                        "model_busy": round(busy / run["seconds"], 3),
                        "ms_per_batch": round(1000 * busy / max(1, batches), 1)}
    result["ratio"] = round(result["batched"]["requests_per_s"] / result["one_at_a_time"]["requests_per_s"], 3)
    if sequential:
        result["ratio_vs_sequential"] = round(
            result["batched"]["requests_per_s"] / result["sequential"]["requests_per_s"], 3)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.size, args.device)
    with tempfile.TemporaryDirectory() as folder:
        files = write_images(folder)
        result = measure(model, files, args.clients, args.requests, args.max_batch_size, args.max_wait_ms)
    from inference import run_info

    print(json.dumps({**run_info("serve", args.size, args.device), "cpus": os.cpu_count(), **result}, indent=2))


if __name__ == "__main__":
    main()
