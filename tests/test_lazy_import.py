"""The package imports lazily, so the CLI answers at once, and still registers its models with transformers'
Auto classes in whatever order a user imports things (each case in a fresh interpreter)."""

import os
import statistics
import subprocess
import sys
import textwrap
import time

import pytest

from grmp_iqa_hf.models import build_model

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           CUDA_VISIBLE_DEVICES="")
CLI = [sys.executable, "-m", "grmp_iqa_hf.cli"]
COMMANDS = ("score", "evaluate", "push", "push-dataset", "quickstart", "convert-official")


def test_importing_the_package_and_the_cli_imports_neither_torch_nor_transformers():
    code = ("import sys, grmp_iqa_hf, grmp_iqa_hf.cli, grmp_iqa_hf.provenance, grmp_iqa_hf.scoring\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'numpy', 'datasets') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "assert 'GRMPIQAModel' in dir(grmp_iqa_hf) and grmp_iqa_hf.__version__")
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def _median_seconds(args, runs=5):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = subprocess.run(CLI + args, env=ENV, capture_output=True, text=True, timeout=60)
        times.append(time.perf_counter() - started)
        assert result.returncode == 0, result.stderr[-2000:]
    return statistics.median(times), result.stdout


def test_help_and_version_answer_in_under_a_second():
    seconds, text = _median_seconds(["--help"])
    assert seconds < 1.0, f"grmp-iqa --help: median {seconds:.2f} s"
    assert all(command in text for command in COMMANDS) and "--version" in text
    seconds, text = _median_seconds(["--version"])
    assert seconds < 1.0 and text.startswith("grmp-iqa 0.1.0 (torch "), text
    for command in COMMANDS:
        seconds, text = _median_seconds([command, "--help"], runs=3)
        assert seconds < 1.0, f"grmp-iqa {command} --help: median {seconds:.2f} s"
        assert text.startswith(f"usage: grmp-iqa {command} ") and "--quiet" in text, text
    assert "(default: 32)" in _median_seconds(["score", "--help"], runs=1)[1]
    assert "(default: openai/clip-vit-base-patch16)" in _median_seconds(["convert-official", "--help"], runs=1)[1]


ORDERS = {
    "package first": "import grmp_iqa_hf\nassert 'transformers' not in sys.modules\nfrom transformers import AutoModel",
    # transformers first, then the package: tests/test_modeling.py imports in that order (in-process)
    # CLIPModel's modules import the Auto classes while they are half executed: registration must wait
    "CLIP then Auto": "import grmp_iqa_hf\nfrom transformers import CLIPModel\nfrom transformers import AutoModel",
    "modeling submodule": "from grmp_iqa_hf.modeling import GRMPIQAModel\nfrom transformers import AutoModel",
}
# the control: without the package the config is unknown to transformers (AutoConfig alone: no torch needed)
CONTROL = "import sys\nfrom transformers import AutoConfig\nAutoConfig.from_pretrained(sys.argv[1])\n"
CHECK = textwrap.dedent("""
    from transformers import AutoImageProcessor
    model = AutoModel.from_pretrained(sys.argv[1])
    processor = AutoImageProcessor.from_pretrained(sys.argv[1])
    assert type(model).__module__ == "grmp_iqa_hf.modeling.modeling_grmp_iqa", type(model).__module__
    assert type(processor).__name__ == "IQAImageProcessor", type(processor)
""")


@pytest.mark.slow
def test_auto_classes_in_every_import_order(tmp_path):
    build_model("tiny-random", seed=0, num_visual_prompts=2).save_pretrained(tmp_path / "model")
    running = {}
    scripts = {name: "import sys\n" + imports + "\n" + CHECK for name, imports in ORDERS.items()}
    scripts["without the package"] = CONTROL
    for name, code in scripts.items():  # in parallel: each interpreter spends seconds importing torch
        script = tmp_path / f"{name.replace(' ', '_')}.py"
        script.write_text(code)
        running[name] = subprocess.Popen([sys.executable, str(script), str(tmp_path / "model")], env=ENV, cwd=tmp_path,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, process in running.items():
        _, err = process.communicate(timeout=300)
        if name == "without the package":
            assert process.returncode != 0 and "trust_remote_code" in err, err[-2000:]
        else:
            assert process.returncode == 0, f"{name}:\n{err[-3000:]}"
