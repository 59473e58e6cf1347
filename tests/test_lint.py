"""Verilator -Wall lint of the committed rtl/, waiving only what Amaranth output always trips."""
import subprocess

import pytest

from tools import simbuild
from hdl_gen.config import ARRAY_SIZES

REPO = simbuild.REPO


@pytest.mark.parametrize("dim", ARRAY_SIZES)
def test_rtl_lint_clean(dim):
    top = f"kaki_soc_{dim}x{dim}"
    cmd = [simbuild.verilator_bin(), "--lint-only", "-Wall", "--top-module", top,
           "hdl_gen/verilator_waivers.vlt", "rtl/kaki_sram_1r1w.v", f"rtl/{top}.v"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr[-4000:]}"


def test_waivers_only_cover_generated_files():
    rules = [ln for ln in (REPO / "hdl_gen/verilator_waivers.vlt").read_text().splitlines()
             if ln.startswith("lint_off")]
    assert rules and all('-file "*rtl/kaki_*.v"' in ln for ln in rules), rules
    allowed = {"WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE", "UNUSEDSIGNAL", "PROCASSINIT",
               "DECLFILENAME"}
    assert {ln.split("-rule ")[1].split()[0] for ln in rules} <= allowed
