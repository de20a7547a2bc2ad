"""Does meta-prompt pre-training help? Fast adaptation on held-out distortion types, with and without it.

Synthetic tasks (the distortion engine over scikit-image's photos, labels from the level), some
distortion types held out. Two models with the same initial prompts around the same backbone:
- `random_init`: the prompts as initialised;
- `meta_trained`: the same prompts after `--max-steps` meta-steps on the other distortion types.
Both adapt with plain SGD on support sets of the held-out types (identical draws for both) and are
scored on the query sets after k steps: query loss (BCE) and SRCC. Prints one JSON line.

    python benchmarks/meta_benefit.py --json                       # tiny-random, fomaml, 100 steps
    python benchmarks/meta_benefit.py --algorithm reptile --json

With `tiny-random` (a small random CLIP) the numbers say whether the machinery transfers anything
between distortion types, not what real CLIP weights would reach.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


from grmp_iqa_hf.models import build_model
from grmp_iqa_hf.training.common import make_accelerator
from grmp_iqa_hf.protocols.meta import MetaPretrainArguments, prepare_tasks
from grmp_iqa_hf.training.meta import ALGORITHMS, MetaTaskSampler, evaluate_adaptation, meta_pretrain


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny-random")
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="fomaml")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--inner-lr", type=float, default=0.1)
    parser.add_argument("--inner-steps", type=int, default=2)
    parser.add_argument("--outer-lr", type=float)
    parser.add_argument("--holdout", type=int, default=3)
    parser.add_argument("--adapt-steps", type=int, nargs="+", default=[0, 1, 5, 10])
    parser.add_argument("--visits", type=int, default=4, help="support/query draws per held-out type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", help="where the synthetic images go (default: a temporary folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    work = args.work_dir or tempfile.mkdtemp(prefix="meta_benefit_")
    settings = MetaPretrainArguments(
        output_dir=work, backbone=args.backbone, algorithm=args.algorithm, max_steps=args.max_steps,
        inner_lr=args.inner_lr, inner_steps=args.inner_steps, outer_lr=args.outer_lr, holdout=args.holdout,
        pristine_size=96, support_size=8, query_size=8, eval_steps=0, selection="last", seed=args.seed,
        progress=not args.json,
    ).resolved()
    accelerator = make_accelerator(log_with=None)
    model = build_model(args.backbone, seed=args.seed)
    cache, train_tasks, holdout_tasks = prepare_tasks(settings, model.image_processor, accelerator)
    holdout = MetaTaskSampler(cache, holdout_tasks, args.seed, settings.support_size, settings.query_size, augment=False)

    def adaptation(m):
        result = evaluate_adaptation(m, holdout, args.adapt_steps, args.inner_lr, visits=args.visits)
        return {str(k): {name: round(v, 4) for name, v in r.items()} for k, r in result.items()}

    before = adaptation(model)
    summary = meta_pretrain(model, cache, train_tasks, holdout_tasks, settings, accelerator)
    after = adaptation(model)
    result = {
        "benchmark": "meta_benefit",
        "backbone": args.backbone,
        "algorithm": args.algorithm,
        "max_steps": args.max_steps,
        "inner_lr": args.inner_lr,
        "inner_steps": args.inner_steps,
        "outer": f"{settings.outer_optimizer} lr {settings.outer_lr}",
        "train_types": len(train_tasks),
        "heldout_types": [t.name for t in holdout_tasks],
        "random_init": before,
        "meta_trained": after,
        "train_query_loss_first_last_10": [
            round(sum(h["query_loss"] for h in summary["history"][:10]) / 10, 4),
            round(sum(h["query_loss"] for h in summary["history"][-10:]) / 10, 4),
        ],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
