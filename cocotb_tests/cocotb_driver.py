"""cocotb side of test_driver_rtl: the driver API's conformance tests (verif/driver_conformance.py, the
same coroutines tests/test_driver.py runs on the golden backend) on the RTL chip, with ChipTB as
the backend (AXI4-Lite CSR access, the irq line, the HDL host memory model).

One cocotb test boots the chip once (reset, firmware through driver.bringup) and runs the tests
named in KAKI_DRIVER_TESTS (default: all) in order on it; the log names each as it starts.
``driver_high_addresses`` runs some of them with the driver's host memory at the top of the
32-bit address space.
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


async def _boot(dut):
    """The chip reset, with random host-memory latency and stalls; the conformance context."""
    tb = ChipTB(dut)
    rng = np.random.default_rng(tb.seed)
    tb.host.configure(latency=int(rng.integers(2, 12)), stall=float(rng.uniform(0, 0.2)), seed=tb.seed)
    await tb.reset()
    image = FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"])
    ctx = C.Context(async_probe(tb, tb.caps.dim), image, _gather, seed=tb.seed, log=tb.log.info,
                    blackhole=lambda w: tb.host.set_blackhole(*w) if w else tb.host.clear_blackhole())
    return tb, ctx


async def _run(tb, ctx, tests):
    for t in tests:
        t0 = time.monotonic()
        tb.log.info(f"driver conformance: {t.__name__} at host {ctx.host_base:#x} (SEED={tb.seed})")
        await t(ctx)
        tb.log.info(f"driver conformance: {t.__name__} passed in {time.monotonic() - t0:.1f} s")


@cocotb.test()
async def driver_conformance(dut):
    tb, ctx = await _boot(dut)
    names = os.environ.get("KAKI_DRIVER_TESTS", "")
    tests = [t for t in C.TESTS if not names or t.__name__ in names.split(",")]
    assert tests, f"KAKI_DRIVER_TESTS={names!r} selects no test of {[t.__name__ for t in C.TESTS]}"
    await _run(tb, ctx, tests)


#: The host memory the driver is given at the top of the 32-bit address space: its end is 2**32,
#: which a 32-bit window end would wrap to 0.
HIGH_BASE, HIGH_BYTES = 0xFFFC_0000, 0x4_0000


@cocotb.test()
async def driver_high_addresses(dut):
    """Rings, completion records and buffers at the top of the host address space, every address
    bit above the model's 1 MiB in use. The model decodes only the low 20 bits, so everything below
    the driver's memory answers DECERR meanwhile: an address the chip truncated or wrapped would
    end its command with a bus error instead of reaching the mirrored bytes. Then the same device
    at low addresses again (every high bit back to 0)."""
    tb, ctx = await _boot(dut)
    tb.host.set_error_window(0, HIGH_BASE, resp=3)
    ctx.host_base, ctx.host_bytes = HIGH_BASE, HIGH_BYTES
    await _run(tb, ctx, [C.test_program_twice_different_buffers, C.test_queues_concurrently,
                         C.test_random_traffic])
    tb.host.clear_error_window()
    ctx.host_base, ctx.host_bytes = C.Context.host_base, C.Context.host_bytes
    tb.host.set_error_window(HIGH_BASE, 0xFFFF_F000, resp=3)
    await _run(tb, ctx, [C.test_ring_wrap_backpressure])


#: host memory that answers DECERR for the command-list scenarios' unreadable list (outside the
#: driver's memory, inside the model's 1 MiB)
LIST_UNMAPPED = 0xE_0000


@cocotb.test()
async def command_lists(dut):
    """The command-list scenarios of verif/command_lists.py (tests/test_command_list.py runs the
    same on the golden model), the malformed EXEC_LIST descriptors, and a compiled MLP recorded
    once and launched twice with new buffers, bit-identical to Device.run."""
    from compiler import models
    from compiler.compile import compile_graph
    from verif import command_lists as S

    tb, ctx = await _boot(dut)
    tb.host.set_error_window(LIST_UNMAPPED, LIST_UNMAPPED + 0x1000, resp=3)
    env = S.ListEnv(seed=tb.seed, unmapped=LIST_UNMAPPED, log=tb.log.info)
    dev = await ctx.open()
    for scenario in S.SCENARIOS:
        tb.log.info(f"command lists: {scenario.__name__} (SEED={tb.seed})")
        await scenario(dev, env)
    for what in S.MALFORMED:
        tb.log.info(f"command lists: malformed EXEC_LIST, {what}")
        await S.malformed_exec_list(dev, env, what)
    rng = np.random.default_rng(tb.seed)
    g = models.mlp(seed=tb.seed % 1000, batch=4, dims=(64, 96, 10))
    cm = compile_graph(g[0], tb.caps)
    feeds = [g[1], {k: rng.integers(-128, 128, v.shape, dtype=v.dtype) for k, v in g[1].items()}]
    await S.model_list_matches_run(dev, env, cm, feeds)
