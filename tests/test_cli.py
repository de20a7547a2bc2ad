"""`grmp-iqa score`, `evaluate` and `quickstart`, run as a user would (console script in a subprocess
where it matters, `main()` in-process elsewhere)."""

import csv
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import grmp_iqa_hf

from grmp_iqa_hf import GRMPIQAModel
from grmp_iqa_hf.cli import main
from grmp_iqa_hf.provenance import PROVENANCE_KEYS
from grmp_iqa_hf.testing import tiny_clip

_SCRIPT = Path(sys.executable).with_name("grmp-iqa")
CONSOLE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "grmp_iqa_hf.cli"]
SUBPROCESS_ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                      TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="")


def assert_provenance(record, model, source, commit=None):
    """Every provenance field is there, with this model, its source and commit, and real versions."""
    assert list(record)[:len(PROVENANCE_KEYS)] == list(PROVENANCE_KEYS), record
    assert record["model"] == model and record["model_source"] == source and record["commit"] == commit, record
    assert record["grmp_iqa_hf_version"] == grmp_iqa_hf.__version__
    assert record["torch_version"] == torch.__version__
    assert record["transformers_version"] == transformers.__version__
    assert record["device"] == "cpu" and record["dtype"] == "float32", record
    stamp = datetime.datetime.strptime(record["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - stamp).total_seconds()) < 3600


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    clip, tok = tiny_clip(seed=0)
    torch.manual_seed(0)
    model = GRMPIQAModel.from_clip(clip, tok, num_visual_prompts=4)
    path = tmp_path_factory.mktemp("cli") / "model"
    model.save_pretrained(path)
    return path


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_score_clive_folder_console_script(model_dir, clive_dir, tmp_path):
    out = tmp_path / "scores.csv"
    result = subprocess.run(
        CONSOLE + ["score", str(clive_dir / "images"), "--model", str(model_dir), "--output", str(out)],
        capture_output=True, text=True, timeout=600, env=SUBPROCESS_ENV,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_csv(out)
    assert len(rows) == 627
    assert all(r["error"] == "" for r in rows)
    scores = np.array([float(r["score"]) for r in rows])
    assert np.all((scores >= 0) & (scores <= 1)) and np.all(np.isfinite(scores))
    assert "scored 627 of 627 files" in result.stderr
    # the CSV stays a plain table; its provenance is in the sidecar scores.csv.json
    sidecar = json.loads((tmp_path / "scores.csv.json").read_text())
    assert sidecar["describes"] == "scores.csv"
    assert_provenance(sidecar["provenance"], model=str(model_dir), source="local")


def test_score_folder_with_truncated_file(model_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    good = write_images(folder / "nested", 3)
    truncated = folder / "TRUNCATED.JPG"
    data = good[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an image, and not picked up by the folder walk")
    out = tmp_path / "scores.json"
    code = main(["score", str(folder), "--model", str(model_dir), "--output", str(out), "--quiet",
                 "--batch-size", "2"])
    assert code == 1
    written = json.loads(out.read_text())
    assert_provenance(written["provenance"], model=str(model_dir), source="local")
    rows = written["predictions"]
    assert len(rows) == 4  # 3 good + the truncated one (upper-case extension, nested folder walked)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["TRUNCATED.JPG"]["score"] is None and by_name["TRUNCATED.JPG"]["error"]
    assert all(by_name[p.name]["error"] == "" and 0 <= by_name[p.name]["score"] <= 1 for p in good)
    assert "could not read" in capsys.readouterr().err
    # the same images scored by predict agree with the CLI
    model = GRMPIQAModel.from_pretrained(model_dir)
    np.testing.assert_allclose(model.predict([str(p) for p in good]), [by_name[p.name]["score"] for p in good],
                               atol=1e-6)


def test_score_table_on_stdout_and_usage_errors(model_dir, tmp_path, capsys):
    write_images(tmp_path / "p", 2)
    assert main(["score", str(tmp_path / "p"), "--model", str(model_dir), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["path", "score", "error"] and "img1.jpg" in table
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["score", str(empty), "--model", str(model_dir)]) == 2
    assert main(["score", str(tmp_path / "p"), "--model", str(tmp_path / "no-such-model")]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["score"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["--num-workers", "-1"], "argument --num-workers: must be >= 0, got -1"),
    (["--output", "x.txt"], "--output must end in .csv, .json or .parquet"),
    (["--hub-dataset", "org/x"], "give either PATH... or --hub-dataset ORG/NAME (one of the two)"),
    (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
])
def test_score_usage_errors_print_the_subcommand_usage(model_dir, tmp_path, capsys, argv, message):
    write_images(tmp_path / "p", 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(tmp_path / "p"), "--model", str(model_dir), *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("usage: grmp-iqa score ") and f"grmp-iqa score: error: {message}" in err, err


def test_unavailable_device_is_a_usage_error(model_dir, tmp_path, capsys):
    write_images(tmp_path / "p", 1)
    for device, available in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available())):
        if available:
            continue
        with pytest.raises(SystemExit) as exit_info:
            main(["score", str(tmp_path / "p"), "--model", str(model_dir), "--device", device, "--quiet"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, device
        assert err.startswith("usage: grmp-iqa score ") and f"error: --device {device}: " in err and "not available" in err


def test_score_quiet_with_output_prints_nothing_in_process(model_dir, tmp_path, capfd):
    """In-process, transformers is already imported: --quiet switches its bars off directly (and back on)."""
    from transformers.utils import logging as hf_logging

    write_images(tmp_path / "p", 10)
    capfd.readouterr()
    assert main(["score", str(tmp_path / "p"), "--model", str(model_dir), "--output", str(tmp_path / "s.json"),
                 "--quiet"]) == 0
    assert capfd.readouterr() == ("", "")
    assert hf_logging.is_progress_bar_enabled()  # restored for the rest of the process
    assert main(["score", str(tmp_path / "p"), "--model", str(model_dir), "--output", str(tmp_path / "s.csv")]) == 0
    out, err = capfd.readouterr()
    assert out == "" and "Loading weights" in err and "scored 10 of 10 files" in err, err  # the control: not quiet


def test_score_quiet_console_script_prints_only_the_table(model_dir, tmp_path):
    write_images(tmp_path / "p", 10)
    result = subprocess.run(CONSOLE + ["score", str(tmp_path / "p"), "--model", str(model_dir), "--quiet"],
                            capture_output=True, text=True, timeout=600, env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["path", "score", "error"] and len(lines) == 11
    assert all(float(line.split()[1]) >= 0 for line in lines[1:])


def test_missing_path_is_a_row(model_dir, tmp_path):
    write_images(tmp_path / "p", 1)
    out = tmp_path / "s.csv"
    code = main(["score", str(tmp_path / "p"), str(tmp_path / "ghost.jpg"), "--model", str(model_dir),
                 "--output", str(out), "--quiet"])
    rows = read_csv(out)
    assert code == 1 and len(rows) == 2 and "not found" in rows[1]["error"]


def test_evaluate_labelled_folder(model_dir, tmp_path):
    folder = tmp_path / "labelled"
    paths = write_images(folder / "images", 6)
    broken = folder / "images" / "broken.png"
    broken.write_bytes(b"")
    mos = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    with open(folder / "metadata.csv", "w") as f:
        f.write("file_name,mos\n")
        for p, m in zip(paths + [broken], mos):
            f.write(f"images/{p.name},{m}\n")
    report_path, plot_path = tmp_path / "report.json", tmp_path / "scatter.png"
    code = main(["evaluate", "--model", str(model_dir), "--data-dir", str(folder), "--output", str(report_path),
                 "--plot", str(plot_path), "--quiet"])
    assert code == 1  # one image could not be read; the rest were evaluated
    report = json.loads(report_path.read_text())
    assert report["n"] == 6 and report["num_failed"] == 1 and "broken.png" in report["failed"][0]["path"]
    for key in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse"):
        assert key in report
    assert len(report["predictions"]) == 7
    from scipy.stats import spearmanr

    scored = [p for p in report["predictions"] if p["score"] is not None]
    assert report["srcc"] == pytest.approx(spearmanr([p["score"] for p in scored], [p["mos"] for p in scored])[0])
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_provenance(report["provenance"], model=str(model_dir), source="local")


def labelled_folder(folder: Path, mos) -> Path:
    paths = write_images(folder / "images", len(mos))
    with open(folder / "metadata.csv", "w") as f:
        f.write("file_name,mos\n" + "".join(f"images/{p.name},{m}\n" for p, m in zip(paths, mos)))
    return folder


def test_evaluate_without_output_prints_a_summary(model_dir, tmp_path, capsys):
    folder = labelled_folder(tmp_path / "data", [10, 40, 20, 80, 60])
    assert main(["evaluate", "--model", str(model_dir), "--data-dir", str(folder), "--quiet", "--num-workers", "0",
                 "--batch-size", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{folder.name}: n=5  SRCC=") and "PLCC(logistic)=" in out and "RMSE=" in out, out
    assert err == "" and not list(tmp_path.glob("**/*.json"))
    # too few images for the logistic fit: the summary says so instead of printing a number
    small = labelled_folder(tmp_path / "small", [10, 40, 20])
    assert main(["evaluate", "--model", str(model_dir), "--data-dir", str(small), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "PLCC(logistic)=nan" in lines[0] and "RMSE=nan" in lines[0], lines
    assert lines[1].startswith("  logistic fit skipped: 3 item(s)"), lines
    assert lines[1].endswith("; PLCC(logistic) and RMSE are not reported"), lines


def test_evaluate_checks_the_dataset_before_loading_the_model(model_dir, tmp_path, capsys, monkeypatch):
    import grmp_iqa_hf.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(grmp_iqa_hf.models, "load_model", no_loading)
    folder = labelled_folder(tmp_path / "data", [10, 40, 20])
    evaluate = ["evaluate", "--model", str(model_dir), "--quiet"]
    # the folder is an imagefolder, not LIVEC's release layout: the loader says so, exit 2
    assert main(evaluate + ["--data-dir", str(folder), "--dataset", "livec"]) == 2
    assert "cannot load dataset 'livec'" in capsys.readouterr().err
    # no score range for a plain folder: --normalize needs --facts
    assert main(evaluate + ["--data-dir", str(folder), "--normalize"]) == 2
    assert "normalize=True needs the score range" in capsys.readouterr().err
    for argv, message in ((["--data-dir", str(folder), "--dataset", "clive2"], "argument --dataset: invalid choice"),
                          (["--data-dir", str(tmp_path / "nope")], "--data-dir"),
                          (["--data-dir", str(folder), "--output", "r.csv"], "--output must be a .json file"),
                          (["--data-dir", str(folder), "--plot", "p.txt"], "--plot must end in one of"),
                          (["--data-dir", str(folder), "--hub-dataset", "org/x"], "give either --data-dir or"),
                          ([], "give either --data-dir or --hub-dataset ORG/NAME")):
        with pytest.raises(SystemExit) as exit_info:
            main(evaluate + argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("usage: grmp-iqa evaluate ") and message in err, err


def test_dataset_choices_are_the_loaders_formats():
    from grmp_iqa_hf.cli import DATASET_FORMATS
    from grmp_iqa_hf.data import SUPPORTED_FORMATS

    assert DATASET_FORMATS == SUPPORTED_FORMATS


def test_dtype_choices_are_the_models_dtypes():
    from grmp_iqa_hf.cli import DTYPES
    from grmp_iqa_hf.modeling.prediction import DTYPES as MODEL_DTYPES

    assert DTYPES == tuple(MODEL_DTYPES)


def test_evaluate_normalize_flips_dmos(model_dir, tmp_path):
    """CSIQ's scores are DMOS in [0, 1] (lower = better): --normalize maps them to 1 - DMOS; the metrics are
    computed against higher-is-better labels either way, so SRCC is the same."""
    dmos = [0.1, 0.7, 0.3, 0.9, 0.5, 0.2]
    folder = labelled_folder(tmp_path / "data", dmos)
    reports = {}
    for name, extra in (("raw", []), ("normalized", ["--normalize"])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", "--model", str(model_dir), "--data-dir", str(folder), "--facts", "csiq",
                     "--output", str(out), "--quiet", *extra]) == 0
        reports[name] = json.loads(out.read_text())
    raw, normalized = reports["raw"], reports["normalized"]
    assert raw["mos_higher_is_better"] is False and raw["metrics_against"].startswith("-mos")
    assert normalized["mos_normalized"] is True and normalized["mos_higher_is_better"] is True
    assert [p["mos"] for p in raw["predictions"]] == pytest.approx(dmos)
    assert [p["mos"] for p in normalized["predictions"]] == pytest.approx([1 - d for d in dmos])
    assert normalized["srcc"] == pytest.approx(raw["srcc"]) and abs(raw["srcc"]) > 0


def test_convert_official_is_wired(tmp_path, capsys, monkeypatch):
    import types

    calls = []

    def convert_official_checkpoint(path, output_dir, base=None):
        calls.append((path, output_dir, base))
        if "bad" in str(path):
            raise ValueError(f"{path}: not a checkpoint of the released GRMP-IQA code (no 'prompt_learner.ctx')")

    monkeypatch.setitem(sys.modules, "grmp_iqa_hf.convert",
                        types.SimpleNamespace(convert_official_checkpoint=convert_official_checkpoint))
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    good.write_bytes(b"x")
    bad.write_bytes(b"x")
    assert main(["convert-official", str(good), "--output-dir", str(tmp_path / "out")]) == 0
    assert calls[-1] == (str(good), str(tmp_path / "out"), "openai/clip-vit-base-patch16")
    assert "converted" in capsys.readouterr().out
    assert main(["convert-official", str(bad), "--output-dir", str(tmp_path / "o"), "--base", str(tmp_path)]) == 2
    assert calls[-1][2] == str(tmp_path)
    assert capsys.readouterr().err == f"error: {bad}: not a checkpoint of the released GRMP-IQA code (no 'prompt_learner.ctx')\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["convert-official", str(tmp_path / "missing.pth"), "--output-dir", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "grmp-iqa convert-official: error: CHECKPOINT" in capsys.readouterr().err
    assert len(calls) == 2


def test_quickstart_end_to_end(tmp_path):
    from grmp_iqa_hf.quickstart import run_quickstart

    summary = run_quickstart(tmp_path / "qs", epochs=2, meta_steps=3, photo_size=48)
    model = GRMPIQAModel.from_pretrained(summary["model_dir"])
    rows = read_csv(summary["scores_csv"])
    assert len(rows) == summary["test_images"] > 0 and all(r["error"] == "" for r in rows)
    for stage in ("srcc_zero_shot", "srcc_after_meta_pretraining", "srcc_after_qgr_finetuning"):
        assert np.isfinite(summary[stage]), stage
    assert len(summary["history"]) == 2 and summary["fewshot_images"] == 50
    assert [e["step"] for e in summary["meta_evaluations"]] == [0, 1, 2, 3]
    assert model.config.training_info["stage"].startswith("quickstart: meta-prompt pre-training")
    written = json.loads((tmp_path / "qs" / "quickstart.json").read_text())
    for record in (written["provenance"], json.loads(Path(f"{summary['scores_csv']}.json").read_text())["provenance"]):
        assert_provenance(record, model=summary["model_dir"], source="local")
        assert record["backbone"] == "tiny-random" and record["backbone_source"] == "builtin"


def test_push_quiet_prints_only_the_result(model_dir, capfd, monkeypatch):
    """`push --quiet` against the local Hub stand-in (in-process: the endpoint is patched where HfApi reads it):
    no "Writing model shards" bar, no upload bars, no warnings; without --quiet they show (the control)."""
    from huggingface_hub import constants

    from hub_stand_in import LocalHub

    with LocalHub() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
        capfd.readouterr()
        assert main(["push", str(model_dir), "--repo-id", "org/quiet", "--quiet"]) == 0
        out, err = capfd.readouterr()
        assert err == "" and out.startswith("pushed ") and len(out.splitlines()) == 1, (out, err)
        assert main(["push", str(model_dir), "--repo-id", "org/loud"]) == 0
        out, err = capfd.readouterr()
        assert "Writing model shards" in err and out.startswith("pushed "), (out, err)
