"""Where models come from: a CLIP backbone (`load_backbone`), a fresh prompt model around it
(`build_model`), or a saved / Hub checkpoint (`load_model`).

Backbones and checkpoints named by a path or a Hub id are checked first (`provenance.resolve_model_source`):
a name that is neither an existing folder nor a Hub model that can be found fails at once with
`ModelNotFoundError` (an `OSError`) naming what was tried, instead of a download with retries."""

from __future__ import annotations

import torch
from transformers import AutoModel, AutoTokenizer, CLIPModel

from .methods import MODEL_CLASSES  # {model_type: model class}, a view of the method registry
from .provenance import TINY_BACKBONE, ModelNotFoundError, ModelSource, attach_source, resolve_model_source

__all__ = ["TINY_BACKBONE", "MODEL_CLASSES", "ModelNotFoundError", "load_backbone", "build_model", "load_model"]


def load_backbone(backbone: str = TINY_BACKBONE, seed: int = 0, revision: str | None = None):
    """`(CLIPModel, tokenizer)` for `"tiny-random"` (built offline, deterministic for `seed`) or a CLIP
    Hub id / local directory in transformers format. The one way production code reaches the test CLIP
    (`testing.py`): code that needs the tiny tokenizer calls `load_backbone(TINY_BACKBONE)`."""
    if backbone == TINY_BACKBONE:
        from .testing import tiny_clip  # test helpers stay out of the import graph until asked for

        return tiny_clip(seed=seed)
    source = resolve_model_source(backbone, revision, what="backbone")
    revision = source.load_revision or revision
    return CLIPModel.from_pretrained(backbone, revision=revision), AutoTokenizer.from_pretrained(backbone, revision=revision)


def build_model(backbone: str = TINY_BACKBONE, method: str = "grmp_iqa", seed: int = 0, **config_overrides):
    """A fresh model of `method` around `backbone`; prompt initialisation is seeded by `seed`."""
    if method not in MODEL_CLASSES:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(MODEL_CLASSES)}")
    clip, tokenizer = load_backbone(backbone, seed=seed)
    config_overrides.setdefault("base_model_name_or_path", backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODEL_CLASSES[method].from_clip(clip, tokenizer, **config_overrides)


def load_model(name_or_path: str, device=None, revision: str | None = None, trust_remote_code: bool = False,
               source: ModelSource | None = None, dtype=None):
    """Load a saved model (local directory or Hub id) in eval mode. Only safetensors weights are read;
    remote code runs only with `trust_remote_code=True` (the package's own classes need none).

    `source` is the result of `resolve_model_source(name_or_path, revision)` when the caller has checked
    the name already; it is recorded on the model for `provenance.collect(model)`. `dtype` (a torch dtype or its
    name, e.g. "bfloat16") loads the weights in that precision (default: float32)."""
    if source is None:
        source = resolve_model_source(name_or_path, revision)
    from .modeling.prediction import resolve_dtype

    model = AutoModel.from_pretrained(name_or_path, revision=source.load_revision or revision,
                                      trust_remote_code=trust_remote_code, dtype=resolve_dtype(dtype) or torch.float32)
    if device is not None:
        model = model.to(device)
    return attach_source(model.eval(), source)
