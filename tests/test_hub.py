"""The Hub, end to end: `grmp-iqa push` and `push_to_hub` upload through the real `huggingface_hub` client
to a local stand-in server (tests/hub_stand_in.py), and `from_pretrained` / `AutoModel` with remote code /
`grmp-iqa score --model org/name` download from it; offline loading from the cache; model and dataset
cards; prompts-only checkpoints.

`huggingface_hub` reads `HF_ENDPOINT` when it is imported, so everything that talks to the stand-in runs
in a subprocess with the endpoint in its environment.
"""

import csv
import json
import os
import shutil
import sys
import textwrap
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from conftest import hub_env, run, write_random_images
from grmp_iqa_hf import GRMPIQAModel, MPIQEModel
from grmp_iqa_hf.cli import main
from grmp_iqa_hf.hub import render_dataset_card, render_model_card, report_results
from grmp_iqa_hf.hub.push import public_report
from grmp_iqa_hf.models import build_model
from grmp_iqa_hf.testing import tiny_clip

from test_modeling import BLOCK_PACKAGE_PREAMBLE

pytestmark = pytest.mark.usefixtures("one_thread")

# Scores image files with a model and its image processor loaded from a Hub id through remote code, with
# the package blocked: what a user without grmp-iqa-hf gets. argv: repo, revision|"", out.json, files...
REMOTE_SCORES_SCRIPT = BLOCK_PACKAGE_PREAMBLE + textwrap.dedent(
    """
    import json
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    repo, revision, out, files = sys.argv[1], sys.argv[2] or None, sys.argv[3], sys.argv[4:]
    model = AutoModel.from_pretrained(repo, revision=revision, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(repo, revision=revision, trust_remote_code=True)
    assert "grmp_iqa_hf" not in sys.modules
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        scores = [model(**processor(Image.open(f), return_tensors="pt")).scores.item() for f in files]
    json.dump(scores, open(out, "w"))
    """
)


def cli(args, env, ok=True):
    return run([sys.executable, "-m", "grmp_iqa_hf.cli", *args], env, ok=ok)


def remote_scores(repo, files, env, tmp_path, revision=None):
    script = tmp_path / "remote_scores.py"
    script.write_text(REMOTE_SCORES_SCRIPT)
    out = tmp_path / "remote_scores.json"
    run([sys.executable, str(script), repo, revision or "", str(out), *map(str, files)], env, cwd=tmp_path)
    return np.array(json.loads(out.read_text()))


def save_model(path, seed=0, method="grmp_iqa"):
    model = build_model("tiny-random", method=method, seed=seed, num_visual_prompts=4)
    with torch.no_grad():  # prompts away from their initial values, so versions differ visibly
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    paths, rng = write_random_images(folder, 8, lambda i: 40 + 6 * i, 72, lambda i: "png" if i % 2 else "jpg")
    rows = [[path.name, f"{rng.uniform(1, 100):.3f}"] for path in paths]
    with open(folder / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file_name", "mos"], *rows])
    return folder


def card_of(hub, repo, revision="main") -> ModelCard:
    return ModelCard(hub.files(repo, revision)["README.md"].decode())


# ---------------------------------------------------------------------------- the acceptance flow


@pytest.mark.slow
def test_evaluate_push_then_remote_code_and_offline_give_identical_scores(hub, labelled_folder, tmp_path):
    save_model(tmp_path / "model")
    report_path = tmp_path / "report.json"
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--data-dir", str(labelled_folder),
                 "--output", str(report_path), "--quiet"]) == 0
    report = json.loads(report_path.read_text())
    files = [p["path"] for p in report["predictions"]]
    expected = np.array([p["score"] for p in report["predictions"]])

    env = hub_env(hub, tmp_path / "hf_home")
    pushed = cli(["push", str(tmp_path / "model"), "--repo-id", "org/grmp-tiny", "--report", str(report_path),
                  "--dataset-id", "org/tiny-iqa"], env)
    assert "pushed" in pushed.stdout and "org/grmp-tiny@" in pushed.stdout

    remote = hub.files("org/grmp-tiny")
    for name in ("README.md", "config.json", "model.safetensors", "modeling_grmp_iqa.py", "modeling_prompted_clip.py",
                 "preprocessor_config.json", "image_processing_iqa.py", "tokenizer_config.json", "report.json"):
        assert name in remote, name
    assert "adapter_model.safetensors" not in remote
    card = card_of(hub, "org/grmp-tiny")
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers" and "image-quality-assessment" in meta["tags"]
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["org/tiny-iqa"]
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert {(r.metric_type, r.metric_name) for r in card.data.eval_results} <= set(HUB_METRICS)
    assert all(r.dataset_type == "org/tiny-iqa" for r in card.data.eval_results)
    assert values["SRCC"] == report["srcc"] and values["PLCC"] == report["plcc"]
    if report["plcc_logistic_fit"] == "ok":
        assert values["PLCC after logistic fit"] == report["plcc_logistic"]
    else:  # 8 images of noise for a tiny random model: the fit may well be degenerate
        assert "PLCC after logistic fit" not in values and report["plcc_logistic_fit_reason"] in card.text
    assert "GRMP-IQA" in card.text and "trust_remote_code=True" in card.text and "li2025grmpiqa" in card.text
    assert f"{report['srcc']:.4f}" in card.text
    published = json.loads(remote["report.json"])
    assert published["srcc"] == report["srcc"] and "data_dir" not in published
    assert all("path" not in p for p in published["predictions"])

    # a user without the package: remote code, from the stand-in
    before = len(hub.requests)
    scores = remote_scores("org/grmp-tiny", files, env, tmp_path)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    fetched = {path for method, path in hub.requests[before:] if method == "GET" and "/resolve/" in path}
    names = {p.rsplit("/", 1)[-1] for p in fetched}
    assert "model.safetensors" in names and "config.json" in names
    assert not names & {"README.md", "report.json", "tokenizer.json", "tokenizer_config.json"}, names

    # the second load: from the cache, with the Hub unreachable and offline mode on
    offline = hub_env(hub, tmp_path / "hf_home", HF_HUB_OFFLINE=1, HF_ENDPOINT="http://127.0.0.1:9")
    before = len(hub.requests)
    np.testing.assert_allclose(remote_scores("org/grmp-tiny", files, offline, tmp_path), expected, rtol=0, atol=1e-6)
    assert len(hub.requests) == before


@pytest.mark.slow
def test_score_from_hub_id_revision_pinning_and_branches(hub, labelled_folder, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home")
    first = save_model(tmp_path / "v1", seed=1)
    second = save_model(tmp_path / "v2", seed=2)
    cli(["push", str(tmp_path / "v1"), "--repo-id", "org/versions"], env)
    v1_sha = hub.repos[("model", "org/versions")].branches["main"]
    cli(["push", str(tmp_path / "v2"), "--repo-id", "org/versions"], env)
    cli(["push", str(tmp_path / "v1"), "--repo-id", "org/versions", "--revision", "dev"], env)
    assert hub.files("org/versions", "dev")["model.safetensors"] == hub.files("org/versions", v1_sha)["model.safetensors"]

    images = sorted(str(p) for p in labelled_folder.glob("img*"))
    expected = {name: model.predict(images, progress=False) for name, model in (("v1", first), ("v2", second))}
    assert np.abs(expected["v1"] - expected["v2"]).max() > 1e-3
    for revision, version in ((None, "v2"), (v1_sha, "v1"), (v1_sha[:10], "v1"), ("dev", "v1")):
        out = tmp_path / f"scores-{revision}.csv"
        cli(["score", *images, "--model", "org/versions", "--output", str(out), "--quiet",
             *(["--revision", revision] if revision else [])], env)
        with open(out, newline="") as f:
            scores = np.array([float(r["score"]) for r in csv.DictReader(f)])
        np.testing.assert_allclose(scores, expected[version], rtol=0, atol=1e-6, err_msg=str(revision))
    missing = cli(["score", images[0], "--model", "org/versions", "--revision", "nope"], env, ok=False)
    assert missing.returncode == 2 and "cannot load model" in missing.stderr


@pytest.mark.slow
def test_adapter_only_push_rebuilds_on_the_base_from_the_hub(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home")
    clip, tok = tiny_clip(seed=3)
    base_dir = tmp_path / "clip-base"
    clip.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    # the base lives on the Hub too; the model was built from a local copy of it
    run([sys.executable, "-c", "import sys; from huggingface_hub import HfApi; api = HfApi(); "
         "api.create_repo('org/clip-base'); api.upload_folder(repo_id='org/clip-base', folder_path=sys.argv[1])",
         str(base_dir)], env)
    torch.manual_seed(0)
    model = GRMPIQAModel.from_clip(str(base_dir), num_visual_prompts=4)
    with torch.no_grad():
        model.text_context.ctx.add_(0.3)
        model.clip.vision_model.encoder.layers[-1].mlp.fc2.weight.mul_(1.1)  # a "fine-tuned" block
    model.save_pretrained(tmp_path / "model")
    cli(["push", str(tmp_path / "model"), "--repo-id", "org/prompts-only", "--adapter-only",
         "--base-model", "org/clip-base"], env)
    remote = hub.files("org/prompts-only")
    assert "adapter_model.safetensors" in remote and "model.safetensors" not in remote
    assert len(remote["adapter_model.safetensors"]) < 0.2 * (tmp_path / "model" / "model.safetensors").stat().st_size
    config = json.loads(remote["config.json"])
    assert config["adapter_only"] is True and config["base_model_name_or_path"] == "org/clip-base"
    card = card_of(hub, "org/prompts-only")
    assert card.data.base_model == "org/clip-base" and "prompts-only checkpoint" in card.text
    assert "fine-tuned CLIP blocks" in card.text

    rng = np.random.default_rng(0)
    files = []
    for i in range(3):
        files.append(tmp_path / f"x{i}.png")
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(files[-1])
    expected = model.predict([str(f) for f in files], progress=False)
    np.testing.assert_allclose(remote_scores("org/prompts-only", files, env, tmp_path), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_plain_push_to_hub_and_mpiqe_from_pretrained(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home")
    script = textwrap.dedent(
        """
        import sys, torch
        from grmp_iqa_hf import MPIQEModel
        from grmp_iqa_hf.testing import tiny_clip
        clip, tok = tiny_clip(seed=0)
        torch.manual_seed(0)
        model = MPIQEModel.from_clip(clip, tok, num_visual_prompts=2).eval()
        model.push_to_hub("org/mpiqe-plain")
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        loaded = MPIQEModel.from_pretrained("org/mpiqe-plain")
        with torch.no_grad():
            diff = (model(pixel_values=x).scores - loaded(pixel_values=x).scores).abs().max().item()
        assert diff < 1e-6, diff
        print("ok", diff)
        """
    )
    result = run([sys.executable, "-c", script], env)
    assert "ok" in result.stdout
    assert {"config.json", "model.safetensors", "modeling_mp_iqe.py", "README.md"} <= set(hub.files("org/mpiqe-plain"))


def test_loading_needs_only_weights_config_and_code(hub, tmp_path):
    """A repository holding nothing but config.json, model.safetensors and the code files loads."""
    model = save_model(tmp_path / "model")
    env = hub_env(hub, tmp_path / "hf_home")
    keep = [p.name for p in (tmp_path / "model").iterdir() if p.suffix == ".py" or p.name in ("config.json", "model.safetensors")]
    script = ("import sys; from huggingface_hub import HfApi; api = HfApi(); api.create_repo('org/minimal'); "
              "api.upload_folder(repo_id='org/minimal', folder_path=sys.argv[1], allow_patterns=sys.argv[2:])")
    run([sys.executable, "-c", script, str(tmp_path / "model"), *keep], env)
    assert set(hub.files("org/minimal")) == {".gitattributes", *keep}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    load = textwrap.dedent(
        """
        import sys, torch
        from grmp_iqa_hf import GRMPIQAModel
        model = GRMPIQAModel.from_pretrained("org/minimal")
        with torch.no_grad():
            torch.save(model(pixel_values=torch.load(sys.argv[1])).scores, sys.argv[2])
        """
    )
    run([sys.executable, "-c", load, str(tmp_path / "x.pt"), str(tmp_path / "s.pt")], env)
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "s.pt"), model(pixel_values=x).scores, rtol=0, atol=1e-6)


def test_push_refuses_offline_mode_and_bad_reports(hub, tmp_path):
    save_model(tmp_path / "model")
    offline = cli(["push", str(tmp_path / "model"), "--repo-id", "org/x"],
                  hub_env(hub, tmp_path / "hf_home", HF_HUB_OFFLINE=1), ok=False)
    assert offline.returncode == 2 and "HF_HUB_OFFLINE" in offline.stderr
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    bad = cli(["push", str(tmp_path / "model"), "--repo-id", "org/x", "--report", str(tmp_path / "bad.json")],
              hub_env(hub, tmp_path / "hf_home"), ok=False)
    assert bad.returncode == 2 and "not a report" in bad.stderr
    unreachable = cli(["push", str(tmp_path / "model"), "--repo-id", "org/x"],
                      hub_env(hub, tmp_path / "hf_home", HF_ENDPOINT="http://127.0.0.1:9"), ok=False)
    assert unreachable.returncode == 1 and "creating the repository failed" in unreachable.stderr
    assert ("model", "org/x") not in hub.repos


def test_private_repositories_need_a_token(hub, tmp_path):
    save_model(tmp_path / "model")
    cli(["push", str(tmp_path / "model"), "--repo-id", "org/secret", "--private"], hub_env(hub, tmp_path / "hf_home"))
    assert hub.repos[("model", "org/secret")].private
    for headers, status in (({}, 404), ({"Authorization": "Bearer hf_local_test_token"}, 200)):
        request = urllib.request.Request(f"{hub.url}/org/secret/resolve/main/config.json", headers=headers)
        try:
            with urllib.request.urlopen(request) as response:
                got = response.status
        except urllib.error.HTTPError as err:
            got = err.code
        assert got == status


# ---------------------------------------------------------------------------- offline: a hand-built cache


def build_cache(cache, repo_id, folder, sha="0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub writes: models--org--name/refs/main -> sha, snapshots/<sha>/<files>."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    shutil.copytree(folder, root / "snapshots" / sha)
    return sha


def test_offline_from_a_hand_built_cache(tmp_path, labelled_folder):
    model = save_model(tmp_path / "model")
    cache = tmp_path / "cache"
    build_cache(cache, "org/cached", tmp_path / "model")
    images = sorted(str(p) for p in labelled_folder.glob("img*"))
    expected = model.predict(images, progress=False)
    loaded = GRMPIQAModel.from_pretrained("org/cached", cache_dir=str(cache), local_files_only=True)
    np.testing.assert_allclose(loaded.predict(images, progress=False), expected, rtol=0, atol=1e-6)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_ENDPOINT="http://127.0.0.1:9",
               OMP_NUM_THREADS="1")
    out = tmp_path / "scores.json"
    cli(["score", *images, "--model", "org/cached", "--output", str(out), "--quiet"], env)
    np.testing.assert_allclose([r["score"] for r in json.loads(out.read_text())["predictions"]], expected, rtol=0,
                               atol=1e-6)


# ---------------------------------------------------------------------------- cards


HUB_METRICS = (("spearmanr", "SRCC"), ("pearsonr", "PLCC"), ("pearsonr", "PLCC after logistic fit"))


def fewshot_report(srcc_values, fits=None):
    fits = fits or ["ok"] * len(srcc_values)
    splits = [{"index": i, "srcc": s, "plcc": s + 0.01, "plcc_logistic": s + 0.02, "krcc": s - 0.1, "rmse": 0.2,
               "n_test": 100, "plcc_logistic_fit": fit, "plcc_logistic_fit_reason": f"reason {i}"}
              for i, (s, fit) in enumerate(zip(srcc_values, fits))]
    median = {k: float(np.median([s[k] for s in splits])) for k in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")}
    return {"num_splits": len(splits), "median": median, "mean": median, "selection": "last", "splits": splits,
            "method": "grmp_iqa", "config": {"dataset": "livec", "dataset_name": "livec", "num_images": 50,
                                             "data_dir": "/home/me/data"}}


def front_matter(card) -> dict:
    return yaml.safe_load(str(card).split("---", 2)[1])


def test_card_from_a_fewshot_report_uses_the_median(tiny):
    model = MPIQEModel.from_clip(*tiny, num_visual_prompts=2)
    report = fewshot_report([0.61, 0.7, 0.55, 0.8, 0.66])
    card = render_model_card(model, "org/mpiqe", report=report, license="mit")
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values == {"SRCC": 0.66, "PLCC": 0.67, "PLCC after logistic fit": 0.68}
    assert [(r.metric_type, r.metric_name) for r in card.data.eval_results] == list(HUB_METRICS)
    result = card.data.eval_results[0]
    assert result.dataset_type == "livec" and result.dataset_name == "LIVE In the Wild Challenge" or result.dataset_name
    assert "median over 5 random splits" in result.metric_config
    meta = card.data.to_dict()
    assert meta["license"] == "mit" and "datasets" not in meta  # no Hub dataset id given: none invented
    assert "MP-IQE" in card.text and "pan2024mpiqe" in card.text and "| Topic | Our choice |" in card.text
    assert "Test checkpoint" in card.text  # built on tiny-random
    assert "ghadiyaram" in card.text.lower()  # the dataset's citation
    front = front_matter(card)
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert metrics[0] == {"type": "spearmanr", "value": 0.66, "name": "SRCC", "config": result.metric_config}
    assert [m["type"] for m in metrics] == ["spearmanr", "pearsonr", "pearsonr"]
    assert "datasets" not in front
    assert "| 0.6800 | 0.5600 | 0.2000 |" in card.text  # logistic PLCC, KRCC, RMSE in the table
    assert "not ok" not in card.text
    assert "\n\n\n" not in str(card)
    assert public_report(report)["config"] == {"dataset": "livec", "dataset_name": "livec", "num_images": 50}


def test_card_datasets_hold_only_hub_dataset_ids(tiny):
    model = GRMPIQAModel.from_clip(*tiny)
    report = fewshot_report([0.6, 0.7, 0.8])
    card = render_model_card(model, "org/m", report=report, datasets=["org/livec-mirror", "org/livec-mirror"])
    front = front_matter(card)
    assert front["datasets"] == ["org/livec-mirror"]
    # the evaluation data's Hub id is the model-index's dataset type too
    assert front["model-index"][0]["results"][0]["dataset"]["type"] == "org/livec-mirror"
    for bad, words in (("livec", "loader name"), ("imagefolder", "loader name"), ("a/b/c", "ORG/NAME"),
                       ("org/bad name", "ORG/NAME")):
        with pytest.raises(ValueError, match=words) as err:
            render_model_card(model, "org/m", report=report, datasets=[bad])
        assert repr(bad) in str(err.value) or bad in str(err.value)


@pytest.mark.parametrize("fits", [["ok", "degenerate", "ok"], ["ok", None, "ok"]])
def test_protocol_card_without_a_logistic_fit_in_every_split_publishes_no_logistic_plcc(tiny, fits):
    model = GRMPIQAModel.from_clip(*tiny)
    report = fewshot_report([0.6, 0.7, 0.8], fits=fits)
    if fits[1] is None:  # an older report: the fit is not recorded
        del report["splits"][1]["plcc_logistic_fit"]
    card = render_model_card(model, "org/m", report=report)
    names = [r.metric_name for r in card.data.eval_results]
    assert names == ["SRCC", "PLCC"]
    assert "PLCC after logistic fit" not in str(front_matter(card))
    assert f"| {0.7:.4f} | {0.71:.4f} | n/a | {0.6:.4f} | n/a |" in card.text  # no logistic PLCC, no RMSE
    assert "not ok in 1 of 3 splits" in card.text
    assert ("degenerate" if fits[1] else "not recorded") in card.text


@pytest.mark.parametrize("fit", ["ok", "degenerate", "skipped", None])
def test_evaluate_card_publishes_the_logistic_plcc_only_when_the_fit_is_ok(tiny, fit):
    model = GRMPIQAModel.from_clip(*tiny)
    report = {"srcc": -0.27, "plcc": -0.34, "plcc_logistic": -0.35, "krcc": -0.2, "rmse": 12.5, "n": 20,
              "dataset": "livec", "dataset_name": "LIVE In the Wild Challenge", "num_failed": 0}
    if fit is not None:
        report.update(plcc_logistic_fit=fit, plcc_logistic_fit_reason="because of the test")
    card = render_model_card(model, "org/m", report=report)
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values["SRCC"] == -0.27 and values["PLCC"] == -0.34
    if fit == "ok":
        assert values["PLCC after logistic fit"] == -0.35 and "| -0.3500 |" in card.text and "| 12.5000 |" in card.text
    else:
        assert "PLCC after logistic fit" not in values and "12.5000" not in card.text and "-0.3500" not in card.text
        assert ("because of the test" if fit else "does not record how the logistic fit went") in card.text


def test_a_third_method_registers_in_one_place(tiny):
    """One `register_method` call makes a method buildable, Auto-loadable and publishable with its own card."""
    from transformers import AutoModel

    from grmp_iqa_hf.methods import METHODS, MethodSpec, register_method
    from grmp_iqa_hf.modeling import GRMPIQAConfig
    from grmp_iqa_hf.models import MODEL_CLASSES

    class ThirdConfig(GRMPIQAConfig):
        model_type = "third_iqa_for_test"

    class ThirdModel(GRMPIQAModel):
        config_class = ThirdConfig

    register_method(MethodSpec(
        model_class=ThirdModel, name="Third-IQA", tag="third-iqa", paper="Nobody, 2099", one_line="A test method.",
        description="Only for this test.", bibtex="@misc{third}",
        card_details=lambda config: {"text_prompts": f"{config.n_ctx} contexts, said by the method"}))
    try:
        assert MODEL_CLASSES["third_iqa_for_test"] is ThirdModel and "third_iqa_for_test" in MODEL_CLASSES
        model = build_model("tiny-random", method="third_iqa_for_test", num_visual_prompts=2)
        assert type(model) is ThirdModel
        assert type(AutoModel.from_config(model.config)) is ThirdModel
        card = render_model_card(model, "org/third")
        assert card.text.startswith("\n# third\n\nThird-IQA blind image quality assessment model: A test method.")
        assert "| Method | Third-IQA (Nobody, 2099) |" in card.text and "@misc{third}" in card.text
        assert "| Text prompts | 4 contexts, said by the method |" in card.text and "third-iqa" in card.data.tags
        assert "| Topic | Our choice |" not in card.text  # no reconstruction notes unless the method gives them
    finally:
        del METHODS["third_iqa_for_test"]
    with pytest.raises(ValueError, match="no card for model type 'third_iqa_for_test'"):
        render_model_card(model, "org/third")


def test_report_results_rejects_other_json():
    with pytest.raises(ValueError, match="not a report"):
        report_results({"accuracy": 0.9})
    assert report_results({"srcc": 0.5, "plcc": 0.4, "dataset": "koniq10k", "n": 3})["metrics"]["srcc"] == 0.5


def test_push_dataset_with_card(hub, labelled_folder, tmp_path):
    env = hub_env(hub, tmp_path / "hf_home")
    cli(["push-dataset", str(labelled_folder), "--repo-id", "org/tiny-iqa", "--dataset", "livec"], env)
    files = hub.files("org/tiny-iqa", repo_type="dataset")
    assert {"README.md", "metadata.csv", "img0.jpg", "img7.png"} <= set(files)
    assert files["metadata.csv"] == (labelled_folder / "metadata.csv").read_bytes()
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---", 2)[1])
    assert "image-quality-assessment" in front["tags"] and front["size_categories"] == ["n<1K"]
    assert "| Images | 8 |" in card and "load_dataset(\"org/tiny-iqa\"" in card

    bad = tmp_path / "bad"
    shutil.copytree(labelled_folder, bad)
    with open(bad / "metadata.csv", "a") as f:
        f.write("missing.png,3\nimg0.jpg,abc\n")
    result = cli(["push-dataset", str(bad), "--repo-id", "org/bad-iqa"], env, ok=False)
    assert result.returncode == 2 and "missing.png" in result.stderr and "row 11" in result.stderr
    assert ("dataset", "org/bad-iqa") not in hub.repos


def test_dataset_card_renders_offline(labelled_folder):
    card = render_dataset_card(labelled_folder, "org/x")
    assert card.data.to_dict()["license"] == "other" and "| Images | 8 |" in str(card)


# ---------------------------------------------------------------------------- prompts-only checkpoints (offline)


def test_adapter_only_round_trip_and_errors(tmp_path, pixel_values):
    clip, tok = tiny_clip(seed=5)
    clip.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    model = MPIQEModel.from_clip(str(tmp_path / "base"), num_visual_prompts=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1)
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    saved = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert keys == {n for n in model.state_dict() if not n.startswith("clip.")}  # nothing of CLIP changed
    loaded = MPIQEModel.from_pretrained(tmp_path / "adapter")
    assert loaded.config.adapter_only is False and not loaded.training
    assert [n for n, p in loaded.named_parameters() if p.requires_grad and n.startswith("clip.")] == []
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).scores, model(pixel_values).scores, rtol=0, atol=0)

    # the base moved: name another copy of it
    shutil.move(tmp_path / "base", tmp_path / "moved")
    with pytest.raises(OSError, match="base_model_name_or_path"):
        MPIQEModel.from_pretrained(tmp_path / "adapter")
    moved = MPIQEModel.from_pretrained(tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "moved"))
    with torch.no_grad():
        torch.testing.assert_close(moved(pixel_values).scores, model(pixel_values).scores, rtol=0, atol=0)

    # a base that does not match is refused, so is one that cannot be found
    other, other_tok = tiny_clip(seed=5, text_config={"num_hidden_layers": 2})
    with pytest.raises(ValueError, match="does not match"):
        model.adapter_state_dict(other)
    tiny_model = build_model("tiny-random")
    with pytest.raises(OSError, match="tiny-random"):
        tiny_model.save_pretrained(tmp_path / "nope", adapter_only=True)


def test_safetensors_only(tmp_path):
    save_model(tmp_path / "model")
    with pytest.raises(ValueError, match="safetensors only"):
        GRMPIQAModel.from_pretrained(tmp_path / "model", use_safetensors=False)


def test_vit_b16_adapter_with_100_visual_prompts_is_under_8_mb():
    """The tensors of a prompts-only ViT-B/16 checkpoint, counted on the meta device (no weights built);
    `benchmarks/adapter_checkpoint.py --size base` measures the real file (6.06 MB)."""
    from transformers import CLIPConfig

    from grmp_iqa_hf import GRMPIQAConfig
    from grmp_iqa_hf.testing import tiny_clip_config, tiny_tokenizer

    clip_config = tiny_clip_config(**{
        "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                        "num_attention_heads": 8, "max_position_embeddings": 77},
        "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                          "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
        "projection_dim": 512})
    assert isinstance(clip_config, CLIPConfig)
    config = GRMPIQAConfig(clip_config=clip_config.to_dict(), num_visual_prompts=100)
    GRMPIQAModel.tokenize_prompts(config, tiny_tokenizer())
    with torch.device("meta"):
        model = GRMPIQAModel(config)
    adapter = sum(t.numel() * t.element_size() for n, t in model.state_dict().items() if not n.startswith("clip."))
    assert 3_000_000 < adapter <= 8_000_000, adapter
