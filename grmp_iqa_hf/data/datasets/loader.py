"""The entry point: :func:`load_iqa_dataset` picks the format's loader, checks its options and builds the dataset.

A new format is one loader function ``(data_dir, opts) -> _Table`` in its
family's module (or a new module), plus its entry in ``_FORMATS`` here.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, FrozenSet, List, Tuple, Union

from ..registry import dataset_facts
from .build import _finalize, _Table
from .csv_txt import _load_kadid10k, _load_koniq10k, _load_tid2013
from .imagefolder import _load_imagefolder
from .matlab import _load_live, _load_livec
from .pyiqa import _load_pyiqa
from .spreadsheets import _load_csiq, _load_spaq

# format -> (its loader, the options only it accepts); the order is the order of SUPPORTED_FORMATS
_FORMATS: Dict[str, Tuple[Callable[[str, Dict[str, Any]], _Table], FrozenSet[str]]] = {
    "imagefolder": (_load_imagefolder, frozenset()),
    "livec": (_load_livec, frozenset({"include_training"})),
    "koniq10k": (_load_koniq10k, frozenset({"resolution"})),
    "kadid10k": (_load_kadid10k, frozenset()),
    "tid2013": (_load_tid2013, frozenset()),
    "csiq": (_load_csiq, frozenset({"sheet"})),
    "live": (_load_live, frozenset({"include_references", "realigned", "verify_info_txt"})),
    "spaq": (_load_spaq, frozenset({"sheet"})),
    "pyiqa": (_load_pyiqa, frozenset({"image_dir", "include_training"})),
}

#: Values accepted for ``name`` by :func:`load_iqa_dataset` (registry aliases
#: such as ``"clive"``, ``"KonIQ-10k"`` or ``"liveiqa"`` are accepted too).
SUPPORTED_FORMATS: Tuple[str, ...] = tuple(_FORMATS)

_COMMON_OPTIONS = frozenset({"normalize", "check_files", "metadata_file", "facts", "mos_range", "higher_is_better"})


def _format_key(name: str) -> str:
    """The format key of ``name``: a format, a registry alias of a dataset, or ValueError."""
    squashed = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if squashed in ("imagefolder", "folder"):
        return "imagefolder"
    if squashed in ("pyiqa", "pyiqametainfo", "metainfo"):
        return "pyiqa"
    try:
        return dataset_facts(name).name
    except KeyError:
        raise ValueError(
            f"unknown IQA dataset format {name!r}; supported: {', '.join(SUPPORTED_FORMATS)}"
        ) from None


def image_paths(dataset) -> List[str]:
    """The file path of every row's image, without decoding any image."""
    import datasets

    return [item["path"] for item in dataset.cast_column("image", datasets.Image(decode=False))["image"]]


def load_iqa_dataset(name: str, data_dir: Union[str, os.PathLike], **options: Any):
    """Load an IQA dataset from a local folder as a :class:`datasets.Dataset`.

    Args:
        name: the format / dataset, one of :data:`SUPPORTED_FORMATS`
            (``"imagefolder"``, ``"livec"``, ``"koniq10k"``, ``"kadid10k"``,
            ``"tid2013"``, ``"csiq"``, ``"live"``, ``"spaq"``, ``"pyiqa"``) or a
            registry alias (``"clive"``, ``"KonIQ-10k"``, ``"liveiqa"``, ...).
        data_dir: the folder of the release; for the authors' layouts it may
            also be the folder that contains the release folder (e.g. the
            parent of ``ChallengeDB_release``).

    Options (all keyword-only):
        normalize (bool, False): map ``mos`` to ``[0, 1]`` with higher = better
            using the registry's range and direction (DMOS datasets are flipped;
            values outside the nominal range are clipped and counted). The
            published scores are kept in ``mos_raw`` (and ``mos_std_raw``), and
            the description records what was done.
        check_files (bool, True): check that every image file exists (file
            names are matched case-insensitively for the authors' layouts).
            Images are never opened or decoded here.
        metadata_file (path, None): use this metadata file instead of the
            default one (``imagefolder``: ``metadata.csv``; ``pyiqa``: the
            meta-info CSV; also accepted by koniq10k, kadid10k, tid2013, csiq,
            spaq). Relative paths are relative to ``data_dir``.
        facts (str | IQADatasetFacts, None): registry facts to attach (for
            ``imagefolder`` / ``pyiqa``: e.g. ``facts="livec"``).
        mos_range ((low, high), None), higher_is_better (bool, None): override
            the facts' score range / direction.
        include_training (livec, pyiqa; False): keep LIVE Challenge's 7
            rater-training images t1..t7.
        resolution (koniq10k; "1024x768"): image folder, "1024x768" or "512x384".
        sheet (csiq, spaq; None): worksheet name or index of the .xlsx file.
        include_references (live; False): keep the 203 reference copies
            (``orgs == 1``); adds an ``is_reference`` column.
        realigned (live; False): read ``dmos_realigned.mat`` (``dmos_new``)
            instead of ``dmos.mat``.
        verify_info_txt (live; True): cross-check reference names in each
            folder's ``info.txt`` against ``refnames_all.mat``.
        image_dir (pyiqa; data_dir): folder the meta-info paths are relative to.

    Returns:
        a :class:`datasets.Dataset` (see :mod:`grmp_iqa_hf.data.datasets` for its columns).

    Raises:
        DatasetMetadataError: listing every bad metadata row.
        FileNotFoundError: the release's metadata file cannot be found.
        ImportError: the release's scores are an .xlsx file and openpyxl (the ``xlsx`` extra) is missing.
        ValueError / TypeError: unknown format or option.
    """
    fmt = _format_key(name)
    loader, format_options = _FORMATS[fmt]
    allowed = _COMMON_OPTIONS | format_options
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"load_iqa_dataset({fmt!r}) got unknown option(s) {unknown}; accepted: {sorted(allowed)}")
    opts = dict(options)
    opts.setdefault("check_files", True)
    opts["check_files"] = bool(opts["check_files"])
    table = loader(os.fspath(data_dir), opts)
    return _finalize(
        table,
        normalize=bool(opts.get("normalize", False)),
        check_files=opts["check_files"],
        mos_range=opts.get("mos_range"),
        higher_is_better=opts.get("higher_is_better"),
    )
