"""The protocol runners: what a paper's experiment does around the trainers (data, splits, models per
split, scoring, reports), one module per method or stage.

- `fewshot`: the few-shot protocol of GRMP-IQA stage 2 with its baselines on identical splits;
- `mpiqe`: MP-IQE training and evaluation over random splits;
- `meta`: the data, model and selection around meta-prompt pre-training (GRMP-IQA stage 1).

Runners call `grmp_iqa_hf.training` (the loops) and `grmp_iqa_hf.evaluation` (metrics, reports);
`evaluation` imports nothing from here. Submodules are imported on use (they pull in torch).
"""
