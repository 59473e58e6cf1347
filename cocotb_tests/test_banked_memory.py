"""Banked memory: per-bank arbitration, read latency 1 to 3, concurrent access to different banks."""
import pytest

from hdl_gen.banked_memory import BankedMemory
from tools import simbuild

BANKS, BANK_ROWS, WIDTH = 4, 16, 32
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {"cocotb_tests.cocotb_banked_memory": simbuild.ALL}


#: (registered_writes, registered_reads, registered_output) of each bench build
MODES = {"comb": (False, False, False), "registered_writes": (True, False, False),
         "registered_ports": (True, True, False), "registered_output": (True, True, True)}


def _target(mode):
    writes, reads, output = MODES[mode]
    return simbuild.amaranth_target(
        f"kaki_tb_banked_memory_{mode}",
        lambda: BankedMemory(banks=BANKS, bank_rows=BANK_ROWS, width=WIDTH, n_read=2, n_write=2,
                             registered_writes=writes, registered_reads=reads,
                             registered_output=output))


#: modes the chip is not built with (it uses registered_output; comb is the unregistered
#: baseline): their bench and formal data proofs run in make regress
SLOW_MODES = ("registered_ports", "registered_writes")


@pytest.mark.sim
@pytest.mark.parametrize("mode", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW_MODES else m
                                  for m in MODES])
def test_banked_memory(mode):
    writes, reads, output = MODES[mode]
    simbuild.run(_target(mode), "cocotb_tests.cocotb_banked_memory",
                 extra_env={"KAKI_REGISTERED_WRITES": str(int(writes)),
                            "KAKI_REGISTERED_READS": str(int(reads)),
                            "KAKI_REGISTERED_OUTPUT": str(int(output))})
