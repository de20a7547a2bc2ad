"""Where a model comes from, and the provenance record every output of the package carries.

`resolve_model_source(name, revision)` checks a `--model` (or backbone) argument before anything heavy is
imported: an existing folder, the built-in `tiny-random`, or a Hub id whose revision is resolved to a commit
with one request (no retries) or, with `HF_HUB_OFFLINE=1`, from the local cache only. Anything else raises
`ModelNotFoundError` at once, naming what was tried.

`collect(model)` is the provenance dict that `grmp-iqa score` (JSON: key `provenance`; CSV: the sidecar file
`<output>.json`), `grmp-iqa evaluate` reports, protocol reports (few-shot, MP-IQE) and `quickstart.json` hold
under the key `provenance`:

    model                   the model as given: a folder or a Hub id (runs that build a fresh model: the backbone)
    model_source            "local" (a folder), "hub" (a Hub id) or "builtin" (tiny-random, built in code)
    revision                the revision asked for (None: the default branch)
    commit                  the Hub commit the files came from (None for folders and built-in models)
    grmp_iqa_hf_version, torch_version, transformers_version, huggingface_hub_version
    device, dtype           where the weights were and their dtype, e.g. "cpu", "float32"
    timestamp               UTC, ISO 8601, e.g. "2025-06-01T12:00:00Z"

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import sys
from dataclasses import dataclass

TINY_BACKBONE = "tiny-random"
SOURCE_KINDS = ("local", "hub", "builtin")
PROVENANCE_KEYS = (
    "model", "model_source", "revision", "commit", "grmp_iqa_hf_version", "torch_version", "transformers_version",
    "huggingface_hub_version", "device", "dtype", "timestamp",
)
_SOURCE_ATTRIBUTE = "_grmp_iqa_source"  # set on models by grmp_iqa_hf.models.load_model


class ModelNotFoundError(OSError):
    """A model argument that is neither a model folder nor a Hub model that can be reached or found cached."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. `load_revision` is what to pass to `from_pretrained(..., revision=...)`:
    for Hub models the revision pinned to `commit`, so every file of one load comes from the same commit."""

    name: str
    kind: str  # one of SOURCE_KINDS
    revision: str | None = None
    commit: str | None = None
    load_revision: object = None


def _hub():
    from huggingface_hub import constants

    return constants


def _valid_hub_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def resolve_model_source(name, revision: str | None = None, what: str = "model") -> ModelSource:
    """Check that `name` is a model folder (with a config.json), `tiny-random`, or a Hub model that exists
    (online: one request, no retries) or is cached (`HF_HUB_OFFLINE=1`). Raises `ModelNotFoundError`
    otherwise, with a message that starts `cannot load <what> '<name>': ` and names what was tried."""
    name = os.fspath(name)
    prefix = f"cannot load {what} {name!r}: "
    if name == TINY_BACKBONE:
        return ModelSource(name, "builtin")
    where = os.path.abspath(os.path.expanduser(name))
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelNotFoundError(prefix + f"the folder {where} has no config.json, so it is not a saved model "
                                              "(expected a folder written by save_pretrained)")
        return ModelSource(name, "local", revision)
    if os.path.exists(name):
        raise ModelNotFoundError(prefix + f"{where} is a file; give the folder that holds config.json and the weights")
    no_folder = f"there is no folder {where}"
    if not _valid_hub_id(name):
        raise ModelNotFoundError(prefix + f"{no_folder}, and {name!r} is not a Hub id either (ORG/NAME)")

    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError, RevisionResolutionError,
    )

    constants = _hub()
    offline = constants.is_offline_mode()
    asked = f" at revision {revision!r}" if revision else ""
    try:
        # repo_info answers in one request (huggingface_hub retries only downloads), and with the commit
        # pinned, transformers then reads cached files without asking the Hub again
        resolved = HfApi().resolve_revision(name, revision=revision, local_files_only=offline)
    except RevisionResolutionError as err:
        if offline:
            raise ModelNotFoundError(
                prefix + f"{no_folder}, and the Hub model {name!r}{asked} is not in the local cache "
                f"({constants.HF_HUB_CACHE}); HF_HUB_OFFLINE=1 is set, so nothing was downloaded"
            ) from None
        cause = err.__cause__ or err
        raise ModelNotFoundError(
            prefix + f"{no_folder}, and the Hub at {constants.ENDPOINT} could not be reached "
            f"({type(cause).__name__}: {cause}) and has nothing cached for {name!r}{asked}; check the network "
            "or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only cached models"
        ) from None
    except GatedRepoError:
        raise ModelNotFoundError(prefix + f"the Hub model {name!r} is gated: accept its conditions on the Hub and "
                                          "log in (`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            prefix + f"{no_folder}, and the Hub at {constants.ENDPOINT} has no model repository {name!r} (or it is "
            "private: log in with `hf auth login` or set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(prefix + f"the Hub model {name!r} has no revision {revision!r}") from None
    except HfHubHTTPError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFoundError(prefix + f"the Hub at {constants.ENDPOINT} refused the request: {first_line}") from None
    return ModelSource(name, "hub", revision, resolved.resolved, resolved)


def describe_source(name, revision: str | None = None) -> ModelSource:
    """Where `name` comes from, for the record only: never raises, never uses the network (a Hub id's
    commit comes from the local cache, when it is there)."""
    name = os.fspath(name)
    if name == TINY_BACKBONE:
        return ModelSource(name, "builtin")
    if os.path.exists(name) or not _valid_hub_id(name):
        return ModelSource(name, "local", revision)
    commit = None
    try:
        from huggingface_hub import HfApi

        commit = HfApi().resolve_revision(name, revision=revision, local_files_only=True).resolved
    except Exception:  # noqa: BLE001 - a record, not a check: an unknown commit stays None
        pass
    return ModelSource(name, "hub", revision, commit)


def attach_source(model, source: ModelSource):
    """Remember on `model` where it was loaded from (read back by `collect`)."""
    object.__setattr__(model, _SOURCE_ATTRIBUTE, source)
    return model


def source_of(model) -> ModelSource | None:
    """Where `model` was loaded from: what `load_model` recorded, else its `name_or_path` (empty for a model
    built in memory and never saved)."""
    source = getattr(model, _SOURCE_ATTRIBUTE, None)
    if source is not None:
        return source
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    return describe_source(name) if name else None


def version_of(distribution: str, module: str | None = None) -> str | None:
    """The version of an installed package: the imported module's `__version__` when it is imported (what
    actually runs), else the installed distribution's; None when it is not installed."""
    imported = sys.modules.get(module or distribution)
    if imported is not None and isinstance(getattr(imported, "__version__", None), str):
        return imported.__version__
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def utc_timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _weights_device_dtype(model):
    try:
        parameter = next(iter(model.parameters()))
    except (AttributeError, StopIteration):
        return None, None
    return str(parameter.device), str(parameter.dtype).removeprefix("torch.")


def collect(model=None, source: ModelSource | None = None, device=None, dtype=None, **extra) -> dict:
    """The provenance record (keys: `PROVENANCE_KEYS`, then `extra`). `source` defaults to where `model` was
    loaded from; `device` / `dtype` default to those of the model's weights."""
    from . import __version__

    if source is None and model is not None:
        source = source_of(model)
    if model is not None:
        weights_device, weights_dtype = _weights_device_dtype(model)
        device = device if device is not None else weights_device
        dtype = dtype if dtype is not None else weights_dtype
    return {
        "model": source.name if source else None,
        "model_source": source.kind if source else None,
        "revision": source.revision if source else None,
        "commit": source.commit if source else None,
        "grmp_iqa_hf_version": __version__,
        "torch_version": version_of("torch"),
        "transformers_version": version_of("transformers"),
        "huggingface_hub_version": version_of("huggingface_hub"),
        "device": None if device is None else str(device),
        "dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "timestamp": utc_timestamp(),
        **extra,
    }


def _accelerator_state():
    """`(device, mixed_precision)` of the accelerate state this process set up, or `(None, None)`; never
    creates one (that could start a process group)."""
    if "accelerate" not in sys.modules:
        return None, None
    try:
        from accelerate.state import AcceleratorState, PartialState

        if not PartialState._shared_state:
            return None, None
        device = str(PartialState().device)
        mixed = AcceleratorState().mixed_precision if AcceleratorState._shared_state else None
        return device, mixed
    except Exception:  # noqa: BLE001 - a record: an unknown device stays None
        return None, None


def for_run(config: dict, model=None) -> dict:
    """Provenance of a training / protocol run, from its configuration: the model it started from (`model`,
    else `backbone`; MP-IQE: `training.backbone`), and the device of the accelerator in use. The trainers keep
    the weights in float32 (mixed precision only autocasts), hence the dtype when no model is given."""
    if model is not None:
        return collect(model)
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    candidates = (config.get("model"), config.get("backbone"), config.get("backbone_resolved"),
                  training.get("model"), training.get("backbone"))
    name = next((c for c in candidates if isinstance(c, str) and c), None)
    device, mixed_precision = _accelerator_state()
    extra = {"mixed_precision": mixed_precision} if mixed_precision is not None else {}
    return collect(source=describe_source(name) if name else None, device=device, dtype="float32", **extra)
