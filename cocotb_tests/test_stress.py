"""The long random stress and the malformed-descriptor fuzzing on the RTL chip
(cocotb_tests/cocotb_stress.py; docs/verification.md "Stress and fuzzing").

`make test` runs a scaled-down stress (4 queues x 200 descriptors) and fuzzing (100 faults) so the
code paths stay exercised (the fuzzing reaches the engines' own payload checks, which the chip's
other tests do not); `make regress` (KAKI_REGRESS=1) runs the full 4 x 10,000 stress and 500
malformed descriptors, per seed.
"""
import os

import pytest

from firmware.build import shared_elf as firmware_elf
from tools import simbuild
from tools.simbuild import soc_target

MODULE = "cocotb_tests.cocotb_stress"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: ("queue_stress", "queue_fuzz")}
#: Descriptors per queue: the full stress (make regress) and its scaled-down version (make test).
STRESS_COMMANDS, SMALL_COMMANDS = 10_000, 200
#: Malformed descriptors and configuration faults per regression seed, and in make test.
FUZZ_FAULTS, SMALL_FAULTS = 500, 100


def _run(testcase, tag, regress=False, **env):
    env["KAKI_FW_ELF"] = str(firmware_elf())
    # A make regress test reruns (with waves) only with KAKI_REGRESS=1 on the make command line.
    repro = (lambda seed: f"{simbuild.repro_command(seed)} KAKI_REGRESS=1") if regress else None
    simbuild.run(soc_target(8), MODULE, testcase=testcase, tag=tag, extra_env=env, repro=repro)


@pytest.mark.sim
def test_queue_stress_small():
    _run("queue_stress", "queue_stress_small", KAKI_STRESS_COMMANDS=str(SMALL_COMMANDS))


@pytest.mark.sim
@pytest.mark.slow
def test_queue_stress():
    _run("queue_stress", "queue_stress", regress=True, KAKI_STRESS_COMMANDS=str(STRESS_COMMANDS))


@pytest.mark.sim
def test_queue_fuzz_small():
    _run("queue_fuzz", "queue_fuzz_small", KAKI_FUZZ_FAULTS=str(SMALL_FAULTS))


@pytest.mark.sim
@pytest.mark.slow
def test_queue_fuzz():
    faults = int(os.environ.get("KAKI_FUZZ_FAULTS", FUZZ_FAULTS))
    _run("queue_fuzz", "queue_fuzz", regress=True, KAKI_FUZZ_FAULTS=str(faults))
