"""The one batch-scoring loop (`modeling.prediction.batched_outputs`) behind `predict`, `score_files` and
`score_rows`: the same scores whichever way in, in input order, the model's mode restored."""

import numpy as np
import pytest
import torch

from conftest import write_random_images
from grmp_iqa_hf.models import build_model
from grmp_iqa_hf.modeling.prediction import batched_outputs
from grmp_iqa_hf.scoring import score_files, score_rows
from grmp_iqa_hf.training.data import ImageCache

pytestmark = pytest.mark.usefixtures("one_thread")
ALL_FIELDS = ("scores", "scene_logits", "distortion_logits")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    paths, _ = write_random_images(tmp_path_factory.mktemp("images"), 7, lambda i: 40 + 5 * i, 56)
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def mpiqe():
    return build_model("tiny-random", method="mp_iqe", seed=2, num_visual_prompts=3)


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_predict_score_files_and_score_rows_agree(mpiqe, files, tmp_path, batch_size):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    mpiqe.train()
    expected = mpiqe.predict(files, batch_size=batch_size)
    assert mpiqe.training and expected.dtype == np.float32 and expected.shape == (7,)
    rows = score_files(mpiqe, files[:2] + [str(broken)] + files[2:], batch_size=batch_size, progress=False)
    assert [r.path for r in rows] == files[:2] + [str(broken)] + files[2:]
    assert rows[2].score is None and rows[2].error
    assert [r.score for r in rows if r.score is not None] == expected.tolist()  # bit for bit
    assert mpiqe.training
    cache = ImageCache(mpiqe.image_processor, files, progress=False)
    order = [5, 1, 6, 0]
    out = score_rows(mpiqe, cache, order, batch_size=batch_size, fields=ALL_FIELDS)
    assert mpiqe.training
    assert out["scores"].dtype == np.float64 and out["scene_logits"].shape == (4, 9)
    assert out["distortion_logits"].shape == (4, 11)
    with torch.no_grad():
        direct = mpiqe.eval()(pixel_values=cache.batch(order))
    mpiqe.train()
    for field in ALL_FIELDS:
        np.testing.assert_allclose(out[field], getattr(direct, field).double().numpy(), rtol=0, atol=1e-5)  # batch-size rounding


def test_batched_outputs_keeps_item_order_and_skips_empty_chunks(mpiqe, files):
    processor = mpiqe.image_processor
    from grmp_iqa_hf.modeling.image_processing_iqa import load_image

    def load_batch(chunk):  # the chunk of odd items loads nothing: as if every file in it was unreadable
        good = [i for i in chunk if i != 3]
        return processor([load_image(files[i]) for i in good], return_tensors="pt")["pixel_values"] if good else None

    out = batched_outputs(mpiqe, load_batch, [0, 1, 2, 3, 4], batch_size=1, fields=("scores", "scene_logits"))
    assert out["scores"].shape == (4,) and out["scene_logits"].shape == (4, 9)
    expected = mpiqe.predict([files[i] for i in (0, 1, 2, 4)], batch_size=1)
    assert out["scores"].float().numpy().tolist() == expected.tolist()
    with pytest.raises(ValueError, match="no output 'nope'"):
        batched_outputs(mpiqe, load_batch, [0], fields=("nope",))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batched_outputs(mpiqe, load_batch, [0], batch_size=0)


def test_score_rows_of_nothing(mpiqe, files):
    cache = ImageCache(mpiqe.image_processor, files[:1], progress=False)
    assert score_rows(mpiqe, cache, [])["scores"].shape == (0,)
