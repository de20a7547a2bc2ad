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
`grmp_iqa_hf.protocols.fewshot.run_fewshot`.
Every flag is a field of `grmp_iqa_hf.protocols.fewshot.FewShotConfig` (`--help` lists them).
"""

from grmp_iqa_hf.protocols.fewshot import FewShotConfig, print_summary, run_fewshot
from grmp_iqa_hf.training.common import exit_on_input_errors


def main(argv=None) -> dict:
    report = run_fewshot(FewShotConfig.from_command_line(argv, description=__doc__))
    print_summary(report)
    return report


if __name__ == "__main__":
    with exit_on_input_errors():
        main()
