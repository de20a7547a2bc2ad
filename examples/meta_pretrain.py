#!/usr/bin/env python
"""Meta-prompt pre-training of GRMP-IQA (stage 1) under Hugging Face Accelerate.

    accelerate launch examples/meta_pretrain.py --backbone tiny-random --output-dir out/meta
    accelerate launch --config_file examples/accelerate/multi_cpu_2proc.yaml examples/meta_pretrain.py \
        --backbone tiny-random --algorithm maml --max-steps 20 --output-dir out/meta-maml
    accelerate launch examples/meta_pretrain.py --backbone openai/clip-vit-base-patch16 \
        --data-dir data/kadid10k --dataset kadid10k --data-dir data/tid2013 --dataset tid2013 --output-dir out/meta

Without --data-dir, tasks come from the synthetic distortion engine applied to --pristine-dir
(default: the photos shipped with scikit-image). The script only parses arguments; the work is
`grmp_iqa_hf.protocols.meta.run_meta_pretraining`.
Every flag is a field of `grmp_iqa_hf.protocols.meta.MetaPretrainArguments` (`--help` lists them).
"""

from grmp_iqa_hf.protocols.arguments import parse_arguments
from grmp_iqa_hf.protocols.meta import MetaPretrainArguments, run_meta_pretraining
from grmp_iqa_hf.training.common import exit_on_input_errors


def main(argv=None) -> dict:
    args = parse_arguments(MetaPretrainArguments, argv, description=__doc__, validate=MetaPretrainArguments.resolved)
    return run_meta_pretraining(args)


if __name__ == "__main__":
    with exit_on_input_errors():
        main()
