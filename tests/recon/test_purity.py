"""recon is a pure numerical package: importing all of it loads nothing of the web stack."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("django", "rest_framework", "celery", "trials", "imaging", "compliance")

PROBE = """
import importlib, json, pkgutil, sys
import recon, recon.mdf, recon.validate, recon.cli
failed = {}
for info in pkgutil.walk_packages(recon.__path__, "recon."):
    if info.name == "recon.__main__":
        continue  # running it would parse this process's argv
    try:
        importlib.import_module(info.name)
    except Exception as exc:  # a broken sibling module is not a purity failure
        failed[info.name] = type(exc).__name__
print(json.dumps({"modules": sorted(sys.modules), "failed": failed}))
"""


def test_it_imports_no_web_code():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])["modules"]
    leaked = [m for m in loaded if m.split(".")[0] in FORBIDDEN]
    assert leaked == []
    assert "recon.mdf" in loaded and "h5py" in loaded
