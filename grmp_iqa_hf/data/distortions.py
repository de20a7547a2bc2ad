"""Synthetic image distortions in the style of KADID-10k.

The 25 distortion types below roughly follow the 25 types of KADID-10k
(Lin, Hosu & Saupe, 2019), each at five levels of rising severity.  They are
implemented from scratch with numpy, scipy and Pillow (plus scikit-image's TV
denoiser for ``denoise``); they are *inspired by* KADID-10k, not a bit-exact
re-implementation of its MATLAB code.

Usage::

    from grmp_iqa_hf.data.distortions import distort, DISTORTIONS
    out = distort(pil_image, "motion_blur", level=3, seed=0)

All arithmetic happens on float32 RGB in ``[0, 1]``; the result is rounded back
to an 8-bit RGB :class:`PIL.Image.Image` of the same size.  Randomness comes
only from a local ``numpy.random.default_rng(seed)``; the random draws of a
type do not depend on the level, so for a fixed seed the levels of one type are
"nested" (same noise pattern, same patch positions, same direction, ...) and
the error grows with the level.

Parameter table (``DISTORTION_PARAMS``; levels 1 -> 5).  Pixel sizes are in
pixels of the input and were calibrated for images of about 512 px; intensities
are on the ``[0, 1]`` scale.

==============================  ==================  ==========================================
name                            group               parameter per level 1..5
==============================  ==================  ==========================================
gaussian_blur                   blur                Gaussian sigma 0.7, 1.4, 2.4, 3.6, 5.0
lens_blur                       blur                disk radius 1.5, 2.5, 4, 6, 8
motion_blur                     blur                line length 3, 6, 10, 15, 21 (random angle)
color_diffusion                 color               sigma of chroma (Cb/Cr) blur 1, 3, 6, 10, 15
color_shift                     color               shift of one random RGB channel 1, 2, 4, 7, 11
                                                    (random direction)
color_quantization              color               palette size 48, 32, 16, 8, 4 (median cut)
color_saturation_decrease       color               chroma factor 0.7, 0.5, 0.3, 0.15, 0.0
color_saturation_increase       color               chroma factor 1.4, 1.8, 2.3, 3.0, 4.0
jpeg2000                        compression         target PSNR (dB) 36, 31, 27, 24, 21
jpeg                            compression         JPEG quality 45, 25, 12, 6, 2
white_noise                     noise               Gaussian std 0.02, 0.04, 0.07, 0.11, 0.16
white_noise_color_component     noise               Gaussian std on Cb/Cr 0.03, 0.06, 0.10, 0.15, 0.22
impulse_noise                   noise               salt & pepper density 0.01, 0.03, 0.06, 0.10, 0.16
multiplicative_noise            noise               speckle std 0.05, 0.10, 0.16, 0.23, 0.32
denoise                         noise               noise std 0.03, 0.05, 0.08, 0.11, 0.15, then TV
                                                    denoising with weight 1.1 * std
brighten                        brightness          gamma g, out = x ** (1/g): 1.2, 1.45, 1.75, 2.1, 2.6
darken                          brightness          gamma g, out = x ** g: 1.2, 1.45, 1.75, 2.1, 2.6
mean_shift                      brightness          |shift| 0.04, 0.08, 0.12, 0.17, 0.23 (random sign)
jitter                          spatial             max per-pixel displacement 1, 2, 3, 4, 6
non_eccentricity_patch          spatial             fraction of area in displaced patches
                                                    0.02, 0.05, 0.10, 0.16, 0.25
                                                    (patch side = min(H, W) / 24)
pixelate                        spatial             block size 2, 3, 5, 8, 12
quantization                    spatial             uniform levels per channel 24, 14, 9, 6, 4
color_block                     spatial             number of random flat colour blocks 2, 4, 8, 12, 18
                                                    (block side = min(H, W) / 16)
high_sharpen                    sharpness_contrast  unsharp-mask amount 1.0, 2.0, 3.0, 4.5, 6.5
                                                    (sigma 1.0)
contrast_change                 sharpness_contrast  contrast factor around the mean luma; random
                                                    direction: decrease 0.8, 0.65, 0.5, 0.35, 0.2
                                                    or increase 1.25, 1.5, 1.8, 2.2, 2.7
==============================  ==================  ==========================================
"""

from __future__ import annotations

import io
import numbers
from typing import Any, Callable, Dict, Tuple, Union

import numpy as np
from PIL import Image
from scipy import ndimage, signal

__all__ = [
    "DISTORTIONS",
    "DISTORTION_GROUPS",
    "DISTORTION_PARAMS",
    "NUM_LEVELS",
    "distort",
]

NUM_LEVELS = 5

ImageLike = Union[Image.Image, np.ndarray]

# ---------------------------------------------------------------------------
# colour helpers (full-range BT.601 YCbCr, as in JPEG; chroma centred at 0)
# ---------------------------------------------------------------------------
_RGB2YCC = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ],
    dtype=np.float64,
)
_YCC2RGB = np.linalg.inv(_RGB2YCC)
_RGB2YCC32 = _RGB2YCC.T.astype(np.float32)
_YCC2RGB32 = _YCC2RGB.T.astype(np.float32)


def _rgb_to_ycc(x: np.ndarray) -> np.ndarray:
    return x @ _RGB2YCC32


def _ycc_to_rgb(y: np.ndarray) -> np.ndarray:
    return y @ _YCC2RGB32


def _luma(x: np.ndarray) -> np.ndarray:
    return x @ _RGB2YCC32[:, 0]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _to_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(_to_uint8(x))


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel of ``x`` (H, W, C) with a 2-D kernel, reflect padding."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    padded = np.pad(x, ((ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)), mode="symmetric")
    out = signal.fftconvolve(padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))
    return out.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------
# individual distortions: f(x, param, rng) -> float array in (roughly) [0, 1]
# ---------------------------------------------------------------------------
def _gaussian_blur(x, sigma, rng):
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect", truncate=3.5)


def _lens_blur(x, radius, rng):
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    # anti-aliased disk: coverage estimated with 4x4 supersampling
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    cover = np.zeros(yy.shape, dtype=np.float64)
    for dy in sub:
        for dx in sub:
            cover += ((yy + dy) ** 2 + (xx + dx) ** 2) <= radius**2
    kernel = cover / cover.sum()
    return _convolve(x, kernel)


def _motion_blur(x, length, rng):
    angle = rng.uniform(0.0, np.pi)
    half = length / 2.0
    r = int(np.ceil(half)) + 1
    kernel = np.zeros((2 * r + 1, 2 * r + 1), dtype=np.float64)
    t = np.linspace(-half, half, int(8 * length) + 1)
    px = r + t * np.cos(angle)
    py = r - t * np.sin(angle)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    # bilinear splatting of the line samples
    np.add.at(kernel, (y0, x0), (1 - fx) * (1 - fy))
    np.add.at(kernel, (y0, x0 + 1), fx * (1 - fy))
    np.add.at(kernel, (y0 + 1, x0), (1 - fx) * fy)
    np.add.at(kernel, (y0 + 1, x0 + 1), fx * fy)
    kernel /= kernel.sum()
    return _convolve(x, kernel)


def _color_diffusion(x, sigma, rng):
    ycc = _rgb_to_ycc(x)
    ycc[..., 1:] = ndimage.gaussian_filter(ycc[..., 1:], sigma=(sigma, sigma, 0), mode="reflect", truncate=3.0)
    return _ycc_to_rgb(ycc)


def _color_shift(x, amount, rng):
    channel = int(rng.integers(3))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    out = x.copy()
    out[..., channel] = ndimage.shift(
        x[..., channel],
        (amount * np.sin(angle), amount * np.cos(angle)),
        order=1,
        mode="nearest",
    )
    return out


def _color_quantization(x, colors, rng):
    img = _to_pil(x)
    q = img.quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return np.asarray(q.convert("RGB"), dtype=np.float32) / 255.0


def _scale_chroma(x, factor):
    ycc = _rgb_to_ycc(x)
    ycc[..., 1:] *= factor
    return _ycc_to_rgb(ycc)


def _color_saturation_decrease(x, factor, rng):
    return _scale_chroma(x, factor)


def _color_saturation_increase(x, factor, rng):
    return _scale_chroma(x, factor)


def _roundtrip(x, **save_kwargs):
    buf = io.BytesIO()
    _to_pil(x).save(buf, **save_kwargs)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255.0


def _jpeg2000(x, target_db, rng):
    # "dB" mode asks OpenJPEG for a target PSNR per quality layer; unlike a fixed
    # compression ratio this stays meaningful for tiny images (whose codestream
    # would otherwise be dominated by the header).
    return _roundtrip(x, format="JPEG2000", quality_mode="dB", quality_layers=[float(target_db)])


def _jpeg(x, quality, rng):
    return _roundtrip(x, format="JPEG", quality=int(quality))


def _white_noise(x, std, rng):
    return x + np.float32(std) * rng.standard_normal(x.shape, dtype=np.float32)


def _white_noise_color_component(x, std, rng):
    ycc = _rgb_to_ycc(x)
    ycc[..., 1:] += np.float32(std) * rng.standard_normal(ycc[..., 1:].shape, dtype=np.float32)
    return _ycc_to_rgb(ycc)


def _impulse_noise(x, density, rng):
    hit = rng.random(x.shape, dtype=np.float32) < density
    salt = rng.random(x.shape, dtype=np.float32) < 0.5
    out = x.copy()
    out[hit] = salt[hit].astype(np.float32)
    return out


def _multiplicative_noise(x, std, rng):
    return x * (1.0 + np.float32(std) * rng.standard_normal(x.shape, dtype=np.float32))


def _denoise(x, std, rng):
    from skimage.restoration import denoise_tv_chambolle

    noisy = np.clip(x + np.float32(std) * rng.standard_normal(x.shape, dtype=np.float32), 0.0, 1.0)
    out = denoise_tv_chambolle(noisy, weight=1.1 * std, channel_axis=-1)
    return out.astype(np.float32, copy=False)


def _brighten(x, gamma, rng):
    return np.power(np.clip(x, 0.0, 1.0), np.float32(1.0 / gamma))


def _darken(x, gamma, rng):
    return np.power(np.clip(x, 0.0, 1.0), np.float32(gamma))


def _mean_shift(x, shift, rng):
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return x + np.float32(sign * shift)


def _jitter(x, amount, rng):
    h, w = x.shape[:2]
    offsets = rng.uniform(-1.0, 1.0, size=(2, h, w))
    dy = np.rint(offsets[0] * amount).astype(np.intp)
    dx = np.rint(offsets[1] * amount).astype(np.intp)
    rows = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    cols = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    return x[rows, cols]


def _patch_side(h, w, divisor, minimum):
    return int(max(minimum, round(min(h, w) / divisor)))


def _non_eccentricity_patch(x, fraction, rng):
    h, w = x.shape[:2]
    p = min(_patch_side(h, w, 24, 3), h, w)
    capacity = (h * w) / float(p * p)
    max_count = max(1, int(round(max(_NEP_FRACTIONS) * capacity)))
    # draw everything for the most severe level so that levels are nested
    src_y = rng.integers(0, h - p + 1, size=max_count)
    src_x = rng.integers(0, w - p + 1, size=max_count)
    radius = rng.uniform(0.5 * p, 2.0 * p, size=max_count)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=max_count)
    dst_y = np.clip(np.rint(src_y + radius * np.sin(theta)), 0, h - p).astype(int)
    dst_x = np.clip(np.rint(src_x + radius * np.cos(theta)), 0, w - p).astype(int)
    count = min(max_count, max(1, int(round(fraction * capacity))))
    out = x.copy()
    for i in range(count):
        out[dst_y[i] : dst_y[i] + p, dst_x[i] : dst_x[i] + p] = x[src_y[i] : src_y[i] + p, src_x[i] : src_x[i] + p]
    return out


def _pixelate(x, block, rng):
    h, w = x.shape[:2]
    img = _to_pil(x)
    small = img.resize((max(1, -(-w // block)), max(1, -(-h // block))), Image.Resampling.BOX)
    big = small.resize((w, h), Image.Resampling.NEAREST)
    return np.asarray(big, dtype=np.float32) / 255.0


def _quantization(x, levels, rng):
    n = int(levels)
    k = np.clip(np.floor(x * n), 0, n - 1)
    return (k + 0.5) / n


def _color_block(x, count, rng):
    h, w = x.shape[:2]
    p = min(_patch_side(h, w, 16, 4), h, w)
    max_count = max(_COLOR_BLOCK_COUNTS)
    ys = rng.integers(0, h - p + 1, size=max_count)
    xs = rng.integers(0, w - p + 1, size=max_count)
    colors = rng.random((max_count, 3), dtype=np.float32)
    out = x.copy()
    for i in range(int(count)):
        out[ys[i] : ys[i] + p, xs[i] : xs[i] + p] = colors[i]
    return out


def _high_sharpen(x, amount, rng):
    blurred = ndimage.gaussian_filter(x, sigma=(1.0, 1.0, 0), mode="reflect", truncate=3.5)
    return x + np.float32(amount) * (x - blurred)


def _contrast_change(x, factors, rng):
    decrease, increase = factors
    factor = decrease if rng.random() < 0.5 else increase
    mean = np.float32(_luma(x).mean())
    return mean + np.float32(factor) * (x - mean)


_NEP_FRACTIONS = (0.02, 0.05, 0.10, 0.16, 0.25)
_COLOR_BLOCK_COUNTS = (2, 4, 8, 12, 18)

# name -> (group, per-level parameters, implementation); order = KADID-10k order
_SPECS: Dict[str, Tuple[str, Tuple[Any, ...], Callable]] = {
    "gaussian_blur": ("blur", (0.7, 1.4, 2.4, 3.6, 5.0), _gaussian_blur),
    "lens_blur": ("blur", (1.5, 2.5, 4.0, 6.0, 8.0), _lens_blur),
    "motion_blur": ("blur", (3, 6, 10, 15, 21), _motion_blur),
    "color_diffusion": ("color", (1.0, 3.0, 6.0, 10.0, 15.0), _color_diffusion),
    "color_shift": ("color", (1.0, 2.0, 4.0, 7.0, 11.0), _color_shift),
    "color_quantization": ("color", (48, 32, 16, 8, 4), _color_quantization),
    "color_saturation_decrease": ("color", (0.7, 0.5, 0.3, 0.15, 0.0), _color_saturation_decrease),
    "color_saturation_increase": ("color", (1.4, 1.8, 2.3, 3.0, 4.0), _color_saturation_increase),
    "jpeg2000": ("compression", (36.0, 31.0, 27.0, 24.0, 21.0), _jpeg2000),
    "jpeg": ("compression", (45, 25, 12, 6, 2), _jpeg),
    "white_noise": ("noise", (0.02, 0.04, 0.07, 0.11, 0.16), _white_noise),
    "white_noise_color_component": ("noise", (0.03, 0.06, 0.10, 0.15, 0.22), _white_noise_color_component),
    "impulse_noise": ("noise", (0.01, 0.03, 0.06, 0.10, 0.16), _impulse_noise),
    "multiplicative_noise": ("noise", (0.05, 0.10, 0.16, 0.23, 0.32), _multiplicative_noise),
    "denoise": ("noise", (0.03, 0.05, 0.08, 0.11, 0.15), _denoise),
    "brighten": ("brightness", (1.2, 1.45, 1.75, 2.1, 2.6), _brighten),
    "darken": ("brightness", (1.2, 1.45, 1.75, 2.1, 2.6), _darken),
    "mean_shift": ("brightness", (0.04, 0.08, 0.12, 0.17, 0.23), _mean_shift),
    "jitter": ("spatial", (1, 2, 3, 4, 6), _jitter),
    "non_eccentricity_patch": ("spatial", _NEP_FRACTIONS, _non_eccentricity_patch),
    "pixelate": ("spatial", (2, 3, 5, 8, 12), _pixelate),
    "quantization": ("spatial", (24, 14, 9, 6, 4), _quantization),
    "color_block": ("spatial", _COLOR_BLOCK_COUNTS, _color_block),
    "high_sharpen": ("sharpness_contrast", (1.0, 2.0, 3.0, 4.5, 6.5), _high_sharpen),
    "contrast_change": (
        "sharpness_contrast",
        ((0.8, 1.25), (0.65, 1.5), (0.5, 1.8), (0.35, 2.2), (0.2, 2.7)),
        _contrast_change,
    ),
}

#: Ordered names of all distortion types (KADID-10k order).
DISTORTIONS: Tuple[str, ...] = tuple(_SPECS)
#: name -> KADID-10k group (blur, color, compression, noise, brightness, spatial, sharpness_contrast).
DISTORTION_GROUPS: Dict[str, str] = {name: spec[0] for name, spec in _SPECS.items()}
#: name -> tuple of the 5 per-level parameters (see the module docstring for their meaning).
DISTORTION_PARAMS: Dict[str, Tuple[Any, ...]] = {name: spec[1] for name, spec in _SPECS.items()}


def _as_float_rgb(image: ImageLike) -> np.ndarray:
    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            raise TypeError(f"array images must be uint8, got dtype {arr.dtype}")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        elif arr.ndim == 3 and arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"array images must have shape (H, W, 3), got {image.shape}")
    else:
        raise TypeError(f"expected a PIL.Image.Image or a uint8 numpy array, got {type(image).__name__}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError("image must be non-empty")
    return arr.astype(np.float32) / np.float32(255.0)


def _check_level(level: Any) -> int:
    valid = tuple(range(1, NUM_LEVELS + 1))
    if isinstance(level, bool) or not isinstance(level, numbers.Integral) or int(level) not in valid:
        raise ValueError(f"invalid distortion level {level!r}; valid levels: {list(valid)}")
    return int(level)


def distort(image: ImageLike, name: str, level: int, seed: Any = 0) -> Image.Image:
    """Apply distortion ``name`` at ``level`` (1 = mildest .. 5 = most severe).

    Args:
        image: a PIL image (converted to RGB) or a uint8 array of shape (H, W, 3)
            (grey (H, W) and RGBA arrays are accepted too).
        name: one of :data:`DISTORTIONS`.
        level: integer in ``1..5``.
        seed: seed for a local ``numpy.random.default_rng``; the same
            (image, name, level, seed) always gives identical pixels.

    Returns:
        An RGB :class:`PIL.Image.Image` of the same size as ``image``.

    Raises:
        ValueError: unknown ``name`` or invalid ``level`` (the message lists
            the valid choices).
    """
    if name not in _SPECS:
        raise ValueError(f"unknown distortion {name!r}; valid distortions: {', '.join(DISTORTIONS)}")
    level = _check_level(level)
    x = _as_float_rgb(image)
    _, params, fn = _SPECS[name]
    rng = np.random.default_rng(seed)
    out = fn(x, params[level - 1], rng)
    if out.shape != x.shape:  # pragma: no cover - internal consistency guard
        raise RuntimeError(f"distortion {name!r} changed the image shape {x.shape} -> {out.shape}")
    return _to_pil(out)
