"""Whole-chip tests: the committed rtl/ SoC with the HDL host memory model, at every array size."""
import os

import pytest

from firmware import build as fw_build
from hdl_gen.config import ARRAY_SIZES
from tools import simbuild
from tools.simbuild import soc_target

MODULE = "cocotb_tests.cocotb_chip"
#: programs on the chip's control core written by the test, not the firmware
CORE_PROGRAMS = ("core_random_programs", "core_reads_every_perf_counter",
                 "core_fetch_faults_and_interrupt", "core_mmio_read_only_registers_ignore_writes")
ERRORS_AND_INTERRUPTS = ("errors_are_precise_and_isolated", "direct_submission_overflow",
                         "interrupt_mask_and_ack", "dma_overlaps_gemm", "dma_bus_timeouts_in_a_row")
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: ("random_gemms", "firmware_boots_faults_and_reloads", "firmware_reads_perf",
                       "host_registers_hold_what_is_written", "csr_masters_agree", *CORE_PROGRAMS,
                       *ERRORS_AND_INTERRUPTS)}
REGRESS = os.environ.get("KAKI_REGRESS", "0") not in ("", "0")


@pytest.mark.sim
# the 4x4 and 16x16 chips' builds take minutes: make regress (make test lints all three sizes,
# checks the 4x4's synthesis structure and simulates its GEMM engine and SFU as blocks)
@pytest.mark.parametrize("dim", [pytest.param(d, marks=pytest.mark.slow) if d != 8 else d
                                 for d in ARRAY_SIZES])
def test_chip_gemm_epilogue(dim):
    simbuild.run(soc_target(dim), MODULE, testcase="random_gemms",
                 tag=f"gemm_{dim}")


@pytest.mark.sim
def test_chip_firmware():
    elf = fw_build.shared_elf()
    simbuild.run(soc_target(8), MODULE, testcase="firmware_boots_faults_and_reloads", tag="firmware",
                 extra_env={"KAKI_FW_ELF": str(elf)})


@pytest.mark.sim
def test_chip_firmware_reads_perf():
    elf = fw_build.locked_build(simbuild.BUILD / "firmware" / "perf_probe.elf",
                                [fw_build.FW / "probes" / "perf_probe.c"])
    simbuild.run(soc_target(8), MODULE, testcase="firmware_reads_perf",
                 tag="firmware_perf", extra_env={"KAKI_PROBE_ELF": str(elf)})


@pytest.mark.sim
def test_chip_host_registers():
    simbuild.run(soc_target(8), MODULE, testcase="host_registers_hold_what_is_written",
                 tag="host_registers")


@pytest.mark.sim
def test_chip_csr_masters_agree():
    """ChipTB's lean CSR master keeps cocotbext-axi's pin timing (verif/csr_master.py)."""
    simbuild.run(soc_target(8), MODULE, testcase="csr_masters_agree", tag="csr_masters")


@pytest.mark.sim
def test_chip_errors_and_interrupts():
    simbuild.run(soc_target(8), MODULE, testcase=",".join(ERRORS_AND_INTERRUPTS), tag="errors")


@pytest.mark.sim
def test_chip_core_programs():
    """Random RV32IM programs on the chip's own control core (more and longer in make regress)
    and its PERF_SEL walk."""
    env = {"KAKI_CORE_PROGRAMS": "12", "KAKI_CORE_INSNS": "1500"} if REGRESS else {}
    simbuild.run(soc_target(8), MODULE, testcase=",".join(CORE_PROGRAMS), tag="core_programs",
                 extra_env=env)
