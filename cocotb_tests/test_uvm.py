"""The pyuvm environment on the RTL chip (cocotb_tests/cocotb_uvm.py): constrained-random
dependency graphs and a compiled model overlapped vs serialized; error classes; every command
predicted and compared by the scoreboard as the run proceeds. `make regress` (KAKI_REGRESS) runs
every array size; `make test` the 8×8 chip."""
import os

import pytest

from hdl_gen.config import ARRAY_SIZES

from tools import simbuild
from tools.simbuild import soc_target
from firmware.build import shared_elf as firmware_elf

#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {"cocotb_tests.cocotb_uvm": ("uvm_random", "uvm_errors")}
DIMS = ARRAY_SIZES if os.environ.get("KAKI_REGRESS", "0") not in ("", "0") else (8,)


@pytest.mark.sim
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("testcase", COCOTB_RUNS["cocotb_tests.cocotb_uvm"])
def test_uvm(testcase, dim):
    simbuild.run(soc_target(dim), "cocotb_tests.cocotb_uvm", testcase=testcase, tag=f"{testcase}_{dim}",
                 extra_env={"KAKI_FW_ELF": str(firmware_elf())})
