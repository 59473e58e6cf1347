"""cocotb side of test_chip_queues: command queues, events, errors and firmware on the whole chip.

The scenarios and their scoreboard are golden/queue_scenarios.py, the same code the golden chip
model runs in tests/test_chip_model.py; here they drive the RTL through :class:`ChipDevice`.
"""
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from driver import registers as R
from driver.commands import encode
from driver.completion import record_offset
from driver.descriptors import Opcode
from driver.firmware_image import FirmwareImage
from golden import queue_scenarios as S

from .chip_tb import ChipTB
from .soc_target import HOST_WORDS

MEMORY_BYTES = HOST_WORDS * 8
#: The scenarios use host memory below HOST_BYTES; the error scenarios make the memory model
#: answer DECERR above it (the golden chip model does the same beyond its memory).
HOST_BYTES = MEMORY_BYTES - 0x1_0000
DECERR_BASE = HOST_BYTES


class ChipDevice:
    """The scenario device interface (golden/queue_scenarios.py) over the RTL testbench."""

    def __init__(self, tb):
        self.tb = tb

    async def read(self, reg):
        return await self.tb.read(reg)

    async def write(self, reg, value):
        await self.tb.write(reg, value)

    async def host_read(self, addr, n):
        return await self.tb.host.read(addr, n)

    async def host_write(self, addr, data):
        await self.tb.host.load(addr, bytes(data))

    async def wait(self, cycles):
        await ClockCycles(self.tb.dut.clk, cycles)


async def _boot(dut, *, latency=None, stall=None, tb=None, seed=None):
    """Reset the chip, randomize host-memory timing, load the firmware; return (tb, device)."""
    tb = tb or ChipTB(dut)
    rng = np.random.default_rng(tb.seed if seed is None else seed)
    tb.host.configure(latency=int(rng.integers(2, 16)) if latency is None else latency,
                      stall=float(rng.uniform(0, 0.25)) if stall is None else stall, seed=tb.seed)
    await tb.reset()
    image = FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"])
    await tb.load_firmware(image, timeout_cycles=200_000)
    return tb, ChipDevice(tb)


@cocotb.test()
async def queue_dag(dut):
    """Random jobs on all queues ordered only by events and barriers, rings wrapping; the
    scoreboard checks every record, consumer index, event edge and the whole host memory."""
    tb, dev = await _boot(dut)
    jobs = int(os.environ.get("KAKI_DAG_JOBS", "40"))
    report = await S.run_async(S.dag_scenario(tb.caps, tb.seed, host_bytes=HOST_BYTES, jobs=jobs), dev)
    tb.log.info(f"queue_dag: {report.descriptors} descriptors retired in {report.cycles} cycles")


@cocotb.test()
async def queue_errors(dut):
    """Each error class of KAKI_ERROR_KINDS on one queue while the others keep completing; the
    failed queue is reset and resumed."""
    tb = ChipTB(dut)
    kinds = os.environ.get("KAKI_ERROR_KINDS", ",".join(S.ERROR_KINDS)).split(",")
    for i, kind in enumerate(kinds):
        tb.log.info(f"error class {kind}: chip reset, firmware loaded")
        _, dev = await _boot(dut, tb=tb, seed=tb.seed + i)
        tb.host.set_error_window(DECERR_BASE, MEMORY_BYTES, resp=3)
        report = await S.run_async(
            S.error_scenario(tb.caps, tb.seed + i, kind, host_bytes=HOST_BYTES,
                             decerr_addr=DECERR_BASE), dev)
        tb.log.info(f"{kind}: {report.descriptors} descriptors retired in {report.cycles} cycles")


class BusTimer:
    """Timestamps (cycles) of AXI handshakes on the chip's ``mem`` port, by manager.

    The arbiter puts the manager index in the top ID bit: 0 the DMA, 1 the queue controller.
    """

    def __init__(self, dut, id_bits):
        self.dut = dut
        self.top = 1 << (id_bits - 1)
        self.cycle = 0
        self.events = []          # (cycle, channel, manager)
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        while True:
            await RisingEdge(d.clk)
            await ReadOnly()
            self.cycle += 1
            for ch, valid, ready, ident in (("ar", d.mon_arvalid, d.mon_arready, d.mon_arid),
                                            ("r_last", d.mon_rvalid, d.mon_rready, d.mon_rid),
                                            ("aw", d.mon_awvalid, d.mon_awready, d.mon_awid),
                                            ("b", d.mon_bvalid, d.mon_bready, d.mon_bid)):
                if int(valid.value) and int(ready.value):
                    if ch == "r_last" and not int(d.mon_rlast.value):
                        continue
                    who = "qc" if int(ident.value) & self.top else "dma"
                    self.events.append((self.cycle, ch, who))

    def first(self, ch, who, after):
        return next(c for c, k, w in self.events if k == ch and w == who and c >= after)

    def last(self, ch, who, before):
        return max(c for c, k, w in self.events if k == ch and w == who and c <= before)


@cocotb.test()
async def dispatch_overhead(dut):
    """Per-command dispatch overhead on an idle chip, from the bus: doorbell write -> descriptor
    fetch -> the DMA's first read (engine start), and the DMA's last read beat (engine done) ->
    completion record write -> consumer write-back response. Zero-latency host memory."""
    tb, dev = await _boot(dut, latency=1, stall=0.0)
    timer = BusTimer(dut, len(dut.mon_arid))
    ring, cpl, src = 0x1_0000, 0x2_0000, 0x3_0000
    await tb.host.load(src, bytes(range(256)) * 4)
    for reg, value in (("Q_RING_BASE", ring), ("Q_RING_SIZE", 4), ("Q_CPL_BASE", cpl),
                       ("Q_WINDOW_BASE", src), ("Q_WINDOW_SIZE", 0x1000), ("Q_CTRL", 1)):
        await tb.write(R.REGISTERS[f"{reg}0"], value)
    samples = []
    for i in range(8):
        words = encode(Opcode.DMA_LOAD, tag=i, host_addr=src, host_row_stride=tb.caps.dim,
                       row_bytes=tb.caps.dim, rows=1, planes=1, local_addr=i)
        await tb.host.load(ring + 32 * (i % 16), b"".join(w.to_bytes(4, "little") for w in words))
        await ClockCycles(dut.clk, 50)
        t_db = timer.cycle
        await tb.write(R.Q_DOORBELL0, i + 1)
        for _ in range(200):
            await ClockCycles(dut.clk, 20)
            if await tb.read(R.Q_CONSUMER0) == i + 1:
                break
        else:
            raise AssertionError(f"descriptor {i} did not retire; Q_STATUS0={await tb.read(R.Q_STATUS0):#x}")
        await ClockCycles(dut.clk, 5)
        fetch = timer.first("ar", "qc", t_db)
        start = timer.first("ar", "dma", fetch)
        done = timer.first("r_last", "dma", start)
        rec = timer.first("aw", "qc", done)
        cons_b = timer.first("b", "qc", timer.first("aw", "qc", rec + 1))
        samples.append((fetch - t_db, start - t_db, rec - done, cons_b - done))
        rec_bytes = await tb.host.read(cpl + record_offset(i, 4), 16)
        assert int.from_bytes(rec_bytes[:4], "little") == i, f"record {i}: {rec_bytes.hex()}"
    arr = np.array(samples)
    tb.log.info("dispatch overhead (cycles, median of 8 DMA loads; the doorbell cycle is when the "
                "CSR write was issued):")
    for name, col in zip(("doorbell -> descriptor fetch AR", "doorbell -> engine start (DMA's first AR)",
                          "engine done (last R beat) -> completion record AW",
                          "engine done -> consumer write-back B"), arr.T):
        tb.log.info(f"  {name}: median {int(np.median(col))}, min {col.min()}, max {col.max()}")
    out = os.environ.get("KAKI_OVERHEAD_JSON")
    if out:
        import json
        with open(out, "w") as f:
            json.dump({"samples": arr.tolist()}, f)
