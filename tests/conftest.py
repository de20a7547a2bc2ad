import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Tests never touch the network: the Hub is unreachable here and must not be needed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIVE_DIR = REPO_ROOT.parent / "shared" / "data" / "clive-jpg"


@pytest.fixture(scope="session")
def tiny():
    """A tiny random CLIP and its tokenizer (shared; tests must not modify them)."""
    from grmp_iqa_hf.testing import tiny_clip

    return tiny_clip(seed=0)


@pytest.fixture
def clive_dir():
    if not (CLIVE_DIR / "metadata.csv").is_file():
        pytest.skip(f"LIVE-in-the-Wild sample not found at {CLIVE_DIR}")
    return CLIVE_DIR


@pytest.fixture
def pixel_values():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 64, 64, generator=generator)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: with tiny models thread start-up dominates, and on a shared
    2-core machine two threads per process oversubscribe it (tens of times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_random_images(folder, count: int, height, width: int, suffix=lambda i: "png", seed: int = 0):
    """`count` random RGB images `img{i}.{suffix(i)}` of `height(i)` x `width` pixels; returns the paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        paths.append(Path(folder) / f"img{i}.{suffix(i)}")
        Image.fromarray(rng.integers(0, 255, (height(i), width, 3), dtype=np.uint8)).save(paths[-1])
    return paths, rng


def save_tiny_model(model_class, path, adjust=None):
    """A tiny `model_class` (6 visual prompts, context from "a photo of a"; prompts seeded by 0), moved by
    `adjust(model)` (a stand-in for training), saved to `path`; returns `(model, path)`."""
    from grmp_iqa_hf.testing import tiny_clip

    clip, tok = tiny_clip(seed=0)
    torch.manual_seed(0)
    model = model_class.from_clip(clip, tok, num_visual_prompts=6, ctx_init="a photo of a")
    if adjust is not None:
        model = adjust(model) or model
    model.save_pretrained(path)
    return model, path


def text_feature_calls(model, pixel_values):
    """Score `pixel_values` twice without gradients, counting `compute_text_features` calls: `(calls, first,
    second)` (the text features are cached at inference, so the second pass adds none)."""
    calls = []
    original = model.compute_text_features
    model.compute_text_features = lambda bank: calls.append(1) or original(bank)
    with torch.no_grad():
        first = model(pixel_values).scores
        second = model(pixel_values).scores
    return calls, first, second
