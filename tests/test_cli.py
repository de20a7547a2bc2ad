"""`grmp-iqa score`, `evaluate` and `quickstart`, run as a user would (console script in a subprocess
where it matters, `main()` in-process elsewhere)."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grmp_iqa_hf import GRMPIQAModel
from grmp_iqa_hf.cli import main
from grmp_iqa_hf.testing import tiny_clip


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
    script = Path(sys.executable).with_name("grmp-iqa")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "grmp_iqa_hf.cli"]
    result = subprocess.run(
        command + ["score", str(clive_dir / "images"), "--model", str(model_dir), "--output", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_csv(out)
    assert len(rows) == 627
    assert all(r["error"] == "" for r in rows)
    scores = np.array([float(r["score"]) for r in rows])
    assert np.all((scores >= 0) & (scores <= 1)) and np.all(np.isfinite(scores))
    assert "scored 627 of 627 files" in result.stderr


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
    rows = json.loads(out.read_text())
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
    assert main(["score", str(tmp_path / "p"), "--model", str(model_dir), "--output", "x.txt"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["score", str(empty), "--model", str(model_dir)]) == 2
    assert main(["score", str(tmp_path / "p"), "--model", str(tmp_path / "no-such-model")]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["score"])
    assert exit_info.value.code == 2


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
