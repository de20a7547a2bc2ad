"""Hub datasets in and out, end to end against the local Hub stand-in (tests/hub_stand_in.py) with the real
`datasets` / `huggingface_hub` clients: `grmp-iqa push-dataset --format parquet`, then `evaluate --hub-dataset`
(the same report as `evaluate --data-dir` on the folder), `score --hub-dataset --output x.parquet` (a broken
image gets an error, the rest are scored), offline from the cache, streaming, and the usage errors.

Everything that talks to the stand-in runs in a subprocess (huggingface_hub reads HF_ENDPOINT at import).
"""

import csv
import json
import shutil
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import CLIVE_DIR, hub_env, run, write_random_images
from grmp_iqa_hf.cli import main
from grmp_iqa_hf.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}  # the cache only; nothing listens there

# Runs `grmp-iqa` commands one after another in one process (each process start costs >= 10 s here), each
# with its own stdout / stderr / exit status. argv: commands.json, results.json
COMMANDS_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from grmp_iqa_hf.cli import main

    results = {}
    for name, args in json.load(open(sys.argv[1])).items():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(args)
            except SystemExit as exit:  # argparse's usage errors
                status = exit.code
        results[name] = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}
    json.dump(results, open(sys.argv[2], "w"))
    """
)


def run_commands(commands: dict, env, tmp_path, name: str) -> dict:
    (tmp_path / f"{name}.commands.json").write_text(json.dumps(commands))
    run([sys.executable, "-c", COMMANDS_SCRIPT, str(tmp_path / f"{name}.commands.json"),
         str(tmp_path / f"{name}.results.json")], env)
    return json.loads((tmp_path / f"{name}.results.json").read_text())


def clive50(folder):
    """50 CLIVE photos and their metadata.csv rows, copied into `folder`."""
    (folder / "images").mkdir(parents=True)
    with open(CLIVE_DIR / "metadata.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    for row in rows[:50]:
        shutil.copy(CLIVE_DIR / row[0], folder / row[0])
    with open(folder / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows[:50]])
    return folder


def tiny_folder(folder):
    """6 random images, the fourth one broken (not an image), with MOS."""
    folder.mkdir()
    paths, rng = write_random_images(folder, 6, lambda i: 40 + 4 * i, 48)
    paths[3].write_bytes(b"this is not an image")
    with open(folder / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["file_name", "mos"], *[[p.name, f"{rng.uniform(1, 5):.2f}"] for p in paths]])
    return folder, paths


@pytest.fixture(scope="module")
def runs(hub, tmp_path_factory):
    """Push the datasets, then every Hub command of the tests: online in one process, offline (from the cache
    that one filled, the Hub unreachable) in another."""
    tmp = tmp_path_factory.mktemp("hub-datasets")
    model = tmp / "model"
    build_model("tiny-random", seed=0, num_visual_prompts=4).save_pretrained(model)
    tiny, paths = tiny_folder(tmp / "tiny")
    has_clive = (CLIVE_DIR / "metadata.csv").is_file()
    evaluate = ["--model", str(model), "--facts", "livec", "--batch-size", "16", "--quiet"]
    score = ["score", "--hub-dataset", "org/tiny", "--model", str(model), "--quiet"]
    online = {"push_tiny": ["push-dataset", str(tiny), "--repo-id", "org/tiny", "--format", "parquet", "--quiet"]}
    if has_clive:
        online["push_clive"] = ["push-dataset", str(clive50(tmp / "clive50")), "--repo-id", "org/clive50",
                                "--format", "parquet", "--split", "test", "--dataset", "livec", "--quiet"]
        online["evaluate"] = ["evaluate", "--hub-dataset", "org/clive50", "--output", str(tmp / "hub.json"), *evaluate]
    online.update(
        score=[*score, "--output", str(tmp / "hub.parquet")],
        stream=[*score, "--streaming", "--output", str(tmp / "stream.parquet")],
        no_column=["evaluate", "--hub-dataset", "org/tiny", "--mos-column", "dmos", "--model", str(model)],
        no_repo=[*score[:2], "org/nothing-here", *score[3:]],
    )
    offline = {"score": [*score, "--output", str(tmp / "offline.parquet")], "no_split": [*score, "--split", "test"]}
    if has_clive:
        offline["evaluate"] = ["evaluate", "--hub-dataset", "org/clive50", "--split", "test", "--output",
                               str(tmp / "offline.json"), *evaluate]
    hf_home = tmp / "hf_home"
    results = {"online": run_commands(online, hub_env(hub, hf_home), tmp, "online")}
    results["offline"] = run_commands(offline, hub_env(hub, hf_home, **OFFLINE), tmp, "offline")
    return {"tmp": tmp, "model": model, "tiny": tiny, "paths": paths, "has_clive": has_clive, **results}


def test_parquet_push_then_evaluate_from_the_hub_equals_the_folder_and_works_offline(hub, runs):
    if not runs["has_clive"]:
        pytest.skip(f"LIVE-in-the-Wild sample not found at {CLIVE_DIR}")
    tmp = runs["tmp"]
    pushed = runs["online"]["push_clive"]
    assert pushed["status"] == 0 and "datasets/org/clive50@" in pushed["stdout"], pushed
    files = hub.files("org/clive50", repo_type="dataset")
    assert "data/test-00000-of-00001.parquet" in files and "metadata.csv" not in files
    card = files["README.md"].decode()
    front = yaml.safe_load(card.split("---", 2)[1])
    assert "image-quality-assessment" in front["tags"] and "| Images | 50 |" in card  # our card's content, kept
    assert front["dataset_info"]["splits"][0]["num_examples"] == 50  # and the datasets library's additions
    assert front["dataset_info"]["features"][0] == {"name": "image", "dtype": "image"}

    assert main(["evaluate", "--data-dir", str(tmp / "clive50"), "--output", str(tmp / "folder.json"),
                 "--model", str(runs["model"]), "--facts", "livec", "--batch-size", "16", "--quiet"]) == 0
    local = json.loads((tmp / "folder.json").read_text())
    assert local["hub_dataset"] is None and local["data_dir"] == str(tmp / "clive50")
    for mode, name in (("online", "hub.json"), ("offline", "offline.json")):
        assert runs[mode]["evaluate"]["status"] == 0, runs[mode]["evaluate"]
        remote = json.loads((tmp / name).read_text())
        assert set(remote) == set(local) and remote["n"] == local["n"] == 50 and remote["num_failed"] == 0
        for key in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse"):
            assert remote[key] == pytest.approx(local[key], abs=1e-9), key
        assert [p["image_id"] for p in remote["predictions"]] == [p["image_id"] for p in local["predictions"]]
        np.testing.assert_allclose([p["score"] for p in remote["predictions"]],
                                   [p["score"] for p in local["predictions"]], rtol=0, atol=1e-9)
        assert [p["mos"] for p in remote["predictions"]] == [p["mos"] for p in local["predictions"]]
        assert remote["dataset"] == local["dataset"] == "livec" and remote["data_dir"] is None
        source = remote["hub_dataset"]
        assert source["repo_id"] == "org/clive50" and source["split"] == "test" and source["id_column"] == "file_name"
        assert source["commit"] == hub.repos[("dataset", "org/clive50")].branches["main"]
        assert source["streaming"] is False  # 50 small photos: downloaded into the cache (and offline: never)


def test_score_a_hub_dataset_with_a_broken_image_streaming_and_offline(runs):
    tmp, paths = runs["tmp"], runs["paths"]
    assert runs["online"]["push_tiny"]["status"] == 0, runs["online"]["push_tiny"]
    assert main(["score", str(runs["tiny"]), "--model", str(runs["model"]), "--output", str(tmp / "folder.parquet"),
                 "--quiet"]) == 1
    expected = pq.read_table(tmp / "folder.parquet").to_pylist()
    assert [r["path"] for r in expected] == [str(p) for p in paths] and expected[3]["score"] is None
    for mode, name, streaming in (("online", "score", False), ("online", "stream", True), ("offline", "score", False)):
        result = runs[mode][name]
        assert result["status"] == 1, result
        assert "could not read train[3] (img3.png): not an image" in result["stderr"]
        table = pq.read_table(tmp / ("stream.parquet" if streaming else f"{'hub' if mode == 'online' else mode}.parquet"))
        assert table.column_names == ["row", "file_name", "score", "error"]
        rows = table.to_pylist()
        assert [r["row"] for r in rows] == list(range(6)) and [r["file_name"] for r in rows] == [p.name for p in paths]
        assert rows[3]["score"] is None and "not an image" in rows[3]["error"]
        assert all(r["error"] == "" for i, r in enumerate(rows) if i != 3)
        np.testing.assert_allclose([r["score"] for r in rows if r["score"] is not None],
                                   [r["score"] for r in expected if r["score"] is not None], rtol=0, atol=1e-9)
        record = json.loads(table.schema.metadata[b"grmp_iqa"])["provenance"]
        assert record["hub_dataset"]["repo_id"] == "org/tiny" and record["hub_dataset"]["streaming"] is streaming


def test_usage_errors_name_what_exists(runs):
    column = runs["online"]["no_column"]
    assert column["status"] == 2 and "no MOS column 'dmos'" in column["stderr"]
    assert "columns: ['image', 'file_name', 'mos']" in column["stderr"]
    split = runs["offline"]["no_split"]
    assert split["status"] == 2 and "no split 'test'; available splits: ['train']" in split["stderr"]
    repo = runs["online"]["no_repo"]
    assert repo["status"] == 2 and "'org/nothing-here' not found on the Hub" in repo["stderr"]
