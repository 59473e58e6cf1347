"""cocotb side of test_driver_rtl: the driver API's conformance tests (verif/driver_conformance.py, the
same coroutines tests/test_driver.py runs on the golden backend) on the RTL chip, with ChipTB as
the backend (AXI4-Lite CSR access, the irq line, the HDL host memory model).

One cocotb test boots the chip once (reset, firmware through driver.bringup) and runs the tests
named in KAKI_DRIVER_TESTS (default: all) in order on it; the log names each as it starts.
"""
import os
import time

import cocotb
import numpy as np

from verif import driver_conformance as C
from spec.firmware_image import FirmwareImage

from verif.chip_tb import ChipTB
from verif.functional_coverage import async_probe


async def _gather(*coros):
    """Run coroutines as concurrent cocotb tasks; their results in order."""
    tasks = [cocotb.start_soon(c) for c in coros]
    return [await t for t in tasks]


@cocotb.test()
async def driver_conformance(dut):
    tb = ChipTB(dut)
    rng = np.random.default_rng(tb.seed)
    tb.host.configure(latency=int(rng.integers(2, 12)), stall=float(rng.uniform(0, 0.2)), seed=tb.seed)
    await tb.reset()
    image = FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"])
    ctx = C.Context(async_probe(tb, tb.caps.dim), image, _gather, seed=tb.seed, log=tb.log.info,
                    blackhole=lambda w: tb.host.set_blackhole(*w) if w else tb.host.clear_blackhole())
    names = os.environ.get("KAKI_DRIVER_TESTS", "")
    tests = [t for t in C.TESTS if not names or t.__name__ in names.split(",")]
    assert tests, f"KAKI_DRIVER_TESTS={names!r} selects no test of {[t.__name__ for t in C.TESTS]}"
    for t in tests:
        t0 = time.monotonic()
        tb.log.info(f"driver conformance: {t.__name__} (SEED={tb.seed})")
        await t(ctx)
        tb.log.info(f"driver conformance: {t.__name__} passed in {time.monotonic() - t0:.1f} s")
