"""Imports point down (issue #13): the contracts in pyproject.toml ([tool.importlinter]) hold,
and they fail on an upward import.

The contracts are the one home of the layering rule; `bin/lint` runs them too. The last test
is the runtime counterpart for recon and bridge: importing all of the package loads none of
the modules its contract forbids, which also catches a third-party import that would drag the
web stack in.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def _contract(contract_id: str) -> dict:
    [contract] = [c for c in CONFIG["contracts"] if c["id"] == contract_id]
    return contract


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", "pyproject.toml", "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


def test_the_tree_keeps_every_contract():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = [line for line in proc.stdout.splitlines() if line.rstrip().endswith("KEPT") or " KEPT (" in line]
    assert len(kept) == len(CONFIG["contracts"]) == 4
    assert "0 broken" in proc.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The project's packages (Python files only) and pyproject.toml, to mutate."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    for package in CONFIG["root_packages"]:
        shutil.copytree(REPO / package, root / package, ignore=_only_python)
    return root


def _only_python(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())]


@pytest.mark.parametrize(
    "module, source, broken",
    [
        # the bottom app reaching up to trials
        ("audit/_upward.py", "from trials import models\n", "audit is not allowed to import trials"),
        # a lazy import inside a function is an import too
        ("trials/_upward.py", "def f():\n    from imaging import models\n", "trials is not allowed to import imaging"),
        ("imaging/_upward.py", "import web.views\n", "imaging is not allowed to import web"),
        ("config/ids_upward.py", "from compliance import tokens\n", None),  # not plumbing: allowed
        ("config/errors.py", "from trials import models\n", "config.errors is not allowed to import trials"),
        ("recon/_impure.py", "import django\n", "recon is not allowed to import django"),
        ("bridge/_impure.py", "import rest_framework\n", "bridge is not allowed to import rest_framework"),
        ("bridge/_on_recon.py", "def f():\n    import recon.mdf\n", "bridge is not allowed to import recon"),
    ],
)
def test_it_fails_on_an_upward_import(tree_copy, module, source, broken):
    path = tree_copy / module
    original = path.read_text() if path.exists() else None
    path.write_text((original or "") + "\n" + source)
    try:
        proc = _lint_imports(tree_copy)
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_text(original)
    if broken is None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert broken in proc.stdout
        assert "Contracts: 3 kept, 1 broken." in proc.stdout


PROBE = """
import importlib, json, pkgutil, sys
PACKAGE = importlib.import_module(sys.argv[1])
failed = {}
for info in pkgutil.walk_packages(PACKAGE.__path__, sys.argv[1] + "."):
    if info.name.endswith(".__main__"):
        continue  # running it would parse this process's argv
    try:
        importlib.import_module(info.name)
    except Exception as exc:  # a broken sibling module is not a purity failure
        failed[info.name] = type(exc).__name__
print(json.dumps({"modules": sorted(sys.modules), "failed": failed}))
"""


@pytest.mark.parametrize(
    "package, contract, expected", [("recon", "recon-pure", "recon.mdf"), ("bridge", "bridge-pure", "bridge.cli")]
)
def test_importing_all_of_a_pure_package_loads_nothing_its_contract_forbids(package, contract, expected):
    forbidden = set(_contract(contract)["forbidden_modules"])
    assert {"django", "rest_framework", "celery", "trials", "audit"} <= forbidden
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, package],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])["modules"]
    leaked = [m for m in loaded if m.split(".")[0] in forbidden]
    assert leaked == []
    assert expected in loaded and "h5py" in loaded
