"""Banked memory: per-bank arbitration, one-cycle read latency, concurrent access to different banks."""
import pytest

from hdl_gen.banked_memory import BankedMemory
from tools import simbuild

BANKS, BANK_ROWS, WIDTH = 4, 16, 32
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {"cocotb_tests.cocotb_banked_memory": simbuild.ALL}


def _target():
    return simbuild.amaranth_target(
        "kaki_tb_banked_memory",
        lambda: BankedMemory(banks=BANKS, bank_rows=BANK_ROWS, width=WIDTH, n_read=2, n_write=2))


@pytest.mark.sim
def test_banked_memory():
    simbuild.run(_target(), "cocotb_tests.cocotb_banked_memory")
