"""The pyuvm environment on the RTL chip (cocotb_tests/cocotb_uvm.py): constrained-random
dependency graphs and a compiled model overlapped vs serialized; error classes; every command
predicted and compared by the scoreboard as the run proceeds. `make regress` (KAKI_REGRESS) runs
every array size; `make test` the 8×8 chip."""
import os

import pytest

from hdl_gen.config import ARRAY_SIZES

from tools import simbuild
from verif.soc_target import soc_target
from firmware.build import shared_elf as firmware_elf

DIMS = ARRAY_SIZES if os.environ.get("KAKI_REGRESS", "0") not in ("", "0") else (8,)


@pytest.mark.sim
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("testcase", ["uvm_random", "uvm_errors"])
def test_uvm(testcase, dim):
    simbuild.run(soc_target(dim), "cocotb_tests.cocotb_uvm", testcase=testcase, tag=f"{testcase}_{dim}",
                 extra_env={"KAKI_FW_ELF": str(firmware_elf())})
