"""Train and evaluate MP-IQE (our reconstruction) with the few-shot / full-data protocol.

    accelerate launch examples/train_mpiqe.py --backbone tiny-random \
        --data-dir ../shared/data/clive-jpg --epochs 3 --seed 0 --output-dir runs/mpiqe-clive

    # 2 processes (CPU: gloo; GPU: one per device), same results as 1 process:
    accelerate launch --config_file examples/accelerate/multi_cpu_2proc.yaml examples/train_mpiqe.py ...

Writes OUTPUT_DIR/report.json (per-epoch `history`, test SRCC/PLCC per split and their median), the model
of split 0 (`AutoModel.from_pretrained(OUTPUT_DIR)`), and per-split checkpoints. Every flag is a field
of `grmp_iqa_hf.protocols.mpiqe.MPIQETrainingArguments` (`--help` lists them).
"""

from grmp_iqa_hf.protocols.arguments import parse_arguments
from grmp_iqa_hf.protocols.mpiqe import MPIQETrainingArguments, run_mpiqe
from grmp_iqa_hf.training.common import exit_on_input_errors


def main(argv=None) -> dict:
    return run_mpiqe(parse_arguments(MPIQETrainingArguments, argv, description=__doc__))


if __name__ == "__main__":
    with exit_on_input_errors():
        main()
