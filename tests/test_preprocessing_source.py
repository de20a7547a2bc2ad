"""One source of truth for preprocessing: a model's `preprocessor_config.json` decides how images are prepared,
for every entry point alike: `from_pretrained(...).predict`, `grmp-iqa score`, `pipeline("image-quality-assessment")`
and `AutoImageProcessor`. A crop that does not fit the backbone is refused by all four with the same message."""

import json
import logging

import numpy as np
import pytest
import torch

from conftest import save_tiny_model, write_random_images
from grmp_iqa_hf import GRMPIQAModel, IQAImageProcessor
from grmp_iqa_hf.cli import main
from grmp_iqa_hf.modeling.image_processing_iqa import crop_mismatch_message

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model (crop 64, square resize to 70) and a few photo-shaped images (not square, so the resize mode
    matters)."""
    root = tmp_path_factory.mktemp("source")
    model, path = save_tiny_model(GRMPIQAModel, root / "model")
    (root / "images").mkdir()
    images, _ = write_random_images(root / "images", 3, lambda i: 90 + 17 * i, 150, seed=3)
    return model, path, [str(p) for p in images]


def edit_processor_file(model_dir, edit):
    path = model_dir / "preprocessor_config.json"
    settings = json.loads(path.read_text())
    edit(settings)
    path.write_text(json.dumps(settings, indent=2))


def scores_with(model, processor, images):
    """The reference: `model` on the pixel values of `processor` (independent of any loading path)."""
    with torch.no_grad():
        return model(pixel_values=processor(images, return_tensors="pt")["pixel_values"]).scores.numpy()


def entry_point_scores(model_dir, images, tmp_path):
    """Scores of the same images through the four entry points."""
    from transformers import AutoImageProcessor, pipeline

    predict = GRMPIQAModel.from_pretrained(model_dir).predict(images)
    out = tmp_path / "scores.json"
    assert main(["score", *images, "--model", str(model_dir), "--output", str(out), "--quiet"]) == 0
    cli = np.array([row["score"] for row in json.loads(out.read_text())["predictions"]])
    pipe = pipeline("image-quality-assessment", model=str(model_dir))
    piped = np.array([result["score"] for result in pipe(images)])
    processor = AutoImageProcessor.from_pretrained(model_dir)
    auto = scores_with(GRMPIQAModel.from_pretrained(model_dir), processor, images)
    return {"predict": predict, "cli": cli, "pipeline": piped, "AutoImageProcessor": auto}


@pytest.mark.parametrize("how", ["standard size", "older resize_mode key"])
def test_every_entry_point_follows_an_edited_resize_mode(saved, tmp_path, how, caplog):
    model, original, images = saved
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    if how == "standard size":
        edit_processor_file(model_dir, lambda s: s.update(size={"shortest_edge": 70}))
    else:  # a hand edit in the older schema's words, on top of the standard file
        edit_processor_file(model_dir, lambda s: s.update(resize_mode="shorter_side"))
    expected = scores_with(model, IQAImageProcessor(crop_size=64, resize_size=70, resize_mode="shorter_side"), images)
    before = scores_with(model, IQAImageProcessor(crop_size=64, resize_size=70, resize_mode="square"), images)
    assert np.abs(expected - before).max() > 1e-4  # the edit changes the scores: the check below can fail
    with caplog.at_level(logging.WARNING):
        got = entry_point_scores(model_dir, images, tmp_path)
    for name, scores in got.items():
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6, err_msg=name)
    assert "preprocessor_config.json wins" in caplog.text and "resize_mode='shorter_side'" in caplog.text
    # config.json keeps its own copy, re-aligned when the loaded model is saved again
    again = GRMPIQAModel.from_pretrained(model_dir)
    assert again.config.resize_mode == "shorter_side" and again.image_processor.size == {"shortest_edge": 70}
    again.save_pretrained(tmp_path / "resaved")
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["resize_mode"] == "shorter_side"


def test_normalisation_and_resampling_edits_follow_too(saved, tmp_path):
    model, _, images = saved
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    edit_processor_file(model_dir, lambda s: s.update(resample="bicubic", do_normalize=False))
    expected = scores_with(model, IQAImageProcessor(crop_size=64, resize_size=70, resample="bicubic",
                                                    do_normalize=False), images)
    loaded = GRMPIQAModel.from_pretrained(model_dir)
    np.testing.assert_allclose(loaded.predict(images), expected, rtol=0, atol=1e-6)
    assert loaded.config.image_mean == [0.0] * 3 and loaded.config.image_normalization == "custom"


def test_an_edit_of_config_json_alone_does_not_change_the_preprocessing(saved, tmp_path, caplog):
    """preprocessor_config.json wins, and the load says so."""
    model, _, images = saved
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["resize_mode"] = "shorter_side"
    (model_dir / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        loaded = GRMPIQAModel.from_pretrained(model_dir)
    assert loaded.config.resize_mode == "square"
    assert "preprocessor_config.json wins" in caplog.text and "config.json: 'shorter_side'" in caplog.text
    np.testing.assert_allclose(loaded.predict(images), model.predict(images), rtol=0, atol=1e-6)


def test_every_entry_point_refuses_a_crop_that_does_not_fit(saved, tmp_path, capsys):
    from transformers import AutoImageProcessor, pipeline

    model, _, images = saved
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    edit_processor_file(model_dir, lambda s: s.update(crop_size={"height": 48, "width": 48}))
    message = crop_mismatch_message(48, 64)
    assert "preprocessor_config.json" in message and "64x64" in message
    refusals = {
        "from_pretrained": lambda: GRMPIQAModel.from_pretrained(model_dir),
        "pipeline": lambda: pipeline("image-quality-assessment", model=str(model_dir)),
        "AutoImageProcessor": lambda: AutoImageProcessor.from_pretrained(model_dir),
    }
    for name, load in refusals.items():
        with pytest.raises(ValueError) as err:
            load()
        assert message in str(err.value), name
    assert main(["score", *images, "--model", str(model_dir), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_checkpoints_in_the_older_schema_load_unchanged(saved, tmp_path, caplog):
    """A preprocessor_config.json as this package wrote it before the standard schema (integer crop_size,
    resize_size, resize_mode): the same preprocessing, no warning, and AutoImageProcessor reads it."""
    from transformers import AutoImageProcessor

    model, _, images = saved
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    old = {"auto_map": {"AutoImageProcessor": "image_processing_iqa.IQAImageProcessor"}, "crop_size": 64,
           "do_normalize": True, "image_mean": list(model.config.image_mean), "image_processor_type":
           "IQAImageProcessor", "image_std": list(model.config.image_std), "resample": "bilinear",
           "resize_mode": "square", "resize_size": 70}
    (model_dir / "preprocessor_config.json").write_text(json.dumps(old, indent=2))
    with caplog.at_level(logging.WARNING):
        loaded = GRMPIQAModel.from_pretrained(model_dir)
    assert "disagree" not in caplog.text
    assert loaded.config.image_processor_kwargs() == model.config.image_processor_kwargs()
    np.testing.assert_allclose(loaded.predict(images), model.predict(images), rtol=0, atol=0)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    assert processor.to_dict() == model.image_processor.to_dict() | {"auto_map": processor.auto_map}
