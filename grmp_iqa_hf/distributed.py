"""Sharing work over processes: each process takes its round-robin share, and results come back as explicit
sums. Used by training, the protocol runners and `scoring.score_rows`, so it depends on none of them."""

from __future__ import annotations

import torch


def reduce_sum(accelerator, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum tensors over processes in one collective. Needed for gradients from `torch.autograd.grad` /
    `torch.func`, which never pass through DDP's gradient hooks."""
    if accelerator is None or accelerator.num_processes == 1 or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    flat = accelerator.reduce(flat, reduction="sum")
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def local_indices(count: int, accelerator) -> list[int]:
    """This process's share of `count` work items (round robin)."""
    if accelerator is None:
        return list(range(count))
    return list(range(accelerator.process_index, count, accelerator.num_processes))


__all__ = ["local_indices", "reduce_sum"]
