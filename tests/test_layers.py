"""The import contracts between the packages (pyproject.toml [tool.importlinter], docs/architecture.md
"Layers") hold: `lint-imports` from the venv passes; on failure its report (the broken contracts and
the offending import chains) is the message."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.exists(), f"{exe} missing: import-linter is pinned in pyproject.toml (make venv)"
    r = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    report = r.stdout[r.stdout.find("Contracts"):] if "Contracts" in r.stdout else r.stdout
    assert r.returncode == 0, f"lint-imports failed:\n{report[-6000:]}{r.stderr[-2000:]}"
