"""Releases whose scores are MATLAB ``.mat`` arrays: LIVE In the Wild and LIVE IQA.

Rows are numbered by their 1-based entry in the ``.mat`` arrays (MATLAB style).

* ``livec``: ``ChallengeDB_release/Data/AllImages_release.mat`` (cell array,
  1169 names), ``AllMOS_release.mat`` (1x1169), ``AllStdDev_release.mat``;
  images in ``Images/``, the 7 rater-training images t1..t7 (the first 7
  entries) in ``Images/trainingImages/`` and excluded by default -> 1162 rows
  [sure; every public loader drops entries 0..6].
* ``live``: ``dmos.mat`` (``dmos``, ``orgs``; 1x982), ``refnames_all.mat``
  (``refnames_all``, cell 1x982); scores are the concatenation jp2k(227),
  jpeg(233), wn(174), gblur(174), fastfading(174), entry N of a folder being
  ``<folder>/imgN.bmp``; ``orgs == 1`` marks the reference copies, excluded by
  default [sure: widely used, and the counts add up to 982]. Each folder's
  ``info.txt`` ("<ref>.bmp imgN.bmp <param>") is used to cross-check the order
  and fill ``distortion_param`` [fairly sure of its format; the parser only
  relies on finding an ``imgN.bmp`` and a ``<ref>.bmp`` token per line].
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..registry import LIVE_DISTORTION_FOLDERS, dataset_facts
from .build import _resolve_facts, _Row, _Table
from .paths import _ci_path, _find_file, _image_index, _image_path, _stem
from .problems import _file_error, _Problems


# --- MATLAB arrays -------------------------------------------------------------------

def _mat_values(arr: Any) -> List[Any]:
    """Flatten a MATLAB numeric array or cell array loaded by scipy.io.loadmat."""
    a = np.asarray(arr)
    if a.dtype.kind == "U" and a.ndim <= 1:  # a single char array / list of strings
        return [str(x) for x in a.ravel()] if a.ndim == 1 else [str(a)]
    return [_mat_scalar(x) for x in a.ravel(order="F")]


def _mat_scalar(x: Any) -> Any:
    """One MATLAB cell / element as a Python str, float or None."""
    while isinstance(x, np.ndarray):
        if x.size == 0:
            return None
        if x.dtype.kind == "U":
            return "".join(str(v) for v in x.ravel())
        x = x.ravel()[0]
    if isinstance(x, (np.str_, str)):
        return str(x)
    if isinstance(x, (np.floating, np.integer)):
        return float(x)
    return x


def _loadmat(path: str) -> Dict[str, Any]:
    """The variables of a .mat file (scipy is imported only when a .mat release is read)."""
    import scipy.io

    return scipy.io.loadmat(path)


def _mat_key(mat: Dict[str, Any], key: str, path: str) -> Any:
    """Variable ``key`` of a loaded .mat file (case-insensitively), or an error listing the variables there."""
    if key in mat:
        return mat[key]
    lower = {k.lower(): k for k in mat if not k.startswith("__")}
    if key.lower() in lower:
        return mat[lower[key.lower()]]
    raise _file_error(path, f"no variable {key!r} in {os.path.basename(path)} (variables: {sorted(lower.values())})")


# --- LIVE In the Wild (ChallengeDB_release) -------------------------------------

_LIVEC_TRAINING = 7  # the rater-training images t1..t7, the first entries of the arrays


def _load_livec(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read the LIVE Challenge release's ``Data/All*_release.mat`` arrays."""
    root, mos_path = _find_file(
        data_dir,
        ["Data/AllMOS_release.mat"],
        "LIVE Challenge release (Data/AllMOS_release.mat)",
        "ChallengeDB_release/{Images/, Images/trainingImages/, Data/AllImages_release.mat, "
        "Data/AllMOS_release.mat, Data/AllStdDev_release.mat}",
    )
    data = os.path.dirname(mos_path)
    names_path = _ci_path(data, "AllImages_release.mat")
    std_path = _ci_path(data, "AllStdDev_release.mat")
    if names_path is None:
        raise FileNotFoundError(f"missing {os.path.join(data, 'AllImages_release.mat')}")
    source = os.path.relpath(names_path, root) + " + " + os.path.relpath(mos_path, root)
    problems = _Problems(source)
    names = _mat_values(_mat_key(_loadmat(names_path), "AllImages_release", names_path))
    mos = _mat_values(_mat_key(_loadmat(mos_path), "AllMOS_release", mos_path))
    std = _mat_values(_mat_key(_loadmat(std_path), "AllStdDev_release", std_path)) if std_path else None
    if len(names) != len(mos) or (std is not None and len(std) != len(names)):
        problems.add(
            None, "",
            f"array lengths differ: AllImages_release {len(names)}, AllMOS_release {len(mos)}"
            + (f", AllStdDev_release {len(std)}" if std is not None else ""),
        )
        problems.raise_if_any()
    include_training = bool(opts.get("include_training", False))
    first = [str(n or "") for n in names[:_LIVEC_TRAINING]]
    if not all(re.fullmatch(r"t\d+\.bmp", n, re.I) for n in first):
        warnings.warn(
            f"LIVE Challenge: the first {_LIVEC_TRAINING} entries are expected to be the training images "
            f"t1.bmp..t7.bmp, found {first}; they are {'kept' if include_training else 'excluded'} anyway.",
            stacklevel=3,
        )
    images_dir = _ci_path(root, "Images") or os.path.join(root, "Images")
    index = _image_index(images_dir, opts)
    rows: List[_Row] = []
    for i, name in enumerate(names):
        if i < _LIVEC_TRAINING and not include_training:
            continue
        name = "" if name is None else str(name).strip()
        if index is not None:
            path = index.find(name) if name else None
        else:
            sub = "trainingImages" if i < _LIVEC_TRAINING else ""
            path = os.path.join(images_dir, sub, name) if sub else os.path.join(images_dir, name)
        fields = {}
        if std is not None:
            fields["mos_std"] = problems.optional_number(i + 1, name, std[i], "MOS standard deviation")
        rows.append(_Row(i + 1, name, path, mos[i], fields))
    columns = {"mos_std": "float64"} if std is not None else {}
    facts = _resolve_facts(opts.get("facts"), dataset_facts("livec"))
    details = {
        "row_numbers": "1-based entry index in the .mat arrays",
        "excluded_training_images": 0 if include_training else min(_LIVEC_TRAINING, len(names)),
        "entries_in_mat": len(names),
    }
    return _Table("livec", root, source, rows, columns, problems, facts, details)


# --- LIVE IQA release 2 -------------------------------------------------------------


def _read_live_info(path: Optional[str]) -> Dict[int, Tuple[Optional[str], Optional[float]]]:
    """imgN -> (reference file name, distortion parameter) from a LIVE folder's info.txt."""
    out: Dict[int, Tuple[Optional[str], Optional[float]]] = {}
    if not path or not os.path.isfile(path):
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            toks = line.split()
            img = [t for t in toks if re.fullmatch(r"img\d+\.bmp", t, re.I)]
            if len(img) != 1:
                continue
            k = int(re.findall(r"\d+", img[0])[0])
            refs = [t for t in toks if t.lower().endswith(".bmp") and t != img[0]]
            param = None
            for t in toks:
                try:
                    param = float(t)
                    break
                except ValueError:
                    pass
            out[k] = (refs[0] if refs else None, param)
    return out


def _load_live(data_dir: str, opts: Dict[str, Any]) -> _Table:
    """Read LIVE IQA release 2 (``dmos.mat`` + ``refnames_all.mat``, images by folder order)."""
    realigned = bool(opts.get("realigned", False))
    dmos_name = "dmos_realigned.mat" if realigned else "dmos.mat"
    root, dmos_path = _find_file(
        data_dir, [dmos_name], f"LIVE {dmos_name}",
        "databaserelease2/{jp2k/, jpeg/, wn/, gblur/, fastfading/ (info.txt + imgN.bmp), refimgs/, "
        "dmos.mat, dmos_realigned.mat, refnames_all.mat}",
    )
    ref_path = _ci_path(root, "refnames_all.mat")
    if ref_path is None:
        raise FileNotFoundError(f"missing refnames_all.mat in {root}")
    source = os.path.relpath(dmos_path, root)
    problems = _Problems(source)
    mat = _loadmat(dmos_path)
    dmos = _mat_values(_mat_key(mat, "dmos_new" if realigned else "dmos", dmos_path))
    orgs = _mat_values(_mat_key(mat, "orgs", dmos_path))
    std = _mat_values(mat["dmos_std"]) if realigned and "dmos_std" in mat else None
    refnames = _mat_values(_mat_key(_loadmat(ref_path), "refnames_all", ref_path))
    expected = sum(n for _, n in LIVE_DISTORTION_FOLDERS)
    arrays = [("dmos", dmos), ("orgs", orgs), ("refnames_all", refnames)] + ([("dmos_std", std)] if std is not None else [])
    for what, arr in arrays:
        if len(arr) != expected:
            problems.add(None, what, f"{what} has {len(arr)} entries, expected {expected} "
                         "(jp2k 227 + jpeg 233 + wn 174 + gblur 174 + fastfading 174)")
    problems.raise_if_any()
    include_refs = bool(opts.get("include_references", False))
    verify = bool(opts.get("verify_info_txt", True))
    rows: List[_Row] = []
    offset = 0
    any_info = False
    n_refs = 0
    for folder, count in LIVE_DISTORTION_FOLDERS:
        fdir = _ci_path(root, folder) or os.path.join(root, folder)
        info = _read_live_info(_ci_path(fdir, "info.txt") if os.path.isdir(fdir) else None)
        any_info = any_info or bool(info)
        index = _image_index(fdir, opts)
        for k in range(1, count + 1):
            i = offset + k - 1
            is_ref = bool(orgs[i]) if orgs[i] is not None else False
            n_refs += is_ref
            if is_ref and not include_refs:
                continue
            base = f"img{k}.bmp"
            name = f"{folder}/{base}"
            path = _image_path(index, fdir, base)
            refname = str(refnames[i] or "")
            info_ref, param = info.get(k, (None, None))
            if verify and info_ref and refname and _stem(info_ref).lower() != _stem(refname).lower():
                problems.add(i + 1, name, f"info.txt names reference {info_ref!r} but refnames_all.mat entry "
                             f"{i + 1} is {refname!r} (score order does not match the folders?; "
                             "verify_info_txt=False skips this check)")
            fields = {"ref": _stem(refname) or None, "distortion": folder, "distortion_param": param}
            if std is not None:
                fields["mos_std"] = std[i]
            if include_refs:
                fields["is_reference"] = is_ref
            rows.append(_Row(i + 1, name, path, dmos[i], fields))
        offset += count
    columns: Dict[str, str] = {"ref": "string", "distortion": "string"}
    if std is not None:
        columns["mos_std"] = "float64"
    if any_info:
        columns["distortion_param"] = "float64"
    else:
        for r in rows:
            r.fields.pop("distortion_param", None)
    if include_refs:
        columns["is_reference"] = "bool"
    facts = _resolve_facts(opts.get("facts"), dataset_facts("live"))
    details = {
        "score_file": dmos_name,
        "row_numbers": "1-based entry index in the .mat arrays",
        "folder_order": [f"{f}({n})" for f, n in LIVE_DISTORTION_FOLDERS],
        "reference_copies_excluded": 0 if include_refs else n_refs,
        "distortion_param": "numeric parameter from the folder's info.txt" if any_info else None,
    }
    return _Table("live", root, source, rows, columns, problems, facts, details)
