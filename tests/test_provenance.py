"""Where models come from and what every output records about it (`grmp_iqa_hf.provenance`):

- a `--model` that is neither a folder nor a Hub model that can be found fails at once (exit 2), naming
  what was tried, offline (`HF_HUB_OFFLINE=1`: says so) and online (one request, no retries);
- outputs record the model, the Hub commit, versions, device, dtype and time: `score` from the Hub (through
  the local stand-in server and then offline from the cache), protocol reports and the few-shot runner.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from grmp_iqa_hf.evaluation.protocol import protocol_report
from grmp_iqa_hf.provenance import (
    PROVENANCE_KEYS, ModelNotFoundError, collect, describe_source, resolve_model_source,
)
from hub_stand_in import LocalHub, Repo

CLI = [sys.executable, "-m", "grmp_iqa_hf.cli"]
SHA = "0123456789abcdef0123456789abcdef01234567"


def cli_env(tmp_path, **extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf_home"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", CUDA_VISIBLE_DEVICES="",
               HF_HUB_DISABLE_TELEMETRY="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def timed(args, env, cwd):
    started = time.perf_counter()
    result = subprocess.run([*CLI, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    return result, time.perf_counter() - started


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from grmp_iqa_hf.models import build_model

    path = tmp_path_factory.mktemp("provenance") / "model"
    build_model("tiny-random", seed=0, num_visual_prompts=4).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


# ------------------------------------------------------------------------------------ a missing model


def test_missing_model_fails_at_once_naming_the_path(tmp_path, images):
    """The acceptance: `--model nosuch_model` and `./nosuch_model` exit 2 within 3 s naming the path, online
    (Hub unreachable) and offline; offline, `org/absent` says HF_HUB_OFFLINE."""
    cases = [("nosuch_model", {}), ("./nosuch_model", {}), ("org/absent", {}),
             ("nosuch_model", {"HF_HUB_OFFLINE": "0"}), ("org/absent", {"HF_HUB_OFFLINE": "0"})]
    for name, extra in cases:
        result, seconds = timed(["score", images / "img0.png", "--model", name], cli_env(tmp_path, **extra), tmp_path)
        label = f"{name} {extra}"
        assert result.returncode == 2, f"{label}: exit {result.returncode}\n{result.stderr[-2000:]}"
        assert seconds < 3, f"{label}: {seconds:.1f} s"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot load model '{name}': "), f"{label}: {lines}"
        assert f"there is no folder {tmp_path / 'nosuch_model'}" in lines[0] or "org/absent" in lines[0], lines
        if extra.get("HF_HUB_OFFLINE") == "0":
            assert "could not be reached" in lines[0] and "http://127.0.0.1:9" in lines[0], lines
        elif name != "./nosuch_model":
            assert "HF_HUB_OFFLINE" in lines[0], lines
    assert "is not a Hub id either" in timed(["score", images, "--model", "./nosuch_model"],
                                              cli_env(tmp_path), tmp_path)[0].stderr


def test_resolve_model_source_in_process(tmp_path, model_dir):
    assert resolve_model_source("tiny-random").kind == "builtin"
    local = resolve_model_source(str(model_dir))
    assert (local.kind, local.commit, local.load_revision) == ("local", None, None)
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.safetensors").write_bytes(b"")
    for name, words in ((tmp_path / "empty", "has no config.json"), (tmp_path / "weights.safetensors", "is a file"),
                        ("a/b/c", "not a Hub id"), ("org/absent", "HF_HUB_OFFLINE=1 is set")):
        with pytest.raises(ModelNotFoundError, match=words) as info:
            resolve_model_source(name, what="backbone")
        assert str(info.value).startswith(f"cannot load backbone '{name}': ")
        assert isinstance(info.value, OSError)


def put_model(hub: LocalHub, repo_id: str, folder) -> str:
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    hub.repos[("model", repo_id)] = Repo(repo_id=repo_id, repo_type="model", private=False, branches={"main": SHA},
                                         commits={SHA: {"files": files, "parent": None, "summary": "test"}})
    return SHA


@pytest.mark.slow
def test_hub_model_provenance_and_one_line_misses(tmp_path, model_dir, images):
    with LocalHub() as hub:
        put_model(hub, "org/tiny", model_dir)
        online = cli_env(tmp_path, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_ENDPOINT=hub.url)

        # a Hub miss: one line, one request (huggingface_hub would retry a download five times)
        before = len(hub.requests)
        result, seconds = timed(["score", images, "--model", "org/absent"], online, tmp_path)
        assert result.returncode == 2 and seconds < 3, (seconds, result.stderr[-2000:])
        assert result.stderr == (f"error: cannot load model 'org/absent': there is no folder {tmp_path / 'org/absent'}, "
                                 f"and the Hub at {hub.url} has no model repository 'org/absent' (or it is private: "
                                 "log in with `hf auth login` or set HF_TOKEN)\n")
        assert len([r for r in hub.requests[before:] if "org/absent" in r[1]]) == 1, hub.requests[before:]
        result, _ = timed(["score", images, "--model", "org/tiny", "--revision", "nope"], online, tmp_path)
        assert result.returncode == 2 and result.stderr.strip().endswith("has no revision 'nope'"), result.stderr

        # found: the commit is recorded; --quiet with --output prints nothing
        for env, where in ((online, "hub"), (cli_env(tmp_path), "cache")):
            out = tmp_path / f"scores-{where}.json"
            result, _ = timed(["score", images, "--model", "org/tiny", "--output", out, "--quiet"], env, tmp_path)
            assert result.returncode == 0, result.stderr[-3000:]
            assert (result.stdout, result.stderr) == ("", ""), where
            written = json.loads(out.read_text())
            record = written["provenance"]
            assert list(record) == list(PROVENANCE_KEYS)
            assert (record["model"], record["model_source"], record["commit"]) == ("org/tiny", "hub", SHA), record
            assert record["revision"] is None and record["device"] == "cpu" and record["dtype"] == "float32"
            assert record["torch_version"] == torch.__version__
            assert len(written["predictions"]) == 10 and all(r["error"] == "" for r in written["predictions"])
        assert describe_source("org/tiny").kind == "hub"


# ------------------------------------------------------------------------------------ protocol reports


def split(index, srcc):
    return {"index": index, "srcc": srcc, "plcc": srcc, "plcc_logistic": srcc, "krcc": srcc, "rmse": 0.1}


def test_protocol_report_provenance_from_its_config(model_dir):
    records = [split(0, 0.5), split(1, 0.7)]
    fewshot = protocol_report(records, "last", {"model": str(model_dir), "backbone": None})
    fresh = protocol_report(records, "last", {"model": None, "backbone": "tiny-random"})
    mpiqe = protocol_report(records, "last", {"training": {"backbone": "tiny-random"}, "model": {"n_ctx": 4}})
    for report, model, source in ((fewshot, str(model_dir), "local"), (fresh, "tiny-random", "builtin"),
                                  (mpiqe, "tiny-random", "builtin")):
        record = report["provenance"]
        assert list(record)[:len(PROVENANCE_KEYS)] == list(PROVENANCE_KEYS)
        assert (record["model"], record["model_source"], record["commit"]) == (model, source, None)
        assert record["dtype"] == "float32" and record["torch_version"] == torch.__version__
    given = collect(source=describe_source("tiny-random"), device="cuda:0", dtype="bfloat16")
    assert protocol_report(records, "last", {}, provenance=given)["provenance"] is given


def test_fewshot_runner_report_has_provenance(tmp_path):
    from grmp_iqa_hf.protocols.fewshot import FewShotConfig, run_fewshot
    from grmp_iqa_hf.training.common import make_accelerator

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(data / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,{rng.uniform(0, 100):.2f}")
    (data / "metadata.csv").write_text("file_name,mos\n" + "\n".join(rows) + "\n")
    config = FewShotConfig(data_dir=str(data), output_dir=str(tmp_path / "out"), backbone="tiny-random",
                           num_images=4, num_splits=1, epochs=1, progress=False)
    torch.set_num_threads(1)
    run_fewshot(config, accelerator=make_accelerator(tmp_path / "out", log_with=None, cpu=True))
    record = json.loads((tmp_path / "out" / "report.json").read_text())["provenance"]
    assert (record["model"], record["model_source"], record["device"], record["dtype"]) == \
        ("tiny-random", "builtin", "cpu", "float32"), record
    assert list(record)[:len(PROVENANCE_KEYS)] == list(PROVENANCE_KEYS)
