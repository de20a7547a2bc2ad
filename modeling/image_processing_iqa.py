"""Image loading and preprocessing for CLIP-based blind image quality assessment (IQA).

This module is shipped twice: as ``grmp_iqa_hf.modeling.image_processing_iqa`` and as Hugging Face
Hub remote code next to the weights. It therefore only imports the standard library, ``numpy``,
``torch``, ``transformers`` and (inside a ``try`` block) Pillow.

Two public pieces:

``load_image(source, name=None)``
    Turns a path, PIL image, numpy array or torch tensor into an 8-bit ``"RGB"`` PIL image, or
    raises :class:`ImageLoadError` naming the input and the reason. Choices made:

    * Files are decoded completely while the error handler is active (``img.load()``), so a
      truncated or corrupt file fails *here*, with its name, instead of somewhere in a data loader.
      ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched. Pillow's decompression-bomb guard is
      kept (``PIL.Image.MAX_IMAGE_PIXELS``) and reported as such.
    * EXIF orientation is applied (``ImageOps.exif_transpose``), for files and PIL inputs alike.
    * Animated GIF / WebP / APNG files: the first frame is used. (A PIL image passed in directly
      is used at whatever frame it currently shows.)
    * Transparency (``"RGBA"``, ``"LA"``, ``"PA"``, ``"P"``/``"L"``/``"RGB"`` with a transparency
      key, 4-channel arrays) is alpha-composited over a **white** background. Quality raters see
      transparent regions on a (usually white) page, whereas simply dropping the alpha channel
      reveals whatever arbitrary colour the encoder stored under fully transparent pixels.
    * 16-bit grey images (``"I;16"``, ``"I;16B"``, ``"I;16L"``, and ``"I"``, which older Pillow
      versions used for 16-bit PNGs) are scaled to 8 bits as ``round(v / 257)`` (0 -> 0,
      65535 -> 255), values outside [0, 65535] are clipped. Pillow's own ``convert("L")``
      clips at 255, which would turn almost every 16-bit image white.
    * ``"F"`` (32-bit float) PIL images follow Pillow's convention: values are on the 0..255 scale
      (clipped, rounded). Float *arrays and tensors*, in contrast, are taken to be in [0, 1]
      (clipped), the numpy / torch convention.
    * ``"1"``, ``"L"``, ``"P"``, ``"CMYK"``, ``"YCbCr"``, ``"LAB"``, ``"HSV"`` use Pillow's
      conversion to RGB (embedded ICC profiles are not applied).

``IQAImageProcessor``
    A ``transformers`` image processor (saved as ``preprocessor_config.json``). Pipeline, per image:
    load to RGB -> resize -> crop ``crop_size`` x ``crop_size`` -> optional horizontal flip ->
    ``uint8 / 255`` -> ``(x - mean) / std`` -> channel-first ``float32``.

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

import math
import os
import re
import warnings
from typing import Any, TypedDict

import numpy as np
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import logging

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
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESIZE_MODES = ("square", "shorter_side")
_RESAMPLE_NAMES = ("nearest", "bilinear", "bicubic", "lanczos", "bicubic_no_antialias")
# Pillow antialiases when it downscales; the released GRMP-IQA code resizes with `cv2.resize(INTER_CUBIC)`,
# which does not. torch's bicubic without antialiasing uses the same kernel (a = -0.75, half-pixel centres,
# edge replication), so "bicubic_no_antialias" reproduces it without OpenCV (within 1 grey level: OpenCV
# rounds through 11-bit fixed-point weights).
_TORCH_RESAMPLE = {"bicubic_no_antialias": "bicubic"}
_CROP_MODES = ("center", "random")
_RETURN_TENSORS = ("pt", "np")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112
# Keys that transformers itself writes into / passes through preprocessor_config.json.
_SERVICE_KEYS = ("auto_map", "processor_class", "image_processor_type", "feature_extractor_type")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


class ImageLoadError(ValueError):
    """An input could not be turned into an RGB image.

    Attributes:
        source: text naming the input (a file path, or e.g. ``"input #3 (numpy array)"``).
        reason: short human-readable reason (``"file not found"``, ``"empty file"``, ...).
    """

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = str(reason)
        super().__init__(f"cannot read image {self.source}: {self.reason}")

    def __reduce__(self):  # keep the two-argument constructor picklable (DataLoader workers)
        return (type(self), (self.source, self.reason))


def _require_pil() -> None:
    if Image is None:
        raise ImportError("Pillow is required to load images: pip install pillow")


def _describe(source: Any) -> str:
    """Default `source` text for error messages."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        return os.fsdecode(path) if isinstance(path, bytes) else path
    if Image is not None and isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return filename if filename else "input (PIL image)"
    if isinstance(source, np.ndarray):
        return "input (numpy array)"
    if isinstance(source, torch.Tensor):
        return "input (torch tensor)"
    return f"input ({type(source).__name__})"


def _kind(source: Any) -> str:
    if Image is not None and isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return f"PIL image from {filename}" if filename else "PIL image"
    if isinstance(source, np.ndarray):
        return "numpy array"
    if isinstance(source, torch.Tensor):
        return "torch tensor"
    return type(source).__name__


def _composite_over_white(img: "Image.Image") -> "Image.Image":
    """Alpha-composite an image with transparency over an opaque white background."""
    if img.mode == "La":  # premultiplied grey + alpha: Pillow has no direct conversion
        arr = np.asarray(img).astype(np.float64)
        alpha = arr[..., 1]
        grey = np.where(alpha > 0, arr[..., 0] * 255.0 / np.maximum(alpha, 1), 0.0)
        arr = np.stack([np.clip(np.floor(grey + 0.5), 0, 255), alpha], axis=-1).astype(np.uint8)
        img = Image.fromarray(arr)  # -> "LA"
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _sixteen_bit_to_rgb(img: "Image.Image") -> "Image.Image":
    """Scale 16-bit grey data (0..65535) to 8 bits with rounding, instead of Pillow's clipping."""
    arr = np.asarray(img).astype(np.float64)
    arr = np.clip(arr, 0.0, 65535.0)
    grey = np.floor(arr / 257.0 + 0.5).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _float_image_to_rgb(img: "Image.Image") -> "Image.Image":
    """Pillow "F" images: values on the 0..255 scale (Pillow's convention), clipped and rounded."""
    arr = np.asarray(img).astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("float image contains NaN or infinite values")
    grey = np.floor(np.clip(arr, 0.0, 255.0) + 0.5).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _has_transparency(img: "Image.Image") -> bool:
    """`Image.has_transparency_data`, with a fallback for Pillow < 10.1."""
    flag = getattr(img, "has_transparency_data", None)
    if flag is not None:
        return bool(flag)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        return True
    return img.mode == "P" and getattr(img.palette, "mode", "") == "RGBA"


def _to_rgb(img: "Image.Image") -> "Image.Image":
    """Convert a loaded PIL image of any mode to 8-bit RGB (see the module docstring)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(img)
    if mode == "F":
        return _float_image_to_rgb(img)
    if _has_transparency(img):
        return _composite_over_white(img)
    if mode == "RGB":
        return img
    return img.convert("RGB")


def _apply_exif_orientation(img: "Image.Image", source: str) -> "Image.Image":
    """Rotate / flip according to the EXIF orientation tag; a broken EXIF block only warns."""
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            return ImageOps.exif_transpose(img)
    except Exception as err:  # corrupt EXIF metadata must not make valid pixels unusable
        warnings.warn(f"ignoring unreadable EXIF orientation of {source}: {err}", stacklevel=3)
    return img


def _bomb_reason(err: Exception) -> str:
    match = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(err))
    if match:
        return f"decompression bomb: {match.group(1)} pixels exceeds the limit of {match.group(2)} pixels"
    return f"decompression bomb: {err}"


def _load_file(path: str, source: str) -> "Image.Image":
    if not os.path.exists(path):
        raise ImageLoadError(source, "file not found")
    if os.path.isdir(path):
        raise ImageLoadError(source, "is a directory, not a file")
    try:
        if os.path.getsize(path) == 0:
            raise ImageLoadError(source, "empty file")
        with Image.open(path) as img:
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated GIF / WebP / APNG: first frame
            img.load()  # decode everything now, so truncation is detected here
            img = _apply_exif_orientation(img, source)
            return _to_rgb(img)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageLoadError(source, _bomb_reason(err)) from err
    except UnidentifiedImageError as err:
        raise ImageLoadError(source, "not an image (cannot identify image file)") from err
    except FileNotFoundError as err:
        raise ImageLoadError(source, "file not found") from err
    except PermissionError as err:
        raise ImageLoadError(source, "permission denied") from err
    except (OSError, SyntaxError, EOFError, ValueError, IndexError, KeyError, TypeError) as err:
        raise ImageLoadError(source, f"truncated or corrupt image data: {err}") from err
    except MemoryError as err:
        raise ImageLoadError(source, "out of memory while decoding") from err
    except Exception as err:  # any other decoder failure still names the file
        raise ImageLoadError(source, f"could not decode image ({type(err).__name__}: {err})") from err


def _array_to_rgb(arr: np.ndarray, source: str, what: str = "array") -> "Image.Image":
    """(H, W) / (H, W, 1) / (H, W, 3) / (H, W, 4) array -> RGB PIL image."""
    shape = tuple(arr.shape)
    if not (arr.ndim == 2 or (arr.ndim == 3 and shape[2] in (1, 3, 4))):
        raise ImageLoadError(
            source, f"unsupported {what} shape {shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if shape[0] == 0 or shape[1] == 0:
        raise ImageLoadError(source, f"empty image ({what} shape {shape})")

    if arr.dtype == np.uint8:
        data = arr
    elif arr.dtype == np.uint16:
        data = np.floor(arr.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif arr.dtype == np.bool_:
        data = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        values = arr.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageLoadError(source, f"{what} contains NaN or infinite values")
        data = np.floor(np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ImageLoadError(
            source,
            f"unsupported {what} dtype {arr.dtype}; use uint8 (0-255), uint16 (0-65535), bool or float (0-1)",
        )

    if data.ndim == 3 and data.shape[2] == 1:
        data = data[..., 0]
    img = Image.fromarray(np.ascontiguousarray(data))  # "L", "RGB" or "RGBA"
    return _to_rgb(img)


def _tensor_to_rgb(tensor: torch.Tensor, source: str) -> "Image.Image":
    """(C, H, W) with C in {1, 3, 4}, or (H, W), tensor -> RGB PIL image."""
    shape = tuple(tensor.shape)
    if tensor.ndim == 3 and shape[0] in (1, 3, 4):
        tensor = tensor.permute(1, 2, 0)
    elif tensor.ndim != 2:
        raise ImageLoadError(
            source, f"unsupported tensor shape {shape}; expected (C, H, W) with C in 1, 3, 4 or (H, W)"
        )
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    if tensor.dtype not in (torch.uint8, torch.bool, torch.float32, torch.float64):
        raise ImageLoadError(source, f"unsupported tensor dtype {tensor.dtype}; use uint8 (0-255), bool or float (0-1)")
    return _array_to_rgb(tensor.numpy(), source, what="tensor")


def load_image(source: Any, name: str | None = None) -> "Image.Image":
    """Load one image as an 8-bit ``"RGB"`` PIL image.

    Args:
        source: a file path (``str`` / ``os.PathLike``), a PIL image (any mode), a numpy array
            ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` of dtype uint8, uint16
            (scaled by 1/257), bool, or float (taken to be in [0, 1], clipped), or a torch tensor
            ``(C, H, W)`` (C in 1, 3, 4) or ``(H, W)``, float in [0, 1] or uint8.
            Alpha is composited over white; EXIF orientation is applied; animated files give
            their first frame.
        name: text used for the input in error messages instead of the default (the path, or
            ``"input (numpy array)"`` etc.).

    Raises:
        ImageLoadError: the input cannot be read; ``str(err)`` names the input and the reason.
    """
    _require_pil()
    label = str(name) if name is not None else _describe(source)

    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return _load_file(path, label)

    if isinstance(source, Image.Image):
        try:
            source.load()  # a lazily opened image may still be truncated
            img = _apply_exif_orientation(source, label)
            return _to_rgb(img)
        except ImageLoadError:
            raise
        except Exception as err:
            raise ImageLoadError(label, f"truncated or corrupt image data: {err}") from err

    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, label)

    if isinstance(source, torch.Tensor):
        return _tensor_to_rgb(source, label)

    raise ImageLoadError(
        label,
        f"unsupported input type {type(source).__name__}; expected a path, PIL image, numpy array or torch tensor",
    )


# --------------------------------------------------------------------------------------------
# Processor
# --------------------------------------------------------------------------------------------


class IQAImageProcessorKwargs(TypedDict, total=False):
    """Settings of :class:`IQAImageProcessor` (the keys of ``preprocessor_config.json``)."""

    crop_size: int
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

    Args:
        crop_size (`int`, defaults to 224): side of the square crop fed to the model.
        resize_size (`int`, defaults to 244): target of the resize before cropping.
        resize_mode (`str`, defaults to `"square"`): `"square"` resizes to
            `resize_size` x `resize_size` ignoring the aspect ratio (official GRMP-IQA code);
            `"shorter_side"` scales the shorter side to `resize_size`, keeping the aspect ratio.
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
        crop_size: int = 224,
        resize_size: int = 244,
        resize_mode: str = "square",
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

        self.crop_size = _check_positive_int(crop_size, "crop_size")
        self.resize_size = _check_positive_int(resize_size, "resize_size")
        if resize_mode not in _RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {_RESIZE_MODES}, got {resize_mode!r}")
        self.resize_mode = resize_mode
        self.resample = _resample_name(resample)
        self.image_mean = _check_stats(CLIP_MEAN if image_mean is None else image_mean, "image_mean", False)
        self.image_std = _check_stats(CLIP_STD if image_std is None else image_std, "image_std", True)
        if not isinstance(do_normalize, (bool, np.bool_)):
            raise ValueError(f"do_normalize must be a bool, got {do_normalize!r}")
        self.do_normalize = bool(do_normalize)

    # ---- single-image steps -------------------------------------------------------------

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step for an input of `width` x `height`.

        Guaranteed to be at least `crop_size` on both sides: if the configured resize would give
        a smaller image, it is enlarged (aspect ratio of the resize kept) until the crop fits.
        """
        if width < 1 or height < 1:
            raise ValueError(f"image has zero size ({width}x{height})")
        if self.resize_mode == "square":
            side = max(self.resize_size, self.crop_size)
            return side, side
        short, long = min(width, height), max(width, height)
        new_short = max(self.resize_size, self.crop_size)
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
        size = self.crop_size
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
        return torch.from_numpy(self._to_unit_array(image))

    def _to_unit_array(self, image: "Image.Image") -> np.ndarray:
        if image.mode != "RGB":
            image = load_image(image)
        arr = np.asarray(image, dtype=np.uint8)
        return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)

    def _normalize(self, array: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.image_mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.image_std, dtype=np.float32).reshape(3, 1, 1)
        return (array - mean) / std

    def process_image(
        self,
        image: Any,
        crop: str = "center",
        flip: bool = False,
        generator: torch.Generator | None = None,
        name: str | None = None,
    ) -> np.ndarray:
        """One input -> normalised float32 array (3, crop_size, crop_size)."""
        rgb = load_image(image, name=name)
        resized = self.resize(rgb)
        cropped = resized.crop(self.crop_box(resized.width, resized.height, crop, generator))
        if flip:
            device = generator.device if generator is not None else "cpu"
            if torch.rand(1, generator=generator, device=device).item() < 0.5:
                cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = self._to_unit_array(cropped)
        return self._normalize(array) if self.do_normalize else array

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
            arrays.append(self.process_image(item, crop=crop, flip=bool(flip), generator=generator, name=name))
        pixel_values = np.stack(arrays).astype(np.float32, copy=False)
        self._check_pixel_values(pixel_values, len(batch))
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def _check_pixel_values(self, pixel_values: np.ndarray, batch_size: int) -> None:
        expected = (batch_size, 3, self.crop_size, self.crop_size)
        if pixel_values.shape != expected or pixel_values.dtype != np.float32:
            raise RuntimeError(
                f"internal error: pixel_values {pixel_values.shape} {pixel_values.dtype}, expected {expected} float32"
            )


# `save_pretrained` writes `auto_map` and ships this file, so that
# `AutoImageProcessor.from_pretrained(dir_or_repo, trust_remote_code=True)` works without the package.
IQAImageProcessor.register_for_auto_class("AutoImageProcessor")
