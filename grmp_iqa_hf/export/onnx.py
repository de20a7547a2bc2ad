"""ONNX export of a quality model's image path, and `OnnxScorer`, which scores images with onnxruntime alone.

The exported graph takes `pixel_values` (B, 3, S, S) float32, preprocessed as the model's `image_processor` does,
and returns `scores` (B,), plus the method's other per-image outputs (`EXPORTED_OUTPUTS`). The prompt text
features do not depend on the image: they are computed once by the model's own `compute_text_features` and
stored in the graph as constants, so the text tower is not exported.

The preprocessing travels with the model twice: as `preprocessor_config.json` in the output's folder (what
`IQAImageProcessor.from_pretrained(folder)` reads) and as JSON in the ONNX model's `metadata_props`, which is
what `OnnxScorer` reads, so a lone `.onnx` file is enough to score.

Needs the `[onnx]` extra (`onnx`, `onnxscript`, `onnxruntime`); importing this module does not.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..json_io import write_json
from ..modeling.image_processing_iqa import IQAImageProcessor, load_image

INSTALL_HINT = "pip install 'grmp-iqa-hf[onnx]'"
EXPORTERS = ("dynamo", "torchscript")
PREPROCESSOR_CONFIG = "preprocessor_config.json"
INPUT_NAME = "pixel_values"
# Per-image outputs exported besides `scores`, by `config.model_type` (each a field of the model's output).
EXPORTED_OUTPUTS = {
    "grmp_iqa": ("scores", "logits"),
    "mp_iqe": ("scores", "scene_logits", "distortion_logits"),
}
# An ONNX file holds at most 2 GiB in one protobuf; bigger weights go to `<output>.data` next to it.
_PROTOBUF_LIMIT = 1_900_000_000
_BATCH_AXIS = "batch"


def require(module: str):
    """Import `module` (onnx, onnxscript, onnxruntime), or raise ImportError with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"ONNX export and scoring need {module}: {INSTALL_HINT}") from err


class ImagePath(nn.Module):
    """`model`'s image path with its text features held as buffers: `forward(pixel_values)` calls the model's
    own `forward` while `baked_text_features` is active, and returns the `fields` of its output in order."""

    def __init__(self, model, fields):
        super().__init__()
        self.model, self.fields = model, tuple(fields)
        with torch.no_grad():
            for name, bank in model.prompt_banks().items():
                self.register_buffer(f"text_features_{name}", model.compute_text_features(bank).detach().clone())

    def text_features(self, name: str) -> torch.Tensor:
        return self.get_buffer(f"text_features_{name}")

    @contextlib.contextmanager
    def baked_text_features(self):
        """While active, the model's `text_features(name)` returns the stored buffers (what the exporter traces:
        constants instead of the text tower); the model is left as it was afterwards."""
        self.model.text_features = self.text_features  # an instance attribute shadows the method
        try:
            yield self
        finally:
            del self.model.text_features

    def forward(self, pixel_values: torch.Tensor):
        output = self.model(pixel_values=pixel_values)
        return tuple(getattr(output, field) for field in self.fields)


def preprocessor_config_path(output) -> Path:
    """Where `export_onnx(..., output)` writes the preprocessing: `preprocessor_config.json` in the output's folder
    (so `IQAImageProcessor.from_pretrained(folder)` / `AutoImageProcessor` read it)."""
    return Path(output).parent / PREPROCESSOR_CONFIG


def _load(model_or_path, revision=None, trust_remote_code=False):
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    from ..models import load_model  # raises ModelNotFoundError (an OSError) naming what was tried

    return load_model(str(model_or_path), revision=revision, trust_remote_code=trust_remote_code)


def _check_preprocessing_target(path: Path, processor_json: dict, output: Path) -> None:
    # One folder holds one preprocessing: refuse to replace another model's, which its .onnx still needs.
    if not path.is_file():
        return
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        existing = None
    others = sorted(p.name for p in path.parent.glob("*.onnx") if p.resolve() != output.resolve())
    if existing != processor_json and others:
        raise FileExistsError(
            f"{path} holds a different preprocessing, used by {', '.join(others)}: export each model into its own "
            "folder (or remove that file)")


def export_onnx(model_or_path, output, opset: int | None = None, dynamic_batch: bool = False, batch_size: int = 1,
                exporter: str = "dynamo", revision: str | None = None, trust_remote_code: bool = False) -> Path:
    """Export the image path of a GRMP-IQA or MP-IQE model to ONNX; returns the path of the `.onnx` file.

    Args:
        model_or_path: a loaded model, or a saved model's folder / Hub id (loaded with `models.load_model`).
        output: the `.onnx` file to write (parent folders are created). `preprocessor_config.json` is written
            next to it (`preprocessor_config_path(output)`); models over ~2 GB keep their weights in
            `<output>.data`.
        opset: the ONNX opset (default: the exporter's).
        dynamic_batch: make the batch axis dynamic; otherwise the graph takes exactly `batch_size` images.
        batch_size: the fixed batch size when `dynamic_batch` is False.
        exporter: `"dynamo"` (`torch.export`, torch's supported exporter; needs onnxscript) or `"torchscript"`
            (the legacy tracer, deprecated in torch but about 10x faster to export; same graph outputs).

    The model is exported in eval mode (no dropout) and float32, on its device; it is returned unchanged.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 7):
        raise ValueError(f"opset must be an integer >= 7, got {opset!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    onnx = require("onnx")
    if exporter == "dynamo":
        require("onnxscript")
    model = _load(model_or_path, revision, trust_remote_code)
    model_type = getattr(model.config, "model_type", None)
    if not hasattr(model, "prompt_banks") or model_type not in EXPORTED_OUTPUTS:
        raise ValueError(f"export_onnx exports GRMP-IQA and MP-IQE models ({sorted(EXPORTED_OUTPUTS)}), "
                         f"got {type(model).__name__} (model_type {model_type!r})")
    parameter = next(model.parameters())
    if parameter.dtype != torch.float32:
        raise ValueError(f"export_onnx exports float32 models; this one is {parameter.dtype} (load it in float32)")

    output = Path(output)
    processor = model.image_processor
    processor_json = processor.to_dict()
    side = processor.crop_side
    fields = EXPORTED_OUTPUTS[model_type]
    preprocessor_path = preprocessor_config_path(output)
    _check_preprocessing_target(preprocessor_path, processor_json, output)
    output.parent.mkdir(parents=True, exist_ok=True)

    example_batch = 2 if dynamic_batch else batch_size  # 2: a size-1 example would be specialised to 1
    example = torch.zeros(example_batch, 3, side, side, device=parameter.device)
    was_training = model.training
    wrapper = ImagePath(model.eval(), fields).eval()
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())  # an upper bound (text tower too)
    options = dict(input_names=[INPUT_NAME], output_names=list(fields), opset_version=opset)
    try:
        with torch.no_grad(), wrapper.baked_text_features():
            if exporter == "dynamo":
                dynamic_shapes = {INPUT_NAME: {0: torch.export.Dim(_BATCH_AXIS, min=1)}} if dynamic_batch else None
                with _quiet_dynamo_exporter():
                    program = torch.onnx.export(wrapper, (example,), dynamo=True, dynamic_shapes=dynamic_shapes,
                                                verbose=False, **options)
                program.save(str(output), external_data=n_bytes > _PROTOBUF_LIMIT)
            else:
                axes = {name: {0: _BATCH_AXIS} for name in (INPUT_NAME, *fields)} if dynamic_batch else None
                with _quiet_legacy_exporter():
                    torch.onnx.export(wrapper, (example,), str(output), dynamo=False, dynamic_axes=axes, **options)
    finally:
        model.train(was_training)

    metadata = export_metadata(model, processor_json, fields, None if dynamic_batch else batch_size, side, exporter)
    proto = onnx.load(str(output), load_external_data=False)  # external weights stay where they are
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(output))
    write_json(preprocessor_path, processor_json, indent=2)
    return output


@contextlib.contextmanager
def _quiet_dynamo_exporter():
    import logging
    import warnings

    # torch's op registry logs a warning per torchvision op when torchvision is absent (we use none of them),
    # and torch.export warns about its own internal pytree API: noise for the user of an export
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        registry.setLevel(level)


@contextlib.contextmanager
def _quiet_legacy_exporter():
    import warnings

    with warnings.catch_warnings():  # the choice of the legacy exporter is the caller's, made explicitly
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def export_metadata(model, processor_json: dict, fields, batch_size: int | None, side: int, exporter: str) -> dict:
    """The ONNX `metadata_props` (all strings; JSON where structured): model type, source, inputs and outputs,
    batch size (`"dynamic"` or the fixed one), preprocessing (the `preprocessor_config.json` content), versions."""
    from .. import __version__
    from ..provenance import source_of

    source = source_of(model)
    batch = "batch" if batch_size is None else batch_size
    outputs = {field: [batch] if field == "scores" else [batch, "classes"] for field in fields}
    return {
        "model_type": model.config.model_type,
        "source": (source.name if source else "") or "",
        "revision": (source.commit or source.revision or "") if source else "",
        "inputs": json.dumps({INPUT_NAME: {"shape": [batch, 3, side, side], "dtype": "float32"}}),
        "outputs": json.dumps(outputs),
        "batch_size": "dynamic" if batch_size is None else str(batch_size),
        "preprocessor_config": json.dumps(processor_json, sort_keys=True),
        "exporter": exporter,
        "grmp_iqa_hf_version": __version__,
        "torch_version": torch.__version__,
    }


class OnnxScorer:
    """Score images with an exported model under onnxruntime (no torch model needed).

    The preprocessing is the one recorded in the model's metadata (`IQAImageProcessor`), so scores match
    `model.predict` on the same images. `providers` defaults to onnxruntime's CPU provider; `threads` sets its
    intra-op thread count (default: onnxruntime's).
    """

    def __init__(self, path, providers=None, threads: int | None = None):
        ort = require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ONNX model at {self.path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if "preprocessor_config" not in self.metadata:
            raise ValueError(f"{self.path} records no preprocessing (metadata 'preprocessor_config'): export it "
                             "with grmp_iqa_hf.export.export_onnx")
        self.image_processor = IQAImageProcessor.from_dict(json.loads(self.metadata["preprocessor_config"]))
        self.output_names = [o.name for o in self.session.get_outputs()]
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch_size = batch if isinstance(batch, int) else None

    def run(self, pixel_values) -> dict[str, np.ndarray]:
        """Every output for preprocessed `pixel_values` (B, 3, S, S) float32; `{name: array}`."""
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        side = self.image_processor.crop_side
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, side, side):
            raise ValueError(f"pixel_values must have shape (batch, 3, {side}, {side}), got {pixel_values.shape}")
        if self.fixed_batch_size is not None and len(pixel_values) != self.fixed_batch_size:
            raise ValueError(
                f"{self.path.name} was exported for batches of exactly {self.fixed_batch_size} images, got "
                f"{len(pixel_values)}: export with dynamic_batch=True (--dynamic-batch), or use score(), which pads")
        values = self.session.run(None, {INPUT_NAME: pixel_values})
        return dict(zip(self.output_names, values))

    def score(self, images, batch_size: int = 32) -> np.ndarray:
        """Quality scores (float32, one per image, in order) of file paths, PIL images or arrays (see
        `load_image`, which names an unreadable input in its `ImageLoadError`). A fixed-batch model runs
        batches of its size, the last one padded."""
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        step = self.fixed_batch_size or batch_size
        if step < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        scores = []
        for start in range(0, len(images), step):
            chunk = [load_image(image, name=None if isinstance(image, (str, os.PathLike)) else f"input #{start + i}")
                     for i, image in enumerate(images[start : start + step])]
            pixel_values = self.image_processor(chunk, return_tensors="np")["pixel_values"]
            n = len(pixel_values)
            if self.fixed_batch_size is not None and n < step:
                pixel_values = np.concatenate([pixel_values, np.repeat(pixel_values[-1:], step - n, axis=0)])
            scores.append(self.run(pixel_values)["scores"][:n])
        return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32)
