"""The control path's latencies and rates, measured from the chip's bus ports (docs/queues.md
"Costs"; ``make test`` logs them, ``make bench`` prints them beside their goals).

* :class:`BusTimer`: cycle stamps of AXI handshakes on the chip's ``mem`` port, by manager;
* :class:`DirectedQueues`: queues set up by hand (rings, completion areas, windows) for
  directed descriptor streams;
* :func:`measure`: on an idle chip (the host memory the caller configured), the medians of
  doorbell -> descriptor fetch -> engine start and engine done -> record -> consumer write of
  8 one-row DMA loads, SIGNAL_EVENT -> WAIT_EVENT released on another queue -> engine start,
  and the steady rate of 48-descriptor streams on one queue (from the records' timestamps).
"""
import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from spec import registers as R
from spec.commands import encode
from spec.completion import record_offset, unpack_record
from spec.descriptors import Opcode

__all__ = ["BusTimer", "DirectedQueues", "measure", "describe"]


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


class DirectedQueues:
    """Queues set up by hand for directed tests: queue q's ring, completion area and window."""

    def __init__(self, tb, base=0x4_0000, log2=4, stride=0x1_0000):
        self.tb, self.base, self.LOG2, self.stride = tb, base, log2, stride
        self.produced = {}

    def ring(self, q):
        return self.base + self.stride * q

    def cpl(self, q):
        return self.ring(q) + 0x1000

    def window(self, q):
        return self.ring(q) + 0x2000, self.stride - 0x2000

    async def setup(self, q):
        wb, ws = self.window(q)
        for reg, value in (("Q_RING_BASE", self.ring(q)), ("Q_RING_SIZE", self.LOG2),
                           ("Q_CPL_BASE", self.cpl(q)), ("Q_WINDOW_BASE", wb),
                           ("Q_WINDOW_SIZE", ws), ("Q_CTRL", 1)):
            await self.tb.write(R.REGISTERS[f"{reg}{q}"], value)
        self.produced[q] = 0

    async def submit(self, q, *descs):
        for words in descs:
            slot = self.produced[q] % (1 << self.LOG2)
            await self.tb.host.load(self.ring(q) + 32 * slot,
                                    b"".join(w.to_bytes(4, "little") for w in words))
            self.produced[q] += 1
        await self.tb.write(R.REGISTERS[f"Q_DOORBELL{q}"], self.produced[q])

    async def wait_retired(self, q, timeout_cycles=50_000):
        for _ in range(timeout_cycles // 100):
            if await self.tb.read(R.REGISTERS[f"Q_CONSUMER{q}"]) == self.produced[q]:
                return
            await ClockCycles(self.tb.dut.clk, 100)
        status = R.Q_STATUS0.decode(await self.tb.read(R.REGISTERS[f"Q_STATUS{q}"]))
        raise AssertionError(f"queue {q}: consumer did not reach {self.produced[q]} in "
                             f"{timeout_cycles} cycles; Q_STATUS {status}, Q_ERROR "
                             f"{await self.tb.read(R.REGISTERS[f'Q_ERROR{q}'])}")


#: what :func:`measure` returns, in the order :func:`describe` prints it
LATENCIES = {
    "doorbell_fetch": "doorbell CSR write issued -> descriptor fetch AR",
    "doorbell_start": "doorbell -> engine start (the DMA's first AR)",
    "done_record": "engine done (last R beat) -> completion record AW",
    "done_consumer": "engine done -> consumer write-back B",
    "signal_start": "SIGNAL_EVENT fetched -> WAIT_EVENT released on another queue -> engine start",
}
STREAMS = ("NOP", "1-row DMA_LOAD", "DMA_LOAD/DMA_STORE/GEMM rotation")


async def _latencies(tb, timer):
    """Doorbell -> fetch -> start and done -> record -> consumer of 8 one-row DMA loads."""
    dut = tb.dut
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
            raise AssertionError(f"descriptor {i} did not retire in 4000 cycles; "
                                 f"Q_STATUS0={await tb.read(R.Q_STATUS0):#x}")
        await ClockCycles(dut.clk, 5)
        fetch = timer.first("ar", "qc", t_db)
        start = timer.first("ar", "dma", fetch)
        done = timer.first("r_last", "dma", start)
        rec = timer.first("aw", "qc", done)
        cons_b = timer.first("b", "qc", timer.first("aw", "qc", rec + 1))
        samples.append((fetch - t_db, start - t_db, rec - done, cons_b - done))
        rec_bytes = await tb.host.read(cpl + record_offset(i, 4), 16)
        assert int.from_bytes(rec_bytes[:4], "little") == i, f"record {i}: {rec_bytes.hex()}"
    return dict(zip(("doorbell_fetch", "doorbell_start", "done_record", "done_consumer"),
                    (sorted(col) for col in zip(*samples))))


async def measure(tb):
    """The control path's figures on ``tb`` (a ChipTB with the firmware running and idle
    queues): ``{name: sorted samples}`` for :data:`LATENCIES` and ``rates`` (cycles per
    descriptor of each stream of :data:`STREAMS`)."""
    dut = tb.dut
    timer = BusTimer(dut, len(dut.mon_arid))
    fig = await _latencies(tb, timer)
    # Streams of 48 from a full ring: NOPs, one-row DMA loads (one engine), and a rotation over
    # the DMA load, DMA store and GEMM engines.
    qs = DirectedQueues(tb, base=0x8_0000, log2=6)
    await qs.setup(1)
    dim = tb.caps.dim
    load = encode(Opcode.DMA_LOAD, host_addr=qs.window(1)[0], row_bytes=dim, rows=1, planes=1)
    store = encode(Opcode.DMA_STORE, host_addr=qs.window(1)[0] + 0x100, row_bytes=dim, rows=1,
                   planes=1, local_addr=64)
    gemm = encode(Opcode.GEMM, m=1, k_tiles=1, n_tiles=1, a_addr=128, b_addr=256, c_addr=512)
    rates = {}
    for name, stream in zip(STREAMS, ([encode(Opcode.NOP)] * 48, [load] * 48,
                                      [load, store, gemm] * 16)):
        first = qs.produced[1]
        await qs.submit(1, *stream)
        await qs.wait_retired(1, 200_000)
        # the records' timestamps (the cycle each was requested): the steady rate, no polling
        stamps = [unpack_record(await tb.host.read(qs.cpl(1) + record_offset(i, qs.LOG2), 16))
                  ["timestamp"] for i in range(first, qs.produced[1])]
        rates[name] = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    fig["rates"] = rates
    # A dependent command on another queue: queue 1 waits on an event with a load behind it;
    # queue 2's SIGNAL_EVENT releases it. From the SIGNAL's descriptor fetch (its last read
    # beat: the earliest it can act) to the load's first AR.
    await qs.setup(2)
    waits = []
    for k in range(4):
        await qs.submit(1, encode(Opcode.WAIT_EVENT, event=5, value=k + 1), load)
        await ClockCycles(dut.clk, 100)
        t0 = timer.cycle
        await qs.submit(2, encode(Opcode.SIGNAL_EVENT, event=5, value=k + 1))
        await qs.wait_retired(1, 20_000)
        fetched = timer.first("r_last", "qc", t0)
        waits.append(timer.first("ar", "dma", fetched) - fetched)
    fig["signal_start"] = sorted(waits)
    return fig


def median(samples):
    return int(np.median(samples))


def describe(fig):
    """Report lines of :func:`measure`'s figures."""
    out = ["control path (cycles; medians, min..max):"]
    for key, text in LATENCIES.items():
        s = fig[key]
        out.append(f"  {text}: {median(s)} ({min(s)}..{max(s)})")
    for name, rate in fig["rates"].items():
        out.append(f"  back-to-back {name}: {rate:.1f} cycles per descriptor")
    return out
