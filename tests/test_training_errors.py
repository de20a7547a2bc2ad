"""Training scripts end on a user's error with one `error:` line and exit status 2, never a traceback; a bug
in our own code keeps its traceback (`grmp_iqa_hf.training.common.exit_on_input_errors`)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grmp_iqa_hf.training.common import check_finite, exit_on_input_errors, is_input_error

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           CUDA_VISIBLE_DEVICES="")


def ends_with_one_line(action, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        with exit_on_input_errors():
            action()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1, err
    return err


def test_user_errors_become_one_line(tmp_path, capsys):
    from grmp_iqa_hf.data import load_iqa_dataset
    from grmp_iqa_hf.models import load_model

    err = ends_with_one_line(lambda: load_model(str(tmp_path / "nosuch_model")), capsys)
    assert f"cannot load model '{tmp_path / 'nosuch_model'}'" in err
    err = ends_with_one_line(lambda: load_iqa_dataset("no-such-format", tmp_path), capsys)
    assert "no-such-format" in err
    err = ends_with_one_line(lambda: open(tmp_path / "missing.json"), capsys)  # noqa: SIM115
    assert "missing.json" in err
    err = ends_with_one_line(lambda: check_finite(float("nan"), "training loss", 3), capsys)
    assert "training loss is nan at step 3" in err
    # a bad combination of flags: a usage error of every script's parser (exit 2), and a ValueError in Python
    from grmp_iqa_hf.protocols.arguments import parse_arguments
    from grmp_iqa_hf.protocols.fewshot import FewShotConfig
    from grmp_iqa_hf.protocols.meta import MetaPretrainArguments
    from grmp_iqa_hf.protocols.mpiqe import MPIQETrainingArguments

    with pytest.raises(ValueError, match="not both"):
        MetaPretrainArguments(output_dir=str(tmp_path / "meta"), model=str(tmp_path), backbone="org/clip")
    both = ["--output-dir", str(tmp_path / "out"), "--data-dir", str(tmp_path), "--model", str(tmp_path),
            "--backbone", "org/clip"]
    for cls, argv in ((MetaPretrainArguments, both[:2] + both[4:]), (FewShotConfig, both), (MPIQETrainingArguments, both)):
        with pytest.raises(SystemExit) as info:
            parse_arguments(cls, argv)
        assert info.value.code == 2
        assert "not both" in capsys.readouterr().err, cls.__name__


def test_bugs_keep_their_traceback():
    from grmp_iqa_hf.provenance import collect

    with pytest.raises(ValueError, match="cannot reshape"):  # raised inside numpy: more likely our bug
        with exit_on_input_errors():
            np.zeros(3).reshape(2)
    with pytest.raises(TypeError):  # our own code called wrongly
        with exit_on_input_errors():
            collect(None, None, None, None, None)
    for err in (KeyError("x"), RuntimeError("internal: image cache and dataset disagree"), AssertionError()):
        assert not is_input_error(err)


@pytest.mark.slow
def test_scripts_end_with_one_error_line(tmp_path):
    """Each script in its own interpreter, in parallel: a `--model` folder that does not exist, a CLIP
    backbone that is not there."""
    from PIL import Image

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(data / "images" / f"{i}.png")
    (data / "metadata.csv").write_text("file_name,mos\n" + "".join(f"images/{i}.png,{10 * i + 5}\n" for i in range(6)))
    scripts = {
        "bad --model": (["meta_pretrain.py", "--model", "./nosuch_model", "--output-dir", tmp_path / "meta"],
                        "nosuch_model"),
        "bad --backbone": (["train_mpiqe.py", "--backbone", "./nosuch_clip", "--data-dir", data,
                            "--output-dir", tmp_path / "mpiqe"], "cannot load backbone './nosuch_clip'"),
    }
    running = {name: subprocess.Popen([sys.executable, str(REPO / "examples" / args[0]), *map(str, args[1:])],
                                      cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, (args, _) in scripts.items()}
    for name, process in running.items():
        _, err = process.communicate(timeout=300)
        assert process.returncode == 2, f"{name}: exit {process.returncode}\n{err[-3000:]}"
        assert "Traceback" not in err, f"{name}:\n{err[-3000:]}"
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and scripts[name][1] in errors[0], f"{name}:\n{err[-3000:]}"
