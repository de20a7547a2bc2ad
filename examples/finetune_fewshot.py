#!/usr/bin/env python
"""Few-shot fine-tuning of GRMP-IQA with quality-aware gradient regularization, over the protocol's splits.

    accelerate launch examples/finetune_fewshot.py --backbone tiny-random \
        --data-dir ../shared/data/clive-jpg --num-images 50 --num-splits 3 --epochs 20 --output-dir out/fewshot
    accelerate launch --config_file examples/accelerate/multi_cpu_2proc.yaml examples/finetune_fewshot.py \
        --model out/meta --data-dir data/livec --dataset livec --baselines --output-dir out/livec-50
    accelerate launch examples/finetune_fewshot.py --model out/meta --data-dir data/koniq --dataset koniq10k \
        --train-fraction 0.2 --output-dir out/koniq-20pct

Writes <output-dir>/report.json (splits with train/test image ids and SRCC/PLCC, median, mean, selection,
configuration) and <output-dir>/<method>/... per method. The script only parses arguments; the work is
`grmp_iqa_hf.evaluation.fewshot.run_fewshot`.
"""

import argparse
import json

from grmp_iqa_hf.evaluation.fewshot import BASELINES, METHODS, FewShotConfig, run_fewshot
from grmp_iqa_hf.training.common import exit_on_input_errors, make_accelerator
from grmp_iqa_hf.training.gradreg import GROUPINGS, PROJECTION_MODES


def _optional_int(value: str):
    return None if value.lower() in ("none", "full", "fresh") else int(value)


def parse_args(argv=None) -> FewShotConfig:
    d = FewShotConfig(data_dir="", output_dir="")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_argument_group("model")
    src.add_argument("--backbone", help="'tiny-random' or a CLIP Hub id / directory (fresh prompts)")
    src.add_argument("--model", help="a GRMPIQAModel directory (e.g. the output of meta_pretrain.py)")
    src.add_argument("--methods", "--method", nargs="+", choices=METHODS, default=list(d.methods),
                     help="what to run; the first one is the report's main method")
    src.add_argument("--baselines", action="store_true", help=f"also run every baseline: {', '.join(BASELINES)}")
    data = p.add_argument_group("protocol")
    data.add_argument("--data-dir", required=True)
    data.add_argument("--dataset", default=d.dataset, help="dataset format (imagefolder, livec, koniq10k, ...)")
    size = data.add_mutually_exclusive_group()
    size.add_argument("--num-images", type=_optional_int, default=d.num_images, help="N-shot training set")
    size.add_argument("--train-fraction", type=float, help="data efficiency: this fraction of the 80%% pool")
    data.add_argument("--num-splits", type=int, default=d.num_splits)
    data.add_argument("--seed", type=int, default=d.seed)
    data.add_argument("--val-images", type=int, default=d.val_images,
                      help="validation images from the training pool (not training images) for model selection")
    data.add_argument("--selection", choices=("last", "val"), help="default: val with --val-images, else last")
    data.add_argument("--paper-mode", action="store_true",
                      help="every choice of the released finetune.py: its splits, cv2-style bicubic 244x244 resize, "
                           "ImageNet statistics, per-batch crops, labels min-max scaled within the training images, "
                           "test scored every 5 epochs with best PLCC+SRCC reported (model selection on the test "
                           "set), test-driven x0.3 lr decay, fp16 autocast; each labelled in report.json")
    hp = p.add_argument_group("fine-tuning")
    hp.add_argument("--epochs", type=int, help="default: 100 (2000 with --paper-mode)")
    hp.add_argument("--qgr-lambda", type=float, default=d.qgr_lambda, help="0 turns QGR off")
    hp.add_argument("--projection", choices=PROJECTION_MODES, default=d.projection,
                    help="qgr (GRMP-IQA) or prograd (ProGrad's original rule)")
    hp.add_argument("--qgr-grouping", dest="grouping", choices=GROUPINGS, default=d.grouping,
                    help="units of the QGR rule: fused_qkv (OpenAI CLIP's tensors, q/k/v together, as released) or "
                         "per_tensor (each transformers tensor)")
    hp.add_argument("--no-prompt-dropout", dest="prompt_dropout", action="store_false",
                    help="train in eval mode (the frozen visual prompts' dropout off); released: dropout on")
    hp.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"),
                    help="autocast dtype of the forward passes (default: fp32; fp16 with --paper-mode)")
    hp.add_argument("--top-k-blocks", type=int, default=d.top_k_blocks, help="top blocks of each tower trained")
    hp.add_argument("--learning-rate", type=float, default=d.learning_rate)
    hp.add_argument("--coop-learning-rate", type=float, help="learning rate of the CoOp baseline (default: --learning-rate)")
    hp.add_argument("--weight-decay", type=float, default=d.weight_decay)
    hp.add_argument("--momentum", type=float, default=d.momentum)
    hp.add_argument("--batch-size", type=_optional_int, default=d.batch_size, help="samples per step (default: full batch)")
    hp.add_argument("--micro-batch-size", type=_optional_int, default=d.micro_batch_size,
                    help="samples per forward pass per process (memory only; same results)")
    hp.add_argument("--crop-pool", type=_optional_int, default=d.crop_pool,
                    help="random crops cached per image ('fresh': new crops every epoch, no trunk cache)")
    hp.add_argument("--no-augment", dest="augment", action="store_false", help="centre crops only")
    hp.add_argument("--lr-decay-patience", type=int, help="multiply the lr by --lr-decay-factor after this many "
                                                          "epochs without a lower training loss (default: off)")
    hp.add_argument("--lr-decay-factor", type=float, default=d.lr_decay_factor)
    hp.add_argument("--eval-every", type=int, help="epochs between validation scores (default 10; 5 with --paper-mode)")
    hp.add_argument("--no-trunk-cache", dest="cache_trunk", action="store_false",
                    help="recompute the frozen lower blocks every step (same results, slower)")
    hp.add_argument("--max-cache-gib", type=float, default=d.max_cache_gib)
    run = p.add_argument_group("run")
    run.add_argument("--output-dir", required=True)
    run.add_argument("--save-model", action="store_true", help="save each split's final model (save_pretrained)")
    run.add_argument("--checkpointing-steps", type=int, help="save a resumable checkpoint every N steps")
    run.add_argument("--resume-from-checkpoint", help="'latest' (finished splits are kept) or a checkpoint folder")
    run.add_argument("--no-progress", dest="progress", action="store_false")
    ns = p.parse_args(argv)
    if ns.train_fraction is not None:
        ns.num_images = None
    if ns.baselines:
        ns.methods = list(ns.methods) + [m for m in BASELINES if m not in ns.methods]
    del ns.baselines
    ns.methods = tuple(ns.methods)
    config = FewShotConfig(**vars(ns))
    try:
        config.validate()
    except ValueError as exc:
        p.error(str(exc))
    return config


def main(argv=None) -> dict:
    config = parse_args(argv)
    accelerator = make_accelerator(config.output_dir, log_with=None)
    report = run_fewshot(config, accelerator=accelerator)
    if accelerator.is_main_process:
        summary = {m: {k: round(v, 4) for k, v in r["median"].items() if k in ("srcc", "plcc", "plcc_logistic")}
                   for m, r in report["comparison"].items()}
        print(json.dumps({"output_dir": config.output_dir, "selection": report["selection"],
                          "num_processes": report["num_processes"], "median": summary}, indent=1))
    return report


if __name__ == "__main__":
    with exit_on_input_errors():
        main()
