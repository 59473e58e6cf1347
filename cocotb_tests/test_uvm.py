"""The pyuvm environment on the RTL chip (cocotb_tests/cocotb_uvm.py): constrained-random
dependency graphs and a compiled model overlapped vs serialized; error classes; every command
predicted and compared by the scoreboard as the run proceeds."""
import pytest

from . import simbuild
from .soc_target import soc_target
from .test_chip_queues import firmware_elf


@pytest.mark.sim
@pytest.mark.parametrize("testcase", ["uvm_random", "uvm_errors"])
def test_uvm(testcase):
    simbuild.run(soc_target(8), "cocotb_tests.cocotb_uvm", testcase=testcase, tag=testcase,
                 extra_env={"KAKI_FW_ELF": str(firmware_elf())})
