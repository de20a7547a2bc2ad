"""ONNX export (`grmp_iqa_hf.export`): the exported image path under onnxruntime equals the torch model, the
preprocessing recorded next to it round-trips, and a fixed-batch export says so at another batch size.

Each exporter is exercised once (export is the slow part: `torch.export` takes ~15 CPU seconds even for the
tiny model): GRMP-IQA through the legacy TorchScript exporter, MP-IQE through the dynamo one (the default)."""

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")
pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
pytest.importorskip("onnxscript", reason="the [onnx] extra is not installed")

from conftest import save_tiny_model, write_random_images  # noqa: E402
from grmp_iqa_hf import GRMPIQAModel, IQAImageProcessor, MPIQEModel  # noqa: E402
from grmp_iqa_hf.export import OnnxScorer, export_onnx, preprocessor_config_path  # noqa: E402
from grmp_iqa_hf.models import load_model  # noqa: E402

TOLERANCE = 1e-4
CASES = {  # name -> (model class, exporter, preprocessing changes: the recorded file must carry them)
    "grmp_iqa": (GRMPIQAModel, "torchscript", {"resize_mode": "shorter_side", "resample": "bicubic"}),
    "mp_iqe": (MPIQEModel, "dynamo", {}),
}


def _adjust(changes):
    def adjust(model):
        with torch.no_grad():  # a stand-in for training: scores must not be those of the initial prompts
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        model.config.update(changes)
    return adjust


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    """(model as loaded from its folder, the .onnx path): each tiny model saved, then exported from its folder
    with a dynamic batch axis."""
    model_class, exporter, changes = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1)
        _, model_dir = save_tiny_model(model_class, root / "model", adjust=_adjust(changes))
        path = export_onnx(model_dir, root / "onnx" / "model.onnx", dynamic_batch=True, exporter=exporter)
    finally:
        torch.set_num_threads(threads)
    return load_model(str(model_dir)), path


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_onnx_equals_torch_on_clive_photos_at_batch_sizes_1_and_5(exported, clive_dir, one_thread):
    model, path = exported
    files = [str(p) for p in sorted((clive_dir / "images").glob("*.JPG"))[:8]]
    assert len(files) == 8
    pixel_values = model.image_processor(files, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = model(pixel_values=pixel_values)
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    assert names[0] == "scores" and len(names) == (3 if model.config.model_type == "mp_iqe" else 2)
    for batch_size in (1, 5):
        parts = [session.run(None, {"pixel_values": pixel_values[i : i + batch_size].numpy()})
                 for i in range(0, len(files), batch_size)]
        for k, name in enumerate(names):
            got = np.concatenate([part[k] for part in parts])
            expected = getattr(reference, name).numpy()
            assert got.shape == expected.shape, name
            np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0, err_msg=f"{name}, batch {batch_size}")
    # the runner preprocesses from the recorded metadata alone, like predict
    scorer = OnnxScorer(path, threads=1)
    assert scorer.fixed_batch_size is None
    np.testing.assert_allclose(scorer.score(files, batch_size=5), model.predict(files, batch_size=5),
                               atol=TOLERANCE, rtol=0)


def test_recorded_preprocessing_round_trips(exported):
    model, path = exported
    expected = model.image_processor.to_dict()
    assert preprocessor_config_path(path) == path.parent / "preprocessor_config.json"
    assert IQAImageProcessor.from_pretrained(str(path.parent)).to_dict() == expected
    meta = dict(_session(path).get_modelmeta().custom_metadata_map)
    assert json.loads(meta["preprocessor_config"]) == expected
    assert meta["model_type"] == model.config.model_type and meta["batch_size"] == "dynamic"
    assert meta["source"] == str(model.config.name_or_path)
    assert list(json.loads(meta["inputs"])) == ["pixel_values"]
    assert list(json.loads(meta["outputs"]))[0] == "scores"
    if model.config.model_type == "grmp_iqa":  # the changed preprocessing is what was recorded
        assert expected["size"] == {"shortest_edge": model.config.resize_size} and expected["resample"] == "bicubic"


def test_fixed_batch_export_refuses_another_batch_size_clearly(tmp_path, one_thread):
    torch.manual_seed(0)
    model, _ = save_tiny_model(GRMPIQAModel, tmp_path / "model")
    path = export_onnx(model, tmp_path / "fixed" / "model.onnx", batch_size=2, exporter="torchscript", opset=17)
    import onnx

    assert [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert "text_features" not in vars(model) and not model.training  # the model is left as it was
    scorer = OnnxScorer(path, threads=1)
    assert scorer.fixed_batch_size == 2 and scorer.metadata["batch_size"] == "2"
    side = model.config.image_size
    with pytest.raises(ValueError, match="exactly 2 images, got 3.*--dynamic-batch"):
        scorer.run(np.zeros((3, 3, side, side), np.float32))
    # score() runs batches of 2, padding the last one
    (tmp_path / "img").mkdir()
    files = [str(f) for f in write_random_images(tmp_path / "img", 3, lambda i: 50 + 10 * i, 80)[0]]
    np.testing.assert_allclose(scorer.score(files), model.predict(files), atol=TOLERANCE, rtol=0)
    # a second model with other preprocessing may not replace the first one's preprocessor_config.json
    model.config.resample = "bicubic"
    with pytest.raises(FileExistsError, match="different preprocessing, used by model.onnx"):
        export_onnx(model, path.parent / "other.onnx", exporter="torchscript")
    assert not (path.parent / "other.onnx").exists()


def test_the_export_command(tmp_path, capsys, one_thread):
    """`grmp-iqa export MODEL --format onnx --output PATH`: writes the model and its preprocessing, scoring as the
    model does; a model that does not exist is a usage error (exit 2) and writes nothing."""
    from grmp_iqa_hf.cli import main

    model, _ = save_tiny_model(GRMPIQAModel, tmp_path / "model")
    output = tmp_path / "onnx" / "model.onnx"
    assert main(["export", str(tmp_path / "model"), "--format", "onnx", "--output", str(output),
                 "--exporter", "torchscript", "--dynamic-batch"]) == 0
    assert str(output) in capsys.readouterr().out and (output.parent / "preprocessor_config.json").is_file()
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(pixel_values=pixels).scores.numpy()
    np.testing.assert_allclose(OnnxScorer(output).run(pixels.numpy())["scores"], expected, rtol=0, atol=1e-5)
    assert main(["export", str(tmp_path / "nothing"), "--output", str(tmp_path / "x" / "m.onnx")]) == 2
    assert "nothing" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_bad_inputs_fail_clearly(tmp_path, monkeypatch):
    from grmp_iqa_hf.models import ModelNotFoundError

    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        export_onnx(missing, tmp_path / "out" / "model.onnx")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="opset"):
        export_onnx(missing, tmp_path / "out" / "model.onnx", opset=0)
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        OnnxScorer(tmp_path / "missing.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"grmp-iqa-hf\[onnx\]"):
        OnnxScorer(tmp_path / "missing.onnx")
