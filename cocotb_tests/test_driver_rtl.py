"""The host driver API on the RTL chip (8x8): verif/driver_conformance.py's tests through ChipTB.

``cocotb_driver.py`` runs them; tests/test_driver.py runs the same coroutines on the golden backend.
"""
import pytest

from verif.driver_conformance import TESTS
from tools import simbuild
from tools.simbuild import soc_target
from firmware.build import shared_elf as firmware_elf

#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {"cocotb_tests.cocotb_driver": ("driver_conformance", "driver_high_addresses",
                                               "command_lists")}
# Two groups so pytest-xdist runs them in parallel (each boots its own simulator).
_NAMES = [t.__name__ for t in TESTS]
GROUPS = {"a": _NAMES[::2], "b": _NAMES[1::2]}


@pytest.mark.sim
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_driver_rtl(group):
    simbuild.run(soc_target(8), "cocotb_tests.cocotb_driver", testcase="driver_conformance",
                 tag=f"driver_{group}",
                 extra_env={"KAKI_FW_ELF": str(firmware_elf()),
                            "KAKI_DRIVER_TESTS": ",".join(GROUPS[group])})


@pytest.mark.sim
def test_driver_rtl_high_addresses():
    """Host memory at the top of the 32-bit space (cocotb_driver.driver_high_addresses)."""
    simbuild.run(soc_target(8), "cocotb_tests.cocotb_driver", testcase="driver_high_addresses",
                 tag="driver_high", extra_env={"KAKI_FW_ELF": str(firmware_elf())})


@pytest.mark.sim
def test_command_lists_rtl():
    """EXEC_LIST on the RTL: verif/command_lists.py's scenarios (cocotb_driver.command_lists)."""
    simbuild.run(soc_target(8), "cocotb_tests.cocotb_driver", testcase="command_lists",
                 tag="command_lists", extra_env={"KAKI_FW_ELF": str(firmware_elf())})
