"""Scene / distortion label spaces (LIQE's) and the mapping of every name our loaders emit onto them."""

import csv

import numpy as np
import pytest

from grmp_iqa_hf.data.distortions import DISTORTIONS
from grmp_iqa_hf.data.labels import (
    DISTORTION_CLASSES,
    DISTORTION_NAME_SOURCES,
    IGNORE_INDEX,
    LIQE_RAW_DISTORTIONS,
    SCENE_CLASSES,
    UnknownLabelError,
    dataset_auxiliary_labels,
    distortion_class,
    distortion_labels,
    normalize_label_name,
    parse_scenes,
    scene_labels,
)
from grmp_iqa_hf.data.registry import (
    CSIQ_DISTORTIONS,
    CSIQ_TYPE_ALIASES,
    KADID10K_DISTORTIONS,
    LIVE_DISTORTION_FOLDERS,
    TID2013_DISTORTIONS,
)
from grmp_iqa_hf.modeling.configuration_mp_iqe import MPIQE_DISTORTION_CLASSES, MPIQE_SCENE_CLASSES
from grmp_iqa_hf.modeling.modeling_mp_iqe import IGNORE_INDEX as MODEL_IGNORE_INDEX


def cls(name):
    return DISTORTION_CLASSES[distortion_class(name)]


def test_label_spaces_agree_with_the_model():
    assert len(SCENE_CLASSES) == 9 and len(DISTORTION_CLASSES) == 11
    assert tuple(MPIQE_SCENE_CLASSES) == SCENE_CLASSES and tuple(MPIQE_DISTORTION_CLASSES) == DISTORTION_CLASSES
    assert IGNORE_INDEX == MODEL_IGNORE_INDEX == -100


def test_each_label_fact_is_defined_once():
    """The data layer, the MP-IQE config, the model's loss and QGR's semantic signal share one definition."""
    from grmp_iqa_hf.modeling import constants
    from grmp_iqa_hf.training import gradreg

    assert SCENE_CLASSES is MPIQE_SCENE_CLASSES is gradreg.SCENE_CLASSES is constants.SCENE_CLASSES
    assert DISTORTION_CLASSES is MPIQE_DISTORTION_CLASSES is constants.DISTORTION_CLASSES
    assert IGNORE_INDEX is MODEL_IGNORE_INDEX is constants.IGNORE_INDEX


# LIQE's published raw -> class table, written out independently of the module's copy.
LIQE_TABLE = [
    ("jpeg2000 compression", "jpeg2000 compression"), ("jpeg compression", "jpeg compression"),
    ("white noise", "noise"), ("gaussian blur", "blur"), ("fastfading", "jpeg2000 compression"),
    ("fnoise", "noise"), ("contrast", "contrast"), ("lens", "blur"), ("motion", "blur"), ("diffusion", "color"),
    ("shifting", "blur"), ("color quantization", "quantization"), ("oversaturation", "color"),
    ("desaturation", "color"), ("white with color", "noise"), ("impulse", "noise"), ("multiplicative", "noise"),
    ("white noise with denoise", "noise"), ("brighten", "overexposure"), ("darken", "underexposure"),
    ("shifting the mean", "other"), ("jitter", "spatial"), ("noneccentricity patch", "spatial"),
    ("pixelate", "spatial"), ("quantization", "quantization"), ("color blocking", "spatial"),
    ("sharpness", "contrast"), ("realistic blur", "blur"), ("realistic noise", "noise"),
    ("underexposure", "underexposure"), ("overexposure", "overexposure"),
    ("realistic contrast change", "contrast"), ("other realistic", "other"),
]


@pytest.mark.parametrize("raw, expected", LIQE_TABLE)
def test_liqe_raw_names(raw, expected):
    assert cls(raw) == expected
    assert DISTORTION_NAME_SOURCES[normalize_label_name(raw)] == "liqe"


def test_liqe_table_is_complete():
    assert len(LIQE_TABLE) == len(LIQE_RAW_DISTORTIONS) == 33
    assert dict(LIQE_TABLE) == LIQE_RAW_DISTORTIONS


def test_class_names_map_to_themselves():
    for index, name in enumerate(DISTORTION_CLASSES):
        assert distortion_class(name) == index


def test_every_loader_name_is_covered():
    names = list(KADID10K_DISTORTIONS.values()) + list(TID2013_DISTORTIONS.values())
    names += list(CSIQ_DISTORTIONS) + list(CSIQ_TYPE_ALIASES) + [f for f, _ in LIVE_DISTORTION_FOLDERS] + list(DISTORTIONS)
    labels = distortion_labels(names)  # raises on any unknown name
    assert np.all((labels >= 0) & (labels < 11))


def test_synthetic_engine_agrees_with_kadid():
    # the engine's 25 types are KADID-10k's, in KADID-10k order: the same type must get the same class
    assert len(DISTORTIONS) == len(KADID10K_DISTORTIONS) == 25
    for index, name in enumerate(DISTORTIONS, start=1):
        assert distortion_class(name) == distortion_class(KADID10K_DISTORTIONS[index]), (name, KADID10K_DISTORTIONS[index])


@pytest.mark.parametrize("raw, expected", [
    # LIVE folders
    ("jp2k", "jpeg2000 compression"), ("jpeg", "jpeg compression"), ("wn", "noise"), ("gblur", "blur"),
    ("fastfading", "jpeg2000 compression"),
    # CSIQ, as the DMOS sheet may spell it
    ("AWGN", "noise"), ("jpeg 2000", "jpeg2000 compression"), ("1/f noise", "noise"), ("contrast decrement", "contrast"),
    ("BLUR", "blur"),
    # KADID-10k
    ("color saturation 1", "color"), ("color saturation 2", "color"), ("high sharpen", "contrast"),
    ("mean shift", "other"), ("color shift", "blur"), ("non-eccentricity patch", "spatial"), ("denoise", "noise"),
    # TID2013
    ("JPEG2000 transmission errors", "jpeg2000 compression"), ("Image color quantization with dither", "quantization"),
    ("Mean shift (intensity shift)", "other"), ("Change of color saturation", "color"),
])
def test_dataset_names(raw, expected):
    assert cls(raw) == expected


def test_matching_ignores_case_spaces_and_punctuation():
    for spelling in ("JPEG2000 Compression", "jpeg2000_compression", " jpeg-2000 compression "):
        assert cls(spelling) == "jpeg2000 compression"


def test_tid2013_provenance_is_recorded():
    sources = {name: DISTORTION_NAME_SOURCES[normalize_label_name(name)] for name in TID2013_DISTORTIONS.values()}
    assert sources["Gaussian blur"] == "liqe" and sources["Comfort noise"] == "ours"
    assert set(sources.values()) == {"liqe", "ours"}


def test_missing_reference_and_unknown_names():
    assert list(distortion_labels([None, "", float("nan"), "reference", "blur"])) == [IGNORE_INDEX] * 4 + [3]
    with pytest.raises(UnknownLabelError) as info:
        distortion_labels(["blur", "wobble", "smear", "wobble"])
    assert "2 unknown distortion" in str(info.value) and "'smear'" in str(info.value) and "'wobble'" in str(info.value)
    assert list(distortion_labels(["wobble", "blur"], unknown="ignore")) == [IGNORE_INDEX, 3]
    assert list(distortion_labels(["wobble"], unknown="other")) == [DISTORTION_CLASSES.index("other")]
    with pytest.raises(ValueError, match="unknown must be"):
        distortion_labels(["blur"], unknown="drop")


def test_scene_parsing():
    labels = scene_labels(["human;night", "still life", "animal; animal ;Others", "", None, "other"])
    expected = np.zeros((6, 9), dtype=np.float32)
    expected[0, [2, 5]] = 1
    expected[1, 7] = 1
    expected[2, [0, 8]] = 1
    expected[5, 8] = 1
    expected[3:5] = np.nan
    np.testing.assert_array_equal(labels, expected)
    assert parse_scenes(["plant", "night"]) == [5, 6]
    with pytest.raises(UnknownLabelError, match="'beach'"):
        scene_labels(["human", "beach;night"])
    ignored = scene_labels(["beach;night", "beach"], unknown="ignore")
    assert ignored[0, 5] == 1 and ignored[0].sum() == 1 and np.isnan(ignored[1]).all()


def test_dataset_auxiliary_labels():
    scenes, distortions = dataset_auxiliary_labels({"scenes": ["human", ""], "distortion": ["realistic noise", None]})
    assert scenes.shape == (2, 9) and scenes[0, 2] == 1 and np.isnan(scenes[1]).all()
    assert list(distortions) == [2, IGNORE_INDEX]
    # datasets without the columns (or with empty ones) train on quality alone
    assert dataset_auxiliary_labels({"mos": [1.0, 2.0]}) == (None, None)
    assert dataset_auxiliary_labels({"scenes": ["", ""], "distortion": [None, None]}) == (None, None)


def test_clive_metadata_is_fully_labelled(clive_dir):
    rows = list(csv.DictReader(open(clive_dir / "metadata.csv", newline="")))
    scenes, distortions = dataset_auxiliary_labels(
        {"scenes": [r["scenes"] for r in rows], "distortion": [r["distortion"] for r in rows]}
    )
    assert not np.isnan(scenes).any() and scenes.sum(1).min() >= 1
    assert (distortions != IGNORE_INDEX).all()
    used = {DISTORTION_CLASSES[i] for i in distortions}
    assert used == {"blur", "noise", "contrast", "overexposure", "underexposure", "other"}
