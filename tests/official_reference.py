"""Run the authors' released GRMP-IQA code (../shared/reference/grmp-iqa-official, MIT) as an independent
reference in tests. Nothing here copies its code: the released files are imported or, where a script
imports packages we do not install (torchvision, imgaug, sklearn, lmdb, ...) or runs at import, the needed
top-level definitions are read with `ast` and executed in a namespace we provide.

Every test that uses this module skips cleanly when the folder (or `ftfy`, which the released tokenizer
needs) is absent: call `require_released()` first.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib.util
import json
import logging
import math
import sys
import time
import types
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import List, Union

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn, optim

REPO_ROOT = Path(__file__).resolve().parents[1]
RELEASED_DIR = REPO_ROOT.parent / "shared" / "reference" / "grmp-iqa-official"
BPE_FILE = RELEASED_DIR / "CLIP" / "bpe_simple_vocab_16e6.txt.gz"


def require_released() -> Path:
    """The released code's folder, or skip the test."""
    if not (RELEASED_DIR / "CLIP" / "model.py").is_file():
        pytest.skip(f"the released GRMP-IQA code is not at {RELEASED_DIR}")
    pytest.importorskip("ftfy", reason="the released CLIP tokenizer needs ftfy (pip install -e '.[dev]')")
    return RELEASED_DIR


def _import_file(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def clip_model_module():
    """The released `CLIP/model.py` (torch + numpy only): `VPTCLIP`, `build_model`, `CLIP`, ..."""
    return _import_file("released_grmp_clip_model", require_released() / "CLIP" / "model.py")


@lru_cache(maxsize=1)
def simple_tokenizer():
    """The released `SimpleTokenizer` over the real 49408-token CLIP vocabulary."""
    module = _import_file("released_grmp_simple_tokenizer", require_released() / "CLIP" / "simple_tokenizer.py")
    return module.SimpleTokenizer(str(BPE_FILE))


class _SetConstants(ast.NodeTransformer):
    """Replace the value of `name = <constant>` assignments (e.g. `epochs = 50`), and nothing else."""

    def __init__(self, values: dict):
        self.values, self.replaced = values, set()

    def visit_Assign(self, node):
        if (len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) and node.targets[0].id in self.values
                and isinstance(node.value, ast.Constant)):
            self.replaced.add(node.targets[0].id)
            node.value = ast.copy_location(ast.Constant(self.values[node.targets[0].id]), node.value)
        return node


def _definitions(path: Path, names, constants: dict | None = None) -> ast.Module:
    """The top-level functions / classes `names` of a released script, as a module AST; `constants`
    replaces the values of simple constant assignments inside them (a smaller run of the same loop)."""
    tree = ast.parse(path.read_text())
    wanted = set(names)
    body = [node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in wanted]
    missing = wanted - {node.name for node in body}
    if missing:
        raise LookupError(f"{path.name} defines no {sorted(missing)}")
    module = ast.Module(body=body, type_ignores=[])
    if constants:
        setter = _SetConstants(constants)
        module = setter.visit(module)
        if setter.replaced != set(constants):
            raise LookupError(f"{path.name}: no constant assignment to {sorted(set(constants) - setter.replaced)}")
        ast.fix_missing_locations(module)
    return module


def tokenize_fn():
    """The released `clip.tokenize` (pads to 77 with zeros), bound to the released tokenizer."""
    namespace = {"torch": torch, "Union": Union, "List": List, "_tokenizer": simple_tokenizer()}
    exec(compile(_definitions(RELEASED_DIR / "CLIP" / "clip.py", ["tokenize"]), "clip.py", "exec"), namespace)
    return namespace["tokenize"]


def load_definitions(script: str, names, constants: dict | None = None, **extra_globals) -> types.SimpleNamespace:
    """Top-level definitions of `finetune.py` or `pretrain.py`, executed with the globals they use.
    `extra_globals` replaces any of them (e.g. `load_data`, `load_clip_to_cpu`, `use_gpu`); `constants`
    changes constant assignments inside them (e.g. `{"epochs": 1}`)."""
    tokenize = tokenize_fn()
    clip_shim = types.SimpleNamespace(tokenize=tokenize)
    namespace = {
        "__name__": f"released_{Path(script).stem}", "torch": torch, "nn": nn, "F": F, "np": np, "optim": optim,
        "copy": copy, "math": math, "time": time, "logging": logging, "OrderedDict": OrderedDict,
        "Variable": lambda t: t, "clip": clip_shim, "clip_ori": clip_shim, "_tokenizer": simple_tokenizer(),
        "use_gpu": True, "create_logger": lambda *a, **k: None, "os": __import__("os"),
    }
    namespace.update(extra_globals)
    exec(compile(_definitions(RELEASED_DIR / script, names, constants), script, "exec"), namespace)
    return types.SimpleNamespace(**{name: namespace[name] for name in names})


@contextlib.contextmanager
def cuda_calls_are_no_ops():
    """The released scripts call `.cuda()` on modules and tensors; on a CPU machine make those identities."""
    saved = (torch.Tensor.cuda, nn.Module.cuda)
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved


def write_hf_tokenizer_files(directory) -> Path:
    """`vocab.json` + `merges.txt` for transformers' `CLIPTokenizer`, built from the released BPE file (the
    OpenAI vocabulary layout: 256 byte symbols, the same with `</w>`, one token per merge, then SOT and EOT)."""
    import gzip

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    byte_symbols = list(simple_tokenizer().byte_encoder.values())
    merges = gzip.open(BPE_FILE).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in merges]
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return directory


def hf_clip_tokenizer(directory):
    """transformers' `CLIPTokenizer` with the real CLIP vocabulary (written under `directory`)."""
    from transformers import CLIPTokenizer

    directory = write_hf_tokenizer_files(directory)
    vocab = json.loads((directory / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (directory / "merges.txt").read_text().split("\n")[1:] if line]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_released_clip(seed: int = 0, vision_layers: int = 2, text_layers: int = 2, text_width: int = 64,
                       embed_dim: int = 32, image_resolution: int = 224, patch_size: int = 32):
    """A small released `VPTCLIP` in fp32, with every parameter moved off its initial value, so that a mapping
    error anywhere shows. Vision width 768 (the released prompt width is hard-coded) and 224 px (the released
    `PromptLearner` asserts it); 32 px patches keep the sequence short (1 + 100 prompts + 49 patches)."""
    module = clip_model_module()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = module.VPTCLIP(embed_dim, image_resolution, vision_layers, 768, patch_size, 77, 49408, text_width,
                               text_width // 64, text_layers).float()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name == "logit_scale":
                    param.fill_(math.log(1 / 0.05))
                elif param.dim() == 1 and name.endswith("weight"):  # LayerNorm gains
                    param.copy_(1.0 + 0.1 * torch.randn_like(param))
                else:
                    param.add_(0.02 * torch.randn_like(param))
    return model.eval()
