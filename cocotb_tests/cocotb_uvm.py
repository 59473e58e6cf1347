"""pyuvm tests of the whole chip (verif/uvm_env.py), run by cocotb_tests/test_uvm.py.

Each cocotb test boots the chip (reset, randomized host-memory timing, firmware), puts the chip
testbench behind a boundary probe and runs a uvm_test whose sequences drive it while the
scoreboard predicts every command with the golden device model.
"""
import os
import time

import cocotb
import numpy as np
from pyuvm import ConfigDB, uvm_root

from spec.firmware_image import FirmwareImage
from verif.error_injection import ERROR_KINDS

from verif import boundary_monitor as BM
from verif.chip_tb import ChipTB
from .cocotb_chip_queues import BLACKHOLE, DECERR_BASE, HOST_BYTES, misbehave
from verif.uvm_env import ErrorSequence, KakiTest, ModelSequence, RandomDagSequence

REGRESS = os.environ.get("KAKI_REGRESS", "0") not in ("", "0")
#: The pin-level bus agents (verif/bus_agents.py); KAKI_UVM_PINS=0 leaves them out (to measure
#: what they cost).
PIN_AGENTS = os.environ.get("KAKI_UVM_PINS", "1") not in ("", "0")
_CONTEXT = {}


class _Test(KakiTest):
    def build_phase(self):
        for key, value in _CONTEXT.items():
            ConfigDB().set(None, "*", key, value)
        super().build_phase()


class RandomTest(_Test):
    """Constrained-random dependency graphs, then a compiled model overlapped and serialized."""

    async def run_phase(self):
        seed, count = _CONTEXT["SEED"], int(os.environ.get("KAKI_UVM_DAGS", "6" if REGRESS else "3"))
        self.models = ModelSequence("model", os.environ.get("KAKI_UVM_MODEL", "conv"), seed, None)
        await self.run_sequences(RandomDagSequence("dags", count, seed), self.models)


class ErrorTest(_Test):
    """Error classes (all under KAKI_REGRESS, a seeded sample otherwise) with the others running."""

    async def run_phase(self):
        seed = _CONTEXT["SEED"]
        kinds = sorted(ERROR_KINDS)
        if not REGRESS:
            kinds = list(np.random.default_rng(seed).choice(kinds, 4, replace=False))
        self.kinds = kinds
        await self.run_sequences(ErrorSequence("errors", kinds, seed, DECERR_BASE))


async def _boot(dut):
    tb = ChipTB(dut)
    rng = np.random.default_rng(tb.seed)
    tb.host.configure(latency=int(rng.integers(2, 16)), stall=float(rng.uniform(0, 0.25)), seed=tb.seed)
    await tb.reset()
    await tb.load_firmware(FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"]), timeout_cycles=200_000)
    misbehave(tb)
    observer = BM.BoundaryObserver()
    _CONTEXT.update(TB=tb, OBSERVER=observer, BACKEND=BM.AsyncProbe(tb, observer), CAPS=tb.caps,
                    HOST_BYTES=HOST_BYTES, BLACKHOLE=BLACKHOLE, SEED=tb.seed, PIN_AGENTS=PIN_AGENTS)
    return tb


async def _run(dut, test_class):
    """Boot, run the uvm_test, require a clean scoreboard that predicted something."""
    await _boot(dut)
    cpu = time.process_time()
    await uvm_root().run_test(test_class)
    cpu = time.process_time() - cpu
    test = uvm_root().get_child("uvm_test_top")
    board = test.env.scoreboard
    assert board.error is None and board.predictor.predicted > 0
    dut._log.info(f"{test_class.__name__}: {board.predictor.predicted} commands predicted, "
                  f"{board.predictor.stores_checked} stores checked, {board.irq_edges} irq edges; "
                  f"{cpu:.2f} s CPU for the uvm_test, pin agents {'on' if PIN_AGENTS else 'off'}")
    bus = test.env.bus_scoreboard
    assert (bus is not None) == PIN_AGENTS
    if bus is not None:     # the pins carried traffic and every predicted store was cross-checked
        assert bus.csr.matched["write"] > 0 and bus.csr.matched["read"] > 0
        assert bus.stores.compared == board.predictor.stores_checked and bus.shadow.checked > 0
    return test, board


@cocotb.test()
async def uvm_random(dut):
    test, board = await _run(dut, RandomTest)
    assert board.predictor.stores_checked > 0
    assert set(test.models.outputs) == {"overlapped", "serialized"}


@cocotb.test()
async def uvm_errors(dut):
    test, _ = await _run(dut, ErrorTest)
    dut._log.info(f"error classes: {test.kinds}")
