"""Reliability, end to end through the real entry points (subprocesses, as a user runs them):

1. `grmp-iqa score` over a zoo of odd and broken files: one row per file, a reason for every failure;
2. `kill -9` during each trainer (meta-pre-training, few-shot fine-tuning, MP-IQE), then
   `--resume-from-checkpoint latest`, ends with exactly the weights of an uninterrupted run;
3. a model folder whose only weights are a malicious pickle is refused, and the pickle never runs;
4. bad dataset metadata gives one error naming every bad row (CLI `evaluate` and a trainer).
"""

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, features
from safetensors.torch import load_file

from grmp_iqa_hf.testing import write_noise_folder

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

# Every subprocess: one thread (the machine is small and shared), offline, CPU only (deterministic).
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
           CUDA_VISIBLE_DEVICES="")
CLI = [sys.executable, "-m", "grmp_iqa_hf.cli"]
TIMEOUT = 300


def run(command, **kwargs):
    return subprocess.run([str(c) for c in command], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=TIMEOUT, **kwargs)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny GRMP-IQA model (as tests/test_cli.py builds it), shared by the module's tests."""
    from grmp_iqa_hf.models import build_model

    path = tmp_path_factory.mktemp("reliability") / "model"
    build_model("tiny-random", seed=0, num_visual_prompts=4).save_pretrained(path)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    return path


# ---------------------------------------------------------------------------------------------
# 1. a file zoo through `grmp-iqa score`
# ---------------------------------------------------------------------------------------------


def _photo(h, w, seed=0):
    """A smooth RGB picture with some texture (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 128 + 0 * x], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def make_zoo(root: Path):
    """Write the zoo; returns (readable files, {broken file: words one of which its reason must contain})."""
    root.mkdir(parents=True)
    (root / "nested" / "deeper").mkdir(parents=True)
    rgb = Image.fromarray(_photo(48, 64))
    readable = {}

    def add(name, img, **save_kwargs):
        path = root / name
        img.save(path, **save_kwargs)
        readable[name] = path

    add("grey_L.png", rgb.convert("L"))
    add("grey_alpha_LA.png", Image.merge("LA", (rgb.convert("L"), Image.linear_gradient("L").resize(rgb.size))))
    add("rgba.png", rgb.convert("RGBA"))
    add("cmyk.jpg", rgb.convert("CMYK"))
    add("palette_P.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32))
    sixteen = Image.fromarray((np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16))
    assert sixteen.mode in ("I;16", "I;16L", "I")
    add("sixteen_bit.png", sixteen)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    add("exif_orientation_6.jpg", rgb, exif=exif)
    add("tiny_5x7.png", Image.fromarray(_photo(7, 5, seed=1)))
    add("extreme_3000x12.png", Image.fromarray(_photo(12, 3000, seed=2)))
    add("large_4000x3000.jpg", Image.fromarray(_photo(300, 400, seed=3)).resize((4000, 3000)), quality=85)
    assert features.check("webp"), "this Pillow cannot write WebP"
    add("photo.webp", rgb)
    add("photo.tiff", rgb)
    add("photo.bmp", rgb)
    add("photo.gif", rgb.convert("P", palette=Image.Palette.ADAPTIVE))
    frames = [Image.fromarray(_photo(48, 64, seed=s)).convert("P", palette=Image.Palette.ADAPTIVE) for s in range(3)]
    add("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=80, loop=0)
    add("UPPER.JPG", rgb, format="JPEG")
    add("UPPER.PNG", rgb, format="PNG")
    add("nested/in_sub.jpg", rgb)
    add("nested/deeper/in_sub_sub.png", rgb.convert("RGBA"))
    with Image.open(readable["animated.gif"]) as img:
        assert img.n_frames == 3
    with Image.open(readable["exif_orientation_6.jpg"]) as img:
        assert img.getexif().get(0x0112) == 6

    broken = {}
    big = root / "nested" / "truncated.jpg"
    Image.fromarray(_photo(256, 256, seed=4)).save(big)
    data = big.read_bytes()
    big.write_bytes(data[: len(data) // 2])
    broken[big] = ("truncated",)
    (root / "empty.jpg").write_bytes(b"")
    broken[root / "empty.jpg"] = ("empty",)
    (root / "text.png").write_text("this is a text file, not a PNG\n")
    broken[root / "text.png"] = ("cannot identify", "not an image")
    bomb = root / "nested" / "deeper" / "bomb.png"
    side = 14000
    assert side * side > 2 * Image.MAX_IMAGE_PIXELS
    Image.new("1", (side, side)).save(bomb, optimize=False)
    assert bomb.stat().st_size < 1_000_000  # small on disk, 196 Mpx once decoded
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)
    broken[bomb] = ("decompression bomb",)

    (root / "notes.txt").write_text("not an image extension: not picked up by the folder walk")
    (root / ".hidden.jpg").write_bytes(data)  # hidden files are skipped too
    return list(readable.values()), broken


def test_score_a_file_zoo_through_the_cli(model_dir, tmp_path):
    readable, broken = make_zoo(tmp_path / "zoo")
    out = tmp_path / "out.csv"
    result = run(CLI + ["score", tmp_path / "zoo", "--model", model_dir, "--output", out, "--quiet",
                        "--batch-size", "4"])
    assert result.returncode == 1, f"exit code {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    rows = read_csv(out)
    by_path = {os.path.normpath(r["path"]): r for r in rows}
    expected = {os.path.normpath(str(p)) for p in [*readable, *broken]}
    assert len(rows) == len(by_path) == len(expected), "one row per file, no duplicates"
    assert set(by_path) == expected, (f"missing: {sorted(expected - set(by_path))}, "
                                      f"unexpected: {sorted(set(by_path) - expected)}")

    for path in readable:
        row = by_path[os.path.normpath(str(path))]
        assert row["error"] == "", f"{path.name}: {row['error']}"
        score = float(row["score"])
        assert math.isfinite(score) and 0.0 <= score <= 1.0, (path.name, score)
    for path, words in broken.items():
        row = by_path[os.path.normpath(str(path))]
        assert row["score"] == "", f"{path.name} got a score"
        assert row["error"].strip(), f"{path.name} has no error"
        assert any(w in row["error"].lower() for w in words), f"{path.name}: reason {row['error']!r} lacks {words}"
        named = [line for line in result.stderr.splitlines() if str(path) in line]
        assert named, f"stderr does not name {path}:\n{result.stderr[-3000:]}"
    bomb_error = by_path[os.path.normpath(str(next(p for p in broken if p.name == "bomb.png")))]["error"]
    assert "pixels" in bomb_error and str(14000 * 14000) in bomb_error
    # readable files are not reported as failures
    for path in readable:
        assert f"could not read {path}" not in result.stderr
    assert f"scored {len(readable)} of {len(expected)} files" in result.stderr


# ---------------------------------------------------------------------------------------------
# 2. kill -9 and resume, for each trainer
# ---------------------------------------------------------------------------------------------


def _fewshot_folder(root: Path, n=30):
    """A small labelled imagefolder (random photos with a smooth quality label), as tests/test_finetune.py."""
    return write_noise_folder(root, n)


def _mpiqe_folder(root: Path, n=24, seed=0):
    """An imagefolder with LIQE-style scene / distortion labels, as tests/test_mpiqe.py."""
    scenes = ["animal", "cityscape", "human", "indoor", "landscape", "night", "plant", "still_life", "others"]
    kinds = ["gaussian blur", "jpeg", "white noise", "contrast change"]
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "mos", "distortion", "scenes"])
        for i in range(n):
            level = rng.uniform(20, 230)
            pixels = np.clip(rng.normal(level, 30, (72, 80, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
            labels = ";".join(scenes[j] for j in sorted({i % 9, (i * 5) % 9}))
            writer.writerow([f"images/{i:03d}.png", f"{100 * level / 255:.3f}", kinds[i % 4], labels])
    return root


# Each trainer: its command (without output dir / resume flag), where its checkpoints appear and where
# its final weights go. Step counts are chosen so that a run lasts a few seconds after its first checkpoint.
def _meta(tmp_path):
    command = [sys.executable, EXAMPLES / "meta_pretrain.py", "--distortions", "gaussian_blur", "jpeg", "white_noise",
               "--levels", "1", "3", "5", "--pristine-size", "64", "--holdout", "1", "--max-steps", "70",
               "--tasks-per-step", "2", "--support-size", "4", "--query-size", "4", "--inner-steps", "1",
               "--inner-lr", "0.5", "--algorithm", "fomaml", "--outer-lr", "0.005", "--eval-steps", "20",
               "--num-visual-prompts", "4", "--seed", "1", "--checkpointing-steps", "5", "--no-progress"]
    # fomaml's outer optimizer is Adam: its state must survive the kill too (plain SGD has none)
    return dict(command=lambda out: command + ["--output-dir", out], resume=["--resume-from-checkpoint", "latest"],
                checkpoints="checkpoints", weights="model.safetensors")


def _fewshot(tmp_path):
    data = _fewshot_folder(tmp_path / "data")
    command = [sys.executable, EXAMPLES / "finetune_fewshot.py", "--backbone", "tiny-random", "--data-dir", data,
               "--num-images", "20", "--num-splits", "1", "--epochs", "40", "--batch-size", "5",
               "--top-k-blocks", "1", "--learning-rate", "0.5", "--momentum", "0.9", "--lr-decay-patience", "2",
               "--eval-every", "10", "--save-model", "--checkpointing-steps", "8", "--seed", "3", "--no-progress"]
    return dict(command=lambda out: command + ["--output-dir", out], resume=["--resume-from-checkpoint", "latest"],
                checkpoints="grmp_iqa/split_0/checkpoints", weights="grmp_iqa/split_0/model/model.safetensors")


def _mpiqe(tmp_path):
    data = _mpiqe_folder(tmp_path / "data")
    command = [sys.executable, EXAMPLES / "train_mpiqe.py", "--data_dir", data, "--epochs", "40", "--batch_size", "8",
               "--num_splits", "1", "--learning_rate", "3e-3", "--num_visual_prompts", "2", "--warmup_ratio", "0.1",
               "--checkpointing_steps", "6", "--seed", "2", "--no_progress"]
    return dict(command=lambda out: command + ["--output_dir", out], resume=["--resume_from_checkpoint", "latest"],
                checkpoints="split_00/checkpoints", weights="model.safetensors")


TRAINERS = {"meta_pretrain": _meta, "finetune_fewshot": _fewshot, "train_mpiqe": _mpiqe}


def _checkpoints(folder: Path):
    """Complete checkpoints (`step_*` folders appear by an atomic rename), oldest first."""
    return sorted(p for p in folder.glob("step_*") if (p / "state.json").is_file())


def _run_and_kill(command, out: Path, spec, log: Path):
    """Start `command`, SIGKILL it as soon as its first checkpoint exists; returns the checkpoints left."""
    checkpoint_dir = out / spec["checkpoints"]
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(c) for c in command], cwd=REPO, env=ENV, stdout=fh, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT
            while not _checkpoints(checkpoint_dir):
                if proc.poll() is not None:
                    pytest.fail(f"exited ({proc.returncode}) before writing a checkpoint:\n{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail("no checkpoint appeared in time")
                time.sleep(0.02)
            if proc.poll() is not None:
                pytest.fail(f"the run finished ({proc.returncode}) before it could be killed: give it more steps")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was not killed by SIGKILL (exit {proc.returncode}): it finished before the kill landed; "
        f"give it more steps\n{log.read_text()[-2000:]}")
    assert not (out / spec["weights"]).exists(), "the killed run had already saved its final model"
    left = _checkpoints(checkpoint_dir)
    assert left, "the checkpoint disappeared"
    return left


def _diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), f"different tensors: {sorted(set(a) ^ set(b))[:10]}"
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_kill_9_then_resume_gives_the_uninterrupted_weights(trainer, tmp_path):
    spec = TRAINERS[trainer](tmp_path)

    straight = run(spec["command"](tmp_path / "straight"))
    assert straight.returncode == 0, straight.stdout[-2000:] + straight.stderr[-3000:]
    reference = load_file(str(tmp_path / "straight" / spec["weights"]))

    out = tmp_path / "killed"
    left = _run_and_kill(spec["command"](out), out, spec, tmp_path / "killed.log")
    latest = left[-1]
    step = int(latest.name.split("_")[1])
    state = json.loads((latest / "state.json").read_text())
    saved = load_file(str(latest / "state.safetensors"))

    resumed = run(spec["command"](out) + spec["resume"])
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    # it really continued from the checkpoint (a fresh start with the same seed would end identical too)
    if trainer == "finetune_fewshot":
        # the finished epochs' records (with their wall-clock seconds, which a re-run could not reproduce)
        # come from the killed run's checkpoint
        history = json.loads((out / "grmp_iqa" / "split_0" / "history.json").read_text())
        assert state["history"], "the checkpoint holds no finished epoch"
        assert history[: len(state["history"])] == state["history"]
    else:
        assert f"Resumed from {latest}" in resumed.stdout + resumed.stderr, resumed.stdout[-2000:]
    assert f"step {step}" in resumed.stdout + resumed.stderr or trainer == "finetune_fewshot"

    final = load_file(str(out / spec["weights"]))
    assert final.keys() == reference.keys()
    worst = max(final, key=lambda k: _diff({k: final[k]}, {k: reference[k]}))
    diff = _diff(final, reference)
    assert diff < 1e-6, f"resumed weights differ from the uninterrupted run's: max abs diff {diff:.3g} ({worst})"
    # training after the checkpoint moved the weights (so the comparison above is not vacuous)
    moved = [float((saved[k] - final[k.split(".", 1)[1]]).abs().max()) for k in saved
             if k.split(".", 1)[0] in ("model", "param") and k.split(".", 1)[1] in final]
    must_move = True
    if trainer == "meta_pretrain":  # held-out selection may pick a step at or before the checkpoint
        must_move = json.loads((out / "meta_history.json").read_text())["selected"].get("step", 0) > step
    if must_move:
        assert moved and max(moved) > 1e-5, "no trained parameter changed after the checkpoint"


# ---------------------------------------------------------------------------------------------
# 3. a malicious pickle instead of safetensors weights
# ---------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates (opens for writing) `marker`: stands in for arbitrary code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_checkpoint_is_refused_and_never_unpickled(model_dir, tmp_path):
    # the payload is live: torch.load without weights_only really runs it
    control = tmp_path / "control_marker"
    torch.save({"x": _Payload(control)}, tmp_path / "control.bin")
    torch.load(tmp_path / "control.bin", weights_only=False)["x"].close()
    assert control.exists(), "the payload does not work: this test would prove nothing"

    evil = tmp_path / "evil_model"
    shutil.copytree(model_dir, evil)
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    torch.save({"x": _Payload(marker)}, evil / "pytorch_model.bin")
    assert json.loads((evil / "config.json").read_text())["model_type"]

    from grmp_iqa_hf.models import load_model

    with pytest.raises((OSError, ValueError)) as info:
        load_model(str(evil))
    assert "safetensors" in str(info.value), str(info.value)
    assert not marker.exists()

    image = tmp_path / "img.png"
    Image.fromarray(_photo(40, 40)).save(image)
    out = tmp_path / "scores.csv"
    result = run(CLI + ["score", image, "--model", evil, "--output", out, "--quiet"])
    assert result.returncode != 0
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "cannot load model" in result.stderr and "safetensors" in result.stderr, result.stderr[-3000:]
    assert not out.exists()
    assert not marker.exists(), "the pickle was unpickled: arbitrary code ran"


# ---------------------------------------------------------------------------------------------
# 4. bad metadata: one error naming every bad row
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bad_dataset(tmp_path):
    root = tmp_path / "bad_data"
    (root / "images").mkdir(parents=True)
    for i, name in enumerate(["ok0", "ok1", "ok2", "ok3", "nan", "text"]):
        Image.fromarray(_photo(40, 48, seed=i)).save(root / "images" / f"{name}.png")
    (root / "metadata.csv").write_text(
        "file_name,mos\n"
        "images/ok0.png,50\n"  # row 2
        "images/missing.png,40\n"  # row 3: no such file
        "images/ok1.png,45\n"  # row 4
        "images/nan.png,NaN\n"  # row 5
        "images/text.png,good\n"  # row 6: not a number
        "images/ok2.png,60\n"  # row 7
        "images/ok3.png,55\n"  # row 8
    )
    bad_rows = {3: "images/missing.png", 5: "images/nan.png", 6: "images/text.png"}
    return root, bad_rows


def _names_every_row(stderr: str, bad_rows: dict) -> None:
    for row, name in bad_rows.items():
        assert any(f"row {row} ({name})" in line for line in stderr.splitlines()), \
            f"row {row} ({name}) not named:\n{stderr[-3000:]}"
    for good in ("ok0.png", "ok1.png", "ok2.png", "ok3.png"):
        assert good not in stderr
    assert stderr.count("3 problem(s) in the metadata") == 1, stderr[-3000:]


def test_bad_metadata_through_evaluate_and_a_trainer(model_dir, bad_dataset, tmp_path):
    data, bad_rows = bad_dataset
    report = tmp_path / "r.json"
    result = run(CLI + ["evaluate", "--model", model_dir, "--data-dir", data, "--output", report, "--quiet"])
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1, result.stderr[-3000:]
    _names_every_row(result.stderr, bad_rows)
    assert not report.exists()

    # a trainer given the same folder stops before training, with the same single message
    out = tmp_path / "fewshot_out"
    trained = run([sys.executable, EXAMPLES / "finetune_fewshot.py", "--backbone", "tiny-random", "--data-dir", data,
                   "--num-images", "2", "--num-splits", "1", "--epochs", "1", "--output-dir", out, "--no-progress"])
    assert trained.returncode == 2, trained.stdout[-2000:]
    assert "Traceback" not in trained.stderr and trained.stderr.lstrip().startswith("error: 3 problem(s)"), \
        trained.stderr[-3000:]
    _names_every_row(trained.stderr, bad_rows)
    assert not list(out.glob("*/split_*")), "training started on a dataset with bad metadata"
