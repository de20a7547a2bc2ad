"""Tiny, randomly initialised CLIP backbones built offline, for tests, examples and the quickstart.

Real CLIP weights need the Hugging Face Hub. `tiny_clip()` builds a small `CLIPModel` and a matching
byte-level BPE `CLIPTokenizer` entirely in code, deterministically for a seed, so every code path
(`from_clip`, training, saving, loading, scoring) can run anywhere in seconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

# Words that get a single token (the rest are spelled out byte by byte, which is still valid BPE).
TINY_VOCAB_WORDS = (
    "a an the of photo picture image x high low good bad great poor perfect quality clear blurry noisy "
    "sharp bright dark animal cityscape human indoor landscape night plant still life others other "
    "jpeg jpeg2000 compression noise blur color colour contrast overexposure underexposure spatial "
    "quantization realistic change with and in on is this that distortion scene"
).split()

TINY_CLIP_DEFAULTS = {
    "text_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
    },
    "vision_config": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
    },
    "projection_dim": 32,
}


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character table of GPT-2/CLIP byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over every byte plus single tokens for `TINY_VOCAB_WORDS`."""
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in TINY_VOCAB_WORDS:
        # merge left to right: "photo" -> p h o t o</w> -> ph o t o</w> -> ... -> photo</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pieces[0] + pieces[1]
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_clip_config(tokenizer: CLIPTokenizer | None = None, **overrides) -> CLIPConfig:
    """A small `CLIPConfig` whose text special ids agree with `tokenizer` (default `tiny_tokenizer()`)."""
    tokenizer = tokenizer or tiny_tokenizer()
    text = dict(TINY_CLIP_DEFAULTS["text_config"], **overrides.pop("text_config", {}))
    vision = dict(TINY_CLIP_DEFAULTS["vision_config"], **overrides.pop("vision_config", {}))
    text.update(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs = {"projection_dim": TINY_CLIP_DEFAULTS["projection_dim"], **overrides}
    return CLIPConfig(text_config=text, vision_config=vision, **kwargs)


def tiny_clip(seed: int = 0, **config_overrides) -> tuple[CLIPModel, CLIPTokenizer]:
    """A tiny randomly initialised `CLIPModel` (64 px, 4+4 layers, width 32) and its tokenizer.

    Deterministic for `seed`; the global torch RNG is left untouched.
    """
    tokenizer = tiny_tokenizer()
    config = tiny_clip_config(tokenizer, **config_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval(), tokenizer


__all__ = ["tiny_clip", "tiny_clip_config", "tiny_tokenizer"]


def write_noise_folder(root, n: int, seed: int = 7):
    """A labelled imagefolder for tests: `n` noise photos (72x80 PNG) whose MOS falls smoothly with the
    noise level, listed in `metadata.csv` (`file_name,mos`). Returns `root`."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["file_name,mos"]
    for i in range(n):
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.normal(0, 1, (72, 80, 3)) * (10 + 3 * (i % 20))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        rows.append(f"images/{i:03d}.png,{100 - 4 * (i % 20) + rng.random():.3f}")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root
