"""Images for training loops: decoded and resized once, cropped per sample from keyed random streams.

Training revisits the same few hundred or thousand images many times (meta-tasks, few-shot epochs),
so decoding and resizing them every visit would dominate a CPU run. `ImageCache` keeps every image
resized (the model's own processor settings) as uint8, and `batch()` produces normalised crops through
the processor's own crop and normalisation (`IQAImageProcessor.crop_and_normalize`): the centre crop
(identical to `model.image_processor`) or a random crop + flip drawn from a generator keyed by the caller
(e.g. `(seed, step, task, sample)`), so crops never depend on the process count.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from ..modeling.image_processing_iqa import ImageLoadError, IQAImageProcessor, load_image
from .common import rng_for


class ImageCache:
    """Resized uint8 copies of `images` (paths, PIL images or arrays) for `processor`.

    Files that cannot be read are reported once (a warning naming each file and the reason) and
    listed in `failed` (`{index: reason}`); callers leave them out instead of aborting.
    """

    def __init__(self, processor: IQAImageProcessor, images, progress: bool = True, num_workers: int = 4,
                 desc: str = "Decoding images"):
        self.processor = processor
        self.crop_size = processor.crop_side
        images = list(images)
        self.images: list[torch.Tensor | None] = [None] * len(images)
        self.failed: dict[int, str] = {}
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            results = pool.map(self._decode, images)
            for index, result in enumerate(tqdm(results, total=len(images), desc=desc, disable=not progress)):
                if isinstance(result, str):
                    self.failed[index] = result
                else:
                    self.images[index] = result
        if self.failed:
            listed = "; ".join(f"#{i}: {reason}" for i, reason in list(self.failed.items())[:20])
            more = f" (and {len(self.failed) - 20} more)" if len(self.failed) > 20 else ""
            warnings.warn(f"{len(self.failed)} of {len(images)} images could not be read and are left out: {listed}{more}")

    def _decode(self, image):
        try:
            resized = self.processor.resize(load_image(image))
        except ImageLoadError as exc:
            return str(exc)
        return torch.from_numpy(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy())

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows) -> "ImageCache":
        """A view keeping only `rows` (renumbered 0..n-1), sharing the decoded images (no decoding again)."""
        view = object.__new__(type(self))
        view.processor, view.crop_size = self.processor, self.crop_size
        view.images = [self.images[int(r)] for r in rows]
        view.failed = {}
        return view

    @property
    def valid_indices(self) -> list[int]:
        return [i for i, image in enumerate(self.images) if image is not None]

    def _image(self, index: int) -> torch.Tensor:
        image = self.images[index]
        if image is None:
            raise ImageLoadError(f"#{index}", self.failed.get(index, "not decoded"))
        return image

    def crop(self, index: int, rng: np.random.Generator | None = None, flip: bool = False) -> torch.Tensor:
        """One normalised (3, S, S) float32 crop: centre crop when `rng` is None, else random (+ flip)."""
        _, height, width = self._image(index).shape
        size = self.crop_size
        if rng is None:
            left, top, _, _ = self.processor.crop_box(width, height)
        else:
            top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        return self.crop_at(index, top, left, flip=rng is not None and flip and rng.random() < 0.5)

    def crop_at(self, index: int, top: int, left: int, flip: bool = False) -> torch.Tensor:
        """The normalised (3, S, S) float32 crop of image `index` at (`top`, `left`), flipped horizontally if asked."""
        return torch.from_numpy(self.processor.crop_and_normalize(self._image(index), top, left, flip))

    def batch(self, indices, keys: tuple[int, ...] | None = None, flip: bool = True) -> torch.Tensor:
        """Crops of `indices` as (B, 3, S, S). `keys=None`: centre crops. Otherwise sample `j` is cropped
        with the stream `rng_for(*keys, indices[j])`, so a sample's crop depends only on the keys and
        the image, not on the batch it lands in or on the process computing it."""
        crops = [self.crop(int(i), None if keys is None else rng_for(*keys, int(i)), flip) for i in indices]
        return torch.stack(crops) if crops else torch.zeros(0, 3, self.crop_size, self.crop_size)
