"""Facts about the image quality assessment (IQA) datasets this package can load.

One :class:`IQADatasetFacts` record per dataset keeps what the loaders and the
evaluation code need to know and must not guess: the published score scale
(``mos_range``), its direction (``higher_is_better``; pyiqa calls the inverse
``lower_better``), the size of the release, how to cite it, a short licence
note, and whether train/test splits must be grouped by reference image
(synthetic datasets, where one pristine image has many distorted versions).

The scores themselves are never changed by the loaders unless asked:
:func:`normalize_mos` is the one place that maps a dataset's scores to
``[0, 1]`` with higher = better, using the range and direction recorded here.

How sure the recorded facts are is written next to each entry (``notes``);
the licence notes are short summaries for orientation, not legal text: read
the terms that come with each release.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "IQADatasetFacts",
    "DATASET_REGISTRY",
    "dataset_facts",
    "list_datasets",
    "normalize_mos",
    "minmax_scale",
    "facts_for_pyiqa_meta_file",
    "KADID10K_DISTORTIONS",
    "TID2013_DISTORTIONS",
    "LIVE_DISTORTION_FOLDERS",
    "CSIQ_DISTORTIONS",
]


@dataclasses.dataclass(frozen=True)
class IQADatasetFacts:
    """What is known about one IQA dataset (see the module docstring)."""

    name: str
    """Registry key, e.g. ``"livec"``."""
    display_name: str
    score_kind: str
    """``"MOS"`` or ``"DMOS"`` (what the release calls its score)."""
    mos_range: Optional[Tuple[float, float]]
    """Nominal scale of the published score, ``(low, high)``; ``None`` if unknown."""
    higher_is_better: Optional[bool]
    """Direction of the published score; ``None`` if unknown."""
    num_images: Optional[int] = None
    """Number of scored images in the usual evaluation set (see ``notes``)."""
    num_references: Optional[int] = None
    """Number of pristine reference images (synthetic datasets), else ``None``."""
    synthetic: bool = False
    group_splits_by_reference: bool = False
    citation_key: str = ""
    citation: str = ""
    """Short human-readable reference."""
    bibtex: str = ""
    license_note: str = ""
    homepage: str = ""
    pyiqa_name: Optional[str] = None
    """Class name pyiqa uses, as in ``meta_info_<pyiqa_name>.csv``."""
    pyiqa_mos_range: Optional[Tuple[float, float]] = None
    """Scale of the score column in pyiqa's meta-info CSV when it differs from ``mos_range``."""
    notes: str = ""

    @property
    def lower_better(self) -> Optional[bool]:
        """pyiqa's name for the inverse of :attr:`higher_is_better`."""
        return None if self.higher_is_better is None else not self.higher_is_better

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lower_better"] = self.lower_better
        for key in ("mos_range", "pyiqa_mos_range"):
            if d[key] is not None:
                d[key] = [float(v) for v in d[key]]
        return d

    def replace(self, **changes) -> "IQADatasetFacts":
        return dataclasses.replace(self, **changes)


# --- distortion vocabularies -------------------------------------------------

#: KADID-10k distortion type index (1-based, the middle field of ``I01_03_05.png``)
#: -> name, in the order of the KADID-10k paper / release (Lin, Hosu, Saupe 2019).
KADID10K_DISTORTIONS: Dict[int, str] = {
    1: "gaussian blur",
    2: "lens blur",
    3: "motion blur",
    4: "color diffusion",
    5: "color shift",
    6: "color quantization",
    7: "color saturation 1",
    8: "color saturation 2",
    9: "jpeg2000",
    10: "jpeg",
    11: "white noise",
    12: "white noise in color component",
    13: "impulse noise",
    14: "multiplicative noise",
    15: "denoise",
    16: "brighten",
    17: "darken",
    18: "mean shift",
    19: "jitter",
    20: "non-eccentricity patch",
    21: "pixelate",
    22: "quantization",
    23: "color block",
    24: "high sharpen",
    25: "contrast change",
}

#: TID2013 distortion type index (the middle field of ``i01_03_5.bmp``) -> name,
#: as listed in the TID2013 readme / Ponomarenko et al. 2015.
TID2013_DISTORTIONS: Dict[int, str] = {
    1: "Additive Gaussian noise",
    2: "Additive noise in color components is more intensive than additive noise in the luminance component",
    3: "Spatially correlated noise",
    4: "Masked noise",
    5: "High frequency noise",
    6: "Impulse noise",
    7: "Quantization noise",
    8: "Gaussian blur",
    9: "Image denoising",
    10: "JPEG compression",
    11: "JPEG2000 compression",
    12: "JPEG transmission errors",
    13: "JPEG2000 transmission errors",
    14: "Non eccentricity pattern noise",
    15: "Local block-wise distortions of different intensity",
    16: "Mean shift (intensity shift)",
    17: "Contrast change",
    18: "Change of color saturation",
    19: "Multiplicative Gaussian noise",
    20: "Comfort noise",
    21: "Lossy compression of noisy images",
    22: "Image color quantization with dither",
    23: "Chromatic aberrations",
    24: "Sparse sampling and reconstruction",
}

#: LIVE IQA release 2: distortion folders in the order their scores are
#: concatenated in ``dmos.mat`` / ``dmos_realigned.mat``, with image counts
#: (``img1.bmp`` .. ``imgN.bmp`` in each folder). 227+233+174+174+174 = 982.
LIVE_DISTORTION_FOLDERS: Tuple[Tuple[str, int], ...] = (
    ("jp2k", 227),
    ("jpeg", 233),
    ("wn", 174),
    ("gblur", 174),
    ("fastfading", 174),
)

#: CSIQ: canonical distortion name (as the DMOS spreadsheet's ``dst_type``
#: column writes it) -> (folder under ``dst_imgs/``, tag in the file name
#: ``<image>.<tag>.<level>.png``). Spreadsheet names are matched after
#: lower-casing and removing non-alphanumerics, see ``CSIQ_TYPE_ALIASES``.
CSIQ_DISTORTIONS: Dict[str, Tuple[str, str]] = {
    "noise": ("awgn", "AWGN"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "fnoise": ("fnoise", "fnoise"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
}

#: squashed spelling (lower case, alphanumerics only) -> canonical CSIQ name
CSIQ_TYPE_ALIASES: Dict[str, str] = {
    "noise": "noise",
    "awgn": "noise",
    "whitenoise": "noise",
    "jpeg": "jpeg",
    "jpeg2000": "jpeg 2000",
    "jp2k": "jpeg 2000",
    "fnoise": "fnoise",
    "1fnoise": "fnoise",
    "pinknoise": "fnoise",
    "blur": "blur",
    "gblur": "blur",
    "gaussianblur": "blur",
    "contrast": "contrast",
    "contrastdecrement": "contrast",
}


# --- the registry ------------------------------------------------------------

_LIVE_LICENSE = (
    "Copyright The University of Texas at Austin (LIVE). Free for research use; the copyright "
    "notice must accompany every copy and publications must acknowledge LIVE and cite the papers. "
    "Summary only: read the notice shipped with the release."
)

DATASET_REGISTRY: Dict[str, IQADatasetFacts] = {}


def _register(facts: IQADatasetFacts, *aliases: str) -> None:
    DATASET_REGISTRY[facts.name] = facts
    for alias in (facts.name, facts.display_name, facts.pyiqa_name or "", *aliases):
        if alias:
            _ALIASES[_squash(alias)] = facts.name


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", str(name).lower())


_ALIASES: Dict[str, str] = {}

_register(
    IQADatasetFacts(
        name="livec",
        display_name="LIVE In the Wild Image Quality Challenge (CLIVE)",
        score_kind="MOS",
        mos_range=(0.0, 100.0),
        higher_is_better=True,
        num_images=1162,
        num_references=None,
        synthetic=False,
        group_splits_by_reference=False,
        citation_key="ghadiyaram2016massive",
        citation=(
            "D. Ghadiyaram and A. C. Bovik, \"Massive Online Crowdsourced Study of Subjective and "
            "Objective Picture Quality\", IEEE Transactions on Image Processing 25(1):372-387, 2016."
        ),
        bibtex=(
            "@article{ghadiyaram2016massive,\n"
            "  title={Massive Online Crowdsourced Study of Subjective and Objective Picture Quality},\n"
            "  author={Ghadiyaram, Deepti and Bovik, Alan C.},\n"
            "  journal={IEEE Transactions on Image Processing},\n"
            "  volume={25}, number={1}, pages={372--387}, year={2016}\n"
            "}"
        ),
        license_note=_LIVE_LICENSE,
        homepage="https://live.ece.utexas.edu/research/ChallengeDB/index.html",
        pyiqa_name="LIVEChallengeDataset",
        notes=(
            "1169 entries in the .mat files; the first 7 (t1.bmp..t7.bmp, in Images/trainingImages/) "
            "are the rater-training images and are excluded, leaving 1162. MOS 0-100 "
            "(observed about 3-92). Sure."
        ),
    ),
    "clive", "livechallenge", "live_challenge", "livewild", "live-itw", "challengedb",
)

_register(
    IQADatasetFacts(
        name="koniq10k",
        display_name="KonIQ-10k",
        score_kind="MOS",
        mos_range=(1.0, 5.0),
        higher_is_better=True,
        num_images=10073,
        synthetic=False,
        citation_key="hosu2020koniq",
        citation=(
            "V. Hosu, H. Lin, T. Sziranyi and D. Saupe, \"KonIQ-10k: An Ecologically Valid Database "
            "for Deep Learning of Blind Image Quality Assessment\", IEEE Transactions on Image "
            "Processing 29:4041-4056, 2020."
        ),
        bibtex=(
            "@article{hosu2020koniq,\n"
            "  title={KonIQ-10k: An Ecologically Valid Database for Deep Learning of Blind Image Quality Assessment},\n"
            "  author={Hosu, Vlad and Lin, Hanhe and Sziranyi, Tamas and Saupe, Dietmar},\n"
            "  journal={IEEE Transactions on Image Processing},\n"
            "  volume={29}, pages={4041--4056}, year={2020}\n"
            "}"
        ),
        license_note=(
            "Images are Flickr photos (YFCC100M) under Creative Commons licences; scores released by "
            "the University of Konstanz for research. Summary only: check the release terms."
        ),
        homepage="http://database.mmsp-kn.de/koniq-10k-database.html",
        pyiqa_name="KonIQ10kDataset",
        pyiqa_mos_range=(0.0, 100.0),
        notes=(
            "koniq10k_scores_and_distributions.csv: MOS on the 1-5 ACR scale (loaded as `mos`), "
            "MOS_zscore rescaled to 0-100 (kept as `mos_zscore`). pyiqa's meta-info `mos` column is "
            "the 0-100 one. Sure."
        ),
    ),
    "koniq", "koniq-10k",
)

_register(
    IQADatasetFacts(
        name="kadid10k",
        display_name="KADID-10k",
        score_kind="MOS",
        mos_range=(1.0, 5.0),
        higher_is_better=True,
        num_images=10125,
        num_references=81,
        synthetic=True,
        group_splits_by_reference=True,
        citation_key="lin2019kadid",
        citation=(
            "H. Lin, V. Hosu and D. Saupe, \"KADID-10k: A Large-scale Artificially Distorted IQA "
            "Database\", 11th International Conference on Quality of Multimedia Experience (QoMEX), 2019."
        ),
        bibtex=(
            "@inproceedings{lin2019kadid,\n"
            "  title={KADID-10k: A Large-scale Artificially Distorted IQA Database},\n"
            "  author={Lin, Hanhe and Hosu, Vlad and Saupe, Dietmar},\n"
            "  booktitle={2019 Eleventh International Conference on Quality of Multimedia Experience (QoMEX)},\n"
            "  pages={1--3}, year={2019}\n"
            "}"
        ),
        license_note=(
            "Reference images from Pixabay (Pixabay licence); scores released by the University of "
            "Konstanz for research. Summary only: check the release terms."
        ),
        homepage="http://database.mmsp-kn.de/kadid-10k-database.html",
        pyiqa_name="KADID10kDataset",
        notes=(
            "dmos.csv's `dmos` column is, despite its name, a degradation-category-rating mean on a "
            "1-5 scale where HIGHER IS BETTER (pristine ~5). 81 references x 25 types x 5 levels. Sure."
        ),
    ),
    "kadid", "kadid-10k",
)

_register(
    IQADatasetFacts(
        name="tid2013",
        display_name="TID2013",
        score_kind="MOS",
        mos_range=(0.0, 9.0),
        higher_is_better=True,
        num_images=3000,
        num_references=25,
        synthetic=True,
        group_splits_by_reference=True,
        citation_key="ponomarenko2015tid2013",
        citation=(
            "N. Ponomarenko et al., \"Image database TID2013: Peculiarities, results and perspectives\", "
            "Signal Processing: Image Communication 30:57-77, 2015."
        ),
        bibtex=(
            "@article{ponomarenko2015tid2013,\n"
            "  title={Image database TID2013: Peculiarities, results and perspectives},\n"
            "  author={Ponomarenko, Nikolay and Jin, Lina and Ieremeiev, Oleg and Lukin, Vladimir and "
            "Egiazarian, Karen and Astola, Jaakko and Vozel, Benoit and Chehdi, Kacem and Carli, Marco and "
            "Battisti, Federica and Kuo, C.-C. Jay},\n"
            "  journal={Signal Processing: Image Communication},\n"
            "  volume={30}, pages={57--77}, year={2015}\n"
            "}"
        ),
        license_note="Free for research use; cite the TID2013 papers. Summary only: read the release readme.",
        homepage="http://www.ponomarenko.info/tid2013.htm",
        pyiqa_name="TID2013Dataset",
        notes=(
            "mos_with_names.txt: MOS 0-9 (observed about 0.2-7.2), higher better. 25 references x 24 "
            "types x 5 levels. File-name case is inconsistent in the release (i25 / I25, .bmp / .BMP). Sure."
        ),
    ),
    "tid", "tid-2013",
)

_register(
    IQADatasetFacts(
        name="csiq",
        display_name="CSIQ",
        score_kind="DMOS",
        mos_range=(0.0, 1.0),
        higher_is_better=False,
        num_images=866,
        num_references=30,
        synthetic=True,
        group_splits_by_reference=True,
        citation_key="larson2010most",
        citation=(
            "E. C. Larson and D. M. Chandler, \"Most apparent distortion: full-reference image quality "
            "assessment and the role of strategy\", Journal of Electronic Imaging 19(1):011006, 2010."
        ),
        bibtex=(
            "@article{larson2010most,\n"
            "  title={Most apparent distortion: full-reference image quality assessment and the role of strategy},\n"
            "  author={Larson, Eric C. and Chandler, Damon M.},\n"
            "  journal={Journal of Electronic Imaging},\n"
            "  volume={19}, number={1}, pages={011006}, year={2010}\n"
            "}"
        ),
        license_note="Released by the authors for research; cite Larson & Chandler 2010. Summary only.",
        homepage="https://s2.smu.edu/~eclarson/csiq.html",
        pyiqa_name="CSIQDataset",
        notes=(
            "DMOS 0-1, LOWER IS BETTER. 30 references x 6 types (noise, jpeg, jpeg 2000, fnoise, blur: "
            "5 levels; contrast: 3-4 levels) = 866. Sure of range/direction/counts; the exact dst_type "
            "spellings are matched loosely."
        ),
    ),
)

_register(
    IQADatasetFacts(
        name="live",
        display_name="LIVE Image Quality Assessment Database Release 2",
        score_kind="DMOS",
        mos_range=(0.0, 100.0),
        higher_is_better=False,
        num_images=779,
        num_references=29,
        synthetic=True,
        group_splits_by_reference=True,
        citation_key="sheikh2006statistical",
        citation=(
            "H. R. Sheikh, M. F. Sabir and A. C. Bovik, \"A Statistical Evaluation of Recent Full "
            "Reference Image Quality Assessment Algorithms\", IEEE Transactions on Image Processing "
            "15(11):3440-3451, 2006."
        ),
        bibtex=(
            "@article{sheikh2006statistical,\n"
            "  title={A Statistical Evaluation of Recent Full Reference Image Quality Assessment Algorithms},\n"
            "  author={Sheikh, Hamid R. and Sabir, Muhammad F. and Bovik, Alan C.},\n"
            "  journal={IEEE Transactions on Image Processing},\n"
            "  volume={15}, number={11}, pages={3440--3451}, year={2006}\n"
            "}"
        ),
        license_note=_LIVE_LICENSE,
        homepage="https://live.ece.utexas.edu/research/quality/subjective.htm",
        pyiqa_name="LIVEIQADataset",
        notes=(
            "dmos.mat: 982 scores = jp2k(227) + jpeg(233) + wn(174) + gblur(174) + fastfading(174), "
            "orgs==1 marks the 203 reference copies (779 distorted remain). DMOS nominally 0-100, "
            "LOWER IS BETTER; values slightly outside the nominal range are possible (normalize_mos clips). "
            "Sure of layout/direction; the nominal range is the usual convention."
        ),
    ),
    "liveiqa", "live-iqa", "live2", "liverelease2", "databaserelease2",
)

_register(
    IQADatasetFacts(
        name="spaq",
        display_name="SPAQ (Smartphone Photography Attribute and Quality)",
        score_kind="MOS",
        mos_range=(0.0, 100.0),
        higher_is_better=True,
        num_images=11125,
        synthetic=False,
        citation_key="fang2020perceptual",
        citation=(
            "Y. Fang, H. Zhu, Y. Zeng, K. Ma and Z. Wang, \"Perceptual Quality Assessment of Smartphone "
            "Photography\", IEEE/CVF CVPR, pp. 3677-3686, 2020."
        ),
        bibtex=(
            "@inproceedings{fang2020perceptual,\n"
            "  title={Perceptual Quality Assessment of Smartphone Photography},\n"
            "  author={Fang, Yuming and Zhu, Hanwei and Zeng, Yan and Ma, Kede and Wang, Zhou},\n"
            "  booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},\n"
            "  pages={3677--3686}, year={2020}\n"
            "}"
        ),
        license_note="Released by the authors for research. Summary only: check the release terms.",
        homepage="https://github.com/h4nwei/SPAQ",
        pyiqa_name="SPAQDataset",
        notes=(
            "Annotations/MOS and Image attribute scores.xlsx: MOS 0-100, higher better, plus five "
            "attribute scores (0-100). Images in TestImage/ (full resolution). Sure."
        ),
    ),
)


def list_datasets() -> Tuple[str, ...]:
    """Registry keys of all known datasets."""
    return tuple(DATASET_REGISTRY)


def dataset_facts(name: Union[str, IQADatasetFacts]) -> IQADatasetFacts:
    """Return the registry facts for ``name`` (case/punctuation-insensitive, aliases accepted).

    >>> dataset_facts("KADID-10k").higher_is_better
    True
    >>> dataset_facts("csiq").lower_better
    True
    """
    if isinstance(name, IQADatasetFacts):
        return name
    key = _ALIASES.get(_squash(name))
    if key is None:
        raise KeyError(
            f"unknown IQA dataset {name!r}; known: {', '.join(DATASET_REGISTRY)}"
        )
    return DATASET_REGISTRY[key]


def facts_for_pyiqa_meta_file(file_name: str) -> Optional[IQADatasetFacts]:
    """Guess the dataset from a pyiqa meta-info file name (``meta_info_<Class>.csv``)."""
    m = re.search(r"meta_info_(.+?)\.(csv|txt)$", str(file_name).replace("\\", "/").split("/")[-1])
    if not m:
        return None
    for facts in DATASET_REGISTRY.values():
        if facts.pyiqa_name and facts.pyiqa_name.lower() == m.group(1).lower():
            return facts
    return None


def minmax_scale(values) -> np.ndarray:
    """``(v - min) / (max - min)`` over ``values`` (float64): the scaling of datasets whose range is unknown, and
    the released GRMP-IQA code's label scaling within a subset. Constant values give 0.5 (the released code
    divides by zero there)."""
    values = np.asarray(values, dtype=np.float64)
    low, high = float(np.min(values)), float(np.max(values))
    return (values - low) / (high - low) if high > low else np.full_like(values, 0.5)


def normalize_mos(
    values: Union[Iterable[float], np.ndarray, float],
    name: Union[str, IQADatasetFacts],
    *,
    mos_range: Optional[Sequence[float]] = None,
    higher_is_better: Optional[bool] = None,
    clip: bool = True,
) -> np.ndarray:
    """Map published scores of dataset ``name`` to ``[0, 1]`` with higher = better.

    ``(v - low) / (high - low)`` using the registry's nominal ``mos_range``,
    then ``1 - x`` for lower-is-better (DMOS) datasets. With ``clip`` (the
    default) values outside the nominal range are clipped to ``[0, 1]``.
    ``mos_range`` / ``higher_is_better`` override the registry facts (needed
    for datasets the registry does not know). NaN stays NaN.
    """
    facts = dataset_facts(name) if not isinstance(name, IQADatasetFacts) else name
    lo_hi = mos_range if mos_range is not None else facts.mos_range
    hib = higher_is_better if higher_is_better is not None else facts.higher_is_better
    if lo_hi is None or hib is None:
        raise ValueError(
            f"cannot normalize scores of {facts.name!r}: the score range and direction are unknown; "
            "pass mos_range=(low, high) and higher_is_better=..."
        )
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise ValueError(f"invalid mos_range {lo_hi!r}")
    x = (np.asarray(values, dtype=np.float64) - lo) / (hi - lo)
    if not hib:
        x = 1.0 - x
    if clip:
        x = np.clip(x, 0.0, 1.0)
    return x
