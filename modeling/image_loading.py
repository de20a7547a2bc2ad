"""Image loading for the IQA models: any input to an 8-bit RGB PIL image, or one clear error.

Shipped with `image_processing_iqa.py` (Hub remote code): imports only the standard library, ``numpy``,
``torch`` and (inside a ``try`` block) Pillow.

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
"""

import io
import os
import re
import warnings
from typing import Any

import numpy as np
import torch

try:
    from PIL import Image, ImageOps, UnidentifiedImageError
except ImportError:  # pragma: no cover - Pillow is a hard requirement at call time only
    Image = None
    ImageOps = None
    UnidentifiedImageError = None

__all__ = ["ImageLoadError", "load_image"]

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112


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
    return _decode(path, source)


def _decode(file, source: str) -> "Image.Image":
    """Decode an encoded image (a path or a binary file object) to RGB; every failure is an `ImageLoadError`."""
    try:
        if isinstance(file, str) and os.path.getsize(file) == 0:
            raise ImageLoadError(source, "empty file")
        with Image.open(file) as img:
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
        source: a file path (``str`` / ``os.PathLike``), an encoded file's bytes (JPEG, PNG, ...), a PIL
            image (any mode), a numpy array
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

    if isinstance(source, (bytes, bytearray, memoryview)):  # an encoded file's contents (an upload, a dataset row)
        if not len(source):
            raise ImageLoadError(label, "empty image data")
        return _decode(io.BytesIO(bytes(source)), label)

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
        f"unsupported input type {type(source).__name__}; expected a path, encoded bytes, PIL image, numpy array or "
        "torch tensor",
    )
