"""Model-card and dataset-card templates (Jinja2, Hugging Face card format), rendered by
`grmp_iqa_hf.hub.cards` when a checkpoint or a dataset is pushed to the Hub. Installed as
`grmp_iqa_hf.hub_cards` so the templates travel with the package."""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent
MODEL_CARD_TEMPLATE = TEMPLATE_DIR / "model_card.md"
DATASET_CARD_TEMPLATE = TEMPLATE_DIR / "dataset_card.md"
