#!/usr/bin/env python
"""Meta-prompt pre-training of GRMP-IQA (stage 1) under Hugging Face Accelerate.

    accelerate launch examples/meta_pretrain.py --backbone tiny-random --output-dir out/meta
    accelerate launch --config_file examples/accelerate/multi_cpu_2proc.yaml examples/meta_pretrain.py \
        --backbone tiny-random --algorithm maml --max-steps 20 --output-dir out/meta-maml
    accelerate launch examples/meta_pretrain.py --backbone openai/clip-vit-base-patch16 \
        --data-dir data/kadid10k --dataset kadid10k --data-dir data/tid2013 --dataset tid2013 --output-dir out/meta

Without --data-dir, tasks come from the synthetic distortion engine applied to --pristine-dir
(default: the photos shipped with scikit-image). The script only parses arguments; the work is
`grmp_iqa_hf.training.meta.run_meta_pretraining`.
"""

import argparse

from grmp_iqa_hf.training.common import exit_on_input_errors
from grmp_iqa_hf.training.meta import ALGORITHMS, SELECTIONS, MetaPretrainArguments, run_meta_pretraining


def parse_args(argv=None) -> MetaPretrainArguments:
    d = MetaPretrainArguments(output_dir="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_argument_group("model")
    src.add_argument("--backbone", default=d.backbone, help="'tiny-random' or a CLIP Hub id / directory")
    src.add_argument("--model", help="start from a saved GRMPIQAModel directory instead of a fresh one")
    src.add_argument("--num-visual-prompts", type=int, help="fresh models: visual prompt tokens (config default 100)")
    src.add_argument("--n-ctx", type=int, help="fresh models: text context length")
    src.add_argument("--ctx-init", help="fresh models: initialise the context from this phrase")
    data = p.add_argument_group("tasks")
    data.add_argument("--pristine-dir", help="folder of pristine photos for the synthetic engine (default: scikit-image's)")
    data.add_argument("--data-dir", action="append", default=[], help="labelled dataset with a distortion column (repeatable)")
    data.add_argument("--dataset", action="append", default=[], help="format of each --data-dir (kadid10k, tid2013, imagefolder...)")
    data.add_argument("--distortions", nargs="+", help="synthetic engine: distortion types to use (default: all 25)")
    data.add_argument("--levels", nargs="+", type=int, default=d.levels, help="synthetic engine: levels")
    data.add_argument("--pristine-size", type=int, default=d.pristine_size, help="shorter side of pristine photos")
    data.add_argument("--holdout", nargs="+",
                      help="distortion types held out for model selection: a count or names (default: 3; 0 for official)")
    data.add_argument("--support-size", type=int, default=d.support_size, help="support images per task visit")
    data.add_argument("--query-size", type=int, default=d.query_size, help="query images per task visit")
    data.add_argument("--support-batch-size", type=int, default=d.support_batch_size,
                      help="official: support batch (the whole 80%% part is used, in batches)")
    data.add_argument("--query-batch-size", type=int, default=d.query_batch_size, help="official: query batch")
    data.add_argument("--no-augment", dest="augment", action="store_false", help="centre crops instead of random crops + flips")
    algo = p.add_argument_group("meta-learning")
    algo.add_argument("--algorithm", choices=ALGORITHMS, default=d.algorithm)
    algo.add_argument("--max-steps", type=int,
                      help="meta steps (0 saves the initial model; default 200; official: --epochs x data sources)")
    algo.add_argument("--epochs", type=int, default=d.epochs,
                      help="official: epochs, one outer update per data source each (the released 50)")
    algo.add_argument("--tasks-per-step", type=int, default=d.tasks_per_step)
    algo.add_argument("--inner-lr", type=float, help="inner SGD learning rate (default 1e-2; official: Adam 1e-4)")
    algo.add_argument("--inner-steps", type=int, default=d.inner_steps)
    algo.add_argument("--outer-lr", type=float, help="default: 1.0 reptile, 0.01 official, 1e-3 (Adam) maml/fomaml")
    algo.add_argument("--outer-optimizer", choices=("sgd", "adam"), help="default: sgd for reptile/official, adam otherwise")
    algo.add_argument("--eval-steps", type=int, help="evaluate every N steps (default 50; official: once per epoch)")
    algo.add_argument("--eval-adapt-steps", type=int, default=d.eval_adapt_steps, help="adaptation steps when evaluating")
    algo.add_argument("--selection", choices=SELECTIONS,
                      help="heldout (default), last (official's default) or dataset (the released choice: best SRCC "
                           "on --selection-data-dir; leaks when that dataset is a fine-tuning target)")
    algo.add_argument("--selection-data-dir", help="labelled dataset for --selection dataset (released: LIVEC)")
    algo.add_argument("--selection-dataset", default=d.selection_dataset, help="format of --selection-data-dir")
    run = p.add_argument_group("run")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--seed", type=int, default=d.seed)
    run.add_argument("--checkpointing-steps", type=int, help="save a resumable checkpoint every N steps")
    run.add_argument("--resume-from-checkpoint", help="'latest' or a checkpoint folder")
    run.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    run.add_argument("--no-progress", dest="progress", action="store_false")
    ns = p.parse_args(argv)
    holdout = ns.holdout
    if holdout is not None:
        ns.holdout = int(holdout[0]) if len(holdout) == 1 and holdout[0].isdigit() else holdout
    return MetaPretrainArguments(**vars(ns))


if __name__ == "__main__":
    with exit_on_input_errors():
        run_meta_pretraining(parse_args())
