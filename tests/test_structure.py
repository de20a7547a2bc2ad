"""The package's architecture, checked from the source (see ARCHITECTURE.md): which layer may import which,
module sizes, and the few facts that must have one home. Static (AST) checks: no imports, no torch."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "grmp_iqa_hf"
MODELING = REPO / "modeling"  # installed as grmp_iqa_hf.modeling
MAX_LINES = 600


def _modules():
    """(dotted name, path) of every module of the installed package, `modeling/` included."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        yield ".".join(p for p in parts if p != "__init__"), path
    for path in sorted(MODELING.glob("*.py")):
        yield ".".join(("grmp_iqa_hf", "modeling", *([] if path.stem == "__init__" else [path.stem]))), path


def _imports(module: str, path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved), at any depth of the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from . import training`
    return found


MODULES = dict(_modules())


def test_the_scan_sees_the_package():
    # guards the other tests against passing on an empty scan
    assert "grmp_iqa_hf.evaluation.metrics" in MODULES and "grmp_iqa_hf.training.trainer" in MODULES
    assert "grmp_iqa_hf.training.meta" in _imports("grmp_iqa_hf.protocols.meta", MODULES["grmp_iqa_hf.protocols.meta"])


@pytest.mark.parametrize("layer", ["grmp_iqa_hf.evaluation", "grmp_iqa_hf.modeling"])
def test_lower_layers_import_nothing_from_training_or_protocols(layer):
    bad = {
        module: sorted(name for name in _imports(module, path)
                       if name.startswith(("grmp_iqa_hf.training", "grmp_iqa_hf.protocols")))
        for module, path in MODULES.items() if module == layer or module.startswith(layer + ".")
    }
    assert not {k: v for k, v in bad.items() if v}


def test_the_model_code_is_self_contained():
    """`modeling/` is the Hub's remote code: only torch, numpy, transformers, safetensors and itself."""
    allowed = ("torch", "numpy", "transformers", "safetensors", "grmp_iqa_hf.modeling", "__future__", "PIL")
    stdlib = {"os", "sys", "math", "copy", "json", "re", "warnings", "dataclasses", "typing", "io", "collections",
              "functools", "contextlib", "itertools", "pathlib", "types", "inspect"}
    bad = {}
    for module, path in MODULES.items():
        if module.startswith("grmp_iqa_hf.modeling"):
            names = {n for n in _imports(module, path) if not n.startswith(allowed) and n.split(".")[0] not in stdlib}
            if names:
                bad[module] = sorted(names)
    assert not bad


def test_only_load_backbone_reaches_the_test_clip():
    users = sorted(module for module, path in MODULES.items()
                   if any(name.startswith("grmp_iqa_hf.testing") for name in _imports(module, path)))
    assert users == ["grmp_iqa_hf.models"]


def test_no_module_is_over_600_lines():
    sizes = {module: len(path.read_text().splitlines()) for module, path in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_cards_know_no_method_by_name():
    source = (PACKAGE / "hub" / "cards.py").read_text()
    assert "model_type ==" not in source and "model_type in" not in source
