import os
import subprocess
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


@pytest.fixture(scope="module")
def hub():
    """The local Hub stand-in (tests/hub_stand_in.py), one per test module; talk to it from a subprocess
    started with `hub_env(hub, ...)` (huggingface_hub reads HF_ENDPOINT when it is imported)."""
    from hub_stand_in import LocalHub

    with LocalHub() as server:
        yield server


def hub_env(hub, hf_home, **extra):
    """The environment of a subprocess that talks to `hub`, with its own cache in `hf_home`."""
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN="hf_local_test_token", HF_HOME=str(hf_home),
               HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_XET="1")  # the stand-in speaks LFS, not Xet
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(args, env, cwd=None, ok=True):
    """Run a command; with `ok`, assert it succeeded (showing the ends of its output otherwise)."""
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result
