"""Cost of one meta-step per algorithm relative to one plain prompt-tuning step on the same images.

At ViT-B/16 size (random weights: cost does not depend on their values), 100 visual prompts, one task
of `--support` + `--query` images (8 in all by default), `--inner-steps` inner steps:
- `plain`: one prompt-tuning step on all the task's images (forward, backward, Adam step);
- `reptile`, `fomaml`: `meta_gradients` + the outer optimizer step;
- `maml`: the same, second order through the inner steps (math SDPA kernel);
- `official`: the released code's meta-step (Adam steps on support and query, outer interpolation).

Rounds are interleaved (one step of each per round) and the median per algorithm is reported.

    python benchmarks/meta_step.py --json              # ViT-B/16
    python benchmarks/meta_step.py --size tiny --json  # seconds, a smoke test
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import build_backbone, run_info, timed  # noqa: E402  (shared benchmark pieces)

from grmp_iqa_hf import GRMPIQAModel  # noqa: E402
from grmp_iqa_hf.training.common import trainable_parameters  # noqa: E402
from grmp_iqa_hf.training.meta import meta_gradients, official_phase  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["base", "tiny"], default="base")
    parser.add_argument("--support", type=int, default=4)
    parser.add_argument("--query", type=int, default=4)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)

    clip, tokenizer = build_backbone(args.size)
    torch.manual_seed(0)
    model = GRMPIQAModel.from_clip(clip, tokenizer, num_visual_prompts=100).to(args.device).train()
    params = trainable_parameters(model)
    size = clip.config.vision_config.image_size
    g = torch.Generator().manual_seed(0)
    support = {"pixel_values": torch.randn(args.support, 3, size, size, generator=g).to(args.device),
               "labels": torch.rand(args.support, generator=g).to(args.device)}
    query = {"pixel_values": torch.randn(args.query, 3, size, size, generator=g).to(args.device),
             "labels": torch.rand(args.query, generator=g).to(args.device)}
    both = {k: torch.cat([support[k], query[k]]) for k in support}
    outer = torch.optim.Adam(list(params.values()), lr=1e-4)
    task_params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    task_opt = [torch.optim.Adam(list(task_params.values()), lr=1e-4)]

    def apply(grads):
        for n, p in params.items():
            p.grad = grads[n]
        outer.step()

    def plain():
        outer.zero_grad(set_to_none=True)
        model(**both).loss.backward()
        outer.step()

    def official_step():
        grads, task_opt[0] = official_phase(model, task_params, task_opt[0],
                                            [([support] * args.inner_steps, [query])], inner_lr=1e-4)
        return grads

    steps = {
        "plain": plain,
        "reptile": lambda: apply(meta_gradients(model, [(support, query)], "reptile", 1e-2, args.inner_steps)),
        "fomaml": lambda: apply(meta_gradients(model, [(support, query)], "fomaml", 1e-2, args.inner_steps)),
        "maml": lambda: apply(meta_gradients(model, [(support, query)], "maml", 1e-2, args.inner_steps)),
        # the released step: one Adam step on the support batch, one on the query batch (per inner step)
        "official": lambda: apply(official_step()),
    }

    for fn in steps.values():  # warm-up
        fn()
    times = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            times[name].append(timed(fn, args.device))
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        **run_info("meta_step", args.size, args.device),
        "support": args.support,
        "query": args.query,
        "inner_steps": args.inner_steps,
        "rounds": args.rounds,
        "trainable_parameters": sum(p.numel() for p in params.values()),
        "seconds_per_step": {k: round(v, 4) for k, v in median.items()},
        "ratio_vs_plain_step": {k: round(v / median["plain"], 3) for k, v in median.items() if k != "plain"},
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
