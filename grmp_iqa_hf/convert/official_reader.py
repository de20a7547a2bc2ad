"""Reading a checkpoint of the released GRMP-IQA code without running anything from it.

State dicts are read with torch's `weights_only` loader. A whole-module pickle is read by an allow-list
unpickler: torch's tensor rebuild functions, `OrderedDict`, `set`, dtypes and devices, and inert stand-ins for
the module classes of CLIP and of the released scripts, which keep only their `_parameters` / `_buffers` /
`_modules`. No class from the file is imported or constructed; any other global is refused by name
(`RefusedGlobalError`). TorchScript archives, whose loading would run their code, are refused.
`grmp_iqa_hf.convert.official` maps what is read onto a `GRMPIQAModel`.
"""

from __future__ import annotations

import hashlib
import pickle
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch


class OfficialCheckpointError(ValueError):
    """The file cannot be converted: not a released GRMP-IQA checkpoint, shapes that do not fit, ... (the message
    says what and where)."""


class RefusedGlobalError(OfficialCheckpointError):
    """The file's pickle names a global outside the allow-list; nothing from it was run. `global_name` names it."""

    def __init__(self, path, global_name: str):
        self.global_name = global_name
        super().__init__(
            f"{path}: refused to unpickle the global {global_name!r}: it is neither a tensor nor a module class of "
            "CLIP or of the released GRMP-IQA code, so it could run code. Nothing from the file was executed. A "
            "released checkpoint holds only tensors (a state dict) or the released model classes."
        )


class _InertModule:
    """Stands in for a module class named in a pickle. It never runs the class's code: it keeps the tensors of the
    pickled module's `_parameters` / persistent `_buffers` and its child modules, and ignores everything else."""

    pickled_class = "?"
    # legacy (pre-1.6) files store each module class's source; torch compares it with the loaded class and, when
    # `dump_patches` is set, writes a patch file: never
    dump_patches = False

    def __init__(self, *args, **kwargs):  # a REDUCE with arguments builds nothing either
        self.parameters_, self.buffers_, self.children_ = {}, {}, {}

    def __setstate__(self, state):
        self.parameters_, self.buffers_, self.children_ = {}, {}, {}
        if isinstance(state, tuple) and len(state) == 2:  # (instance dict, slots)
            state = state[0]
        if not isinstance(state, Mapping):
            return
        self.parameters_ = _tensor_items(state.get("_parameters"))
        non_persistent = state.get("_non_persistent_buffers_set")
        non_persistent = set(non_persistent) if isinstance(non_persistent, (set, frozenset, list, tuple)) else set()
        self.buffers_ = {k: v for k, v in _tensor_items(state.get("_buffers")).items() if k not in non_persistent}
        modules = state.get("_modules")
        if isinstance(modules, Mapping):
            self.children_ = {str(k): v for k, v in modules.items() if isinstance(v, _InertModule)}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The module's state dict (parameters and persistent buffers, recursively)."""
        out: dict[str, torch.Tensor] = {}
        self._collect("", out, set())
        return out

    def _collect(self, prefix: str, out: dict, active: set) -> None:
        if id(self) in active:  # a cycle: a module cannot contain itself
            return
        active.add(id(self))
        for name, tensor in {**self.parameters_, **self.buffers_}.items():
            out[prefix + name] = tensor
        for name, child in self.children_.items():
            child._collect(f"{prefix}{name}.", out, active)
        active.discard(id(self))


def _tensor_items(mapping) -> dict[str, torch.Tensor]:
    if not isinstance(mapping, Mapping):
        return {}
    return {str(k): v for k, v in mapping.items() if isinstance(v, torch.Tensor)}


# Module classes a released model pickle refers to. torch's by full path; the released ones (`CLIP/model.py`,
# `finetune.py`, `pretrain.py`) by class name, under whichever module the script ran as (`__main__`, `CLIP.model`...).
_TORCH_MODULE_CLASSES = {
    f"torch.nn.modules.{path}"
    for path in (
        "linear.Linear", "linear.NonDynamicallyQuantizableLinear", "linear._LinearWithBias", "linear.Identity",
        "conv.Conv2d", "container.Sequential", "container.ModuleList", "container.ModuleDict",
        "activation.MultiheadAttention", "activation.GELU", "dropout.Dropout", "normalization.LayerNorm",
        "sparse.Embedding",
    )
} | {"torch.nn.parallel.data_parallel.DataParallel"}
_RELEASED_MODULE_CLASSES = {
    "LayerNorm", "QuickGELU", "ResidualAttentionBlock", "Transformer", "VisionTransformer", "VPTVisionTransformer",
    "CLIP", "VPTCLIP", "CustomCLIP", "CustomCLIP_ori", "PromptLearner", "PromptLearner_ori", "TextEncoder",
    "TextCLIP", "IQACLIP",
}
_ALLOWED_GLOBALS = {
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set, "__builtin__.set": set,
    "builtins.frozenset": frozenset, "__builtin__.frozenset": frozenset,
    "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
    "torch.device": torch.device,
    "torch.Size": torch.Size,
}
_ALLOWED_GLOBALS.update(
    {f"torch.{name}": getattr(torch, name) for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}
)
_STAND_INS: dict[str, type] = {}


def _stand_in(full_name: str) -> type:
    if full_name not in _STAND_INS:
        name = full_name.rsplit(".", 1)[-1]
        _STAND_INS[full_name] = type(name, (_InertModule,), {"pickled_class": full_name, "__module__": __name__})
    return _STAND_INS[full_name]


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only the globals above; module classes become inert stand-ins. Never imports anything."""

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[full]
        if full in _TORCH_MODULE_CLASSES or (name in _RELEASED_MODULE_CLASSES and not module.startswith("torch")):
            return _stand_in(full)
        raise _RefusedGlobal(full)


def _allow_list_load(file, **kwargs):
    return _AllowListUnpickler(file, **kwargs).load()


# what `torch.load(pickle_module=...)` needs of a pickle module
_ALLOW_LIST_PICKLE = types.ModuleType("grmp_iqa_hf_allow_list_pickle")
_ALLOW_LIST_PICKLE.Unpickler = _AllowListUnpickler
_ALLOW_LIST_PICKLE.load = _allow_list_load
_ALLOW_LIST_PICKLE.UnpicklingError = pickle.UnpicklingError


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_torchscript(path: Path) -> bool:
    """Whether `torch.load` would hand the file to `torch.jit.load` (which runs the archive's code)."""
    try:  # torch's own test, exactly as torch.load makes it
        from torch.serialization import _is_torchscript_zip, _is_zipfile, _open_zipfile_reader

        with open(path, "rb") as handle:
            if _is_zipfile(handle):
                with _open_zipfile_reader(handle) as reader:
                    if _is_torchscript_zip(reader):
                        return True
    except Exception:  # noqa: BLE001 - a private API that moved, or a damaged archive: the check below still runs
        pass
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def _load_objects(path: Path):
    """`(object, how)`: the unpickled content, read with `weights_only=True`, else with the allow-list unpickler."""
    if _is_torchscript(path):
        raise OfficialCheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save), not a checkpoint of the released GRMP-IQA code; it "
            "is not loaded, because loading TorchScript runs the code it contains"
        )
    with open(path, "rb") as handle:  # a file object: torch.load must not dispatch on the file name
        try:
            return torch.load(handle, map_location="cpu", weights_only=True), "weights_only"
        except Exception:  # noqa: BLE001 - a refused global or not a torch file: the allow-list loader says which
            pass
        handle.seek(0)
        try:
            with warnings.catch_warnings():
                # legacy (pre-1.6) module pickles: torch compares the stored source of each module class with the
                # class it got, here a stand-in, and warns; nothing is run either way
                warnings.filterwarnings("ignore", message="Couldn't retrieve source code for container")
                warnings.filterwarnings("ignore", message=".*source code of class.*has changed")
                loaded = torch.load(handle, map_location="cpu", weights_only=False, pickle_module=_ALLOW_LIST_PICKLE)
            return loaded, "allow_list"
        except _RefusedGlobal as err:
            raise RefusedGlobalError(path, err.name) from None
        except Exception as err:  # noqa: BLE001
            raise OfficialCheckpointError(
                f"{path} is not a PyTorch checkpoint (torch.save output) that can be read: "
                f"{type(err).__name__}: {err}"
            ) from err


def read_official_state_dict(path) -> tuple[dict[str, torch.Tensor], dict]:
    """The flat state dict of a released checkpoint, without running anything from the file.

    Accepts a state dict (optionally nested under `"state_dict"`) or a whole pickled module; removes leading
    `module.` prefixes (DataParallel). Tensors keep their stored dtype. Returns `(tensors, info)`, `info`
    describing the file (name, size, sha256, format, prefix, dtypes, ignored non-tensor entries).

    Raises `FileNotFoundError` (no such file), `RefusedGlobalError` (a global outside the allow-list),
    `OfficialCheckpointError` (not a readable torch checkpoint, or no state dict inside).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    obj, loader = _load_objects(path)
    info: dict = {"file": path.name, "size_bytes": path.stat().st_size, "sha256": _sha256(path)}
    layout = []
    if isinstance(obj, Mapping) and "state_dict" in obj:
        extra = sorted(str(k) for k in obj if k != "state_dict")
        if extra:
            info["other_entries"] = extra
        obj = obj["state_dict"]
        layout.append("nested under 'state_dict'")
    if isinstance(obj, _InertModule):
        tensors = obj.tensors()
        info["format"] = f"pickled module ({obj.pickled_class})"
    elif isinstance(obj, Mapping):
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        skipped = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
        if skipped:
            info["non_tensor_entries"] = skipped[:20]
        info["format"] = "state dict"
    else:
        raise OfficialCheckpointError(
            f"{path} holds a {type(obj).__module__}.{type(obj).__name__}, not a state dict or a pickled model"
        )
    if layout:
        info["format"] += ", " + ", ".join(layout)
    info["loader"] = "torch.load(weights_only=True)" if loader == "weights_only" else "allow-list unpickler"
    flat: dict[str, torch.Tensor] = {}
    stripped = False
    for name, tensor in tensors.items():
        while name.startswith("module."):
            name, stripped = name[len("module."):], True
        flat[name] = tensor
    if stripped:
        info["prefix_removed"] = "module."
    dtypes: dict[str, int] = {}
    for tensor in flat.values():
        dtypes[str(tensor.dtype).replace("torch.", "")] = dtypes.get(str(tensor.dtype).replace("torch.", ""), 0) + 1
    info["dtypes"] = dtypes
    return flat, info


__all__ = ["OfficialCheckpointError", "RefusedGlobalError", "read_official_state_dict"]
