"""AXI4 arbiter: argument checks, lint at several sizes, and cocotb tests of two cocotbext-axi
managers sharing one AxiRam through it (``cocotb_axi_arbiter.py``)."""
import gc
import subprocess
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from hdl_gen.axi_arbiter import Axi4Arbiter
from hdl_gen.emit import to_verilog
from tools import simbuild

MODULE = "cocotb_tests.cocotb_axi_arbiter"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}


def _target():
    return simbuild.amaranth_target(
        "kaki_tb_axi_arbiter", lambda: Axi4Arbiter(n_managers=2, addr_bits=32, data_bits=64, id_bits=4))


def test_axi_arbiter_ports():
    arb = Axi4Arbiter(n_managers=3, addr_bits=40, data_bits=128, id_bits=5)
    assert arb.idx_bits == 2
    assert len(arb.m) == 3 and len(arb.m[2].arid) == 5 and len(arb.m[0].wdata) == 128
    assert len(arb.s.arid) == 7 and len(arb.s.awaddr) == 40
    assert Axi4Arbiter(n_managers=1).idx_bits == 1


def test_axi_arbiter_rejects_bad_args():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for kw, exc in ((dict(n_managers=0), ValueError), (dict(n_managers=2.0), TypeError),
                        (dict(data_bits=48), ValueError), (dict(id_bits=0), ValueError),
                        (dict(addr_bits=8), ValueError), (dict(w_fifo_depth=0), ValueError)):
            with pytest.raises(exc):
                Axi4Arbiter(**kw)
        gc.collect()


@pytest.mark.parametrize("n,dbits,ibits,depth", [(1, 32, 1, 1), (2, 64, 4, 4), (3, 128, 2, 5),
                                                  (4, 64, 6, 8)])
def test_axi_arbiter_lints(n, dbits, ibits, depth, tmp_path):
    """Clean under verilator --lint-only -Wall with only the generated-RTL waivers."""
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    src = rtl / "kaki_arb_lint.v"
    src.write_text(to_verilog(Axi4Arbiter(n_managers=n, data_bits=dbits, id_bits=ibits,
                                          w_fifo_depth=depth), "kaki_arb_lint"))
    r = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", str(simbuild.WAIVERS),
                        str(src), "--top-module", "kaki_arb_lint"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.sim
@pytest.mark.parametrize("test", simbuild.cocotb_tests(MODULE))
def test_axi_arbiter_sim(test):
    simbuild.run(_target(), MODULE, testcase=test)
