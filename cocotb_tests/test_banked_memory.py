"""Banked memory: per-bank arbitration, one-cycle read latency, concurrent access to different banks."""
import pytest

from hdl_gen.banked_memory import BankedMemory
from tools import simbuild

BANKS, BANK_ROWS, WIDTH = 4, 16, 32
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {"cocotb_tests.cocotb_banked_memory": simbuild.ALL}


def _target(registered_writes):
    return simbuild.amaranth_target(
        "kaki_tb_banked_memory" + ("_regw" if registered_writes else ""),
        lambda: BankedMemory(banks=BANKS, bank_rows=BANK_ROWS, width=WIDTH, n_read=2, n_write=2,
                             registered_writes=registered_writes))


@pytest.mark.sim
@pytest.mark.parametrize("registered_writes", [False, True], ids=["comb_writes", "registered_writes"])
def test_banked_memory(registered_writes):
    simbuild.run(_target(registered_writes), "cocotb_tests.cocotb_banked_memory",
                 extra_env={"KAKI_REGISTERED_WRITES": str(int(registered_writes))})
