"""Finding a release's metadata file and its images on disk.

Releases are copied between case-sensitive and case-insensitive file systems
(``i25_01_1.bmp`` vs ``I25_01_1.BMP``), and people unpack them one folder
deeper or shallower than the authors did, so every lookup here is
case-insensitive and tolerant of one extra folder level.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any, Dict, List, Optional, Sequence, Tuple


def _stem(name: str) -> str:
    base = posixpath.basename(str(name).replace("\\", "/"))
    return os.path.splitext(base)[0]


def _norm_rel(name: str) -> str:
    return posixpath.normpath(str(name).strip().replace("\\", "/")).lstrip("/")


def _abs_dir(data_dir: Any) -> str:
    return os.path.abspath(os.path.expanduser(str(data_dir)))


def _under(root: str, path: Any) -> str:
    """``path`` as a string; a relative one is taken relative to ``root``."""
    path = str(path)
    return path if os.path.isabs(path) else os.path.join(root, path)


def _ci_path(base: str, rel: str) -> Optional[str]:
    """``base/rel`` resolved case-insensitively, component by component; None if absent."""
    cur = base
    for part in [p for p in rel.replace("\\", "/").split("/") if p]:
        cand = os.path.join(cur, part)
        if os.path.exists(cand):
            cur = cand
            continue
        try:
            entries = os.listdir(cur)
        except OSError:
            return None
        matches = sorted(e for e in entries if e.lower() == part.lower())
        if not matches:
            return None
        cur = os.path.join(cur, matches[0])
    return cur


class _FileIndex:
    """Case-insensitive index of the files under ``top`` (recursive)."""

    def __init__(self, top: Optional[str]):
        self.top = top
        self.by_rel: Dict[str, str] = {}
        self.by_base: Dict[str, List[str]] = {}
        if top and os.path.isdir(top):
            for dirpath, _dirs, files in os.walk(top, followlinks=True):
                for f in files:
                    full = os.path.join(dirpath, f)
                    rel = os.path.relpath(full, top).replace(os.sep, "/")
                    self.by_rel.setdefault(rel.lower(), full)
                    self.by_base.setdefault(f.lower(), []).append(full)

    def find(self, name: str) -> Optional[str]:
        key = _norm_rel(name).lower()
        hit = self.by_rel.get(key)
        if hit:
            return hit
        cands = self.by_base.get(posixpath.basename(key), [])
        return cands[0] if len(cands) == 1 else None


def _image_index(image_dir: Optional[str], opts: Dict[str, Any]) -> Optional[_FileIndex]:
    """The index of ``image_dir`` when files are checked; None means paths are only built, not looked up."""
    return _FileIndex(image_dir) if opts["check_files"] else None


def _image_path(index: Optional[_FileIndex], image_dir: str, name: str) -> Optional[str]:
    """Where image ``name`` is: looked up in ``index`` (None if not there), else just ``image_dir/name``."""
    if index is None:
        return os.path.join(image_dir, name)
    return index.find(name) if name else None


def _find_file(
    data_dir: str, candidates: Sequence[str], what: str, layout_hint: str
) -> Tuple[str, str]:
    """Find the first of ``candidates`` (relative paths) in ``data_dir`` or one of its
    immediate subfolders (case-insensitively). Returns ``(root, path)``."""
    data_dir = _abs_dir(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"data_dir does not exist or is not a folder: {data_dir}")
    roots = [data_dir]
    try:
        roots += [
            os.path.join(data_dir, d)
            for d in sorted(os.listdir(data_dir))
            if os.path.isdir(os.path.join(data_dir, d)) and not d.startswith(".")
        ]
    except OSError:
        pass
    for cand in candidates:
        for root in roots:
            hit = _ci_path(root, cand)
            if hit and os.path.isfile(hit):
                return root, hit
    raise FileNotFoundError(
        f"no {what} found in {data_dir} or its subfolders (looked for {', '.join(candidates)}). "
        f"Expected layout: {layout_hint}"
    )


def _metadata_location(
    data_dir: str, opts: Dict[str, Any], candidates: Sequence[str], what: str, layout_hint: str
) -> Tuple[str, str]:
    """``(root, metadata path)``: the ``metadata_file`` option (relative to ``data_dir``) when given,
    else the first of ``candidates`` found by :func:`_find_file`."""
    if opts.get("metadata_file"):
        root = _abs_dir(data_dir)
        return root, _under(root, opts["metadata_file"])
    return _find_file(data_dir, candidates, what, layout_hint)


def _find_dir(data_dir: str, name: str, depth: int = 2) -> Optional[str]:
    """A folder called ``name`` (case-insensitive) at most ``depth`` levels below data_dir."""
    frontier = [os.path.abspath(str(data_dir))]
    for _ in range(depth + 1):
        nxt = []
        for d in frontier:
            hit = _ci_path(d, name)
            if hit and os.path.isdir(hit):
                return hit
            try:
                nxt += [os.path.join(d, e) for e in sorted(os.listdir(d)) if os.path.isdir(os.path.join(d, e))]
            except OSError:
                pass
        frontier = nxt
    return None


def _rel_display(path: str, root: str) -> str:
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel.replace(os.sep, "/")
