"""Image loading and preprocessing for CLIP-based blind image quality assessment (IQA).

This module is shipped twice: as ``grmp_iqa_hf.modeling.image_processing_iqa`` and as Hugging Face
Hub remote code next to the weights. It therefore only imports the standard library, ``numpy``,
``torch``, ``transformers``, its sibling ``constants`` and (inside a ``try`` block) Pillow.

Image loading (``load_image``, ``ImageLoadError``) lives in ``image_loading.py`` and is re-exported here.

``IQAImageProcessor``
    A ``transformers`` image processor (saved as ``preprocessor_config.json``). Pipeline, per image:
    load to RGB -> resize -> crop ``crop_size`` x ``crop_size`` -> optional horizontal flip ->
    ``uint8 / 255`` -> ``(x - mean) / std`` -> channel-first ``float32``.

    Saved in transformers' standard schema (``size``, ``crop_size`` dicts). Next to a model it is the one
    source of truth for preprocessing: the model's ``from_pretrained`` reads it (``saved_image_processor``)
    and it wins over the copy of these settings in ``config.json``; a crop that does not fit the backbone is
    refused by both (``crop_mismatch_message``).

    * Default: **square** resize to 244 x 244 (aspect ratio ignored) then a 224 x 224 centre crop.
      This follows the released GRMP-IQA code (torchvision ``Resize((244, 244))`` followed by a
      224 crop; offsets and rounding here match torchvision's ``CenterCrop`` / ``RandomCrop``).
      ``resize_mode="shorter_side"`` instead scales the shorter side to ``resize_size`` keeping the
      aspect ratio (CLIP style); the long side is ``int(long * resize_size / short)``.
    * If the resized image would still be smaller than the crop, it is enlarged (aspect ratio kept)
      until the crop fits, in the same single resampling step.
    * Normalisation defaults to the OpenAI CLIP mean/std (the backbone's training statistics);
      ImageNet statistics are available as ``IMAGENET_MEAN`` / ``IMAGENET_STD``.
    * ``crop="random"`` and ``flip=True`` draw from an optional ``torch.Generator`` for
      reproducible training augmentation: per image, first the top offset, then the left offset,
      then (if ``flip``) one uniform number (flip when < 0.5).

    In transformers 5.x ``BaseImageProcessor.preprocess`` runs a generic kwargs / backend pipeline
    (``ImagesKwargs`` validation, ``SizeDict`` conversion, ``process_image`` / ``_preprocess``
    hooks implemented by the torchvision or PIL backend classes). This processor subclasses
    ``BaseImageProcessor`` directly and overrides ``__init__``, ``__call__`` and ``preprocess``
    with a plain PIL / numpy implementation, so it needs neither torchvision nor the backend
    classes; it only uses the base class for ``save_pretrained`` / ``from_pretrained`` /
    ``to_dict``. ``valid_kwargs`` lists this processor's own settings so that
    ``from_pretrained(path, resize_mode=...)`` overrides work.
"""

import json
import math
import os
from typing import Any, TypedDict

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import IMAGE_PROCESSOR_NAME, cached_file, logging

from .constants import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, resize_size_for
from .constants import RESIZE_MODES as _RESIZE_MODES
from .image_loading import ImageLoadError, _kind, load_image

try:
    from PIL import Image, ImageOps, UnidentifiedImageError
except ImportError:  # pragma: no cover - Pillow is a hard requirement at call time only
    Image = None
    ImageOps = None
    UnidentifiedImageError = None


logger = logging.get_logger(__name__)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageLoadError",
    "load_image",
    "IQAImageProcessor",
    "crop_mismatch_message",
    "saved_image_processor",
]

_RESAMPLE_NAMES = ("nearest", "bilinear", "bicubic", "lanczos", "bicubic_no_antialias")
# Pillow antialiases when it downscales; the released GRMP-IQA code resizes with `cv2.resize(INTER_CUBIC)`,
# which does not. torch's bicubic without antialiasing uses the same kernel (a = -0.75, half-pixel centres,
# edge replication), so "bicubic_no_antialias" reproduces it without OpenCV (within 1 grey level: OpenCV
# rounds through 11-bit fixed-point weights).
_TORCH_RESAMPLE = {"bicubic_no_antialias": "bicubic"}
_CROP_MODES = ("center", "random")
_RETURN_TENSORS = ("pt", "np")
# Keys that transformers itself writes into / passes through preprocessor_config.json.
_SERVICE_KEYS = ("auto_map", "processor_class", "image_processor_type", "feature_extractor_type")
# Arguments of `from_pretrained` that locate files (with `revision`; the models use these too).
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "proxies", "subfolder")


# --------------------------------------------------------------------------------------------
# Processor
# --------------------------------------------------------------------------------------------


class IQAImageProcessorKwargs(TypedDict, total=False):
    """Settings of :class:`IQAImageProcessor`: the keys of ``preprocessor_config.json`` (``size``, ``crop_size``,
    ``resample``, ``image_mean``, ``image_std``, ``do_normalize``) and the older keys it still reads
    (``resize_size``, ``resize_mode``, an integer ``crop_size``), which also serve as overrides."""

    size: dict
    crop_size: int | dict
    resize_size: int
    resize_mode: str
    resample: str
    image_mean: list[float]
    image_std: list[float]
    do_normalize: bool


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_stats(value: Any, name: str, positive: bool) -> list[float]:
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of 3 numbers, got {value!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be 3 finite numbers (one per RGB channel), got {value!r}")
    if positive and any(v <= 0 for v in values):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return values


def _square_side(value: Any, name: str) -> int:
    """The side of a square given as an integer or as the standard `{"height": n, "width": n}`."""
    if isinstance(value, dict):
        if set(value) != {"height", "width"} or value["height"] != value["width"]:
            raise ValueError(f'{name} must be square, {{"height": n, "width": n}}, got {value!r}')
        value = value["height"]
    return _check_positive_int(value, name)


def _resize_from_size(size: Any) -> tuple[str, int]:
    """(resize mode, length) of a standard `size` dict."""
    if isinstance(size, dict) and set(size) == {"shortest_edge"}:
        return "shorter_side", _check_positive_int(size["shortest_edge"], "size['shortest_edge']")
    if isinstance(size, dict) and set(size) == {"height", "width"}:
        return "square", _square_side(size, "size")
    raise ValueError(f'size must be {{"height": n, "width": n}} (square resize) or {{"shortest_edge": n}} '
                     f"(shorter side to n, aspect ratio kept), got {size!r}")


def crop_mismatch_message(crop_side: int, image_size: int) -> str:
    """Why a saved preprocessing cannot serve a model: its crop is not the size the vision tower takes. The model
    (`from_pretrained`) and the processor (`IQAImageProcessor.from_pretrained` next to a model) both refuse with it."""
    return (f"preprocessor_config.json: crop_size {crop_side}x{crop_side} does not fit this model, whose vision tower "
            f"takes {image_size}x{image_size} images (config.json, vision_config.image_size). preprocessor_config.json "
            f"decides the preprocessing (resize, resample, normalisation), but the crop is fixed by the backbone: set "
            f'crop_size back to {{"height": {image_size}, "width": {image_size}}}')


def _torch_resize(image: "Image.Image", size: tuple[int, int], mode: str) -> "Image.Image":
    """Resize an RGB PIL image to `size` (width, height) with torch's `mode`, no antialiasing, rounded to uint8."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()).float().unsqueeze(0)
    resized = torch.nn.functional.interpolate(pixels, size=(size[1], size[0]), mode=mode, align_corners=False,
                                              antialias=False)
    array = resized[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def _resample_name(value: Any) -> str:
    if Image is not None and isinstance(value, int) and not isinstance(value, bool):
        by_value = {
            int(Image.Resampling.NEAREST): "nearest",
            int(Image.Resampling.BILINEAR): "bilinear",
            int(Image.Resampling.BICUBIC): "bicubic",
            int(Image.Resampling.LANCZOS): "lanczos",
        }
        if int(value) in by_value:
            return by_value[int(value)]
    if isinstance(value, str) and value.lower() in _RESAMPLE_NAMES:
        return value.lower()
    raise ValueError(f"resample must be one of {_RESAMPLE_NAMES}, got {value!r}")


class IQAImageProcessor(BaseImageProcessor):
    r"""Image processor for CLIP-based IQA models (GRMP-IQA defaults).

    Saved as the standard schema: `size` (`{"height": n, "width": n}`: square resize, or `{"shortest_edge": n}`)
    and `crop_size` (`{"height": s, "width": s}`). Files written before read unchanged (`crop_size` as an integer,
    `resize_size`, `resize_mode`).

    Args:
        size (`dict`, *optional*): the resize before cropping, as above. Default: square, `resize_size`.
        crop_size (`int` or `dict`, defaults to 224): the square crop fed to the model.
        resize_size (`int`, *optional*): the resize length; overrides the one in `size` (default: 244/224 of the
            crop, as the released GRMP-IQA code).
        resize_mode (`str`, *optional*): `"square"` resizes to `resize_size` x `resize_size` ignoring the aspect
            ratio (official GRMP-IQA code); `"shorter_side"` scales the shorter side to `resize_size`, keeping the
            aspect ratio. Overrides the mode of `size`, so `from_pretrained(dir, resize_mode=...)` works.
        resample (`str`, defaults to `"bilinear"`): `"nearest"`, `"bilinear"`, `"bicubic"` or
            `"lanczos"` (Pillow filters, antialiased when downscaling), or `"bicubic_no_antialias"` (the
            released GRMP-IQA code's `cv2.resize(..., INTER_CUBIC)`, computed with torch).
        image_mean (`list[float]`, defaults to `CLIP_MEAN`), image_std (`list[float]`, defaults to
            `CLIP_STD`): per-channel normalisation statistics on the [0, 1] scale.
        do_normalize (`bool`, defaults to `True`): if `False`, pixel values are only scaled to [0, 1].
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = IQAImageProcessorKwargs

    def __init__(
        self,
        size: dict | None = None,
        crop_size: int | dict = 224,
        resize_size: int | None = None,
        resize_mode: str | None = None,
        resample: str = "bilinear",
        image_mean: list[float] | tuple[float, ...] | None = None,
        image_std: list[float] | tuple[float, ...] | None = None,
        do_normalize: bool = True,
        **kwargs,
    ):
        # `image_processor_type` is written by `to_dict` and would otherwise become an attribute.
        kwargs.pop("image_processor_type", None)
        unknown = sorted(k for k in kwargs if k not in _SERVICE_KEYS)
        if unknown:
            logger.warning(f"IQAImageProcessor: ignoring unknown settings {unknown} (kept as attributes)")
        super().__init__(**kwargs)  # sets remaining keys (e.g. `auto_map`) as attributes

        crop_side = _square_side(crop_size, "crop_size")
        mode, length = _resize_from_size(size) if size is not None else ("square", resize_size_for(crop_side))
        if resize_mode is not None:
            if resize_mode not in _RESIZE_MODES:
                raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
            mode = resize_mode
        if resize_size is not None:
            length = _check_positive_int(resize_size, "resize_size")
        # the two settings transformers' processors share, in their standard form (what to_dict saves)
        self.size = {"shortest_edge": length} if mode == "shorter_side" else {"height": length, "width": length}
        self.crop_size = {"height": crop_side, "width": crop_side}
        self.resample = _resample_name(resample)
        self.image_mean = _check_stats(CLIP_MEAN if image_mean is None else image_mean, "image_mean", False)
        self.image_std = _check_stats(CLIP_STD if image_std is None else image_std, "image_std", True)
        if not isinstance(do_normalize, (bool, np.bool_)):
            raise ValueError(f"do_normalize must be a bool, got {do_normalize!r}")
        self.do_normalize = bool(do_normalize)

    @property
    def crop_side(self) -> int:
        """Side of the square crop, in pixels."""
        return self.crop_size["height"]

    @property
    def resize_mode(self) -> str:
        """`"square"` or `"shorter_side"` (from `size`)."""
        return "shorter_side" if "shortest_edge" in self.size else "square"

    @property
    def resize_size(self) -> int:
        """The resize length (both sides, or the shorter one; from `size`)."""
        return self.size.get("shortest_edge", self.size.get("height"))

    # ---- single-image steps -------------------------------------------------------------

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step for an input of `width` x `height`.

        Guaranteed to be at least `crop_size` on both sides: if the configured resize would give
        a smaller image, it is enlarged (aspect ratio of the resize kept) until the crop fits.
        """
        if width < 1 or height < 1:
            raise ValueError(f"image has zero size ({width}x{height})")
        if self.resize_mode == "square":
            side = max(self.resize_size, self.crop_side)
            return side, side
        short, long = min(width, height), max(width, height)
        new_short = max(self.resize_size, self.crop_side)
        new_long = max(new_short, int(long * new_short / short))
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def resize(self, image: "Image.Image") -> "Image.Image":
        """Resize an RGB PIL image according to `resize_mode` / `resize_size` / `resample`."""
        target = self.resized_size(*image.size)
        if target == image.size:
            return image
        if self.resample in _TORCH_RESAMPLE:
            return _torch_resize(image, target, _TORCH_RESAMPLE[self.resample])
        resample = getattr(Image.Resampling, self.resample.upper())
        return image.resize(target, resample=resample)

    def crop_box(
        self, width: int, height: int, crop: str = "center", generator: torch.Generator | None = None
    ) -> tuple[int, int, int, int]:
        """PIL crop box (left, top, right, bottom) of the `crop_size` square in a `width` x `height` image."""
        size = self.crop_side
        if width < size or height < size:
            raise ValueError(f"image of {width}x{height} is smaller than the crop size {size}")
        if crop == "center":  # same rounding as torchvision's CenterCrop
            top = int(round((height - size) / 2.0))
            left = int(round((width - size) / 2.0))
        else:  # "random": same draws as torchvision's RandomCrop (top, then left)
            device = generator.device if generator is not None else "cpu"
            top = int(torch.randint(0, height - size + 1, (1,), generator=generator, device=device).item())
            left = int(torch.randint(0, width - size + 1, (1,), generator=generator, device=device).item())
        return left, top, left + size, top + size

    def to_tensor(self, image: "Image.Image") -> torch.Tensor:
        """PIL image -> float32 tensor (3, H, W) in [0, 1] (any mode is converted to RGB first)."""
        rgb = image if image.mode == "RGB" else load_image(image)
        return torch.from_numpy(self._to_unit_array(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)))

    @staticmethod
    def _to_unit_array(chw: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(chw, dtype=np.float32) / np.float32(255.0)

    def _normalize(self, array: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.image_mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.image_std, dtype=np.float32).reshape(3, 1, 1)
        return (array - mean) / std

    def crop_positions(self, width: int, height: int, crops: int = 1) -> list[tuple[int, int]]:
        """(top, left) of `crops` deterministic crops in a `width` x `height` (resized) image, for test-time
        multi-crop scoring in the manner of LIQE (crops on a regular grid, picked evenly in raster order).

        One crop is the centre crop. Otherwise the crops come from a g x g grid (g = ceil(sqrt(crops))) whose
        offsets are evenly spaced from the first to the last position that fits, rounded as the centre crop is,
        picking grid cells `round(i * (g*g - 1) / (crops - 1))`: 5 crops are the four corners and the centre,
        9 the whole 3 x 3 grid. With the default square resize (244 for a 224 crop) the crops move by at most
        20 pixels; a larger `resize_size` or `resize_mode="shorter_side"` spreads them over more of the image."""
        if isinstance(crops, bool) or not isinstance(crops, (int, np.integer)) or crops < 1:
            raise ValueError(f"crops must be a positive integer, got {crops!r}")
        left, top, _, _ = self.crop_box(width, height)  # also checks that a crop fits
        if crops == 1:
            return [(top, left)]
        grid = math.ceil(math.sqrt(crops))
        tops = [int(round(v)) for v in np.linspace(0, height - self.crop_side, grid)]
        lefts = [int(round(v)) for v in np.linspace(0, width - self.crop_side, grid)]
        cells = [(t, l) for t in tops for l in lefts]
        return [cells[int(round(i * (len(cells) - 1) / (crops - 1)))] for i in range(crops)]

    def process_image(
        self,
        image: Any,
        crop: str = "center",
        flip: bool = False,
        generator: torch.Generator | None = None,
        name: str | None = None,
        crops: int = 1,
    ) -> np.ndarray:
        """One input -> normalised float32 array (3, crop_size, crop_size), or (crops, 3, crop_size, crop_size)
        with `crops > 1` (the `crop_positions`; centre crops only, no flip)."""
        resized = self.resize(load_image(image, name=name))
        if crops != 1:
            pixels = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)
            return np.stack([self.crop_and_normalize(pixels, top, left)
                             for top, left in self.crop_positions(resized.width, resized.height, crops)])
        left, top, _, _ = self.crop_box(resized.width, resized.height, crop, generator)
        if flip:
            device = generator.device if generator is not None else "cpu"
            flip = torch.rand(1, generator=generator, device=device).item() < 0.5
        return self.crop_and_normalize(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1), top, left, flip)

    def crop_and_normalize(self, resized, top: int, left: int, flip: bool = False) -> np.ndarray:
        """The `crop_size` square at (`top`, `left`) of a resized uint8 RGB image (3, H, W) (array or CPU tensor),
        flipped if asked, in [0, 1] and normalised: float32 (3, S, S). `process_image` ends here; training
        caches resized images and calls it for every crop."""
        size, resized = self.crop_side, np.asarray(resized)
        patch = resized[:, top : top + size, left : left + size]
        if top < 0 or left < 0 or patch.shape[1:] != (size, size):
            raise ValueError(f"a {size}x{size} crop at (top={top}, left={left}) does not fit a {resized.shape[1:]} image")
        array = self._to_unit_array(patch[:, :, ::-1] if flip else patch)
        return self._normalize(array) if self.do_normalize else array

    # ---- loading next to a model --------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`BaseImageProcessor.from_pretrained`; next to a model of this package (a `config.json` with a
        `clip_config`), a crop that does not fit the model is refused, with the same message as the model's
        `from_pretrained` (`crop_mismatch_message`), so no entry point scores with it."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        processor = loaded[0] if isinstance(loaded, tuple) else loaded  # return_unused_kwargs=True
        hub_kwargs = {k: kwargs[k] for k in (*_HUB_KWARGS, "revision") if kwargs.get(k) is not None}
        config_file = cached_file(pretrained_model_name_or_path, "config.json", **hub_kwargs,
                                  _raise_exceptions_for_missing_entries=False,
                                  _raise_exceptions_for_connection_errors=False)
        if config_file is not None:
            with open(config_file, encoding="utf-8") as f:
                vision = ((json.load(f).get("clip_config") or {}).get("vision_config") or {})
            image_size = vision.get("image_size")
            if isinstance(image_size, int) and image_size != processor.crop_side:
                raise ValueError(crop_mismatch_message(processor.crop_side, image_size))
        return loaded

    # ---- batch API ----------------------------------------------------------------------

    def __call__(self, images: Any, **kwargs) -> BatchFeature:
        """Same as :meth:`preprocess`."""
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images: Any,
        return_tensors: str = "pt",
        crop: str = "center",
        flip: bool = False,
        generator: torch.Generator | None = None,
        crops: int = 1,
    ) -> BatchFeature:
        """Preprocess one image or a list of images (any mix of inputs `load_image` accepts).

        Args:
            images: one input, a list / tuple of inputs, or a batched 4-D numpy array
                (B, H, W, C) / torch tensor (B, C, H, W).
            return_tensors: `"pt"` (torch) or `"np"` (numpy).
            crop: `"center"` (evaluation) or `"random"` (training augmentation).
            flip: flip horizontally with probability 0.5 (training augmentation).
            generator: `torch.Generator` used for the random crop and flip; the global torch
                RNG when `None`.
            crops: with `crops > 1`, each image gives `crops` deterministic crops (`crop_positions`), image
                after image: `pixel_values` then has B * crops rows (test-time multi-crop; not with `crop="random"`
                or `flip`).

        Returns:
            `BatchFeature` with `pixel_values` of shape (B, 3, crop_size, crop_size), float32.

        Raises:
            ImageLoadError: an input cannot be read (non-path inputs are named `input #i (...)`,
                `i` being the 0-based position in the batch).
        """
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {_RETURN_TENSORS}, got {return_tensors!r}")
        if crop not in _CROP_MODES:
            raise ValueError(f"crop must be one of {_CROP_MODES}, got {crop!r}")
        if not isinstance(flip, (bool, np.bool_)):
            raise ValueError(f"flip must be a bool, got {flip!r}")
        if crops != 1 and (crop != "center" or flip):
            raise ValueError("crops > 1 places deterministic crops: it cannot be combined with crop='random' or flip")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")

        if isinstance(images, (list, tuple)):
            batch = list(images)
        elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            batch = list(images)
        else:
            batch = [images]
        if not batch:
            raise ValueError("preprocess() needs at least one image, got an empty list")

        arrays = []
        for index, item in enumerate(batch):
            name = None if isinstance(item, (str, os.PathLike)) else f"input #{index} ({_kind(item)})"
            arrays.append(self.process_image(item, crop=crop, flip=bool(flip), generator=generator, name=name,
                                             crops=crops))
        pixel_values = (np.concatenate(arrays) if crops != 1 else np.stack(arrays)).astype(np.float32, copy=False)
        self._check_pixel_values(pixel_values, len(batch) * crops)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def _check_pixel_values(self, pixel_values: np.ndarray, batch_size: int) -> None:
        expected = (batch_size, 3, self.crop_side, self.crop_side)
        if pixel_values.shape != expected or pixel_values.dtype != np.float32:
            raise RuntimeError(
                f"internal error: pixel_values {pixel_values.shape} {pixel_values.dtype}, expected {expected} float32"
            )


def saved_image_processor(pretrained_model_name_or_path, **hub_kwargs) -> IQAImageProcessor | None:
    """The `IQAImageProcessor` saved next to a model (`preprocessor_config.json`, older schema included), or None
    when the folder / repository has none. `hub_kwargs`: `revision`, `cache_dir`, `token`, ... as for `cached_file`."""
    path = cached_file(pretrained_model_name_or_path, IMAGE_PROCESSOR_NAME, **hub_kwargs,
                       _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        settings = json.load(f)
    return IQAImageProcessor(**{k: v for k, v in settings.items() if k != "image_processor_type"})


# `save_pretrained` writes `auto_map` and ships this file, so that
# `AutoImageProcessor.from_pretrained(dir_or_repo, trust_remote_code=True)` works without the package.
IQAImageProcessor.register_for_auto_class("AutoImageProcessor")
