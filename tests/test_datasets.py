"""Tests for grmp_iqa_hf.data.datasets / registry.

Every supported release layout is faked in a temp dir with the right file
names and formats (.mat via scipy.io.savemat, .xlsx via openpyxl, small
generated PNG/BMP/JPEG images). Only the optional
real-data test reads /work/shared/data/clive-jpg (skipped when absent).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import pickle
import sys
import time

import numpy as np
import pytest
import scipy.io
from PIL import Image

from grmp_iqa_hf.data.datasets import (
    SUPPORTED_FORMATS,
    DatasetMetadataError,
    MetadataProblem,
    load_iqa_dataset,
    read_iqa_info,
    read_xlsx_rows,
    xlsx_sheet_names,
)
from grmp_iqa_hf.data.registry import (
    DATASET_REGISTRY,
    KADID10K_DISTORTIONS,
    TID2013_DISTORTIONS,
    dataset_facts,
    normalize_mos,
)

CLIVE_JPG = "/work/shared/data/clive-jpg"


# --------------------------------------------------------------------------
# helpers: tiny images, .xlsx writer, .mat cell arrays
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _image_bytes(fmt: str) -> bytes:
    img = Image.new("RGB", (4, 4), (200, 30, 90))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_image(path, fmt=None):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ext = os.path.splitext(path)[1].lower()
    fmt = fmt or {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}[ext]
    with open(path, "wb") as f:
        f.write(_image_bytes(fmt))


def write_xlsx(path, sheets):
    """Write an .xlsx file with openpyxl: ``sheets`` maps sheet name -> list of rows (lists of
    str / int / float / bool / None; None leaves the cell empty, [] leaves the row empty)."""
    openpyxl = pytest.importorskip("openpyxl")
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r, row in enumerate(rows, start=1):
            for c, v in enumerate(row, start=1):
                if v is not None:
                    ws.cell(row=r, column=c, value=v)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    wb.save(path)


def cell_array(strings, shape):
    arr = np.empty(shape, dtype=object)
    for i, s in enumerate(strings):
        arr.flat[i] = s
    return arr


def write_csv(path, header, rows):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# --------------------------------------------------------------------------
# imagefolder
# --------------------------------------------------------------------------


def test_imagefolder_fake(tmp_path):
    write_image(tmp_path / "images" / "a.jpg")
    write_image(tmp_path / "images" / "b.png")
    write_image(tmp_path / "c.bmp")
    write_csv(
        tmp_path / "metadata.csv",
        ["file_name", "mos", "mos_std", "distortion", "scenes", "level"],
        [
            ["images/a.jpg", "73.5", "20.1", "realistic blur", "human;landscape", "2"],
            ["images/b.png", "10", "", "other realistic", "night", ""],
            ["c.bmp", "99.25", "1.5", "", "animal", "5"],
        ],
    )
    ds = load_iqa_dataset("imagefolder", tmp_path)
    assert ds.num_rows == 3
    assert ds["image_id"] == ["images/a.jpg", "images/b.png", "c.bmp"]
    assert ds["mos"] == [73.5, 10.0, 99.25]
    assert ds["mos_std"] == [20.1, None, 1.5]
    assert ds["scenes"] == ["human;landscape", "night", "animal"]  # raw string kept
    assert ds["level"] == [2, None, 5]
    assert ds.features["mos"].dtype == "float64"
    assert ds.features["level"].dtype == "int64"
    img = ds[1]["image"]
    assert isinstance(img, Image.Image) and img.size == (4, 4)
    info = read_iqa_info(ds)
    assert info["format"] == "imagefolder" and info["mos_normalized"] is False
    # normalization without a known scale is refused, with a way out
    with pytest.raises(ValueError, match="mos_range"):
        load_iqa_dataset("imagefolder", tmp_path, normalize=True)
    ds2 = load_iqa_dataset("imagefolder", tmp_path, normalize=True, facts="livec")
    assert ds2["mos"] == pytest.approx([0.735, 0.10, 0.9925])
    assert ds2["mos_raw"] == [73.5, 10.0, 99.25]


def test_imagefolder_jsonl_and_metadata_override(tmp_path):
    write_image(tmp_path / "x.png")
    (tmp_path / "other.jsonl").write_text('{"file_name": "x.png", "mos": 3.5, "ref": "r1"}\n')
    ds = load_iqa_dataset("imagefolder", tmp_path, metadata_file="other.jsonl")
    assert ds["mos"] == [3.5] and ds["ref"] == ["r1"]


# --------------------------------------------------------------------------
# LIVE In the Wild (ChallengeDB_release)
# --------------------------------------------------------------------------


def make_livec(base):
    rel = base / "ChallengeDB_release"
    names = [f"t{i}.bmp" for i in range(1, 8)] + ["10.bmp", "100.bmp", "1000.JPG", "1001.JPG", "102.bmp"]
    mos = [50.0 + i for i in range(7)] + [63.9634, 25.3353, 48.9365, 3.4976, 92.4322]
    std = [10.0] * 7 + [18.3, 13.6, 18.9, 6.7, 15.1]
    for n in names[:7]:
        write_image(rel / "Images" / "trainingImages" / n)
    for n in names[7:]:
        write_image(rel / "Images" / n)
    data = rel / "Data"
    data.mkdir(parents=True)
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": cell_array(names, (len(names), 1))})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})
    scipy.io.savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.array([std])})
    return rel, names, mos, std


def test_livec_excludes_training_images(tmp_path):
    rel, names, mos, std = make_livec(tmp_path)
    for data_dir in (rel, tmp_path):  # the release folder or its parent
        ds = load_iqa_dataset("livec", data_dir)
        assert ds.num_rows == 5
        assert ds["mos"] == mos[7:]
        assert ds["mos_std"] == std[7:]
        assert ds["image_id"] == [f"Images/{n}" for n in names[7:]]
        assert not any(i.startswith("Images/trainingImages") for i in ds["image_id"])
    info = read_iqa_info(ds)
    assert info["dataset"] == "livec" and info["details"]["excluded_training_images"] == 7
    assert info["higher_is_better"] is True
    full = load_iqa_dataset("clive", rel, include_training=True)
    assert full.num_rows == 12 and full["image_id"][0] == "Images/trainingImages/t1.bmp"


def test_livec_full_size_release_gives_1162_rows(tmp_path):
    # the real release's shape: 7 training images + 1162 test images, MOS exactly as in AllMOS_release.mat
    rel = tmp_path / "ChallengeDB_release"
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.JPG" for i in range(3, 1165)]
    rng = np.random.default_rng(0)
    mos = rng.uniform(3.0, 93.0, len(names))
    images = rel / "Images"
    (images / "trainingImages").mkdir(parents=True)
    tiny_jpeg = io.BytesIO()
    Image.new("RGB", (4, 4), (120, 80, 40)).save(tiny_jpeg, format="JPEG")
    for n in names:
        (images / ("trainingImages" if n.startswith("t") else "") / n).write_bytes(tiny_jpeg.getvalue())
    data = rel / "Data"
    data.mkdir()
    scipy.io.savemat(data / "AllImages_release.mat", {"AllImages_release": cell_array(names, (len(names), 1))})
    scipy.io.savemat(data / "AllMOS_release.mat", {"AllMOS_release": mos[None, :]})
    scipy.io.savemat(data / "AllStdDev_release.mat", {"AllStdDev_release": np.full((1, len(names)), 10.0)})
    ds = load_iqa_dataset("livec", rel)
    assert ds.num_rows == 1162
    stored = scipy.io.loadmat(data / "AllMOS_release.mat")["AllMOS_release"][0]
    np.testing.assert_array_equal(np.asarray(ds["mos"]), stored[7:])


def test_livec_bad_mat_values_are_reported_by_entry(tmp_path):
    rel, names, mos, std = make_livec(tmp_path)
    bad = list(mos)
    bad[8] = float("nan")
    scipy.io.savemat(rel / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([bad])})
    os.remove(rel / "Images" / "1001.JPG")
    with pytest.raises(DatasetMetadataError) as ei:
        load_iqa_dataset("livec", rel)
    rows = {(p.row, p.file_name) for p in ei.value.problems}
    assert rows == {(9, "100.bmp"), (11, "1001.JPG")}


# --------------------------------------------------------------------------
# KonIQ-10k
# --------------------------------------------------------------------------


def test_koniq10k(tmp_path):
    header = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
    rows = [
        ["10004473376.jpg", 0, 0, 25, 73, 7, 105, 3.828571429, 0.527277894, 77.38362069],
        ["10007357496.jpg", 0, 3, 45, 47, 1, 96, 3.479166667, 0.580003025, 68.72857143],
        ["10007903636.jpg", 1, 0, 20, 73, 2, 96, 3.78125, 0.527219619, 78.62857143],
    ]
    write_csv(tmp_path / "koniq10k_scores_and_distributions.csv", header, rows)
    for r in rows:
        write_image(tmp_path / "1024x768" / r[0])
    write_image(tmp_path / "koniq10k_512x384" / "512x384" / rows[0][0])
    ds = load_iqa_dataset("koniq10k", tmp_path)
    assert ds.num_rows == 3
    assert ds["mos"] == [r[7] for r in rows]
    assert ds["mos_std"] == [r[8] for r in rows]
    assert ds["mos_zscore"] == [r[9] for r in rows]
    assert ds["c_total"] == [105, 96, 96] and ds.features["c1"].dtype == "int64"
    assert ds["image_id"][0] == "1024x768/10004473376.jpg"
    assert read_iqa_info(ds)["published_mos_range"] == [1.0, 5.0]
    # the 512x384 folder, found one level down; two of its images are missing
    with pytest.raises(DatasetMetadataError) as ei:
        load_iqa_dataset("koniq10k", tmp_path, resolution="512x384")
    assert [p.row for p in ei.value.problems] == [3, 4]
    small = load_iqa_dataset("koniq10k", tmp_path, resolution="512x384", check_files=False)
    assert small.num_rows == 3


# --------------------------------------------------------------------------
# KADID-10k
# --------------------------------------------------------------------------


def test_kadid10k(tmp_path):
    root = tmp_path / "kadid10k"
    rows = [
        ["I01_01_01.png", "I01.png", 4.57, 0.496],
        ["I01_10_05.png", "I01.png", 1.23, 0.31],
        ["I81_25_03.png", "I81.png", 3.1, 0.88],
    ]
    write_csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    for r in rows:
        write_image(root / "images" / r[0])
    write_image(root / "images" / "I01.png")  # references live in images/ too, not in dmos.csv
    ds = load_iqa_dataset("kadid10k", tmp_path)
    assert ds.num_rows == 3
    assert ds["mos"] == [4.57, 1.23, 3.1]  # as published, NOT flipped despite the name "dmos"
    assert ds["ref"] == ["I01", "I01", "I81"]
    assert ds["distortion_id"] == [1, 10, 25]
    assert ds["distortion"] == ["gaussian blur", "jpeg", "contrast change"]
    assert ds["level"] == [1, 5, 3]
    assert ds["mos_var"] == [0.496, 0.31, 0.88]
    info = read_iqa_info(ds)
    assert info["higher_is_better"] is True and info["group_splits_by_reference"] is True
    normed = load_iqa_dataset("kadid10k", root, normalize=True)
    assert normed["mos"] == pytest.approx([(4.57 - 1) / 4, (1.23 - 1) / 4, (3.1 - 1) / 4])


# --------------------------------------------------------------------------
# TID2013
# --------------------------------------------------------------------------


def test_tid2013(tmp_path):
    root = tmp_path / "tid2013"
    entries = [("5.51429", "i01_01_1.bmp"), ("3.20000", "i01_17_5.bmp"), ("4.06250", "i25_24_2.bmp"), ("1.5", "i25_10_4.bmp")]
    root.mkdir()
    # CRLF lines as in the release
    (root / "mos_with_names.txt").write_bytes("".join(f"{m} {n}\r\n" for m, n in entries).encode())
    (root / "mos_std.txt").write_text("0.13\n0.2\n0.33\n0.4\n")
    # on disk the case differs: I25 upper case, .BMP extension
    write_image(root / "distorted_images" / "i01_01_1.bmp")
    write_image(root / "distorted_images" / "i01_17_5.BMP", "BMP")
    write_image(root / "distorted_images" / "I25_24_2.bmp")
    write_image(root / "distorted_images" / "I25_10_4.BMP", "BMP")
    write_image(root / "reference_images" / "I01.BMP", "BMP")
    ds = load_iqa_dataset("tid2013", tmp_path)
    assert ds.num_rows == 4
    assert ds["mos"] == [5.51429, 3.2, 4.0625, 1.5]
    assert ds["mos_std"] == [0.13, 0.2, 0.33, 0.4]
    assert ds["ref"] == ["I01", "I01", "I25", "I25"]
    assert ds["distortion_id"] == [1, 17, 24, 10]
    assert ds["distortion"] == [TID2013_DISTORTIONS[1], "Contrast change", "Sparse sampling and reconstruction", "JPEG compression"]
    assert ds["level"] == [1, 5, 2, 4]
    assert ds["image_id"] == [
        "distorted_images/i01_01_1.bmp",
        "distorted_images/i01_17_5.BMP",
        "distorted_images/I25_24_2.bmp",
        "distorted_images/I25_10_4.BMP",
    ]
    assert isinstance(ds[3]["image"], Image.Image)


# --------------------------------------------------------------------------
# CSIQ
# --------------------------------------------------------------------------

CSIQ_ROWS = [
    # image, dst_idx, dst_type, dst_lev, dmos_std, dmos
    (1600, 1, "noise", 1, 0.061, 0.062),
    (1600, 3, "jpeg 2000", 2, 0.1, 0.135),
    ("aerial_city", 5, "blur", 5, 0.12, 0.91),
    (1600, 6, "contrast", 3, 0.05, 0.4),
    ("boston", 2, "jpeg", 4, 0.09, 0.737),
    ("boston", 4, "fnoise", 1, 0.02, 0.03),
]
CSIQ_FILES = [
    "awgn/1600.AWGN.1.png",
    "jpeg2000/1600.jpeg2000.2.png",
    "blur/aerial_city.BLUR.5.png",
    "contrast/1600.contrast.3.png",
    "jpeg/boston.JPEG.4.png",
    "fnoise/boston.fnoise.1.png",
]


def make_csiq_images(root):
    for f in CSIQ_FILES:
        write_image(root / "dst_imgs" / f)
    write_image(root / "src_imgs" / "1600.png")


def test_csiq_xlsx(tmp_path):
    root = tmp_path / "CSIQ"
    make_csiq_images(root)
    header = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
    write_xlsx(
        root / "csiq.DMOS.xlsx",
        {
            "readme": [["CSIQ DMOS"], ["nothing here"]],
            "all_by_image": [["CSIQ subjective scores"], [], header] + [list(r) for r in CSIQ_ROWS] + [[None]],
        },
    )
    ds = load_iqa_dataset("csiq", tmp_path)
    assert ds.num_rows == 6
    assert ds["mos"] == [r[5] for r in CSIQ_ROWS]
    assert ds["mos_std"] == [r[4] for r in CSIQ_ROWS]
    assert ds["ref"] == ["1600", "1600", "aerial_city", "1600", "boston", "boston"]  # numeric cell -> "1600"
    assert ds["distortion"] == [r[2] for r in CSIQ_ROWS]  # as the spreadsheet names them
    assert ds["distortion_id"] == [1, 3, 5, 6, 2, 4]
    assert ds["level"] == [1, 2, 5, 3, 4, 1]
    assert ds["image_id"] == ["dst_imgs/" + f for f in CSIQ_FILES]
    info = read_iqa_info(ds)
    assert info["score_kind"] == "DMOS" and info["higher_is_better"] is False
    assert "all_by_image" in info["details"]["metadata"]
    # normalize flips the DMOS: higher = better, in [0, 1]
    normed = load_iqa_dataset("csiq", root, normalize=True)
    assert normed["mos"] == pytest.approx([1 - r[5] for r in CSIQ_ROWS])
    assert normed["mos_raw"] == [r[5] for r in CSIQ_ROWS]
    ninfo = read_iqa_info(normed)
    assert ninfo["higher_is_better"] is True and ninfo["normalization"]["flipped"] is True
    assert ninfo["published_higher_is_better"] is False


def test_csiq_text_export_and_bad_rows(tmp_path):
    root = tmp_path / "csiq"
    make_csiq_images(root)
    lines = ["\t".join(str(v) for v in r) for r in CSIQ_ROWS]
    (root / "csiq_dmos.txt").write_text("\n".join(lines) + "\n")
    ds = load_iqa_dataset("csiq", root)
    assert ds["mos"] == [r[5] for r in CSIQ_ROWS] and ds["distortion"][1] == "jpeg 2000"
    # whitespace-separated variant with an unknown type and a missing level
    text = "\n".join(" ".join(str(v) for v in r) for r in CSIQ_ROWS)
    text += "\nboston 9 sharpen 1 0.1 0.2\nboston 2 jpeg x 0.1 0.2\n"
    (root / "csiq_dmos.txt").write_text(text)
    with pytest.raises(DatasetMetadataError) as ei:
        load_iqa_dataset("csiq", root)
    problems = ei.value.problems
    assert [p.row for p in problems] == [7, 8]
    assert "unknown CSIQ distortion type 'sharpen'" in problems[0].message
    assert "dst_lev" in problems[1].message


# --------------------------------------------------------------------------
# LIVE IQA release 2
# --------------------------------------------------------------------------

LIVE_FOLDERS = [("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174)]
LIVE_REFS = ["bikes.bmp", "buildings.bmp", "caps.bmp", "monarch.bmp"]


def make_live(root, kept_per_folder=2):
    """982 scores; all but the first ``kept_per_folder`` images of each folder
    are marked as reference copies (orgs = 1), so only a few image files are needed."""
    dmos, orgs, refs, kept = [], [], [], []
    i = 0
    for folder, n in LIVE_FOLDERS:
        info_lines = []
        for k in range(1, n + 1):
            ref = LIVE_REFS[i % len(LIVE_REFS)]
            value = round(10 + (i * 7.31) % 80, 4)
            is_ref = k > kept_per_folder
            dmos.append(0.0 if is_ref else value)
            orgs.append(1 if is_ref else 0)
            refs.append(ref)
            info_lines.append(f"{ref} img{k}.bmp {0.5 + k / 10:.2f}")
            if not is_ref:
                kept.append((i + 1, folder, k, ref, value))
                write_image(root / folder / f"img{k}.bmp")
            i += 1
        (root / folder / "info.txt").write_text("\n".join(info_lines) + "\n")
    os.makedirs(root / "refimgs", exist_ok=True)
    for ref in LIVE_REFS:
        write_image(root / "refimgs" / ref)
    scipy.io.savemat(root / "dmos.mat", {"dmos": np.array([dmos]), "orgs": np.array([orgs], dtype=float)})
    scipy.io.savemat(root / "refnames_all.mat", {"refnames_all": cell_array(refs, (1, len(refs)))})
    return kept


def test_live(tmp_path):
    root = tmp_path / "databaserelease2"
    kept = make_live(root)
    assert sum(n for _, n in LIVE_FOLDERS) == 982
    ds = load_iqa_dataset("live", tmp_path)
    assert ds.num_rows == len(kept) == 10
    assert ds["mos"] == [k[4] for k in kept]
    assert ds["ref"] == [k[3][:-4] for k in kept]
    assert ds["distortion"] == [k[1] for k in kept]
    assert ds["image_id"] == [f"{k[1]}/img{k[2]}.bmp" for k in kept]
    assert ds["distortion_param"] == [pytest.approx(0.6), pytest.approx(0.7)] * 5
    info = read_iqa_info(ds)
    assert info["details"]["reference_copies_excluded"] == 972
    assert info["score_kind"] == "DMOS" and info["higher_is_better"] is False
    # default: published DMOS; normalize=True: flipped to [0, 1] higher-better
    normed = load_iqa_dataset("live", root, normalize=True)
    assert normed["mos"] == pytest.approx([1 - k[4] / 100 for k in kept])
    assert all(0.0 <= v <= 1.0 for v in normed["mos"])
    everything = load_iqa_dataset("live", root, include_references=True, check_files=False)
    assert everything.num_rows == 982 and sum(everything["is_reference"]) == 972


def test_live_order_mismatch_is_caught(tmp_path):
    root = tmp_path / "live"
    make_live(root)
    lines = (root / "jpeg" / "info.txt").read_text().splitlines()
    lines[0] = lines[0].replace(lines[0].split()[0], "parrots.bmp")
    (root / "jpeg" / "info.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetMetadataError) as ei:
        load_iqa_dataset("live", root)
    assert [(p.row, p.file_name) for p in ei.value.problems] == [(228, "jpeg/img1.bmp")]
    assert load_iqa_dataset("live", root, verify_info_txt=False).num_rows == 10


# --------------------------------------------------------------------------
# SPAQ
# --------------------------------------------------------------------------


def test_spaq(tmp_path):
    root = tmp_path / "SPAQ"
    header = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]
    rows = [
        ["00001.jpg", 42.7, 43.5, 40.1, 44.0, 38.9, 41.3],
        ["00002.jpg", 85.0, 80.2, 75.0, 79.5, 82.1, 88.8],
        ["00003.jpg", 11.5, 20.0, 15.5, 12.0, 9.0, 10.25],
    ]
    write_xlsx(root / "Annotations" / "MOS and Image attribute scores.xlsx", {"Sheet1": [header] + rows})
    for r in rows:
        write_image(root / "TestImage" / r[0])
    ds = load_iqa_dataset("spaq", tmp_path)
    assert ds.num_rows == 3
    assert ds["mos"] == [42.7, 85.0, 11.5]
    assert ds["sharpness"] == [41.3, 88.8, 10.25]
    assert ds["image_id"] == ["TestImage/00001.jpg", "TestImage/00002.jpg", "TestImage/00003.jpg"]
    assert read_iqa_info(ds)["published_mos_range"] == [0.0, 100.0]


def test_spaq_bad_sheet_rows_are_named_by_sheet_row(tmp_path):
    root = tmp_path / "SPAQ"
    rows = [
        ["00001.jpg", 42.7, 1.0],  # sheet row 3
        ["00002.jpg", "good", 2.0],  # row 4: MOS is text
        [],  # row 5: empty, skipped
        ["00003.jpg", 11.5, "dark"],  # row 6: attribute is text
        [None, 7.0],  # row 7: no image name
    ]
    write_xlsx(root / "Annotations" / "MOS and Image attribute scores.xlsx",
               {"Sheet1": [["SPAQ annotations"], ["Image name", "MOS", "Brightness"]] + rows})
    for n in ("00001.jpg", "00002.jpg", "00003.jpg"):
        write_image(root / "TestImage" / n)
    with pytest.raises(DatasetMetadataError) as ei:
        load_iqa_dataset("spaq", root)
    got = [(p.row, p.file_name, p.message) for p in ei.value.problems]
    assert got == [
        (4, "00002.jpg", "MOS is not a number: 'good'"),
        (6, "00003.jpg", "brightness is not a number: 'dark'"),
        (7, "", "file name is empty"),
    ]


# --------------------------------------------------------------------------
# pyiqa meta-info CSV
# --------------------------------------------------------------------------


def test_pyiqa_no_reference_livec(tmp_path):
    write_csv(
        tmp_path / "meta_info_LIVEChallengeDataset.csv",
        ["img_name", "mos", "std"],
        [["t1.bmp", 63.96, 18.37], ["t2.bmp", 25.3, 13.6], ["100.bmp", 32.56, 19.12], ["1000.JPG", 10.5, 9.0]],
    )
    write_image(tmp_path / "Images" / "100.bmp")
    write_image(tmp_path / "Images" / "1000.JPG")
    ds = load_iqa_dataset("pyiqa", tmp_path, image_dir="Images")
    assert ds.num_rows == 2  # t1..t7 dropped like the livec loader does
    assert ds["mos"] == [32.56, 10.5] and ds["mos_std"] == [19.12, 9.0]
    assert ds["image_id"] == ["Images/100.bmp", "Images/1000.JPG"]
    assert read_iqa_info(ds)["dataset"] == "livec"


def test_pyiqa_full_reference_csiq(tmp_path):
    write_csv(
        tmp_path / "meta" / "meta_info_CSIQDataset.csv",
        ["ref_name", "dist_name", "dmos"],
        [["1600.png", "1600.AWGN.1.png", 0.061989], ["boston.png", "boston.jpeg2000.3.png", 0.389335]],
    )
    write_image(tmp_path / "dst_imgs_all" / "1600.AWGN.1.png")
    write_image(tmp_path / "dst_imgs_all" / "boston.jpeg2000.3.png")
    ds = load_iqa_dataset(
        "pyiqa", tmp_path, metadata_file="meta/meta_info_CSIQDataset.csv", image_dir="dst_imgs_all", normalize=True
    )
    assert ds["mos_raw"] == [0.061989, 0.389335]
    assert ds["mos"] == pytest.approx([1 - 0.061989, 1 - 0.389335])
    assert ds["ref"] == ["1600", "boston"]
    assert ds["distortion"] == ["noise", "jpeg 2000"] and ds["level"] == [1, 3]


def test_pyiqa_koniq_uses_its_own_scale(tmp_path):
    write_csv(
        tmp_path / "meta_info_KonIQ10kDataset.csv",
        ["img_name", "mos", "std", "split"],
        [["10004473376.jpg", 77.38, 0.527, "training"], ["10007357496.jpg", 68.73, 0.58, "test"]],
    )
    for n in ("10004473376.jpg", "10007357496.jpg"):
        write_image(tmp_path / "1024x768" / n)
    ds = load_iqa_dataset("pyiqa", tmp_path, image_dir="1024x768", normalize=True)
    assert ds["mos"] == pytest.approx([0.7738, 0.6873])  # pyiqa's KonIQ mos is 0-100
    assert ds["split"] == ["training", "test"]


# --------------------------------------------------------------------------
# metadata errors
# --------------------------------------------------------------------------


def test_bad_metadata_raises_one_error_naming_every_row(tmp_path):
    for n in ("ok.png", "nan.png", "text.png", "dup.png"):
        write_image(tmp_path / n)
    write_csv(
        tmp_path / "metadata.csv",
        ["file_name", "mos"],
        [
            ["ok.png", "50"],  # line 2
            ["missing.png", "40"],  # line 3: no such file
            ["nan.png", "NaN"],  # line 4
            ["text.png", "good"],  # line 5
            ["dup.png", "30"],  # line 6
            ["dup.png", "31"],  # line 7: same file twice
            ["", "3"],  # line 8: empty name
        ],
    )
    with pytest.raises(DatasetMetadataError) as ei:
        load_iqa_dataset("imagefolder", tmp_path)
    err = ei.value
    assert isinstance(err, ValueError)
    got = [(p.row, p.file_name) for p in err.problems]
    assert got == [(3, "missing.png"), (4, "nan.png"), (5, "text.png"), (7, "dup.png"), (8, "")]
    msgs = [p.message for p in err.problems]
    assert msgs[0].startswith("image file not found")
    assert msgs[1] == "MOS is NaN"
    assert msgs[2] == "MOS is not a number: 'good'"
    assert "duplicate" in msgs[3] and "row 6" in msgs[3]
    text = str(err)
    for name in ("missing.png", "nan.png", "text.png", "dup.png"):
        assert name in text
    for row in ("row 3", "row 4", "row 5", "row 7", "row 8"):
        assert row in text
    assert all(isinstance(p, MetadataProblem) for p in err.problems)
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems
    # without the file check only the metadata values are judged
    with pytest.raises(DatasetMetadataError) as ei2:
        load_iqa_dataset("imagefolder", tmp_path, check_files=False)
    assert [p.row for p in ei2.value.problems] == [4, 5, 7, 8]


def test_check_files_false_skips_the_file_check(tmp_path):
    write_csv(tmp_path / "metadata.csv", ["file_name", "mos"], [["nowhere.png", "1"]])
    with pytest.raises(DatasetMetadataError):
        load_iqa_dataset("imagefolder", tmp_path)
    assert load_iqa_dataset("imagefolder", tmp_path, check_files=False).num_rows == 1


def test_unknown_format_and_option(tmp_path):
    with pytest.raises(ValueError, match="unknown IQA dataset format"):
        load_iqa_dataset("not-a-dataset", tmp_path)
    with pytest.raises(TypeError, match="resolution"):
        load_iqa_dataset("livec", tmp_path, resolution="512x384")
    with pytest.raises(FileNotFoundError):
        load_iqa_dataset("tid2013", tmp_path)


# --------------------------------------------------------------------------
# registry / normalization / xlsx reader
# --------------------------------------------------------------------------


def test_registry_facts():
    assert set(SUPPORTED_FORMATS) - {"imagefolder", "pyiqa"} <= set(DATASET_REGISTRY)
    assert dataset_facts("KADID-10k").higher_is_better is True  # dmos.csv is MOS-like
    assert dataset_facts("tid2013").higher_is_better is True
    for name in ("csiq", "live"):
        f = dataset_facts(name)
        assert f.higher_is_better is False and f.lower_better is True and f.score_kind == "DMOS"
    assert dataset_facts("clive").name == "livec" and dataset_facts("LIVEIQADataset").name == "live"
    for f in DATASET_REGISTRY.values():
        assert f.citation and f.citation_key in f.bibtex and f.license_note and f.mos_range
        assert f.group_splits_by_reference == f.synthetic
    assert len(KADID10K_DISTORTIONS) == 25 and len(TID2013_DISTORTIONS) == 24
    with pytest.raises(KeyError):
        dataset_facts("nope")


def test_normalize_mos():
    np.testing.assert_allclose(normalize_mos([0.0, 0.25, 1.0], "csiq"), [1.0, 0.75, 0.0])
    np.testing.assert_allclose(normalize_mos([0.0, 50.0, 112.0, -3.0], "live"), [1.0, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(normalize_mos([1.0, 3.0, 5.0], "kadid10k"), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(normalize_mos([4.5], "tid2013"), [0.5])
    assert normalize_mos([112.0], "live", clip=False)[0] == pytest.approx(-0.12)
    assert math.isnan(normalize_mos([float("nan")], "livec")[0])


def test_xlsx_reader(tmp_path):
    path = tmp_path / "t.xlsx"
    write_xlsx(path, {"A": [["x", None, 3], [True, "é & <b>"]], "Second": [["only"]]})
    assert xlsx_sheet_names(path) == ["A", "Second"]
    assert read_xlsx_rows(path) == [(1, ["x", None, 3.0]), (2, [True, "é & <b>"])]
    assert read_xlsx_rows(path, "second") == [(1, ["only"])]
    assert read_xlsx_rows(path, 1) == [(1, ["only"])]
    assert type(read_xlsx_rows(path)[0][1][2]) is float  # an integral number comes back as a float, as Excel stores it
    with pytest.raises(KeyError, match="no sheet named 'third'"):
        read_xlsx_rows(path, "third")
    # values only: a formula reads as its cached value (none here, openpyxl does not compute), never as its text;
    # empty rows are skipped and row numbers stay the sheet's
    write_xlsx(path, {"S": [["a", "=1+2"], [], [None, 2.5, None]]})
    assert read_xlsx_rows(path) == [(1, ["a"]), (3, [None, 2.5])]
    (tmp_path / "not.xlsx").write_text("plain text")
    with pytest.raises(ValueError, match="not.xlsx: not a readable .xlsx workbook"):
        read_xlsx_rows(tmp_path / "not.xlsx")


def test_xlsx_without_openpyxl_names_the_file_and_the_extra(tmp_path, monkeypatch):
    root = tmp_path / "SPAQ"
    sheet = root / "Annotations" / "MOS and Image attribute scores.xlsx"
    write_xlsx(sheet, {"Sheet1": [["Image name", "MOS"], ["00001.jpg", 42.7]]})
    write_image(root / "TestImage" / "00001.jpg")
    monkeypatch.setitem(sys.modules, "openpyxl", None)  # `import openpyxl` now fails as if not installed
    with pytest.raises(ImportError) as ei:
        load_iqa_dataset("spaq", root)
    assert str(sheet) in str(ei.value)
    assert 'pip install "grmp-iqa-hf[xlsx]"' in str(ei.value)
    from grmp_iqa_hf.training.common import is_input_error

    assert is_input_error(ei.value)  # the scripts end on one error line, no traceback
    # the other formats do not need it
    write_csv(tmp_path / "folder" / "metadata.csv", ["file_name", "mos"], [["a.png", "1"]])
    assert load_iqa_dataset("imagefolder", tmp_path / "folder", check_files=False).num_rows == 1


# --------------------------------------------------------------------------
# real data (optional)
# --------------------------------------------------------------------------


def test_clive_jpg_real_folder_is_lazy(monkeypatch):
    if not os.path.isdir(CLIVE_JPG):
        pytest.skip(f"{CLIVE_JPG} is not available")
    import PIL.Image

    opened = []
    real_open = PIL.Image.open

    def counting_open(*args, **kwargs):
        opened.append(args[0] if args else kwargs)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", counting_open)
    t0 = time.perf_counter()
    ds = load_iqa_dataset("imagefolder", CLIVE_JPG)
    elapsed = time.perf_counter() - t0
    assert ds.num_rows == 627
    assert opened == []  # building the dataset decoded nothing
    assert elapsed < 5.0
    first = ds[0]
    assert isinstance(first["image"], PIL.Image.Image)
    assert len(opened) == 1  # only the accessed row was opened
    assert first["image_id"].startswith("images/") and 0.0 <= first["mos"] <= 100.0
    assert isinstance(first["scenes"], str)
    assert set(ds.column_names) >= {"image", "image_id", "mos", "mos_std", "distortion", "scenes"}
    normed = load_iqa_dataset("imagefolder", CLIVE_JPG, facts="livec", normalize=True)
    assert normed["mos_raw"] == ds["mos"]
    assert max(normed["mos"]) <= 1.0 and min(normed["mos"]) >= 0.0
