"""Offline loaders for image quality assessment (IQA) datasets.

:func:`load_iqa_dataset` reads a dataset release from a local folder, in the
layout its authors publish it (or a plain ``imagefolder`` / pyiqa meta-info
CSV), and returns a :class:`datasets.Dataset` with at least

* ``image``: a :class:`datasets.Image` feature built from file paths, so
  images are decoded lazily, only when a row is accessed;
* ``image_id``: the image's path relative to the dataset root (posix
  separators), a stable identifier for reports;
* ``mos``: the score exactly as published (float64); never rescaled unless
  ``normalize=True`` is asked for;

plus, where the dataset has them: ``mos_std``, ``ref`` (reference / content
id), ``distortion`` (the distortion name as the dataset names it),
``distortion_id``, ``level`` (int) and ``scenes``, and a few dataset-specific
columns (documented with each format's loader).

The dataset's registry facts (score range and direction, citation, licence
note, ...) travel with it: ``dataset.info.description`` is a JSON document
(read it back with :func:`read_iqa_info`), ``dataset.info.citation`` holds the
BibTeX entry, ``dataset.info.license`` the licence note and
``dataset.info.homepage`` the release's web page.

Bad metadata (missing image files, empty / NaN / non-numeric scores,
duplicate rows, ...) raises a single :class:`DatasetMetadataError` that lists
every offending row; nothing is silently dropped.

Nothing here touches the network.

Modules, one per format family (each records the format facts it relies on):

* :mod:`.imagefolder`: ``imagefolder`` (``metadata.csv`` / ``.jsonl``);
* :mod:`.matlab`: releases scored in ``.mat`` arrays (``livec``, ``live``);
* :mod:`.csv_txt`: releases scored in a CSV or text file (``koniq10k``,
  ``kadid10k``, ``tid2013``);
* :mod:`.spreadsheets`: releases scored in a spreadsheet or its export
  (``csiq``, ``spaq``), read with :mod:`.xlsx` (the optional ``openpyxl``);
* :mod:`.pyiqa`: pyiqa meta-info CSVs;

and the machinery they share: :mod:`.problems` (errors naming every bad row,
cell-value parsing), :mod:`.paths` (case-insensitive file lookup),
:mod:`.tabular` (CSV / JSONL rows, header rows), :mod:`.build` (rows ->
``datasets.Dataset``) and :mod:`.loader` (format dispatch and options).
"""

from .build import read_iqa_info
from .loader import SUPPORTED_FORMATS, image_paths, load_iqa_dataset
from .problems import DatasetMetadataError, MetadataProblem
from .xlsx import read_xlsx_rows, xlsx_sheet_names

__all__ = [
    "load_iqa_dataset",
    "DatasetMetadataError",
    "MetadataProblem",
    "read_iqa_info",
    "read_xlsx_rows",
    "xlsx_sheet_names",
    "SUPPORTED_FORMATS",
    "image_paths",
]
