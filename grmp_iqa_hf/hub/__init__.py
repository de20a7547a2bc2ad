"""The Hugging Face Hub: pushing models and IQA datasets with generated cards.

Loading needs nothing from here: `from_pretrained("org/name")` (and `grmp-iqa score --model org/name`)
go through transformers and `huggingface_hub` directly.
"""

from .cards import load_report, render_dataset_card, render_model_card, report_results
from .push import push_dataset, push_model, stage_model

__all__ = ["push_model", "push_dataset", "stage_model", "render_model_card", "render_dataset_card", "load_report",
           "report_results"]
