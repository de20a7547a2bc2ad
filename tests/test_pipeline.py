"""The "image-quality-assessment" pipeline: with the package (registered, no remote code), and without it (the copy
saved next to the weights, from a directory and from the Hub stand-in after a push), scoring as `model.predict`."""

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import venv

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

from conftest import hub_env, save_tiny_model
from grmp_iqa_hf import GRMPIQAModel, ImageLoadError, MPIQEModel
from grmp_iqa_hf.modeling.pipeline_iqa import PIPELINE_TASK, ImageQualityAssessmentPipeline

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_PHOTOS = 8
REPO_NAME = "pipeline-tiny"
MPIQE_KEYS = {"score", "scene", "scene_score", "distortion", "distortion_score"}


def _shift_prompts(model):
    # a stand-in for training: random prompts score every photo about alike, shifted ones tell them apart
    with torch.no_grad():
        for bank in model.prompt_banks().values():
            bank.context.ctx.normal_(std=1.0, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """`{"grmp": (model, dir), "mpiqe": (model, dir)}`: tiny models saved with `save_pretrained`."""
    root = tmp_path_factory.mktemp("pipeline")
    return {name: save_tiny_model(cls, root / name, adjust=_shift_prompts)
            for name, cls in (("grmp", GRMPIQAModel), ("mpiqe", MPIQEModel))}


@pytest.fixture
def photos(clive_dir):
    return [str(p) for p in sorted((clive_dir / "images").glob("*.JPG"))[:NUM_PHOTOS]]


def _expected_mpiqe(model, photos):
    """`(scene, scene_score, distortion, distortion_score)` per photo from the model's own outputs."""
    with torch.no_grad():
        out = model(**model.image_processor(photos, return_tensors="pt"))
    scene, distortion = out.scene_logits.sigmoid(), out.distortion_logits.softmax(-1)
    classes = model.config.scene_classes, model.config.distortion_classes
    return [(classes[0][int(s.argmax())], s.max().item(), classes[1][int(d.argmax())], d.max().item())
            for s, d in zip(scene, distortion)]


# ---------------------------------------------------------------------------- with the package


@pytest.mark.parametrize("name", ["grmp", "mpiqe"])
def test_pipeline_scores_as_predict_without_remote_code(saved, photos, name):
    model, path = saved[name]
    config = json.loads((path / "config.json").read_text())
    assert config["custom_pipelines"] == {PIPELINE_TASK: {"impl": "pipeline_iqa.ImageQualityAssessmentPipeline",
                                                          "pt": ["AutoModel"], "type": "image"}}
    assert (path / "pipeline_iqa.py").is_file()
    assert not hasattr(model.config, "custom_pipelines")  # written to config.json only

    pipe = pipeline(PIPELINE_TASK, model=str(path))  # registered locally: no trust_remote_code
    assert type(pipe) is ImageQualityAssessmentPipeline and type(pipe.model) is type(model)
    assert type(pipe.image_processor).__name__ == "IQAImageProcessor"
    expected = model.predict(photos)
    assert np.ptp(expected) > 1e-4, expected  # the photos are told apart
    results = pipe(photos)
    assert isinstance(results, list) and len(results) == NUM_PHOTOS
    assert all(isinstance(r["score"], float) for r in results)
    np.testing.assert_allclose([r["score"] for r in results], expected, rtol=0, atol=1e-6)
    batched = pipe(photos, batch_size=3)  # 3 + 3 + 2
    np.testing.assert_allclose([r["score"] for r in batched], expected, rtol=0, atol=1e-6)

    if name == "mpiqe":
        for result, batch_result, (scene, p_scene, distortion, p_distortion) in zip(
                results, batched, _expected_mpiqe(model, photos)):
            assert set(result) == set(batch_result) == MPIQE_KEYS
            assert result["scene"] == batch_result["scene"] == scene
            assert result["distortion"] == batch_result["distortion"] == distortion
            assert abs(result["scene_score"] - p_scene) < 1e-6 and abs(result["distortion_score"] - p_distortion) < 1e-6
            assert abs(batch_result["scene_score"] - p_scene) < 1e-6
    else:
        assert all(set(r) == {"score"} for r in results)


def test_inputs_single_results_dtype_and_errors(saved, photos, tmp_path):
    model, path = saved["grmp"]
    pipe = pipeline(PIPELINE_TASK, model=str(path), device="cpu")
    expected = model.predict(photos[:2])
    image = Image.open(photos[0])
    single = pipe(photos[0])
    assert isinstance(single, dict) and abs(single["score"] - expected[0]) < 1e-6
    mixed = pipe([image, np.asarray(Image.open(photos[1])), photos[0]], batch_size=2)
    np.testing.assert_allclose([r["score"] for r in mixed], [expected[0], expected[1], expected[0]], rtol=0, atol=1e-6)
    assert pipe([]) == []

    # the model's processor serves when the checkpoint has none
    instance = ImageQualityAssessmentPipeline(model=model, device="cpu")
    assert abs(instance(photos[0])["score"] - expected[0]) < 1e-6

    half = pipeline(PIPELINE_TASK, model=str(path), dtype=torch.bfloat16)
    assert half.model.dtype == torch.bfloat16
    low = half(photos[:2], batch_size=2)
    assert all(isinstance(r["score"], float) and 0.0 <= r["score"] <= 1.0 for r in low)
    np.testing.assert_allclose([r["score"] for r in low], expected, rtol=0, atol=0.05)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(open(photos[0], "rb").read()[:2000])
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        pipe([photos[0], str(broken)])
    with pytest.raises(ImageLoadError, match=r"numpy array.*shape"):
        pipe(np.zeros((4, 4, 2), dtype=np.uint8))


# ---------------------------------------------------------------------------- without the package

# In a virtual environment that sees the project's dependencies but not the package (its site-packages names
# .venv's as a plain path, so the editable install's .pth hook is never run). argv: grmp dir, mpiqe dir, repo id,
# a file that appears once the repo is pushed, out.json, photos...
NO_PACKAGE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, os, sys, time
    from transformers import pipeline

    assert importlib.util.find_spec("grmp_iqa_hf") is None, "the package is importable"
    grmp, mpiqe, repo, pushed, out, photos = *sys.argv[1:6], sys.argv[6:]
    results = {}
    for name, source in (("grmp", grmp), ("mpiqe", mpiqe), ("hub", repo)):
        while source == repo and not os.path.exists(pushed):
            time.sleep(0.2)
        pipe = pipeline(model=source, trust_remote_code=True)  # the task comes from config.json
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
        results[name] = pipe(photos, batch_size=3)
    assert not [m for m in sys.modules if m.startswith("grmp_iqa_hf")]
    json.dump(results, open(out, "w"))
    """
)


def _venv_without_the_package(root):
    venv.create(root, with_pip=False, symlinks=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)})
    deps = sysconfig.get_path("purelib")  # this interpreter's: torch, transformers, ... and the editable hook
    with open(os.path.join(purelib, "dependencies.pth"), "w") as f:
        f.write(deps + "\n")  # a path line: added to sys.path, its .pth files are not processed
    return os.path.join(root, "bin", "python")


def _start(args, env, cwd):
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process, name):
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, f"{name}:\n{stdout[-1000:]}\n{stderr[-4000:]}"


@pytest.mark.slow
def test_without_the_package_from_a_directory_and_from_the_hub(saved, photos, hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home")
    # the push and the package-less scoring run side by side (each spends seconds importing torch); the scoring
    # reaches the Hub part once `pushed` exists
    push = _start([sys.executable, "-m", "grmp_iqa_hf.cli", "push", str(saved["grmp"][1]), "--repo-id", REPO_NAME,
                   "--quiet"], env, tmp_path)
    script, pushed, out = tmp_path / "no_package.py", tmp_path / "pushed", tmp_path / "out.json"
    script.write_text(NO_PACKAGE_SCRIPT)
    scoring = _start([_venv_without_the_package(tmp_path / "venv"), str(script), str(saved["grmp"][1]),
                      str(saved["mpiqe"][1]), f"local-tester/{REPO_NAME}", str(pushed), str(out), *photos],
                     env, tmp_path)
    try:
        _finish(push, "grmp-iqa push")
    finally:
        pushed.touch()  # (a failed push: the scoring then fails too, and is waited for)
        _finish(scoring, "scoring without the package")
    remote = hub.files(f"local-tester/{REPO_NAME}")
    assert "pipeline_iqa.py" in remote and "image_loading.py" in remote
    assert PIPELINE_TASK in json.loads(remote["config.json"])["custom_pipelines"]
    results = json.loads(out.read_text())

    grmp = saved["grmp"][0].predict(photos)
    for name in ("grmp", "hub"):
        np.testing.assert_allclose([r["score"] for r in results[name]], grmp, rtol=0, atol=1e-6)
    mpiqe = saved["mpiqe"][0]
    np.testing.assert_allclose([r["score"] for r in results["mpiqe"]], mpiqe.predict(photos), rtol=0, atol=1e-6)
    for result, (scene, p_scene, distortion, p_distortion) in zip(results["mpiqe"], _expected_mpiqe(mpiqe, photos)):
        assert (result["scene"], result["distortion"]) == (scene, distortion)
        assert abs(result["scene_score"] - p_scene) < 1e-6 and abs(result["distortion_score"] - p_distortion) < 1e-6
