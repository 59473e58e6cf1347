"""Whole-chip command-queue tests: firmware on the RTL core serving queues, events and errors.

The scenarios are verif/chip_scenarios.py (also run on the golden chip model in
tests/test_chip_model.py); ``cocotb_chip_queues.py`` drives them on the RTL.
"""
import os

import pytest

from verif.error_injection import ERROR_KINDS
from hdl_gen.config import ARRAY_SIZES
from firmware.build import shared_elf as firmware_elf
from tools import simbuild
from tools.simbuild import soc_target

MODULE = "cocotb_tests.cocotb_chip_queues"
DIRECTED = ("queue_irq_mask_and_ack", "queue_perf_counters", "queue_load_compute_overlap")
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: ("queue_dag", "queue_errors", "queue_dma_watchdog", "dispatch_overhead",
                        *DIRECTED)}


def _run(testcase, tag, dim=8, **env):
    env["KAKI_FW_ELF"] = str(firmware_elf())
    simbuild.run(soc_target(dim), MODULE, testcase=testcase, tag=tag, extra_env=env)


@pytest.mark.sim
# the 4x4 and 16x16 chips: make regress (their builds take minutes)
@pytest.mark.parametrize("dim", [pytest.param(d, marks=pytest.mark.slow) if d != 8 else d
                                 for d in ARRAY_SIZES])
def test_queue_dag(dim):
    jobs = "120" if os.environ.get("KAKI_REGRESS") else "40"
    _run("queue_dag", f"queue_dag_{dim}", dim=dim, KAKI_DAG_JOBS=jobs)


# Split in two groups so pytest-xdist runs them in parallel.
_KINDS = sorted(ERROR_KINDS)
ERROR_GROUPS = {"a": _KINDS[::2], "b": _KINDS[1::2]}


@pytest.mark.sim
@pytest.mark.parametrize("group", sorted(ERROR_GROUPS))
def test_queue_errors(group):
    # make test: each class on the queue its seed picks; KAKI_REGRESS: on every queue.
    every = "1" if os.environ.get("KAKI_REGRESS") else "0"
    _run("queue_errors", f"queue_errors_{group}", KAKI_ERROR_KINDS=",".join(ERROR_GROUPS[group]),
         KAKI_ERROR_EVERY_QUEUE=every)


@pytest.mark.sim
def test_queue_dma_watchdog():
    _run("queue_dma_watchdog", "queue_dma_watchdog")


@pytest.mark.sim
def test_dispatch_overhead():
    _run("dispatch_overhead", "dispatch_overhead",
         KAKI_OVERHEAD_JSON=str(simbuild.BUILD / "dispatch_overhead.json"))


@pytest.mark.sim
def test_queue_directed():
    _run(",".join(DIRECTED), "queue_directed")
