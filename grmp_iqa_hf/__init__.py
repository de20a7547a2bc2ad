"""grmp-iqa-hf: prompt-learned CLIP models for blind image quality assessment (GRMP-IQA, MP-IQE).

Importing the package is cheap (no torch, no transformers), so that `grmp-iqa --help` answers at once; the
models are imported on first use (`grmp_iqa_hf.GRMPIQAModel`, PEP 562 `__getattr__`).

The models are registered with `AutoConfig` / `AutoModel` / `AutoImageProcessor`, so that with the package
imported `AutoModel.from_pretrained(dir_or_hub_id)` returns a `GRMPIQAModel` without `trust_remote_code`, in
either import order (see `_register_when_transformers_is_imported`).
"""

import sys
import threading

__version__ = "0.1.0"

_MODEL_EXPORTS = (
    "GRMPIQAConfig", "GRMPIQAModel", "GRMPIQAOutput", "IQAImageProcessor", "ImageLoadError", "load_image",
    "MPIQEConfig", "MPIQEModel", "MPIQEOutput",
)
__all__ = list(_MODEL_EXPORTS)

_registered = False


def register_auto_classes() -> None:
    """Register the models with transformers' Auto classes (idempotent; imports torch and transformers)."""
    global _registered
    if _registered:
        return
    _registered = True  # first: the imports below load transformers modules, which must not come back here
    try:
        _remove_import_hook()
        from .methods import register_all_with_auto  # every method of the registry (`methods.METHODS`)

        register_all_with_auto()
    except BaseException:
        _registered = False
        raise


def __getattr__(name):
    if name in _MODEL_EXPORTS:
        register_auto_classes()
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MODEL_EXPORTS))


# How registration happens without importing transformers here:
# - transformers already imported: register now (its Auto classes may be in use already).
# - otherwise a meta-path finder watches imports of `transformers.*` and `grmp_iqa_hf.*` and registers once the
#   outermost of those imports has finished executing, never in the middle of one: our models import
#   transformers modules (e.g. modeling_layers, which itself imports the Auto classes), and registering while
#   one of them is half executed would fail. So `import grmp_iqa_hf; from transformers import AutoModel`,
#   `from transformers import CLIPModel, AutoModel` and `from grmp_iqa_hf.modeling import ...` all end with
#   the classes registered, and the finder removes itself. Only the loader's `exec_module` call is wrapped.
_WATCHED = ("transformers", "grmp_iqa_hf")
_depth = threading.local()


class _Loader:
    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self._loader  # the module sees its real loader
        _depth.value = getattr(_depth, "value", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _depth.value -= 1
        if _depth.value == 0 and not _registered and "transformers" in sys.modules:
            try:
                register_auto_classes()
            except Exception as err:  # noqa: BLE001 - never break the user's import; the classes stay unregistered
                import warnings

                warnings.warn(f"grmp_iqa_hf could not register its models with transformers' Auto classes: {err!r}")


class _RegisterAfterImport:
    def find_spec(self, name, path=None, target=None):
        if _registered or name.partition(".")[0] not in _WATCHED:
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


_finder = _RegisterAfterImport()


def _remove_import_hook() -> None:
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)


def _register_when_transformers_is_imported() -> None:
    if "transformers" in sys.modules:
        register_auto_classes()
    else:
        sys.meta_path.insert(0, _finder)


_register_when_transformers_is_imported()
