"""Queue controller block tests: argument checks, lint, and cocotb tests of the controller alone
against a cocotbext-axi AxiRam (``cocotb_queue_controller.py``)."""
import gc
import subprocess
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from hdl_gen.config import KakiConfig
from hdl_gen.emit import to_verilog
from hdl_gen.queue_controller import QueueController
from tools import simbuild

MODULE = "cocotb_tests.cocotb_queue_controller"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}


def _target():
    # the chip's queue parameters (KakiConfig defaults); cocotb_queue_controller.py reads the same
    cfg = KakiConfig()
    return simbuild.amaranth_target(
        "kaki_tb_queue_controller",
        lambda: QueueController(cfg, n_queues=cfg.queues, prefetch=cfg.prefetch, cpl_depth=cfg.cpl_depth))


def test_queue_controller_ports():
    qc = QueueController()
    assert len(qc.q) == 4 and qc.qbits == 2
    assert len(qc.q[3].head) == 256 and len(qc.q[0].ring_log2) == 4 and len(qc.cpl_queue) == 2
    assert len(qc.axi.wdata) == 64 and qc.desc_beats == 4 and qc.rec_beats == 2
    wide = QueueController(KakiConfig(axi_data_bits=128), n_queues=3, prefetch=8, cpl_depth=15)
    assert wide.desc_beats == 2 and wide.rec_beats == 1 and len(wide.q) == 3
    assert QueueController(n_queues=1).qbits == 1


def test_queue_controller_rejects_bad_args():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for kw, exc in ((dict(config={"axi_data_bits": 64}), TypeError),
                        (dict(n_queues=0), ValueError), (dict(n_queues=17), ValueError),
                        (dict(n_queues=4.0), TypeError), (dict(prefetch=1), ValueError),
                        (dict(prefetch=256), ValueError), (dict(prefetch=True), TypeError),
                        (dict(cpl_depth=1), ValueError), (dict(cpl_depth=16), ValueError),
                        (dict(config=KakiConfig(axi_id_bits=0)), ValueError)):
            with pytest.raises(exc):
                QueueController(**kw)
        gc.collect()


@pytest.mark.parametrize("dbits,n,prefetch,depth", [(64, 4, 4, 4), (128, 3, 7, 15), (32, 1, 2, 2)])
def test_queue_controller_lints(dbits, n, prefetch, depth, tmp_path):
    """Clean under verilator --lint-only -Wall with only the generated-RTL waivers."""
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    src = rtl / "kaki_qc_lint.v"
    src.write_text(to_verilog(QueueController(KakiConfig(axi_data_bits=dbits), n_queues=n,
                                              prefetch=prefetch, cpl_depth=depth), "kaki_qc_lint"))
    r = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", str(simbuild.WAIVERS),
                        str(src), "--top-module", "kaki_qc_lint"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


#: t_traffic is t_traffic_fast's long version (~45 s): make regress only.
SIM_TESTS = [pytest.param(t, marks=pytest.mark.slow) if t == "t_traffic" else t
             for t in simbuild.cocotb_tests(MODULE)]


@pytest.mark.sim
@pytest.mark.parametrize("test", SIM_TESTS)
def test_queue_controller_sim(test):
    simbuild.run(_target(), MODULE, testcase=test)
