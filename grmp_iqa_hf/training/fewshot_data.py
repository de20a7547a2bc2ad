"""The training samples of few-shot fine-tuning (`finetune.FewShotTrainer`): keyed crops, per-image dropout
streams, and the caches computed once from the starting model.

- Crops: each image has a fixed pool of `pool` entries, each a keyed random crop (+ flip) with its own keyed
  dropout draw for the frozen layers; every epoch each sample draws one entry of its pool from the stream
  keyed by (seed, epoch, image). `pool=None`: fresh crops and masks every epoch; `batch_crops`: the released
  augmentation (one crop offset per batch, seeded by the step); `augment=False`: centre crops.
- Dropout: every mask comes from a per-image `torch.Generator` keyed by (seed, ..., image), never from the
  global RNG, so results do not depend on how samples are batched or shared out over processes.
- Caches: everything entering the first trainable vision block is fixed once the crop and the lower layers'
  masks are, so those activations are computed once per image and pool entry (`trunk_hidden`); the teacher's
  scene targets likewise (`teacher_targets`). Recomputing gives the same values (tested): the caches change
  speed, not results.

`SampleCaches` is a base class of `FewShotTrainer`, which sets the attributes it reads (`model`, `images`,
`train_indices`, `seed`, `pool`, `augment`, `flip`, `batch_crops`, `prompt_dropout`, `steps_per_epoch`, `start`,
`device`, `dtype`, `rank`, `world`, the cache settings, `eval_sets`, `lam`, `scene_ids`, `progress`) and the
methods `_autocast` and `_training_mode`.
"""

from __future__ import annotations

import time
import warnings

import torch
from tqdm.auto import tqdm

from .common import reduce_sum, rng_for, seed_for
from .gradreg import SceneTeacher

# stream keys (second element of every rng key), so that the streams never overlap
POOL_KEY, CHOICE_KEY, FRESH_KEY = 101, 102, 103
POOL_DROPOUT_KEY, HEAD_DROPOUT_KEY, FRESH_DROPOUT_KEY = 104, 105, 106


def dropout_generators(keys_per_sample) -> list[torch.Generator]:
    """One CPU `torch.Generator` per sample, seeded from that sample's integer keys (its dropout stream)."""
    return [torch.Generator().manual_seed(seed_for(*keys)) for keys in keys_per_sample]


def chunks(items, size):
    """`items` in consecutive chunks of `size` (None: one chunk)."""
    size = size or max(len(items), 1)
    return [items[i : i + size] for i in range(0, len(items), size)]


class SampleCaches:
    """Crops, dropout streams and the frozen-trunk / teacher caches of a `FewShotTrainer` (see the module
    docstring)."""

    def _crop(self, image_index: int, crop_id: int, epoch: int, batch_index: int = 0) -> torch.Tensor:
        if not self.augment:
            return self.images.crop(image_index)
        if self.batch_crops:
            return self.images.crop_at(image_index, *self.batch_offsets(epoch, batch_index))
        if self.pool is None:
            return self.images.crop(image_index, rng_for(self.seed, FRESH_KEY, epoch, image_index), self.flip)
        return self.images.crop(image_index, rng_for(self.seed, POOL_KEY, crop_id, image_index), self.flip)

    def batch_offsets(self, epoch: int, batch_index: int) -> tuple[int, int, bool]:
        """`(top, left, flip)` of every image of a batch, as the released code draws them: the torch seed
        `steps_per_epoch * epoch + batch_index`, `randint(margin, (3,))`, flip when left < margin / 2."""
        processor = self.images.processor
        if processor.resize_mode != "square":
            raise ValueError("batch_crops (the released augmentation) needs square resizing (resize_mode='square')")
        margin = max(processor.resize_size, processor.crop_side) - processor.crop_side
        if margin == 0:
            return 0, 0, False
        generator = torch.Generator().manual_seed(self.steps_per_epoch * epoch + batch_index)
        offsets = torch.randint(margin, (3,), generator=generator)
        top, left = int(offsets[0]), int(offsets[1])
        return top, left, self.flip and left < margin // 2

    def crop_ids(self, positions, epoch: int) -> list[int]:
        """The crop of each sample at `epoch`: an index into its pool, drawn from (seed, epoch, image)."""
        if self.pool is None or self.pool == 1:
            return [0] * len(positions)
        return [int(rng_for(self.seed, CHOICE_KEY, epoch, self.train_indices[p]).integers(self.pool)) for p in positions]

    def pixels(self, positions, crop_ids, epoch: int, batch_index: int = 0) -> torch.Tensor:
        crops = [self._crop(self.train_indices[p], c, epoch, batch_index) for p, c in zip(positions, crop_ids)]
        return torch.stack(crops).to(self.device, self.dtype)

    def trunk_generators(self, positions, crop_ids, epoch: int):
        """Dropout streams of the frozen layers: a pool entry's own (so the cached trunk is exact), or fresh
        ones per (epoch, image) when crops are fresh. None without prompt dropout."""
        if not self.prompt_dropout:
            return None
        images = [self.train_indices[p] for p in positions]
        if self.pool is None:
            return dropout_generators((self.seed, FRESH_DROPOUT_KEY, epoch, i) for i in images)
        return dropout_generators((self.seed, POOL_DROPOUT_KEY, c, i) for c, i in zip(crop_ids, images))

    def head_generators(self, positions, epoch: int, trunk_generators=None):
        """Dropout streams of the trainable layers: fresh every epoch, keyed by (seed, epoch, image); with
        fresh crops the trunk's streams simply continue."""
        if not self.prompt_dropout:
            return None
        if self.pool is None:
            return trunk_generators
        return dropout_generators((self.seed, HEAD_DROPOUT_KEY, epoch, self.train_indices[p]) for p in positions)

    # ------------------------------------------------------------------ caches

    def prepare(self) -> None:
        """Compute the frozen-trunk cache and the teacher targets, from the model as it is now (the
        starting model: call before any update, and before loading a checkpoint's parameters)."""
        if self.prepared:
            return
        started = time.perf_counter()
        local_items = [(p, c) for p in self.local_positions for c in range(self.pool or 1)]
        if self.cache_trunk:
            per_item = self._trunk_bytes_per_item()
            eval_items = sum(len(self._local_eval_positions(n)) for n in self.eval_sets)
            needed = per_item * (len(local_items) + eval_items)
            if needed > self.max_cache_bytes:
                warnings.warn(f"the frozen-trunk cache would need {needed / 2**30:.1f} GiB (> max_cache_gib="
                              f"{self.max_cache_bytes / 2**30:g}); recomputing the trunk every step instead "
                              "(same results, slower). Lower crop_pool or raise max_cache_gib.")
                self.cache_trunk = False
        if self.lam != 0:
            self.teacher = SceneTeacher(self.model.clip, self.scene_ids, copy_weights=not self.cache_teacher)
        bar = tqdm(total=len(local_items), desc="Caching frozen trunk / teacher", unit="crop",
                   disable=not self.progress or not (self.cache_trunk or self.cache_teacher) or not local_items)
        table = None
        if self.lam != 0 and self.cache_teacher:
            table = torch.zeros(self.num_samples, self.pool, self.teacher.num_classes, device=self.device,
                                dtype=self.dtype)
        if self.cache_trunk or table is not None:
            self._training_mode()  # the pool entries' dropout draws of the frozen layers
            for chunk in chunks(local_items, self.cache_batch_size):
                positions, crops = [p for p, _ in chunk], [c for _, c in chunk]
                pixels = self.pixels(positions, crops, epoch=0)
                with self._autocast():
                    if self.cache_trunk:
                        generators = self.trunk_generators(positions, crops, epoch=0)
                        hidden = self._trunk(pixels, generators)
                        for (p, c), h in zip(chunk, hidden):
                            self.trunk[(self.train_indices[p], c)] = h.clone()
                    if table is not None:
                        probs = self.teacher.probs(pixels)
                        for (p, c), row in zip(chunk, probs):
                            table[p, c] = row
                bar.update(len(chunk))
        bar.close()
        if table is not None:
            self.teacher_table = reduce_sum(self.accelerator, [table])[0]
        if self.cache_trunk:
            self.model.eval()
            for name in self.eval_sets:
                indices = self.eval_sets[name][0]
                for chunk in chunks(self._local_eval_positions(name), self.cache_batch_size):
                    rows = [indices[p] for p in chunk]
                    pixels = self.images.batch(rows).to(self.device, self.dtype)
                    with self._autocast():
                        hidden = self._trunk(pixels)
                    for row, h in zip(rows, hidden):
                        self.eval_trunk[row] = h.clone()
        self.prepare_seconds = time.perf_counter() - started
        self.prepared = True

    def _trunk_bytes_per_item(self) -> int:
        vision = self.model.config.clip_config.vision_config
        tokens = 1 + self.model.config.num_visual_prompts + (vision.image_size // vision.patch_size) ** 2
        return tokens * vision.hidden_size * torch.finfo(torch.float32).bits // 8

    def _local_eval_positions(self, name) -> list[int]:
        return [p for p in range(len(self.eval_sets[name][0])) if p % self.world == self.rank]

    def trunk_hidden(self, positions, crop_ids, epoch: int, pixels=None, generators=None) -> torch.Tensor:
        """Hidden states entering the first trainable block, from the cache or recomputed (in the current mode)
        from `pixels` with the trunk's dropout streams `generators` (default: `trunk_generators`)."""
        if self.cache_trunk:
            return torch.stack([self.trunk[(self.train_indices[p], c)] for p, c in zip(positions, crop_ids)])
        if pixels is None:
            pixels = self.pixels(positions, crop_ids, epoch)
        if generators is None:
            generators = self.trunk_generators(positions, crop_ids, epoch)
        return self._trunk(pixels, generators)

    def _trunk(self, pixels, generators=None) -> torch.Tensor:
        with torch.no_grad():  # the frozen layers: no graph
            return self.model.vision_hidden_states(pixels, self.start, generators)

    def teacher_targets(self, positions, crop_ids, epoch: int, pixels=None) -> torch.Tensor:
        if self.teacher_table is not None:
            return self.teacher_table[torch.as_tensor(positions, device=self.device),
                                      torch.as_tensor(crop_ids, device=self.device)]
        if pixels is None:
            pixels = self.pixels(positions, crop_ids, epoch)
        return self.teacher.probs(pixels)

