"""cocotb side of test_dma_engine: the DMA engine against an independent NumPy model of DmaCmd.

Every test seeds its generators from ``KAKI_SEED`` (logged). The harness config comes from
``KAKI_DMA_CFG`` (JSON of KakiConfig fields). Fast-path tests use the HDL host memory model
(``kaki_host_mem``: latency, random stalls, error window, backdoor by $readmemh/$writememh, and
sticky protocol-violation flags checked after every command); protocol-path tests use a
cocotbext-axi ``AxiRam`` with pause generators on all five channels. Both paths run the AXI
checker of verif/axi_checker.py on every cycle with the same rules: on the ``ext__*`` pins
(SignalSampler) or on the harness's packed copies ``mon_hm_*`` of the host-model bus
(PackedSampler); every checkpoint requires the bus quiet (``finish``).

Python writes ``hm_cfg_stall`` and ``blk_prob`` (which reach READYs combinationally) and the
backdoors only between commands, with the bus quiet, so the packed sampler's falling-edge read
sees what the next rising edge sees.
"""
import itertools
import json
import os
import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiRam

from verif.axi_checker import Axi4Checker, BusMonitor, PackedSampler, SignalSampler
from verif.host_mem import HostMemory
from verif.soc_target import signature_widths
from hdl_gen.axi import Axi4Signature
from hdl_gen.config import KakiConfig
from hdl_gen.descriptor import DmaCmd, ErrorCode

CFG = KakiConfig(**json.loads(os.environ["KAKI_DMA_CFG"]))
HM_WORDS = int(os.environ["KAKI_HM_WORDS"])
DB = CFG.axi_data_bits // 8
HOST_SIZE = HM_WORDS * DB
AAB = CFG.axi_addr_bits
CMD_LAYOUT = data.Layout.cast(DmaCmd)
LRB = {0: CFG.spad_row_bytes, 1: CFG.acc_row_bytes}
NROWS = {0: CFG.spad_rows, 1: CFG.acc_rows}
MEM_READ_LATENCY = CFG.mem_read_latency
PRE = {0: "spad", 1: "acc"}
CLK_NS = 10
#: the errors a command meets after it started moving data (the others are validation's)
BUS_ERRORS = (ErrorCode.AXI_SLVERR, ErrorCode.AXI_DECERR, ErrorCode.BUS_TIMEOUT)

FIELDS = ("host_addr", "host_row_stride", "host_plane_stride", "local_addr", "local_row_stride",
          "local_plane_stride", "row_bytes", "col_offset", "rows", "planes", "acc", "reserved")


def seed_of(dut, name):
    seed = int(os.environ["KAKI_SEED"])
    dut._log.info(f"{name}: KAKI_SEED={seed} config={CFG}")
    return seed


def make_cmd(**kw):
    c = dict(host_addr=0, host_row_stride=0, host_plane_stride=0, local_addr=0, local_row_stride=1,
             local_plane_stride=0, row_bytes=1, col_offset=0, rows=1, planes=1, acc=0, reserved=0)
    c.update(kw)
    return c


def pack(c):
    return CMD_LAYOUT.const({k: c[k] for k in FIELDS}).as_value().value


# --------------------------------------------------------------------------------------------------
# Reference model (from the DmaCmd docstring, independent of the RTL)

def ref_check(c):
    lrb, nrows = LRB[c["acc"]], NROWS[c["acc"]]
    if c["reserved"]:
        return ErrorCode.RESERVED_BITS
    if c["rows"] == 0 or c["planes"] == 0 or c["row_bytes"] + c["col_offset"] > lrb:
        return ErrorCode.BAD_SHAPE
    last_local = (c["local_addr"] + (c["planes"] - 1) * c["local_plane_stride"]
                  + (c["rows"] - 1) * c["local_row_stride"])
    if last_local >= nrows:
        return ErrorCode.LOCAL_RANGE
    last_host = (c["host_addr"] + (c["planes"] - 1) * c["host_plane_stride"]
                 + (c["rows"] - 1) * c["host_row_stride"] + c["row_bytes"] - 1)
    if c["row_bytes"] and last_host >= 2 ** AAB:
        return ErrorCode.HOST_RANGE
    return ErrorCode.OK


def ref_window(c, base, size):
    """WINDOW when the command touches a host byte outside [base, base + size) (docs/queues.md)."""
    if c["row_bytes"] == 0:
        return ErrorCode.OK
    end = (c["host_addr"] + (c["planes"] - 1) * c["host_plane_stride"]
           + (c["rows"] - 1) * c["host_row_stride"] + c["row_bytes"])
    return ErrorCode.WINDOW if c["host_addr"] < base or end > base + size else ErrorCode.OK


def cmd_rows(c):
    """(host address, local row) of every row, in execution order."""
    for p in range(c["planes"]):
        for r in range(c["rows"]):
            yield (c["host_addr"] + p * c["host_plane_stride"] + r * c["host_row_stride"],
                   c["local_addr"] + p * c["local_plane_stride"] + r * c["local_row_stride"])


def host_idx(h, n):
    return (h + np.arange(n)) % HOST_SIZE


def ref_load(host, local, c, nrows=None):
    """Apply the first ``nrows`` rows (all by default) of load ``c`` to ``local`` (in place)."""
    rb, col = c["row_bytes"], c["col_offset"]
    for i, (h, l) in enumerate(cmd_rows(c)):
        if nrows is not None and i >= nrows:
            break
        row = np.zeros(LRB[c["acc"]], np.uint8)
        row[col:col + rb] = host[host_idx(h, rb)]
        local[l] = row


def ref_store(host, local, c, nrows=None):
    rb, col = c["row_bytes"], c["col_offset"]
    for i, (h, l) in enumerate(cmd_rows(c)):
        if nrows is not None and i >= nrows:
            break
        host[host_idx(h, rb)] = local[l][col:col + rb]


def host_extent(c, margin=64):
    """[lo, hi) host range covering every row of ``c`` plus a margin (no wrap)."""
    rows = list(cmd_rows(c))
    lo = min(h for h, _ in rows)
    hi = max(h for h, _ in rows) + c["row_bytes"]
    return max(0, lo - margin), min(HOST_SIZE, hi + margin)


def first_failing_row(c, base, limit):
    """Index of the first row whose beats overlap the model's error window [base, limit)."""
    for i, (h, _l) in enumerate(cmd_rows(c)):
        if c["row_bytes"] == 0:
            continue
        lo = h - h % DB
        hi = h + c["row_bytes"]
        hi += -hi % DB
        if lo < limit and hi > base:
            return i
    return None


# --------------------------------------------------------------------------------------------------
# AXI checker of both paths (every cycle)

def axi_checker(bus, limits=True):
    """The AXI rules plus the DMA's own: full-width, beat-aligned bursts of at most
    max_burst_beats, at most dma_outstanding per direction (``limits``; abandoned bursts do not
    count towards a channel's limit, so benches that abandon some leave it out)."""
    out = CFG.dma_outstanding if limits else None
    return Axi4Checker(data_bytes=DB, bus=bus, full_width=True, aligned=True,
                       max_beats=CFG.max_burst_beats, max_reads=out, max_writes=out)


def axi_monitor(dut, use_ext, limits=True):
    """The checker on the ``ext__*`` pins (protocol path) or on the packed copies ``mon_hm_*`` of
    the bus to the HDL host memory model (fast path; the cocotb clock starts high, so rising edge
    k is at k * CLK_NS)."""
    if use_ext:
        return BusMonitor(SignalSampler(dut, "ext__", axi_checker("ext", limits)))
    widths = signature_widths(Axi4Signature(CFG.axi_addr_bits, CFG.axi_data_bits, CFG.axi_id_bits))
    return BusMonitor(PackedSampler(dut, "hm", axi_checker("hm", limits), clock_ns=CLK_NS,
                                    first_edge_ns=0, widths=widths))


def edge_now():
    """Index of the latest rising edge (the bench's clock starts high: edge k at k * CLK_NS), the
    cycle numbering of the AXI checker's samples."""
    return int(get_sim_time("ns")) // CLK_NS


# --------------------------------------------------------------------------------------------------
# Testbench

class Tb:
    def __init__(self, dut, seed, *, use_ext=False, limits=True):
        self.dut = dut
        self.rng = random.Random(seed)
        self.nrng = np.random.default_rng(seed)
        self.use_ext = use_ext
        self.limits = limits
        self.done_edge = {}              # channel -> rising edge at which its last done rose
        self.hm = HostMemory(dut, "hm_", data_bytes=DB, words=HM_WORDS)
        self.host = np.zeros(HOST_SIZE, np.uint8)
        self.local = {a: np.zeros((NROWS[a], LRB[a]), np.uint8) for a in (0, 1)}
        self.ram = None
        self.mon = None

    async def start(self, *, latency=2, stall=0.0, blk=0):
        d = self.dut
        Clock(d.clk, CLK_NS, unit="ns").start()
        d.rst.value = 1
        d.use_ext.value = int(self.use_ext)
        d.load_reset.value = 0
        d.store_reset.value = 0
        d.bus_timeout.value = 0
        for ch in ("load", "store"):
            getattr(d, f"{ch}__cmd__valid").value = 0
            getattr(d, f"{ch}__cmd__payload").value = 0
        for pre in ("spad", "acc"):
            for n in ("we", "re", "addr", "wdata"):
                getattr(d, f"{pre}_bd_{n}").value = 0
        d.blk_prob.value = blk
        self.hm.configure(latency=latency, stall=stall, seed=self.rng.getrandbits(32),
                          max_len=CFG.max_burst_beats - 1)
        if self.use_ext:
            self.ram = AxiRam(AxiBus.from_prefix(d, "ext", bus_separator="__"), d.clk, d.rst,
                              size=HOST_SIZE)
        self.mon = axi_monitor(d, self.use_ext, self.limits)
        for _ in range(3):
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0
        await FallingEdge(d.clk)

    def set_pauses(self, p):
        """Random pauses on all five AxiRam channels with probability p."""
        rng = random.Random(self.rng.getrandbits(32))

        def gen():
            while True:
                yield rng.random() < p
        for ch in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                   self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                   self.ram.read_if.r_channel):
            # (clearing a generator would leave the channel stuck if it stopped mid-pause)
            ch.set_pause_generator(gen())

    # --- host memory --------------------------------------------------------------------------
    async def host_write(self, addr, buf):
        buf = np.asarray(buf, np.uint8)
        self.host[host_idx(addr, len(buf))] = buf
        if self.use_ext:
            self.ram.write(addr, buf.tobytes())
        else:
            await self.hm.load(addr, buf)

    async def host_read(self, addr, n):
        if self.use_ext:
            return np.frombuffer(self.ram.read(addr, n), np.uint8)
        return np.frombuffer(await self.hm.read(addr, n), np.uint8)

    async def host_randomize(self, lo=0, hi=HOST_SIZE):
        await self.host_write(lo, self.nrng.integers(0, 256, hi - lo, dtype=np.uint8))

    async def check_host(self, lo, hi, what):
        got = await self.host_read(lo, hi - lo)
        exp = self.host[lo:hi]
        bad = np.nonzero(got != exp)[0]
        assert len(bad) == 0, (f"{what}: {len(bad)} host bytes differ in [{lo:#x}, {hi:#x}), first at "
                               f"{lo + bad[0]:#x}: got {got[bad[0]]:#04x} expected {exp[bad[0]]:#04x}")

    # --- local memories (backdoor through port 0) --------------------------------------------
    async def local_write(self, acc, start, rows):
        d = self.dut
        pre = PRE[acc]
        await FallingEdge(d.clk)
        getattr(d, f"{pre}_bd_we").value = 1
        for i, row in enumerate(rows):
            getattr(d, f"{pre}_bd_addr").value = start + i
            getattr(d, f"{pre}_bd_wdata").value = int.from_bytes(row.tobytes(), "little")
            self.local[acc][start + i] = row
            await FallingEdge(d.clk)
        getattr(d, f"{pre}_bd_we").value = 0

    async def local_randomize(self, acc):
        await self.local_write(acc, 0, self.nrng.integers(0, 256, (NROWS[acc], LRB[acc]), dtype=np.uint8))

    async def local_read(self, acc):
        d = self.dut
        pre = PRE[acc]
        out = np.zeros((NROWS[acc], LRB[acc]), np.uint8)
        lat = MEM_READ_LATENCY          # row t asked for in cycle t is on the port in t + lat
        await FallingEdge(d.clk)
        getattr(d, f"{pre}_bd_re").value = 1
        for t in range(NROWS[acc] + lat - 1):
            getattr(d, f"{pre}_bd_addr").value = t % NROWS[acc]
            await RisingEdge(d.clk)
            await ReadOnly()
            if t >= lat - 1:
                v = int(getattr(d, f"{pre}_bd_rdata").value)
                out[t - lat + 1] = np.frombuffer(v.to_bytes(LRB[acc], "little"), np.uint8)
            await FallingEdge(d.clk)
        getattr(d, f"{pre}_bd_re").value = 0
        return out

    async def check_local(self, acc, what):
        got = await self.local_read(acc)
        exp = self.local[acc]
        bad = np.nonzero((got != exp).any(axis=1))[0]
        assert len(bad) == 0, (f"{what}: {len(bad)} {PRE[acc]} rows differ, first row {bad[0]}: "
                               f"got {got[bad[0]].tobytes().hex()} expected {exp[bad[0]].tobytes().hex()}")

    # --- commands -----------------------------------------------------------------------------
    async def submit(self, ch, c):
        """Hand ``c`` to channel ``ch`` ("load"/"store"); returns at the falling edge after the
        accepting clock, with the harness's counters in the accepting cycle (``counters``)."""
        d = self.dut
        valid = getattr(d, f"{ch}__cmd__valid")
        ready = getattr(d, f"{ch}__cmd__ready")
        busy = getattr(d, f"{ch}__busy")
        await FallingEdge(d.clk)
        getattr(d, f"{ch}__cmd__payload").value = pack(c)
        valid.value = 1
        while True:
            await ReadOnly()
            rdy = int(ready.value)
            if rdy:     # the accepting cycle: idle, counters before it
                assert int(busy.value) == 0, f"{ch} busy while it accepts {c}"
                accept = self.counters(ch)
            await RisingEdge(d.clk)
            if rdy:
                break
        await FallingEdge(d.clk)
        valid.value = 0
        return accept

    def counters(self, ch):
        """Channel ``ch``'s harness counters now: cycles, its busy cycles, its granted
        local-memory requests."""
        d = self.dut
        return {"cycles": int(d.cycles.value), "busy": int(getattr(d, f"{ch}_busy_cycles").value),
                "local": int(getattr(d, f"{ch}_local").value)}

    async def run_cmd(self, ch, c, timeout_cycles=None):
        """Submit ``c`` on channel ``ch`` ("load"/"store"); return (ErrorCode, cycles accept->done)."""
        d = self.dut
        done = getattr(d, f"{ch}__done")
        if timeout_cycles is None:
            timeout_cycles = 20000 + 400 * c["rows"] * c["planes"] * (1 + c["row_bytes"] // DB)
        accept = await self.submit(ch, c)
        start = int(d.cycles.value) - 1
        try:
            await with_timeout(RisingEdge(done), timeout_cycles * CLK_NS, "ns")
        except Exception as e:
            state = (f"; AXI checker: {self.mon.core.summary()}; open: {self.mon.core.open_bursts()}; "
                     f"error: {self.mon.error}")
            if not self.use_ext:
                state += f"; host model: AR {self.hm.ar_count} AW {self.hm.aw_count}"
            raise AssertionError(f"{ch} hung (no done in {timeout_cycles} cycles) for {c}{state}") from e
        self.done_edge[ch] = edge_now()
        await ReadOnly()
        err = ErrorCode(int(getattr(d, f"{ch}__error").value))
        cycles = int(d.cycles.value) - start
        now = self.counters(ch)
        # busy: high from the cycle after the accepting one through the done cycle
        after = now["cycles"] - accept["cycles"] - 1
        high = now["busy"] - accept["busy"] + int(getattr(d, f"{ch}__busy").value)
        assert high == after + 1, (f"{ch} busy in only {high} of the {after + 1} cycles from the one "
                                   f"after accepting {c} to its done")
        self.check_local_traffic(ch, c, err, now["local"] - accept["local"])
        await FallingEdge(d.clk)
        return err, cycles

    def check_local_traffic(self, ch, c, err, granted):
        """A command requests each of its local rows once (a load writes it, a store reads it):
        all of them when it succeeds, none when validation rejects it, at most all when the bus
        fails it midway; and no channel touches local memory while it is not busy (the GEMM and
        vector engines share these memories)."""
        # row_bytes 0: a load still writes all-zero rows, a store moves nothing
        rows = c["rows"] * c["planes"] if ch == "load" or c["row_bytes"] else 0
        what = ("row writes", "row reads")[ch == "store"]
        if err == ErrorCode.OK:
            assert granted == rows, f"{ch}: {granted} local {what} for {c}, expected its {rows} rows once"
        elif err in BUS_ERRORS:
            assert granted <= rows, f"{ch}: {granted} local {what} for {c} ({err.name}), more than its {rows} rows"
        else:
            assert granted == 0, f"{ch}: {granted} local {what} for {c}, rejected with {err.name}"
        self.check_idle_access(ch)

    def check_idle_access(self, ch):
        assert int(getattr(self.dut, f"{ch}_idle_access").value) == 0, \
            f"{ch} channel requested local memory while not busy"

    def check_protocol(self, what):
        for ch in ("load", "store"):
            self.check_idle_access(ch)
        self.mon.finish(what)           # no violation, every burst of the command complete
        if not self.use_ext:
            assert self.hm.prot_err == 0, f"{what}: host memory model saw {self.hm.prot_err_text()}"

    # --- random commands ----------------------------------------------------------------------
    def rand_cmd(self, *, host_lo, host_hi, local_lo, local_hi, acc=None, max_rows=10,
                 distinct_local=False, distinct_host=False):
        """A random valid command whose host rows lie in [host_lo, host_hi) and local rows in
        [local_lo, local_hi) (fractions of the memory)."""
        r = self.rng
        acc = r.randrange(2) if acc is None else acc
        lrb = LRB[acc]
        k = r.random()
        rb = 0 if k < 0.04 else lrb if k < 0.2 else r.randint(1, lrb)
        col = 0 if r.random() < 0.4 else r.randint(0, lrb - rb)
        shape = r.choice(("1d", "2d", "2d", "3d"))
        rows = 1 if shape == "1d" else r.randint(2, max_rows)
        planes = r.randint(2, 4) if shape == "3d" else 1
        if shape == "3d":
            rows = r.randint(1, max(1, max_rows // 2))
        # host strides
        k = r.random()
        if distinct_host:
            hrs = rb + r.choice((0, 0, r.randint(1, 40), r.randint(1, 5000)))
        elif k < 0.1:
            hrs = 0
        elif k < 0.2:
            hrs = r.randint(0, max(rb, 1))
        elif k < 0.35:
            hrs = 4096 + r.randint(-8, 8)          # every row near the same 4 KiB offset
        else:
            hrs = rb + r.choice((0, 0, r.randint(1, 40), r.randint(1, 3000)))
        hps = rows * max(hrs, rb) + r.choice((0, r.randint(1, 64), r.randint(1, 9000)))
        ext = (planes - 1) * hps + (rows - 1) * hrs + rb
        span = host_hi - host_lo
        assert ext < span, (ext, span)
        if r.random() < 0.4:                       # start just below a 4 KiB boundary
            b = r.randrange(host_lo // 4096 + 1, (host_hi - ext) // 4096)
            host_addr = max(host_lo, b * 4096 - r.randint(1, max(rb, 1)))
        else:
            host_addr = host_lo + r.randrange(span - ext)
        # local strides
        nl = int(NROWS[acc] * (local_hi - local_lo))
        l0 = int(NROWS[acc] * local_lo)
        for _ in range(100):
            lrs = (r.choice((1, 1, 1, 2, 3)) if distinct_local else r.choice((0, 1, 1, 1, 2, 3)))
            lps = rows * max(lrs, 1) + r.choice((0, 0, r.randint(1, 8)))
            lext = (planes - 1) * lps + (rows - 1) * lrs + 1
            if lext <= nl:
                break
            rows = max(1, rows // 2)
        else:
            raise AssertionError("no local shape fits")
        local_addr = l0 + r.randrange(nl - lext + 1)
        return make_cmd(host_addr=host_addr, host_row_stride=hrs, host_plane_stride=hps,
                        local_addr=local_addr, local_row_stride=lrs, local_plane_stride=lps,
                        row_bytes=rb, col_offset=col, rows=rows, planes=planes, acc=acc)


def describe(c):
    return ("acc" if c["acc"] else "spad") + (
        f" h={c['host_addr']:#x}/{c['host_row_stride']}/{c['host_plane_stride']} "
        f"l={c['local_addr']}/{c['local_row_stride']}/{c['local_plane_stride']} "
        f"rb={c['row_bytes']} col={c['col_offset']} {c['planes']}x{c['rows']}")


async def random_traffic(tb, iters, *, ext):
    """Concurrent random loads (host lower half -> local lower half) and stores (local upper half ->
    host upper half) under random latency, stalls and lost grants; every command checked."""
    dut, r = tb.dut, tb.rng
    half = HOST_SIZE // 2
    max_rows = 10 if ext else 16
    for it in range(iters):
        stall = r.choice((0.0, 0.1, 0.3, 0.6))
        blk = r.choice((0, 64, 160, 230))
        dut.blk_prob.value = blk
        if ext:
            tb.set_pauses(stall)
        else:
            tb.hm.set_latency(r.choice((2, 3, 8, 20)))
            tb.hm.set_backpressure(stall)
        kind = r.choice(("load", "store", "both", "both"))
        ld = tb.rand_cmd(host_lo=0, host_hi=half, local_lo=0, local_hi=0.5,
                         max_rows=max_rows) if kind != "store" else None
        st = tb.rand_cmd(host_lo=half, host_hi=HOST_SIZE, local_lo=0.5, local_hi=1.0,
                         max_rows=max_rows) if kind != "load" else None
        tasks = []
        if ld:
            tasks.append(("load", ld, cocotb.start_soon(tb.run_cmd("load", ld))))
        if st:
            tasks.append(("store", st, cocotb.start_soon(tb.run_cmd("store", st))))
        for ch, c, t in tasks:
            err, cycles = await t
            what = f"iter {it} {ch} {describe(c)} stall={stall} blk={blk}"
            assert err == ErrorCode.OK, f"{what}: error {err!r}"
            if ch == "load":
                ref_load(tb.host, tb.local[c["acc"]], c)
            else:
                ref_store(tb.host, tb.local[c["acc"]], c)
        if ld:
            await tb.check_local(ld["acc"], f"iter {it} load {describe(ld)}")
        if st:
            lo, hi = host_extent(st)
            await tb.check_host(lo, hi, f"iter {it} store {describe(st)}")
        tb.check_protocol(f"iter {it}")
    # Both memories end up exactly as the model says (nothing written anywhere else).
    for acc in (0, 1):
        await tb.check_local(acc, "final")


# --------------------------------------------------------------------------------------------------
# Tests

@cocotb.test()
async def t_host_mem_backdoor(dut):
    """HostMemory.load/read round trips at every alignment, across the wrap point, bulk speed."""
    seed = seed_of(dut, "t_host_mem_backdoor")
    tb = Tb(dut, seed)
    await tb.start()
    r = tb.rng
    import time
    t0 = time.monotonic()
    await tb.host_randomize()
    dut._log.info(f"bulk load of {HOST_SIZE} bytes took {time.monotonic() - t0:.2f} s")
    await tb.check_host(0, HOST_SIZE, "bulk")
    for i in range(60):
        n = r.choice((1, 2, 7, 8, 9, r.randint(1, 300)))
        a = r.randrange(HOST_SIZE) if i % 10 else HOST_SIZE - r.randint(1, 16)   # some wrap
        buf = tb.nrng.integers(0, 256, n, dtype=np.uint8)
        await tb.host_write(a, buf)
        got = await tb.host_read(a, n)
        assert (got == buf).all(), f"round trip at {a:#x}+{n}"
        lo = max(0, a % HOST_SIZE - 16)
        await tb.check_host(lo, min(HOST_SIZE, a % HOST_SIZE + n + 16), f"neighbours of {a:#x}+{n}")
    await tb.check_host(0, HOST_SIZE, "after partial writes")


async def _run_checked(tb, ch, c, exp, what):
    """Run ``c`` on channel ``ch`` expecting ``exp``. A rejected command must make no AXI traffic
    and (loads) leave local memory alone; an accepted one is applied to the reference memories
    (loads are also checked). Returns whether it was accepted."""
    ar0, aw0 = tb.hm.ar_count, tb.hm.aw_count
    err, _ = await tb.run_cmd(ch, c)
    assert err == exp, f"{what}: got {err!r}, expected {exp!r}"
    if exp != ErrorCode.OK:
        assert tb.hm.ar_count == ar0 and tb.hm.aw_count == aw0, f"{what}: AXI traffic on a rejected command"
        if ch == "load":
            await tb.check_local(c["acc"], what)
        return False
    if ch == "load":
        ref_load(tb.host, tb.local[c["acc"]], c)
        await tb.check_local(c["acc"], what)
    else:
        ref_store(tb.host, tb.local[c["acc"]], c)
    return True


@cocotb.test()
async def t_validation(dut):
    """Every validation error, with exact boundaries, on both channels and both memories: the error
    code, no AXI traffic, nothing written; the boundary cases just inside succeed."""
    seed = seed_of(dut, "t_validation")
    tb = Tb(dut, seed)
    await tb.start(latency=3)
    await tb.host_randomize(0, 64 * 1024)
    await tb.host_randomize(HOST_SIZE - 64 * 1024, HOST_SIZE)
    for acc in (0, 1):
        await tb.local_randomize(acc)
    top = 2 ** AAB
    cases = []
    for acc in (0, 1):
        lrb, nr = LRB[acc], NROWS[acc]
        base = dict(acc=acc, host_addr=0x100, host_row_stride=lrb, row_bytes=lrb, rows=4)
        def C(**kw):
            return make_cmd(**(base | kw))

        cases += [
            (C(reserved=1), ErrorCode.RESERVED_BITS),
            (C(reserved=0x40, rows=0), ErrorCode.RESERVED_BITS),
            (C(rows=0), ErrorCode.BAD_SHAPE),
            (C(planes=0), ErrorCode.BAD_SHAPE),
            (C(row_bytes=lrb, col_offset=1), ErrorCode.BAD_SHAPE),
            (C(row_bytes=1, col_offset=lrb), ErrorCode.BAD_SHAPE),
            (C(row_bytes=0, col_offset=lrb + 1), ErrorCode.BAD_SHAPE),
            (C(row_bytes=3, col_offset=lrb - 3), ErrorCode.OK),
            (C(row_bytes=0, col_offset=lrb), ErrorCode.OK),
            (C(row_bytes=255, col_offset=255), ErrorCode.BAD_SHAPE),
            # local range: last row exactly nr-1 is fine, nr is not
            (C(local_addr=nr - 4), ErrorCode.OK),
            (C(local_addr=nr - 3), ErrorCode.LOCAL_RANGE),
            (C(rows=3, local_row_stride=5, planes=2, local_plane_stride=nr - 11), ErrorCode.OK),
            (C(rows=3, local_row_stride=5, planes=2, local_plane_stride=nr - 10), ErrorCode.LOCAL_RANGE),
            (C(local_addr=2 ** 20 - 1), ErrorCode.LOCAL_RANGE),
            (C(rows=65535, local_row_stride=65535, planes=65535,
               local_plane_stride=2 ** 20 - 1, local_addr=2 ** 20 - 1), ErrorCode.LOCAL_RANGE),
            (C(rows=3, local_row_stride=0), ErrorCode.OK),
            # host range: the last byte at 2**AAB - 1 is fine, one more is not
            (C(host_addr=top - 4 * lrb), ErrorCode.OK),
            (C(host_addr=top - 4 * lrb + 1), ErrorCode.HOST_RANGE),
            (C(host_addr=top - 3 * lrb - 5, row_bytes=5), ErrorCode.OK),
            (C(host_addr=top - 3 * lrb - 4, row_bytes=5), ErrorCode.HOST_RANGE),
            (C(host_addr=2 ** 48 - 1), ErrorCode.HOST_RANGE),
            (C(host_addr=top), ErrorCode.HOST_RANGE),
            (C(rows=65535, host_row_stride=2 ** 32 - 1, planes=65535, local_row_stride=0,
               host_plane_stride=2 ** 32 - 1, host_addr=2 ** 48 - 1), ErrorCode.HOST_RANGE),
            (C(rows=65535, host_row_stride=2 ** 16 + 2, local_row_stride=0), ErrorCode.HOST_RANGE),
            (C(rows=2, host_row_stride=0, planes=2, host_plane_stride=top - 0x100 - lrb),
             ErrorCode.OK),
            (C(rows=2, host_row_stride=0, planes=2, host_plane_stride=top - 0x100 - lrb + 1),
             ErrorCode.HOST_RANGE),
            # row_bytes == 0 touches no host byte: any host address is fine
            (C(row_bytes=0, host_addr=2 ** 48 - 1), ErrorCode.OK),
            # priority: reserved > shape > local > host
            (C(rows=0, host_addr=2 ** 48 - 1, local_addr=2 ** 20 - 1), ErrorCode.BAD_SHAPE),
            (C(host_addr=2 ** 48 - 1, local_addr=2 ** 20 - 1), ErrorCode.LOCAL_RANGE),
        ]
    for ch in ("load", "store"):
        for c, exp in cases:
            assert ref_check(c) == exp, f"reference disagrees with the case table: {c} {exp!r}"
            what = f"{ch} {describe(c)} reserved={c['reserved']}"
            if await _run_checked(tb, ch, c, exp, what) and ch == "store" and c["row_bytes"]:
                for h, _l in cmd_rows(c):
                    lo = (h - 64) % HOST_SIZE
                    await tb.check_host(lo, min(HOST_SIZE, lo + 128 + c["row_bytes"]), what)
        # stores that failed validation wrote nothing anywhere we looked
        await tb.check_host(0, 64 * 1024, f"{ch} low host region")
        await tb.check_host(HOST_SIZE - 64 * 1024, HOST_SIZE, f"{ch} high host region")
    tb.check_protocol("validation")


@cocotb.test()
async def t_window(dut):
    """The queue DMA window: exact edges (first and last byte, strides, planes) on both channels,
    HOST_RANGE and the earlier checks win over WINDOW, a violation makes no AXI traffic and writes
    nothing, ``check`` = 0 disables the window, and a window near the top of the address space."""
    seed = seed_of(dut, "t_window")
    tb = Tb(dut, seed)
    await tb.start(latency=3)
    await tb.host_randomize(0, 64 * 1024)
    for acc in (0, 1):
        await tb.local_randomize(acc)
    lrb = LRB[0]
    base, size = 0x1000, 0x800
    top = 2 ** AAB
    def C(**kw):
        return make_cmd(**(dict(host_addr=base, host_row_stride=lrb, row_bytes=lrb, rows=4) | kw))
    cases = [  # (command, window (base, size, check), expected)
        (C(), (base, size, 1), ErrorCode.OK),
        (C(host_addr=base - 1), (base, size, 1), ErrorCode.WINDOW),
        (C(host_addr=base + size - 4 * lrb), (base, size, 1), ErrorCode.OK),
        (C(host_addr=base + size - 4 * lrb + 1), (base, size, 1), ErrorCode.WINDOW),
        (C(host_addr=base - 1), (base, size, 0), ErrorCode.OK),
        (C(rows=2, planes=3, host_plane_stride=size // 3 - lrb // 2), (base, size, 1), ErrorCode.OK),
        (C(rows=2, planes=2, host_row_stride=0, host_plane_stride=size - lrb), (base, size, 1),
         ErrorCode.OK),
        (C(rows=2, planes=2, host_row_stride=0, host_plane_stride=size - lrb + 1), (base, size, 1),
         ErrorCode.WINDOW),
        (C(row_bytes=0, host_addr=0), (base, size, 1), ErrorCode.OK),
        (C(host_addr=base), (base, 0, 1), ErrorCode.WINDOW),
        (C(host_addr=top - 4 * lrb), (top - 4 * lrb, 4 * lrb, 1), ErrorCode.OK),
        (C(host_addr=top - 4 * lrb + 1), (top - 4 * lrb, 4 * lrb, 1), ErrorCode.HOST_RANGE),
        (C(host_addr=0x10, rows=0), (base, size, 1), ErrorCode.BAD_SHAPE),
        (C(host_addr=0x10, reserved=1), (base, size, 1), ErrorCode.RESERVED_BITS),
        (C(host_addr=0x10, local_addr=NROWS[0]), (base, size, 1), ErrorCode.LOCAL_RANGE),
        (C(host_addr=2 * base), (2 ** 32 - 0x100, 0x200, 1), ErrorCode.WINDOW),
    ]
    for ch in ("load", "store"):
        for c, (wb, ws, chk), exp in cases:
            ref = ref_check(c)
            if ref == ErrorCode.OK and chk:
                ref = ref_window(c, wb, ws)
            assert ref == exp, f"reference disagrees with the case table: {c} {exp!r}"
            getattr(dut, f"{ch}_window").value = wb | (ws << 32) | (chk << 64)
            await _run_checked(tb, ch, c, exp, f"{ch} {describe(c)} window {wb:#x}+{ws:#x} check={chk}")
        getattr(dut, f"{ch}_window").value = 0
        await tb.check_host(0, 64 * 1024, f"{ch} host region")
    tb.check_protocol("window")


@cocotb.test()
async def t_align_sweep(dut):
    """Every host alignment 0..DB-1 x every row_bytes 0..row length, both memories, loads and
    stores running concurrently: 2-row commands whose second row straddles a 4 KiB boundary,
    col_offset varied, under stalls and a blocker. Memories checked after every batch."""
    seed = seed_of(dut, "t_align_sweep")
    tb = Tb(dut, seed)
    await tb.start(latency=3, stall=0.25, blk=100)
    r = tb.rng
    half = HOST_SIZE // 2
    region = 64 * 1024
    await tb.host_randomize(0, region)
    await tb.host_randomize(half, half + region)
    for acc in (0, 1):
        await tb.local_randomize(acc)
    n_cross = 0
    for acc in (0, 1):
        lrb, nr = LRB[acc], NROWS[acc]
        combos = [(a, rb) for a in range(DB) for rb in range(lrb + 1)]
        per_batch = nr // 4                       # loads fill 2 rows each of the lower half
        for b0 in range(0, len(combos), per_batch):
            batch = combos[b0:b0 + per_batch]
            for i, (align, rb) in enumerate(batch):
                col = (align * 5 + rb * 3) % (lrb - rb + 1)
                d = max(1, rb // 2)
                n_cross += rb >= 2
                cmds = []
                for ch, base in (("load", 0), ("store", half)):
                    page = base + 4096 * r.randrange(1, region // 4096 - 2)
                    h0 = page + align
                    cmds.append((ch, make_cmd(
                        acc=acc, host_addr=h0, host_row_stride=page + 4096 - d - h0, row_bytes=rb,
                        col_offset=col, rows=2,
                        local_addr=2 * i if ch == "load" else nr // 2 + r.randrange(nr // 2 - 1),
                        local_row_stride=1)))
                tasks = [(ch, c, cocotb.start_soon(tb.run_cmd(ch, c))) for ch, c in cmds]
                for ch, c, t in tasks:
                    err, _ = await t
                    assert err == ErrorCode.OK, f"{ch} {describe(c)}: {err!r}"
                    (ref_load if ch == "load" else ref_store)(tb.host, tb.local[acc], c)
            await tb.check_local(acc, f"sweep {PRE[acc]} batch {b0}")
            await tb.check_host(half, half + region, f"sweep {PRE[acc]} batch {b0} stores")
            tb.check_protocol(f"sweep batch {b0}")
    assert n_cross > 0


@cocotb.test()
async def t_random_fast(dut):
    """Random 1D/2D/3D loads and stores, concurrent, on the HDL host model with random latency,
    stalls and blocker; exact host/local contents after every command."""
    seed = seed_of(dut, "t_random_fast")
    tb = Tb(dut, seed)
    await tb.start()
    await tb.host_randomize()
    for acc in (0, 1):
        await tb.local_randomize(acc)
    await random_traffic(tb, 200 if CFG.dim <= 8 else 120, ext=False)
    assert tb.hm.rd_max_outstanding >= 2, "never more than one read burst in flight"
    dut._log.info(f"AXI checker: {tb.mon.core.summary()}")
    assert (tb.mon.core.ar_count, tb.mon.core.aw_count) == (tb.hm.ar_count, tb.hm.aw_count), \
        f"checker and host model disagree: {tb.mon.core.summary()}"


@cocotb.test()
async def t_random_axiram(dut):
    """The same random traffic against cocotbext-axi AxiRam with random pauses on all five
    channels; the AXI rules are checked on every cycle by AxiMonitor."""
    seed = seed_of(dut, "t_random_axiram")
    tb = Tb(dut, seed, use_ext=True)
    await tb.start()
    await tb.host_randomize()
    for acc in (0, 1):
        await tb.local_randomize(acc)
    await random_traffic(tb, 40 if CFG.dim <= 8 else 25, ext=True)
    tb.mon.check()
    dut._log.info(f"AXI checker: {tb.mon.core.summary()}")
    assert tb.mon.core.ar_count > 0 and tb.mon.core.aw_count > 0


@cocotb.test()
async def t_axi_errors(dut):
    """SLVERR and DECERR on loads and stores: done with the right code, no hang, rows before the
    failing row written, the failing and later rows not (loads), nothing outside the rows and
    nothing inside the error window written (stores), and the next commands work."""
    seed = seed_of(dut, "t_axi_errors")
    tb = Tb(dut, seed)
    await tb.start()
    r = tb.rng
    half = HOST_SIZE // 2
    await tb.host_randomize(0, 256 * 1024)
    await tb.host_randomize(half, half + 256 * 1024)
    for acc in (0, 1):
        await tb.local_randomize(acc)
    n_fail = {"load": 0, "store": 0}
    for it in range(24):
        ch = ("load", "store")[it % 2]
        resp = (2, 3)[(it // 2) % 2]
        tb.hm.set_latency(r.choice((2, 5, 12)))
        tb.hm.set_backpressure(r.choice((0.0, 0.2, 0.5)))
        dut.blk_prob.value = r.choice((0, 128))
        host_lo = 0 if ch == "load" else half
        while True:
            c = tb.rand_cmd(host_lo=host_lo, host_hi=host_lo + 256 * 1024, local_lo=0, local_hi=1,
                            max_rows=12, distinct_local=True, distinct_host=True)
            if c["row_bytes"] and c["rows"] * c["planes"] >= 3:
                break
        rows = list(cmd_rows(c))
        # error window: a few bytes inside a randomly chosen row (rarely none at all)
        k = r.randrange(len(rows))
        h = rows[k][0]
        base = h + r.randrange(c["row_bytes"])
        limit = base + r.randint(1, 16)
        if it == 22:
            base = limit = 0                     # empty window: the command must succeed
        fail = first_failing_row(c, base, limit) if limit > base else None
        if limit > base:
            tb.hm.set_error_window(base, limit, resp)
        else:
            tb.hm.clear_error_window()
        what = f"iter {it} {ch} {describe(c)} window [{base:#x},{limit:#x}) resp {resp}"
        exp = ErrorCode.OK if fail is None else (ErrorCode.AXI_SLVERR if resp == 2 else ErrorCode.AXI_DECERR)
        err, _ = await tb.run_cmd(ch, c)
        assert err == exp, f"{what}: got {err!r} expected {exp!r} (first failing row {fail})"
        tb.hm.clear_error_window()
        if ch == "load":
            ref_load(tb.host, tb.local[c["acc"]], c, nrows=fail)
            await tb.check_local(c["acc"], what)
        else:
            lo, hi = host_extent(c)
            old = tb.host.copy()
            part = tb.host.copy()
            ref_store(part, tb.local[c["acc"]], c, nrows=fail)
            full = tb.host.copy()
            ref_store(full, tb.local[c["acc"]], c)
            got = await tb.host_read(lo, hi - lo)
            ok = (got == part[lo:hi]) | (got == full[lo:hi])
            bad = np.nonzero(~ok)[0]
            assert len(bad) == 0, f"{what}: host byte {lo + bad[0]:#x} written wrongly"
            if fail is not None:
                wl, wh = max(base, lo), min(limit, hi)
                assert (got[wl - lo:wh - lo] == old[wl:wh]).all(), f"{what}: write inside the error window"
            else:
                assert (got == full[lo:hi]).all(), f"{what}: store incomplete"
            tb.host[lo:hi] = got
        if fail is not None:
            n_fail[ch] += 1
        tb.check_protocol(what)
        # the channel still works: a clean command right after
        c2 = tb.rand_cmd(host_lo=host_lo, host_hi=host_lo + 256 * 1024, local_lo=0, local_hi=1)
        err, _ = await tb.run_cmd(ch, c2)
        assert err == ErrorCode.OK, f"{what}: follow-up {describe(c2)} got {err!r}"
        if ch == "load":
            ref_load(tb.host, tb.local[c2["acc"]], c2)
            await tb.check_local(c2["acc"], f"{what} follow-up")
        else:
            ref_store(tb.host, tb.local[c2["acc"]], c2)
            lo, hi = host_extent(c2)
            await tb.check_host(lo, hi, f"{what} follow-up")
    assert n_fail["load"] >= 8 and n_fail["store"] >= 8, n_fail
    # Concurrent: a load fails while a store runs cleanly on the other channel (and vice versa).
    for failing in ("load", "store"):
        ld = tb.rand_cmd(host_lo=0, host_hi=256 * 1024, local_lo=0, local_hi=0.5, max_rows=12,
                         distinct_local=True, distinct_host=True)
        st = tb.rand_cmd(host_lo=half, host_hi=half + 256 * 1024, local_lo=0.5, local_hi=1,
                         max_rows=12, distinct_local=True, distinct_host=True)
        victim = ld if failing == "load" else st
        rows = list(cmd_rows(victim))
        if victim["row_bytes"] == 0:
            victim["row_bytes"], victim["col_offset"] = 1, 0
        base = rows[-1][0]
        tb.hm.set_error_window(base, base + 1, 2)
        t1 = cocotb.start_soon(tb.run_cmd("load", ld))
        t2 = cocotb.start_soon(tb.run_cmd("store", st))
        e1, _ = await t1
        e2, _ = await t2
        tb.hm.clear_error_window()
        assert (e1, e2) == ((ErrorCode.AXI_SLVERR, ErrorCode.OK) if failing == "load"
                            else (ErrorCode.OK, ErrorCode.AXI_SLVERR)), (failing, e1, e2)
        if failing == "store":
            ref_load(tb.host, tb.local[ld["acc"]], ld)
            await tb.check_local(ld["acc"], "concurrent load next to a failing store")
            lo, hi = host_extent(st)
            tb.host[lo:hi] = await tb.host_read(lo, hi - lo)
        else:
            fail = first_failing_row(ld, base, base + 1)
            ref_load(tb.host, tb.local[ld["acc"]], ld, nrows=fail)
            await tb.check_local(ld["acc"], "failing load next to a clean store")
            ref_store(tb.host, tb.local[st["acc"]], st)
            lo, hi = host_extent(st)
            await tb.check_host(lo, hi, "concurrent store next to a failing load")
        tb.check_protocol("concurrent errors")


@cocotb.test()
async def t_perf(dut):
    """Long contiguous loads and stores on the fast path: checks the data, logs bytes/cycle."""
    seed = seed_of(dut, "t_perf")
    tb = Tb(dut, seed)
    await tb.start()
    await tb.host_randomize(0, 256 * 1024)
    for acc in (0, 1):
        await tb.local_randomize(acc)
    results = []
    for acc in (1, 0):
        lrb, nr = LRB[acc], NROWS[acc]
        for latency in (2, 16):
            tb.hm.set_latency(latency)
            for ch in ("load", "store"):
                c = make_cmd(acc=acc, host_addr=0x1000 if ch == "load" else 0x20000,
                             host_row_stride=lrb, row_bytes=lrb, rows=nr, local_row_stride=1)
                err, cycles = await tb.run_cmd(ch, c)
                assert err == ErrorCode.OK, (ch, err)
                if ch == "load":
                    ref_load(tb.host, tb.local[acc], c)
                    await tb.check_local(acc, f"perf {ch}")
                else:
                    ref_store(tb.host, tb.local[acc], c)
                    lo, hi = host_extent(c)
                    await tb.check_host(lo, hi, f"perf {ch}")
                nbytes = lrb * nr
                results.append(f"{ch:5s} {PRE[acc]:4s} rows of {lrb:3d} B, latency {latency:2d}: "
                               f"{nbytes} B in {cycles} cycles = {nbytes / cycles:.2f} B/cycle "
                               f"(bus max {DB})")
    # unaligned rows: one byte off the beat grid
    tb.hm.set_latency(2)
    lrb, nr = LRB[1], NROWS[1]
    c = make_cmd(acc=1, host_addr=0x1003, host_row_stride=lrb, row_bytes=lrb, rows=nr)
    err, cycles = await tb.run_cmd("load", c)
    assert err == ErrorCode.OK
    ref_load(tb.host, tb.local[1], c)
    await tb.check_local(1, "perf unaligned load")
    results.append(f"load  acc  rows of {lrb:3d} B, +3 misaligned, latency  2: "
                   f"{lrb * nr / cycles:.2f} B/cycle")
    for line in results:
        dut._log.info("PERF " + line)
    print("\n".join("PERF " + line for line in results))
    assert tb.hm.rd_max_outstanding >= 2, "never more than one read burst in flight"
    assert tb.hm.rd_max_outstanding <= CFG.dma_outstanding
    tb.check_protocol("perf")



# --------------------------------------------------------------------------------------------------
# Host memory that does not answer; one channel reset alone

BUS_LIMIT = 300          #: BUS_TIMEOUT.CYCLES of these tests


def record_progress(tb):
    """{"load"/"store": rising edge of the channel's latest handshake on the port}, kept up to
    date from the AXI checker's handshakes."""
    last = {}

    def listener(cycle, channel, _fields):
        last["load" if channel in ("ar", "r") else "store"] = cycle
    tb.mon.core.listeners.append(listener)
    return last


async def drain_parked(tb, what, cycles=4000):
    """Wait until the host model has answered every parked burst and the bus is quiet."""
    for _ in range(cycles // 50):
        await ClockCycles(tb.dut.clk, 50)
        if tb.hm.bh_parked == 0 and not tb.mon.core.outstanding():
            await FallingEdge(tb.dut.clk)
            return
    raise AssertionError(f"{what}: {tb.hm.bh_parked} parked bursts, bus {tb.mon.core.summary()}")


def check_partial_store(tb, c, got, lo, hi, keep=(), what=""):
    """After a store that stopped part way: every host byte of [lo, hi) is the old one or the
    command's, the bytes of the ``keep`` ranges are the old ones; the reference takes what is
    there."""
    full = tb.host.copy()
    ref_store(full, tb.local[c["acc"]], c)
    ok = (got == tb.host[lo:hi]) | (got == full[lo:hi])
    bad = np.nonzero(~ok)[0]
    assert len(bad) == 0, f"{what}: host byte {lo + bad[0]:#x} written with a byte of no row"
    for kl, kh in keep:
        kl, kh = max(kl, lo), min(kh, hi)
        assert (got[kl - lo:kh - lo] == tb.host[kl:kh]).all(), \
            f"{what}: a byte in [{kl:#x}, {kh:#x}) was written"
    tb.host[lo:hi] = got


def rows_cmd(tb, ch, host_lo, local_lo, local_hi, min_rows):
    """A random command of ``min_rows`` or more distinct host and local rows with data."""
    while True:
        c = tb.rand_cmd(host_lo=host_lo, host_hi=host_lo + 256 * 1024, local_lo=local_lo,
                        local_hi=local_hi, max_rows=16, distinct_local=True, distinct_host=True)
        if c["row_bytes"] and c["rows"] * c["planes"] >= min_rows:
            return c


@cocotb.test()
async def t_bus_timeout(dut):
    """A host memory that does not answer (the model's black hole over one row of a command):
    swallowing the burst (no R/B) or refusing its address (no AR/AW READY), on either channel.
    The command ends with BUS_TIMEOUT exactly BUS_TIMEOUT.CYCLES after the channel's last
    progress on the bus; the rows before the failing one are loaded (stores: only bytes of the
    command's rows, none in the hole); the AXI rules hold on the port throughout (the refused
    address stays offered, unchanged, until taken; the abandoned bursts' W beats go out without
    strobes). With the hole still swallowing, the next command completes on a fresh ID; still
    refusing, it times out too (the port is blocked). Released, the late responses of the
    abandoned bursts are dropped by ID while the next command runs: memories exact."""
    seed = seed_of(dut, "t_bus_timeout")
    tb = Tb(dut, seed, limits=False)
    await tb.start(latency=4)
    r = tb.rng
    half = HOST_SIZE // 2
    await tb.host_randomize(0, 256 * 1024)
    await tb.host_randomize(half, half + 256 * 1024)
    for acc in (0, 1):
        await tb.local_randomize(acc)
    last = record_progress(tb)
    dut.bus_timeout.value = BUS_LIMIT
    # Idle cycles are not waiting: a channel idle for several limits after a command (whose
    # responses have all come) runs its next one without a timeout.
    for ch in ("load", "store"):
        host_lo = 0 if ch == "load" else half
        for i in range(2):
            c = rows_cmd(tb, ch, host_lo + i * 64 * 1024, 0, 0.5, 2)
            err, _ = await tb.run_cmd(ch, c)
            assert err == ErrorCode.OK, f"{ch} {describe(c)} after {3 * BUS_LIMIT} idle cycles: {err!r}"
            (ref_load if ch == "load" else ref_store)(tb.host, tb.local[c["acc"]], c)
            await ClockCycles(dut.clk, 3 * BUS_LIMIT)
    for ch, mode in itertools.product(("load", "store"), ("swallow", "refuse")):
        dut.blk_prob.value = r.choice((0, 100))
        host_lo = 0 if ch == "load" else half
        while True:        # a hole after the first row: the channel makes progress before it
            c = rows_cmd(tb, ch, host_lo, 0, 0.5, 3)
            rows = list(cmd_rows(c))
            b = rows[r.randrange(1, len(rows))][0] + r.randrange(c["row_bytes"])
            hole = (b, b + 1)
            fail = first_failing_row(c, *hole)
            if fail:
                break
        what = f"{ch} {describe(c)}, hole [{hole[0]:#x},{hole[1]:#x}) {mode}s (row {fail})"
        tb.hm.set_blackhole(*hole, refuse=mode == "refuse", swallow=mode == "swallow")
        swallowed = tb.hm.bh_count
        err, _ = await tb.run_cmd(ch, c)
        assert err == ErrorCode.BUS_TIMEOUT, f"{what}: {err!r}"
        waited = tb.done_edge[ch] - last[ch]
        assert waited == BUS_LIMIT + 1, f"{what}: done {waited} cycles after the last handshake"
        assert tb.hm.bh_count > swallowed, f"{what}: no burst reached the black hole"
        lo, hi = host_extent(c)
        if ch == "load":
            ref_load(tb.host, tb.local[c["acc"]], c, nrows=fail)
            await tb.check_local(c["acc"], what)
        else:
            check_partial_store(tb, c, await tb.host_read(lo, hi - lo), lo, hi, [hole], what)
        tb.mon.check(what)
        # The hole still there: a second command on other rows.
        c2 = rows_cmd(tb, ch, host_lo + 128 * 1024, 0.5, 1, 2)
        err, _ = await tb.run_cmd(ch, c2)
        if mode == "refuse":
            assert err == ErrorCode.BUS_TIMEOUT, f"{what}: behind a refused address: {err!r}"
        else:
            assert err == ErrorCode.OK, f"{what}: the next command on a fresh ID: {err!r}"
            (ref_load if ch == "load" else ref_store)(tb.host, tb.local[c2["acc"]], c2)
        # Released: the abandoned bursts are answered late while a third command runs.
        c3 = rows_cmd(tb, ch, host_lo + 192 * 1024, 0, 0.5, 4)
        task = cocotb.start_soon(tb.run_cmd(ch, c3))
        await ClockCycles(dut.clk, r.randrange(1, 12))
        tb.hm.clear_blackhole()
        err, _ = await task
        assert err == ErrorCode.OK, f"{what}: after the release: {err!r}"
        (ref_load if ch == "load" else ref_store)(tb.host, tb.local[c3["acc"]], c3)
        await drain_parked(tb, what)
        for acc in (0, 1):
            await tb.check_local(acc, f"{what}, released")
        for cmd in (c, c2, c3):
            lo, hi = host_extent(cmd)
            await tb.check_host(lo, hi, f"{what}, released")
        tb.check_protocol(what)


@cocotb.test()
async def t_channel_reset(dut):
    """ENGINE_RESET of one channel (``load_reset`` / ``store_reset``, one cycle) at a random
    moment of a long command, with bursts in flight, while the other channel runs a command: the
    other command completes bit-exactly; the reset one never reports done and wrote only bytes of
    its own rows (loads: whole local rows); the port stays AXI-clean (the reset channel's
    bursts are finished by its guard: W beats without strobes, responses dropped). The reset
    channel's next command is exact. Last, a channel hung on a black hole with the bus timeout
    off (what the firmware watchdog resets) is reset while the other one works."""
    seed = seed_of(dut, "t_channel_reset")
    tb = Tb(dut, seed, limits=False)
    await tb.start()
    r = tb.rng
    half = HOST_SIZE // 2
    await tb.host_randomize(0, 512 * 1024)
    await tb.host_randomize(half, half + 512 * 1024)
    for acc in (0, 1):
        await tb.local_randomize(acc)
    dones = {"load": 0, "store": 0}

    async def count_done(ch):
        done = getattr(dut, f"{ch}__done")
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            dones[ch] += int(done.value)
    for ch in dones:
        cocotb.start_soon(count_done(ch))
    mid_burst = 0

    def victim_state(ch):
        """(busy, bursts of ``ch`` in flight on the port) now."""
        return (int(getattr(dut, f"{ch}__busy").value),
                tb.mon.core.n_reads if ch == "load" else tb.mon.core.n_writes)
    for it in range(12):
        victim = ("load", "store")[it % 2]
        other = "store" if victim == "load" else "load"
        hung = it >= 10
        tb.hm.set_latency(r.choice((4, 12, 30)))
        tb.hm.set_backpressure(r.choice((0.0, 0.2)))
        dut.blk_prob.value = r.choice((0, 100))
        cmds = {"load": rows_cmd(tb, "load", 0, 0, 0.5, 8),
                "store": rows_cmd(tb, "store", half, 0.5, 1, 8)}
        v, o = cmds[victim], cmds[other]
        what = (f"iter {it}: {victim} {describe(v)} reset{' while hung' if hung else ''}, "
                f"{other} {describe(o)}")
        if hung:                               # the first row never answers, and no timeout
            h = next(cmd_rows(v))[0]
            tb.hm.set_blackhole(h, h + 1)
        old_local = tb.local[v["acc"]].copy()
        await tb.submit(victim, v)
        seen = dones[victim]
        task = cocotb.start_soon(tb.run_cmd(other, o))
        # Half the resets (of either channel) wait for a burst in flight, the others fall at a
        # random moment, so that both kinds are tested whatever the seed.
        mid = it % 4 < 2 and not hung
        await ClockCycles(dut.clk, 600 if hung else r.randrange(1, 20) if mid else r.randrange(5, 120))
        await FallingEdge(dut.clk)
        busy, in_flight = victim_state(victim)
        for _ in range(2000 if mid else 0):
            if busy and in_flight:
                break
            await FallingEdge(dut.clk)
            busy, in_flight = victim_state(victim)
        assert not mid or (busy and in_flight), f"{what}: no burst in flight in 2000 cycles"
        getattr(dut, f"{victim}_reset").value = 1
        await FallingEdge(dut.clk)
        getattr(dut, f"{victim}_reset").value = 0
        at_reset = dones[victim]
        assert not hung or (busy and at_reset == seen), f"{what}: the hung command ended"
        mid_burst += bool(busy and in_flight)
        if hung:
            await ClockCycles(dut.clk, r.randrange(1, 20))
            tb.hm.clear_blackhole()
        err, _ = await task
        assert err == ErrorCode.OK, f"{what}: the other channel's command: {err!r}"
        (ref_load if other == "load" else ref_store)(tb.host, tb.local[o["acc"]], o)
        await drain_parked(tb, what)
        assert dones[victim] == at_reset, f"{what}: done after the reset"
        # The reset command: whole rows (loads) or bytes of its rows (stores), if any.
        if victim == "load":
            full = old_local.copy()
            ref_load(tb.host, full, v)
            got = await tb.local_read(v["acc"])
            # The blocker writes the inverted row when it steals a write grant: a reset right
            # after that leaves it there (the DMA never repeats the write).
            ok = ((got == old_local).all(axis=1) | (got == full).all(axis=1)
                  | ((got == ~full).all(axis=1) & (int(dut.blk_prob.value) > 0)))
            if not ok.all():
                bad = np.nonzero(~ok)[0][0]
                raise AssertionError(f"{what}: local row {bad} is neither old nor loaded: "
                                     f"{got[bad].tolist()} (old {old_local[bad].tolist()}, "
                                     f"loaded {full[bad].tolist()})")
            tb.local[v["acc"]] = got
        else:
            lo, hi = host_extent(v)
            check_partial_store(tb, v, await tb.host_read(lo, hi - lo), lo, hi, what=what)
        lo, hi = host_extent(o)
        await tb.check_host(lo, hi, what)
        for acc in (0, 1):
            await tb.check_local(acc, what)
        tb.check_protocol(what)
        # The reset channel works again, exactly.
        err, _ = await tb.run_cmd(victim, v)
        assert err == ErrorCode.OK, f"{what}: the next command: {err!r}"
        (ref_load if victim == "load" else ref_store)(tb.host, tb.local[v["acc"]], v)
        await tb.check_local(v["acc"], f"{what}, rerun")
        lo, hi = host_extent(v)
        await tb.check_host(lo, hi, f"{what}, rerun")
        tb.check_protocol(f"{what}, rerun")
    assert mid_burst >= 6, f"only {mid_burst} of 12 resets hit bursts in flight"
