"""The transformers pipeline of the task "image-quality-assessment": images in, quality scores out.

    >>> from transformers import pipeline
    >>> pipe = pipeline("image-quality-assessment", model="user/grmp-iqa-koniq")  # with grmp_iqa_hf imported
    >>> pipe = pipeline(model="user/grmp-iqa-koniq", trust_remote_code=True)     # without the package
    >>> pipe("photo.jpg")
    {'score': 0.71}

Each image gives a dict: `score` (the model's `scores`: quality in [0, 1], higher = better). A model with scene
and distortion outputs (MP-IQE) adds `scene` (its most probable scene class), `scene_score` (that class's
probability: scene is multi-label, so sigmoid of its logit), `distortion` (the most probable distortion class)
and `distortion_score` (its probability: distortion is single-label, so softmax over the classes).

Shipped as Hub remote code next to the weights (`save_pretrained` writes `custom_pipelines` into config.json):
imports only torch, transformers and relative modules.
"""

from __future__ import annotations

import torch
from transformers.pipelines import Pipeline

from .image_loading import load_image

#: The task name this pipeline serves (`pipeline(PIPELINE_TASK, model=...)`).
PIPELINE_TASK = "image-quality-assessment"


class ImageQualityAssessmentPipeline(Pipeline):
    """Scores images with a quality model (GRMP-IQA, MP-IQE, or any model whose output has `scores`).

    Inputs: a path, PIL image, numpy array or torch tensor (anything `load_image` accepts), or a list of them; a
    list gives a list of dicts, one input one dict (keys: see the module docstring). `batch_size`, `device` and
    `dtype` are the usual pipeline arguments; pixel values are cast to the model's dtype and scores returned as
    Python floats. Preprocessing is the checkpoint's image processor (preprocessor_config.json), or the model's
    own (`model.image_processor`) when none was loaded.

    Raises:
        ImageLoadError: an input cannot be read; the message names it (its path, or the kind of object).
    """

    _load_processor = False
    _load_image_processor = None  # load it when the checkpoint has one; else `model.image_processor` (__init__)
    _load_feature_extractor = False
    _load_video_processor = False  # the default (None: try) reads the config asking about remote code
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.image_processor is None:
            self.image_processor = self.model.image_processor

    def _sanitize_parameters(self, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} takes no options, got {sorted(kwargs)}")
        return {}, {}, {}

    def __call__(self, inputs, **kwargs):
        """Score one image (returns a dict) or a list of images (returns a list of dicts, in input order)."""
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    def preprocess(self, image):
        # loaded here, so that an unreadable input is named as itself (its path, "input (numpy array)", ...)
        pixel_values = self.image_processor([load_image(image)], return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values.to(self.dtype)}

    def _forward(self, model_inputs):
        outputs = self.model(pixel_values=model_inputs["pixel_values"])
        # only per-image fields (batch first), so that the pipeline can split a batch into its images
        fields = {"scores": outputs.scores}
        for name in ("scene_logits", "distortion_logits"):
            if getattr(outputs, name, None) is not None:
                fields[name] = getattr(outputs, name)
        return fields

    def postprocess(self, model_outputs):
        result = {"score": model_outputs["scores"][0].float().item()}
        config = self.model.config
        groups = (("scene", "scene_classes", torch.sigmoid), ("distortion", "distortion_classes", _softmax))
        for key, classes_field, to_probabilities in groups:
            logits, classes = model_outputs.get(f"{key}_logits"), getattr(config, classes_field, None)
            if logits is None or not classes:
                continue
            probabilities = to_probabilities(logits[0].float())
            best = int(probabilities.argmax())
            result[key], result[f"{key}_score"] = classes[best], probabilities[best].item()
        return result


def custom_pipelines() -> dict:
    """The `custom_pipelines` entry of config.json for this pipeline, in the format `Pipeline.save_pretrained`
    writes and `transformers.pipeline()` reads (the class as "module.Class", the model classes by name)."""
    cls = ImageQualityAssessmentPipeline
    return {PIPELINE_TASK: {"impl": f"{cls.__module__.rpartition('.')[2]}.{cls.__name__}", "pt": ["AutoModel"],
                            "type": "image"}}


def register_pipeline() -> None:
    """Register the pipeline under `PIPELINE_TASK` with transformers (what the installed package does)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=ImageQualityAssessmentPipeline,
                                        pt_model=AutoModel, type="image")


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=-1)


__all__ = ["ImageQualityAssessmentPipeline", "PIPELINE_TASK", "custom_pipelines", "register_pipeline"]
