"""The package layout of docs/architecture.md section 5: import order, no cycles, packaging, public names."""
from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "polar"
STAGES = ("programs", "runtime", "tasks", "jobs", "search", "predictor", "routers", "evaluation")


def test_import_contracts_hold():
    """import-linter's contracts in pyproject.toml (stage layers, tasks/runtime layers) are kept."""
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}{os.pathsep}{ROOT}"}
    proc = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.lower().replace("0 broken", "")


def _package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_imports_through_the_package_root():
    """Inside polar, nothing does ``from polar import X`` / ``import polar`` / ``from .. import X``
    with X not a module (that would run polar/__init__ and make an import cycle)."""
    bad = []
    for path in _package_modules():
        rel = path.relative_to(PACKAGE.parent)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        depth = len(rel.parts) - 1  # package depth of this module: polar/x.py -> 1
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == "polar" for a in node.names):
                bad.append(f"{rel}:{node.lineno} import polar")
            if isinstance(node, ast.ImportFrom):
                absolute_root = node.level == 0 and node.module == "polar"
                relative_root = node.level == depth and node.module is None
                if absolute_root or relative_root:
                    names = [a.name for a in node.names]
                    not_modules = [n for n in names if not (PACKAGE / n).is_dir() and not list(PACKAGE.glob(f"{n}.*"))]
                    if not_modules:
                        bad.append(f"{rel}:{node.lineno} imports {not_modules} through the package root")
    assert not bad, bad


def test_no_function_level_imports_of_polar_modules():
    """Imports of polar's own modules sit at module level (none hidden in functions to dodge a cycle)."""
    bad = []
    for path in _package_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("polar")):
                        bad.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not bad, bad


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_a_small_public_api(stage):
    mod = importlib.import_module(f"polar.{stage}")
    assert isinstance(mod.__all__, list)
    for name in mod.__all__:
        assert hasattr(mod, name), f"polar.{stage}.__all__ names missing {name}"
        assert not name.startswith("_")


def test_top_level_import_is_light():
    """``import polar`` does not import search / predictor / evaluation."""
    code = ("import sys, polar; bad = [m for m in ('polar.search', 'polar.predictor', 'polar.evaluation') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_built_wheel_contains_every_subpackage(tmp_path):
    """Build the wheel (compiles polar._C) and import every subpackage from it in a clean process."""
    pytest.importorskip("build")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                           str(ROOT)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("polar-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    subpackages = sorted({str(p.parent.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("__init__.py")
                          if "__pycache__" not in p.parts})
    for sub in subpackages + ["polar_kernels"]:
        assert f"{sub}/__init__.py" in names, f"{sub} missing from the wheel"
    assert any(n.startswith("polar/_C") and n.endswith(".so") for n in names)
    tasks = PACKAGE / "evaluation" / "lm_eval_tasks"  # package data: the lm-eval task YAMLs and their template
    for data in [*tasks.glob("*.yaml"), tasks / "_polar_generate_template"]:
        assert f"polar/evaluation/lm_eval_tasks/{data.name}" in names, f"{data.name} missing from the wheel"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    modules = [s.replace("/", ".") for s in subpackages] + ["polar._C", "polar_kernels"]
    code = (f"import sys; sys.path.insert(0, {str(site)!r}); import importlib\n"
            f"for m in {modules!r}:\n    mod = importlib.import_module(m)\n"
            f"    assert mod.__file__.startswith({str(site)!r}), (m, mod.__file__)\nprint('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0 and "ok" in run.stdout, run.stdout + run.stderr
