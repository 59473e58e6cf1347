"""cocotb side of test_stress: the long random stress of the command queues and the
malformed-descriptor fuzzing on the whole chip (verif/stress.py, verif/fuzz.py; the same device
programs run on the golden chip model in tests/test_stress.py and tests/test_fuzz.py).

Host-memory timing is drawn from the seed over a wider range than the other queue tests: read
latency 2..48 cycles and a stall probability up to 0.4 on every AXI channel (AR/AW/W ready held
low, R/B valid gaps).
"""
import os
import time

import cocotb
import numpy as np

from spec import registers as R
from driver.ops import run_async
from verif.chip_tb import ChipTB
from verif.fuzz import fuzz_scenario
from verif.soc_target import HOST_WORDS
from verif.stress import stress_scenario

from .cocotb_chip_queues import DECERR_BASE, HOST_BYTES, _boot


def _timing(seed):
    """(read latency, stall probability) of host memory for this seed."""
    rng = np.random.default_rng([seed, 0x7141])
    return int(rng.integers(2, 49)), float(rng.uniform(0.0, 0.4))


async def _boot_random_timing(dut):
    tb = ChipTB(dut)
    latency, stall = _timing(tb.seed)
    tb.log.info(f"host memory: read latency {latency} cycles, stall probability {stall:.3f} per "
                f"cycle on every channel (SEED={tb.seed})")
    return await _boot(dut, tb=tb, latency=latency, stall=stall)


@cocotb.test()
async def queue_stress(dut):
    """KAKI_STRESS_COMMANDS descriptors on each of the 4 queues in one random dependency graph
    (verif/stress.py); the scoreboard checks every completion record (none lost or duplicated,
    queue order, event edges) and the whole host memory, local-memory dump included, against the
    golden replay."""
    commands = int(os.environ["KAKI_STRESS_COMMANDS"])
    tb, dev = await _boot_random_timing(dut)
    t0, wall = await tb.read(R.TIMESTAMP), time.monotonic()
    report = await run_async(stress_scenario(tb.caps, tb.seed, host_bytes=HOST_BYTES,
                                             commands=commands), dev)
    cycles = (await tb.read(R.TIMESTAMP) - t0) & 0xFFFF_FFFF
    wall = time.monotonic() - wall
    assert tb.host.prot_err == 0, f"host memory saw AXI protocol violations: {tb.host.prot_err_text()}"
    tb.log.info(f"queue_stress: {report.name}: {report.descriptors} descriptors ({commands}+ per queue) retired "
                f"and checked; {cycles} cycles simulated in {wall:.1f} s ({cycles / wall:.0f} "
                f"cycles/s, scoreboard included)")


@cocotb.test()
async def queue_fuzz(dut):
    """KAKI_FUZZ_FAULTS malformed descriptors and queue-configuration faults, in rounds on random
    queues while the others run valid work (verif/fuzz.py): each faulty queue halts with the
    oracle's precise code, is reset and used again; the whole host memory matches the replay of
    what completed, and the local-memory canary rows stay zero."""
    faults = int(os.environ["KAKI_FUZZ_FAULTS"])
    tb, dev = await _boot_random_timing(dut)
    tb.host.set_error_window(DECERR_BASE, HOST_WORDS * 8, resp=3)
    t0, wall = await tb.read(R.TIMESTAMP), time.monotonic()
    report = await run_async(fuzz_scenario(tb.caps, tb.seed, host_bytes=HOST_BYTES, faults=faults,
                                           decerr_addr=DECERR_BASE), dev)
    cycles = (await tb.read(R.TIMESTAMP) - t0) & 0xFFFF_FFFF
    assert tb.host.prot_err == 0, f"host memory saw AXI protocol violations: {tb.host.prot_err_text()}"
    tb.log.info(f"queue_fuzz: {report.injected} faults ({report.double} descriptors with two) in "
                f"{report.rounds} rounds, {report.descriptors} descriptors; {cycles} cycles in "
                f"{time.monotonic() - wall:.1f} s; faults {dict(report.faults)}; expected codes "
                f"{dict(report.codes)}")
