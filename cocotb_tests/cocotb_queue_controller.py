"""cocotb side of test_queue_controller: the QueueController alone against a cocotbext-axi AxiRam.

The testbench plays both the host (writes descriptors into rings in the RAM, rings doorbells,
reads the consumer index back from the RAM) and the firmware (checks each FIFO head against what
the host wrote, pops it, requests its completion record). Everything is checked against an
independent Python model:

* a byte image of the whole RAM: host writes, and the record + consumer index of every retired
  descriptor (computed with ``struct``, not with the RTL's layout), so at the end nothing else in
  memory may have changed;
* on every ``retired`` pulse: the record and the consumer index are already in memory (their B
  responses came first), ``consumer`` has advanced and ``cpl_irq`` pulses exactly with the
  requests that asked for it;
* the AXI checker of verif/axi_checker.py on every cycle (valid/payload held until ready on all
  five channels, INCR, WLAST/RLAST, responses), configured for this port: ID 0, full-width beats,
  one read and one write burst outstanding at most (relaxed by the bus-timeout test, whose
  abandoned bursts move the controller to other IDs and are finished with null strobes); plus
  32-byte aligned 4-beat descriptor reads and W bursts with all strobes on records and the low 4
  on consumer writes.

Pulses (``retired``, ``cpl_irq``, ``error_irq``) are counted per cycle high. AXI error responses
come from error regions: the AxiRam's ``_read``/``_write`` raise there (cocotbext-axi answers
SLVERR), and a wrapper on its R/B channel rewrites the response to DECERR for DECERR regions.
Seeds come from ``KAKI_SEED`` (logged by every test).
"""
import collections
import logging
import os
import random
import struct

import cocotb
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiRam, AxiResp

from hdl_gen.config import KakiConfig
from hdl_gen.descriptor import CompletionRecord, ErrorCode
from verif.axi_checker import Axi4Checker, BusMonitor, SignalSampler

# what test_queue_controller._target() builds: the controller with KakiConfig()'s parameters
_CFG = KakiConfig()
N, PREFETCH, CPL_DEPTH = _CFG.queues, _CFG.prefetch, _CFG.cpl_depth
DB = _CFG.axi_data_bits // 8          # AXI data bytes
# some directed expectations below (fetch order, slot numbers) are spelled out for this shape
assert (N, PREFETCH, DB) == (4, 4, 8), "revisit the directed fetch-order tests for a new queue shape"
RAM_SIZE = 64 * 1024
QS_IN = ("ring_base", "ring_log2", "cpl_base", "enable", "reset", "doorbell", "doorbell_we", "pop",
         "qreset_ack", "drained")
QS_OUT = ("producer", "fetch", "consumer", "active", "halted", "resetting", "prefetched", "error",
          "error_index", "head", "head_index", "ready", "qreset_req", "cpl_irq", "error_irq",
          "retired", "cleared")
PULSES = ("retired", "cpl_irq", "error_irq", "cleared")
CPL_IN = ("valid", "queue", "irq", "halt", "flags", "status", "opcode", "tag", "item", "timestamp")
M32 = 0xFFFF_FFFF


def record_bytes(index, opcode, status, queue, flags, tag, ts, item=0):
    """CompletionRecord as docs/descriptors.md lays it out (little-endian, 16 bytes)."""
    return struct.pack("<IBBBBHHI", index & M32, opcode, status, queue, flags, tag, item, ts)


# The struct above is written from the documentation; make sure the layout class agrees.
_REC = data.Layout.cast(CompletionRecord)
assert _REC.const(dict(index=0x11223344, opcode=5, status=6, queue=3, flags=0x81, tag=0xBEEF,
                       item=0x5AA5, timestamp=0xCAFEF00D)).as_value().value.to_bytes(16, "little") \
    == record_bytes(0x11223344, 5, 6, 3, 0x81, 0xBEEF, 0xCAFEF00D, 0x5AA5)


class Cpl:
    """One completion request and the record it must produce."""

    def __init__(self, q, index, *, irq=0, halt=0, flags=0, status=0, opcode=0, tag=0, ts=0,
                 item=0, writes=("record", "consumer")):
        self.q, self.index = q, index
        self.writes = writes             # what reaches memory (a timed-out write may not)
        self.irq, self.halt, self.flags, self.status = irq, halt, flags, status
        self.opcode, self.tag, self.ts, self.item = opcode, tag, ts, item

    def record(self):
        return record_bytes(self.index, self.opcode, self.status, self.q, self.flags, self.tag,
                            self.ts, self.item)


class TB:
    """Clock, reset, AxiRam with pause/error injection, host/firmware helpers and monitors."""

    def __init__(self, dut, name, *, abandons=False):
        self.dut = dut
        # abandoned transfers (bus timeouts): fresh IDs, orphans outstanding, W without strobes
        self.abandons = abandons
        self.seed = int(os.environ["KAKI_SEED"])
        dut._log.info(f"{name}: KAKI_SEED={self.seed}")
        self.rng = random.Random(self.seed)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "axi", bus_separator="__"), dut.clk, dut.rst,
                          size=RAM_SIZE)
        for log in (self.ram.write_if.log, self.ram.read_if.log):
            log.setLevel(logging.WARNING)       # one INFO line per burst costs wall time
        self.qi = [{n: getattr(dut, f"q__{q}__{n}") for n in QS_IN} for q in range(N)]
        self.qo = [{n: getattr(dut, f"q__{q}__{n}") for n in QS_OUT} for q in range(N)]
        self.cpl_in = {n: getattr(dut, f"cpl_{n}") for n in CPL_IN}
        # pause probability per AxiRam channel (1.0 stalls it)
        self.p = {"aw": 0.0, "w": 0.0, "b": 0.0, "ar": 0.0, "r": 0.0}
        self.err_regions = []            # (lo, hi, AxiResp) for reads and writes
        self.errors = []
        self.counts = [{n: 0 for n in PULSES} for _ in range(N)]
        self.ars = []                    # (cycle, araddr) of every AR handshake
        self.aws = []                    # (cycle, awaddr, awlen) of every AW handshake
        self.mon = None                  # the AXI checker (started with the clock)
        self.bcount = 0                  # B handshakes
        self.model = bytearray(self.rng.getrandbits(8) for _ in range(RAM_SIZE))
        self.ram.write(0, bytes(self.model))
        self.expect = [collections.deque() for _ in range(N)]   # accepted Cpl, in order
        self.order = collections.deque()                         # their queues, in order
        self.coalesced = 0                                       # consumer writes left to the next
        self.exp_c = [0] * N             # index of the next record per queue
        self.retired_log = [[] for _ in range(N)]
        self._install_errors()

    # --- AxiRam hooks ------------------------------------------------------------------------
    def _region(self, addr, n):
        for lo, hi, resp in self.err_regions:
            if addr < hi and addr + n > lo:
                return resp
        return None

    def _install_errors(self):
        rd, wr = self.ram.read_if, self.ram.write_if
        state = {"r": None, "b": None}
        orig_read, orig_write = rd._read, wr._write
        orig_rsend, orig_bsend = rd.r_channel.send, wr.b_channel.send

        async def _read(address, length):
            resp = self._region(address, length)
            if resp is not None:
                state["r"] = resp
                raise IOError("error region")
            return await orig_read(address, length)

        async def _write(address, data_):
            resp = self._region(address, len(data_))
            if resp is not None:
                state["b"] = resp
                raise IOError("error region")
            return await orig_write(address, data_)

        async def rsend(r):
            if int(r.rresp) == AxiResp.SLVERR and state["r"] is not None:
                r.rresp = state["r"]
            state["r"] = None
            await orig_rsend(r)

        async def bsend(b):
            if int(b.bresp) == AxiResp.SLVERR and state["b"] is not None:
                b.bresp = state["b"]
            state["b"] = None
            await orig_bsend(b)

        rd._read, wr._write = _read, _write
        rd.r_channel.send, wr.b_channel.send = rsend, bsend

    def _pauses(self):
        chans = {"aw": self.ram.write_if.aw_channel, "w": self.ram.write_if.w_channel,
                 "b": self.ram.write_if.b_channel, "ar": self.ram.read_if.ar_channel,
                 "r": self.ram.read_if.r_channel}
        for name, ch in chans.items():
            rng = random.Random(self.rng.getrandbits(32))

            def gen(name=name, rng=rng):
                while True:
                    p = self.p[name]
                    yield p >= 1.0 or (p > 0 and rng.random() < p)
            ch.set_pause_generator(gen())

    def set_pauses(self, p=None, **kw):
        if p is not None:
            for k in self.p:
                self.p[k] = p
        self.p.update(kw)

    # --- bring-up ------------------------------------------------------------------------------
    async def start(self, fw_running=1):
        d = self.dut
        Clock(d.clk, 10, unit="ns").start()
        for q in range(N):
            for n in QS_IN:
                self.qi[q][n].value = 0
            # The TB is the issue unit too; it acknowledges a reset only when it owes nothing.
            self.qi[q]["drained"].value = 1
        for n in CPL_IN:
            self.cpl_in[n].value = 0
        d.fw_running.value = fw_running
        d.bus_timeout.value = 0
        d.rst.value = 1
        self._pauses()
        for _ in range(3):
            await RisingEdge(d.clk)
        await FallingEdge(d.clk)
        d.rst.value = 0
        self.mon = self._axi_monitor()
        for q in range(N):
            for n in PULSES:
                cocotb.start_soon(self._pulse_monitor(q, n))
        await FallingEdge(d.clk)

    def err(self, msg):
        if len(self.errors) < 20:
            self.errors.append(f"cycle {self.cycle}: {msg}")

    def check_errors(self):
        errors = self.errors + ([str(self.mon.error)] if self.mon and self.mon.error else [])
        assert not errors, "\n".join(errors)

    def out(self, q, name):
        return int(self.qo[q][name].value)

    async def fe(self, n=1):
        for _ in range(n):
            await FallingEdge(self.dut.clk)

    # --- host side -----------------------------------------------------------------------------
    def host_write(self, addr, buf):
        self.model[addr:addr + len(buf)] = buf
        self.ram.write(addr, bytes(buf))

    def configure(self, q, ring_base, log2, cpl_base):
        self.qi[q]["ring_base"].value = ring_base
        self.qi[q]["ring_log2"].value = log2
        self.qi[q]["cpl_base"].value = cpl_base

    async def set_enable(self, q, v):
        await self.fe()
        self.qi[q]["enable"].value = v

    async def pulse(self, *items):
        """At the next falling edge drive each (q, name[, value]) for one cycle."""
        await self.fe()
        for it in items:
            q, name = it[0], it[1]
            if name == "doorbell":
                self.qi[q]["doorbell"].value = it[2]
                name = "doorbell_we"
            self.qi[q][name].value = 1
        await self.fe()
        for it in items:
            name = "doorbell_we" if it[1] == "doorbell" else it[1]
            self.qi[it[0]][name].value = 0

    async def doorbell(self, q, p):
        await self.pulse((q, "doorbell", p & M32))

    def write_desc(self, q, index, ring_base, log2, value=None):
        """Write a (random by default) 256-bit descriptor into slot index mod 2**log2."""
        if value is None:
            value = self.rng.getrandbits(256)
        addr = ring_base + 32 * (index % (1 << log2))
        self.host_write(addr, value.to_bytes(32, "little"))
        return value

    # --- firmware side -------------------------------------------------------------------------
    async def cpl(self, c, *, dropped=False):
        """Queue completion request ``c`` (one cycle of cpl_valid)."""
        await self.fe()
        vals = dict(valid=1, queue=c.q, irq=c.irq, halt=c.halt, flags=c.flags, status=c.status,
                    opcode=c.opcode, tag=c.tag, item=c.item, timestamp=c.ts)
        for k, v in vals.items():
            self.cpl_in[k].value = v
        if not dropped:
            self.expect[c.q].append(c)
            self.order.append(c.q)
        await self.fe()
        self.cpl_in["valid"].value = 0

    def next_cpl(self, q, **kw):
        """A Cpl for the next index of queue q (the TB's count of accepted requests)."""
        c = Cpl(q, self.exp_c[q], **kw)
        self.exp_c[q] += 1
        return c

    async def wait_for(self, cond, what, cycles=2000):
        for _ in range(cycles):
            if cond():
                return
            await self.fe()
        raise AssertionError(f"timeout ({cycles} cycles) waiting for {what}")

    async def reset_queue(self, q, *, ack=True):
        """Pulse reset, acknowledge when asked (if ``ack``), wait until it completes."""
        await self.pulse((q, "reset"))
        if ack and int(self.dut.fw_running.value):
            await self.wait_for(lambda: self.out(q, "qreset_req"), f"q{q} qreset_req")
            await self.pulse((q, "qreset_ack"))
        await self.wait_for(lambda: not self.out(q, "resetting"), f"q{q} reset done")
        self.exp_c[q] = 0
        for n in ("producer", "fetch", "consumer", "halted", "error", "error_index", "prefetched"):
            v = self.out(q, n)
            if v != 0:
                self.err(f"q{q} {n} = {v} after reset")
        await self.fe(2)        # an enabled queue is checked again, then active

    # --- monitors ------------------------------------------------------------------------------
    def _on_retired(self, q):
        """A record of queue q was retired this cycle: check memory, consumer and cpl_irq."""
        if not self.expect[q]:
            self.err(f"q{q} retired with no request outstanding")
            return
        c = self.expect[q].popleft()
        self.order.popleft()
        self.retired_log[q].append(c)
        base = self.out_cpl_base(q)
        log2 = int(self.qi[q]["ring_log2"].value)
        rec_addr = base + 16 + 16 * (c.index % (1 << log2))
        rec = c.record()
        if self._region(rec_addr, 16) is None and "record" in c.writes:
            self.model[rec_addr:rec_addr + 16] = rec
        # The writer may leave the consumer write to the next request when that one is of the
        # same queue and this record asks for no interrupt or halt and was written OK.
        may_skip = (not c.irq and not c.halt and c.writes == ("record", "consumer")
                    and self._region(rec_addr, 16) is None and self.order and self.order[0] == q)
        skipped = may_skip and self.ram.read(base, 4) == bytes(self.model[base:base + 4])
        if skipped:
            self.coalesced += 1
        elif self._region(base, 4) is None and "consumer" in c.writes:
            self.model[base:base + 4] = struct.pack("<I", (c.index + 1) & M32)
        got_rec = self.ram.read(rec_addr, 16)
        if got_rec != bytes(self.model[rec_addr:rec_addr + 16]):
            self.err(f"q{q} record {c.index} at {rec_addr:#x}: {got_rec.hex()} expected "
                     f"{bytes(self.model[rec_addr:rec_addr + 16]).hex()}")
        got_c = self.ram.read(base, 4)
        if got_c != bytes(self.model[base:base + 4]):
            self.err(f"q{q} consumer in memory {got_c.hex()} after record {c.index}")
        if self.out(q, "consumer") != (c.index + 1) & M32:
            self.err(f"q{q} consumer {self.out(q, 'consumer')} at retirement of {c.index}")
        if self.out(q, "cpl_irq") != c.irq:
            self.err(f"q{q} cpl_irq {self.out(q, 'cpl_irq')} with the record of {c.index} "
                     f"(irq {c.irq})")

    def out_cpl_base(self, q):
        return int(self.qi[q]["cpl_base"].value) & ~15

    async def _pulse_monitor(self, q, name):
        sig = self.qo[q][name]
        while True:
            await RisingEdge(sig)
            while True:
                await ReadOnly()
                if not int(sig.value):
                    break
                self.counts[q][name] += 1
                if name == "retired":
                    self._on_retired(q)
                await RisingEdge(self.dut.clk)

    def _axi_monitor(self):
        """verif/axi_checker.py on the ``axi__*`` port (the AXI rules; ID 0, full-width aligned
        INCR beats, one read and one write burst outstanding at most), plus this controller's own
        shapes: 4-beat 32-byte aligned descriptor reads, 1- or 2-beat 16-byte aligned writes with
        all strobes on records and the low 4 on consumer writes, AxPROT 0."""
        fields = {"aw": ("id", "addr", "len", "size", "burst", "prot"), "w": ("data", "strb", "last"),
                  "ar": ("id", "addr", "len", "size", "burst", "prot"), "b": ("id", "resp"),
                  "r": ("id", "data", "resp", "last")}
        limits = {} if self.abandons else dict(ids={0}, max_reads=1, max_writes=1)
        core = Axi4Checker(self._on_burst, DB, bus="axi", fields=fields, full_width=True,
                           aligned=True, max_beats=4, **limits)
        core.listeners.append(self._on_handshake)
        return BusMonitor(SignalSampler(self.dut, "axi__", core, edge="readonly"))

    def _on_handshake(self, cycle, ch, f):
        if ch == "ar":
            if f["len"] != 3 or f["prot"] or f["addr"] % 32:
                self.err(f"bad AR {f}")
            self.ars.append((cycle, f["addr"]))
        elif ch == "aw":
            if f["len"] not in (0, 1) or f["prot"] or f["addr"] % 16:
                self.err(f"bad AW {f}")
            self.aws.append((cycle, f["addr"], f["len"]))
        elif ch == "b":
            self.bcount += 1

    def _on_burst(self, txn):
        if txn.kind == "write" and (any(txn.strb) or not self.abandons):
            want = (0xFF, 0xFF) if txn.len == 1 else (0x0F,)
            if txn.strb != want:
                self.err(f"W burst to {txn.addr:#x}: strobes {list(txn.strb)}, expected {list(want)}")

    @property
    def cycle(self):
        """Clocks since the bus monitor started."""
        return self.mon.sampler.cycle if self.mon else 0

    @property
    def stalls(self):
        """Cycles a VALID waited for its READY, per request channel."""
        return {ch: self.mon.core.channels[ch].stalls if self.mon else 0 for ch in ("ar", "aw", "w")}


# ------------------------------------------------------------------------------------------------
# Layout used by the directed tests: queue q's ring at RING[q], completion area at CPLB[q].

RING = [0x1000 + 0x1000 * q for q in range(N)]
CPLB = [0x9000 + 0x1000 * q for q in range(N)]


async def setup_queues(tb, log2s, queues=range(N)):
    for q in queues:
        tb.configure(q, RING[q], log2s[q] if isinstance(log2s, (list, tuple)) else log2s, CPLB[q])
    await tb.fe()
    for q in queues:
        tb.qi[q]["enable"].value = 1
    await tb.fe(2)
    for q in queues:
        assert tb.out(q, "active") == 1, f"q{q} not active after enable"


def queue_of(addr):
    for q in range(N):
        if RING[q] <= addr < RING[q] + 0x1000:
            return q
    raise AssertionError(f"read of {addr:#x} outside every ring")


async def pop_check(tb, q, index, descs):
    """The head of q is descriptor ``index`` (``descs[index]``); pop it."""
    assert tb.out(q, "ready") == 1, f"q{q} not ready"
    assert tb.out(q, "head_index") == index, (q, tb.out(q, "head_index"), index)
    assert tb.out(q, "head") == descs[index], f"q{q} head of {index} differs"
    await tb.pulse((q, "pop"))


async def complete(tb, q, **kw):
    await tb.cpl(tb.next_cpl(q, **kw))


async def drain_cpl(tb, q, n_retired, cycles=3000):
    await tb.wait_for(lambda: tb.counts[q]["retired"] >= n_retired,
                      f"q{q} {n_retired} retirements", cycles)


def check_memory(tb):
    got = tb.ram.read(0, RAM_SIZE)
    bad = [a for a in range(RAM_SIZE) if got[a] != tb.model[a]]
    assert not bad, f"{len(bad)} bytes of memory differ from the model, first at {bad[0]:#x}"


# ------------------------------------------------------------------------------------------------

async def traffic(dut, name, pause, per_queue):
    """Host and firmware run all four queues concurrently with random timing."""
    tb = TB(dut, name)
    rng = tb.rng
    await tb.start()
    tb.set_pauses(pause)
    log2s = [2, 3, 1, 4]
    bases = []
    for q in range(N):
        # random 32-/16-byte aligned placements inside each queue's pages
        rb = RING[q] + 32 * rng.randrange(0, (0x1000 - 32 * (1 << log2s[q])) // 32)
        cb = CPLB[q] + 16 * rng.randrange(0, (0x1000 - 16 - 16 * (1 << log2s[q])) // 16)
        bases.append((rb, cb))
        tb.host_write(cb, bytes(4))     # the host clears its consumer copy before starting
        tb.configure(q, rb, log2s[q], cb)
    await tb.fe()
    for q in range(N):
        tb.qi[q]["enable"].value = 1
    descs = [dict() for _ in range(N)]
    fw_done = [0] * N
    irq_wanted = [0] * N

    async def host(q):
        rb, cb = bases[q]
        size = 1 << log2s[q]
        p = 0
        while p < per_queue:
            await ClockCycles(dut.clk, rng.randrange(0, 40))
            c = int.from_bytes(tb.ram.read(cb, 4), "little")
            room = min(c + size - p, per_queue - p)
            if room <= 0:
                continue
            for _ in range(rng.randint(1, min(room, 5))):
                descs[q][p] = tb.write_desc(q, p, rb, log2s[q])
                p += 1
            await tb.doorbell(q, p)

    async def firmware():
        popped = [collections.deque() for _ in range(N)]
        pop_p = [0.5] * N           # per-queue pop rate, redrawn now and then (slow phases fill
        while sum(fw_done) < N * per_queue:       # the prefetch FIFOs)
            await tb.fe()
            pops = []
            ready = [tb.out(q, "ready") for q in range(N)]
            for q in range(N):
                if rng.random() < 0.03:
                    pop_p[q] = rng.choice([0.0, 0.1, 0.5, 1.0])
                if ready[q] and rng.random() < pop_p[q]:
                    i = len(descs_seen[q])
                    if tb.out(q, "head_index") != i:
                        tb.err(f"q{q} head_index {tb.out(q, 'head_index')}, expected {i}")
                    if tb.out(q, "head") != descs[q].get(i):
                        tb.err(f"q{q} head of descriptor {i} differs from the ring")
                    descs_seen[q].append(i)
                    popped[q].append(i)
                    pops.append(q)
            for q in pops:
                tb.qi[q]["pop"].value = 1
            cands = [q for q in range(N) if popped[q]]
            free = int(dut.cpl_free.value)
            cover["cpl_full"] |= free == 0
            for q in range(N):
                cover["fifo_full"] |= tb.out(q, "prefetched") == PREFETCH
            push = cands and rng.random() < 0.5 and free > 0
            if push:
                q = rng.choice(cands)
                i = popped[q].popleft()
                d = descs[q][i]
                irq = rng.random() < 0.3
                irq_wanted[q] += irq
                c = tb.next_cpl(q, irq=int(irq), flags=(d >> 8) & 0xFF, opcode=d & 0xFF,
                                tag=(d >> 16) & 0xFFFF, ts=rng.getrandbits(32),
                                item=rng.getrandbits(16))
                assert c.index == i
                vals = dict(valid=1, queue=q, irq=c.irq, halt=0, flags=c.flags, status=0,
                            opcode=c.opcode, tag=c.tag, item=c.item, timestamp=c.ts)
                for k, v in vals.items():
                    tb.cpl_in[k].value = v
                tb.expect[q].append(c)
                tb.order.append(q)
                fw_done[q] += 1
            await tb.fe()
            for q in pops:
                tb.qi[q]["pop"].value = 0
            tb.cpl_in["valid"].value = 0

    descs_seen = [[] for _ in range(N)]
    cover = {"cpl_full": False, "fifo_full": False}
    hosts = [cocotb.start_soon(host(q)) for q in range(N)]
    fw = cocotb.start_soon(firmware())
    try:
        await with_timeout(fw, 4, "ms")
    except Exception:
        for q in range(N):
            dut._log.error(f"q{q}: " + " ".join(f"{n}={tb.out(q, n)}" for n in QS_OUT
                                                if n != "head")
                           + f" fw_done={fw_done[q]} seen={len(descs_seen[q])} "
                           f"expect={len(tb.expect[q])} counts={tb.counts[q]}")
        dut._log.error("\n".join(tb.errors))
        raise
    for h in hosts:
        await with_timeout(h, 10, "us")
    for q in range(N):
        await drain_cpl(tb, q, per_queue)
    await tb.fe(5)
    for q in range(N):
        for n in ("producer", "fetch", "consumer"):
            assert tb.out(q, n) == per_queue, (q, n, tb.out(q, n))
        assert tb.out(q, "prefetched") == 0 and tb.out(q, "halted") == 0
        assert tb.counts[q]["retired"] == per_queue, tb.counts[q]
        assert tb.counts[q]["cpl_irq"] == irq_wanted[q], (tb.counts[q], irq_wanted[q])
        assert tb.counts[q]["error_irq"] == 0
    # every descriptor was read exactly once, from its slot
    reads = collections.Counter(a for _, a in tb.ars)
    for q in range(N):
        rb = bases[q][0]
        for slot in range(1 << log2s[q]):
            n_exp = len([i for i in range(per_queue) if i % (1 << log2s[q]) == slot])
            assert reads[rb + 32 * slot] == n_exp, (q, slot, reads[rb + 32 * slot], n_exp)
    assert len(tb.ars) == N * per_queue
    # one record write each, and a consumer write for every record not coalesced with the next
    assert len(tb.aws) == 2 * N * per_queue - tb.coalesced
    check_memory(tb)
    tb.check_errors()
    cover["coalesced"] = tb.coalesced > 0
    dut._log.info(f"{N * per_queue} descriptors in {tb.cycle} cycles (pause {pause}), {cover}, "
                  f"stall cycles {tb.stalls}, {tb.coalesced} consumer writes coalesced")
    assert all(cover.values()), cover


@cocotb.test()
async def t_traffic(dut):
    """Random host/firmware timing on 4 queues (ring sizes 4, 8, 2, 16, several wraps each) with
    random pauses on every AxiRam channel: heads, indices, records, consumer write-back, pulses,
    the whole memory image."""
    await traffic(dut, "t_traffic", 0.3, 100)


@cocotb.test()
async def t_traffic_fast(dut):
    """The same without any backpressure (back-to-back bursts)."""
    await traffic(dut, "t_traffic_fast", 0.0, 100)


@cocotb.test()
async def t_round_robin_prefetch(dut):
    """All queues eligible: reads go strictly round-robin; each FIFO stops at PREFETCH (the read
    in flight counted); after pops the next queue served is the first eligible after the last."""
    tb = TB(dut, "t_round_robin_prefetch")
    await tb.start()
    for q in range(N):
        tb.configure(q, RING[q], 3, CPLB[q])
    descs = [[tb.write_desc(q, i, RING[q], 3) for i in range(8)] for q in range(N)]
    for q in range(N):
        await tb.doorbell(q, 7)          # allowed while disabled
        assert tb.out(q, "producer") == 7
    await tb.fe(20)
    assert not tb.ars, "fetched while disabled"
    await tb.fe()
    for q in range(N):
        tb.qi[q]["enable"].value = 1
    await tb.wait_for(lambda: len(tb.ars) >= N * PREFETCH, "first 16 reads")
    await tb.fe(200)
    order = [queue_of(a) for _, a in tb.ars]
    assert order == [0, 1, 2, 3] * PREFETCH, order
    assert [(a - RING[queue_of(a)]) // 32 for _, a in tb.ars] == [k for k in range(4) for _ in range(4)]
    for q in range(N):
        assert tb.out(q, "prefetched") == PREFETCH and tb.out(q, "fetch") == PREFETCH
        assert tb.out(q, "head_index") == 0 and tb.out(q, "ready") == 1
        assert tb.out(q, "head") == descs[q][0]
    # one pop on q2: exactly one more read, of q2 slot 4
    await pop_check(tb, 2, 0, descs[2])
    await tb.fe(100)
    assert [queue_of(a) for _, a in tb.ars[16:]] == [2], tb.ars[16:]
    assert tb.ars[16][1] == RING[2] + 32 * 4
    # pops on q1 and q3 in one cycle: last served is q2, so q3 goes first
    await tb.pulse((1, "pop"), (3, "pop"))
    await tb.fe(100)
    assert [queue_of(a) for _, a in tb.ars[17:]] == [3, 1], tb.ars[17:]
    # pops on q0 and q1 in one cycle: after q1, q0 comes before q1
    await tb.pulse((0, "pop"), (1, "pop"))
    await tb.fe(100)
    assert [queue_of(a) for _, a in tb.ars[19:]] == [0, 1], tb.ars[19:]
    for q, (pre, f, h) in enumerate([(4, 5, 1), (4, 6, 2), (4, 5, 1), (4, 5, 1)]):
        assert (tb.out(q, "prefetched"), tb.out(q, "fetch"), tb.out(q, "head_index")) == (pre, f, h), q
        assert tb.out(q, "head") == descs[q][h]
    # drain q1 completely: F stops at P = 7
    for i in range(2, 7):
        await tb.wait_for(lambda: tb.out(1, "ready"), "q1 head")
        await pop_check(tb, 1, i, descs[1])
    await tb.fe(50)
    assert tb.out(1, "fetch") == 7 and tb.out(1, "prefetched") == 0 and tb.out(1, "ready") == 0
    assert tb.out(1, "head_index") == 7
    assert len([1 for _, a in tb.ars if queue_of(a) == 1]) == 7
    for q in range(N):
        assert tb.counts[q]["error_irq"] == 0
    tb.check_errors()


@cocotb.test()
async def t_ring_overflow(dut):
    """Doorbells beyond C + ring size halt with RING_OVERFLOW (P kept, first error kept, each one
    raises error_irq); a producer moving back behind C too. Moving back between C and F only
    stops fetching."""
    tb = TB(dut, "t_ring_overflow")
    await tb.start(fw_running=0)
    tb.set_pauses(0.2)
    q = 1
    await setup_queues(tb, 2, [q])
    descs = [tb.write_desc(q, i, RING[q], 2) for i in range(4)]
    await tb.doorbell(q, 4)              # exactly the ring size: fine
    await tb.wait_for(lambda: tb.out(q, "prefetched") == 4, "4 prefetched")
    assert tb.out(q, "halted") == 0 and tb.out(q, "producer") == 4
    await tb.doorbell(q, 5)
    assert tb.out(q, "halted") == 1 and tb.out(q, "error") == ErrorCode.RING_OVERFLOW.value
    assert tb.out(q, "error_index") == 5 and tb.out(q, "producer") == 4
    assert tb.out(q, "active") == 0 and tb.out(q, "ready") == 0
    assert tb.out(q, "prefetched") == 4, "halt flushed the FIFO"
    assert tb.counts[q]["error_irq"] == 1
    await tb.doorbell(q, 0x8000_0000)
    assert tb.out(q, "error_index") == 5 and tb.out(q, "producer") == 4
    assert tb.counts[q]["error_irq"] == 2
    # a legal doorbell on a halted queue moves P, but nothing is fetched
    await tb.doorbell(q, 3)
    assert tb.out(q, "producer") == 3 and tb.out(q, "error_index") == 5
    await tb.fe(30)
    assert len(tb.ars) == 4 and tb.counts[q]["error_irq"] == 2
    await tb.reset_queue(q)
    assert tb.out(q, "active") == 1
    # three descriptors through, so C = 3
    for i in range(3):
        descs[i] = tb.write_desc(q, i, RING[q], 2)
    await tb.doorbell(q, 3)
    for i in range(3):
        await tb.wait_for(lambda: tb.out(q, "ready"), "head")
        await pop_check(tb, q, i, descs)
        await complete(tb, q)
    await drain_cpl(tb, q, 3)
    assert tb.out(q, "consumer") == 3
    # P = C + size is the limit: 7 ok, 8 not
    await tb.doorbell(q, 8)
    assert tb.out(q, "halted") == 1 and tb.out(q, "error_index") == 8
    assert tb.out(q, "producer") == 3
    await tb.reset_queue(q)
    for i in range(3):
        descs[i] = tb.write_desc(q, i, RING[q], 2)
    await tb.doorbell(q, 3)
    for i in range(3):
        await tb.wait_for(lambda: tb.out(q, "ready"), "head")
        await pop_check(tb, q, i, descs)
        await complete(tb, q)
    await drain_cpl(tb, q, 6)
    # backwards behind C (C = 3): overflow with the value written
    await tb.doorbell(q, 2)
    assert tb.out(q, "halted") == 1 and tb.out(q, "error") == ErrorCode.RING_OVERFLOW.value
    assert tb.out(q, "error_index") == 2 and tb.out(q, "producer") == 3
    assert tb.counts[q]["error_irq"] == 4
    await tb.reset_queue(q)
    # backwards between C and F (C = 0, F = 4): accepted, fetching waits for P to pass F
    descs = [tb.write_desc(q, i, RING[q], 2) for i in range(4)]
    await tb.doorbell(q, 4)
    await tb.wait_for(lambda: tb.out(q, "prefetched") == 4, "4 prefetched")
    n_ar = len(tb.ars)
    await tb.doorbell(q, 2)
    assert tb.out(q, "producer") == 2 and tb.out(q, "halted") == 0
    for i in range(2):
        await pop_check(tb, q, i, descs)
        await complete(tb, q)
    await drain_cpl(tb, q, 8)
    await tb.fe(40)
    assert len(tb.ars) == n_ar and tb.out(q, "fetch") == 4, "fetched past P"
    descs.append(tb.write_desc(q, 4, RING[q], 2))
    await tb.doorbell(q, 5)
    await tb.wait_for(lambda: tb.out(q, "fetch") == 5, "fetch of 4")
    for i in range(2, 5):
        await tb.wait_for(lambda: tb.out(q, "ready"), "head")
        await pop_check(tb, q, i, descs)
    assert tb.counts[q]["error_irq"] == 4
    # the host may see C + 1 in memory before the consumer write's B reaches the controller,
    # and then rightly fill the ring up to C + 1 + size
    await complete(tb, q)
    await complete(tb, q)
    await drain_cpl(tb, q, 10)
    assert tb.out(q, "consumer") == 4
    tb.set_pauses(b=1.0)
    await complete(tb, q)
    n_b = tb.bcount
    tb.set_pauses(b=0.0)
    await tb.wait_for(lambda: tb.bcount > n_b, "record B")
    tb.set_pauses(b=1.0)
    await tb.wait_for(lambda: tb.ram.read(CPLB[q], 4) == struct.pack("<I", 5), "consumer 5")
    await tb.fe(5)
    assert tb.out(q, "consumer") == 4, "B was not held back"
    for i in range(5, 9):
        tb.write_desc(q, i, RING[q], 2)
    await tb.doorbell(q, 9)
    assert tb.out(q, "halted") == 0 and tb.out(q, "producer") == 9
    tb.set_pauses(b=0.2)
    await drain_cpl(tb, q, 11)
    assert tb.counts[q]["error_irq"] == 4
    for other in (0, 2, 3):
        assert tb.counts[other]["error_irq"] == 0 and tb.out(other, "halted") == 0
    check_memory(tb)
    tb.check_errors()


@cocotb.test()
async def t_misaligned(dut):
    """Each configuration fault halts the queue with MISALIGNED (error_index = C) when it becomes
    active, before any read; the check repeats after a disable and after a reset; the extreme
    valid sizes pass."""
    tb = TB(dut, "t_misaligned")
    await tb.start(fw_running=0)
    faults = [(RING[0] + 16, 3, CPLB[0]), (RING[0] + 1, 3, CPLB[0]), (RING[0] + 8, 3, CPLB[0]),
              (RING[0], 3, CPLB[0] + 8), (RING[0], 3, CPLB[0] + 4), (RING[0], 3, CPLB[0] + 1),
              (RING[0], 0, CPLB[0])]
    n_err = 0
    for q in (0, 3):
        for rb, log2, cb in faults:
            rb, cb = rb - RING[0] + RING[q], cb - CPLB[0] + CPLB[q]
            tb.configure(q, rb, log2, cb)
            if log2:
                await tb.doorbell(q, 2)
            await tb.set_enable(q, 1)
            seen_active = 0
            for _ in range(20):
                await tb.fe()
                seen_active |= tb.out(q, "active")
            assert tb.out(q, "halted") == 1, (q, rb, log2, cb)
            assert tb.out(q, "error") == ErrorCode.MISALIGNED.value and tb.out(q, "error_index") == 0
            assert not seen_active, "active with a bad configuration"
            n_err += 1
            assert tb.counts[q]["error_irq"] == n_err - (7 if q == 3 else 0)
            assert not tb.ars and not tb.aws, "bus activity on a misconfigured queue"
            await tb.set_enable(q, 0)
            await tb.reset_queue(q)
    # extreme valid sizes
    for log2 in (1, 15):
        tb.configure(2, RING[2], log2, CPLB[2])
        await tb.set_enable(2, 1)
        await tb.fe(3)
        assert tb.out(2, "active") == 1 and tb.out(2, "halted") == 0, log2
        await tb.set_enable(2, 0)
        await tb.fe()
        assert tb.out(2, "active") == 0
    # C = 3, then disable, break the config, re-enable: MISALIGNED with error_index 3
    q = 0
    await setup_queues(tb, 2, [q])
    descs = [tb.write_desc(q, i, RING[q], 2) for i in range(3)]
    await tb.doorbell(q, 3)
    for i in range(3):
        await tb.wait_for(lambda: tb.out(q, "ready"), "head")
        await pop_check(tb, q, i, descs)
        await complete(tb, q)
    await drain_cpl(tb, q, 3)
    await tb.set_enable(q, 0)
    tb.configure(q, RING[q], 2, CPLB[q] + 8)
    await tb.set_enable(q, 1)
    await tb.fe(3)
    assert tb.out(q, "halted") == 1 and tb.out(q, "error") == ErrorCode.MISALIGNED.value
    assert tb.out(q, "error_index") == 3
    # after the reset the (fixed) configuration is checked again and passes
    tb.configure(q, RING[q], 2, CPLB[q])
    await tb.reset_queue(q)
    await tb.fe(2)
    assert tb.out(q, "active") == 1
    # a reset while enabled with a bad configuration: the check runs when resetting drops
    tb.configure(q, RING[q] + 32 * 5 + 16, 2, CPLB[q])
    await tb.pulse((q, "reset"))
    await tb.wait_for(lambda: tb.out(q, "halted"), "halt after reset")
    assert tb.out(q, "error") == ErrorCode.MISALIGNED.value and tb.out(q, "error_index") == 0
    check_memory(tb)
    tb.check_errors()


@cocotb.test()
async def t_cpl_halt(dut):
    """CPL with halt: record written with its status, then halted with that status and the
    record's index; a later halt keeps the first error but still raises error_irq; the FIFO is
    kept but not offered and nothing more is fetched; records still get written; cpl_irq."""
    tb = TB(dut, "t_cpl_halt")
    await tb.start()
    tb.set_pauses(0.3)
    q = 2
    await setup_queues(tb, 3, [q, 0])
    descs = [tb.write_desc(q, i, RING[q], 3) for i in range(8)]
    await tb.doorbell(q, 8)
    await tb.wait_for(lambda: tb.out(q, "prefetched") == PREFETCH, "prefetch")
    await pop_check(tb, q, 0, descs)
    await tb.fe()
    await pop_check(tb, q, 1, descs)
    await tb.wait_for(lambda: tb.out(q, "fetch") == 6 and tb.out(q, "prefetched") == PREFETCH,
                      "refill")
    await complete(tb, q, irq=1, opcode=3, tag=0x1234, ts=77)
    await complete(tb, q, halt=1, status=ErrorCode.BAD_OPCODE.value, opcode=9, tag=0x4321, ts=78)
    await drain_cpl(tb, q, 2)
    await tb.fe(2)
    assert tb.out(q, "halted") == 1 and tb.out(q, "error") == ErrorCode.BAD_OPCODE.value
    assert tb.out(q, "error_index") == 1 and tb.out(q, "consumer") == 2
    assert tb.counts[q]["error_irq"] == 1 and tb.counts[q]["cpl_irq"] == 1
    assert tb.out(q, "ready") == 0 and tb.out(q, "active") == 0
    assert tb.out(q, "prefetched") == PREFETCH, "halt flushed the FIFO"
    # a pop makes room, but a halted queue fetches nothing (P = 8, F = 6)
    n_ar = len(tb.ars)
    await tb.pulse((q, "pop"))
    await tb.fe(60)
    assert len(tb.ars) == n_ar and tb.out(q, "fetch") == 6, "a halted queue fetched"
    pre = tb.out(q, "prefetched")
    assert pre == PREFETCH - 1 and tb.out(q, "head_index") == 3
    # another failed command of the halted queue: record written, first error kept
    await complete(tb, q, halt=1, status=ErrorCode.WATCHDOG.value, irq=1)
    await drain_cpl(tb, q, 3)
    await tb.fe(2)
    assert tb.out(q, "error") == ErrorCode.BAD_OPCODE.value and tb.out(q, "error_index") == 1
    assert tb.counts[q]["error_irq"] == 2 and tb.counts[q]["cpl_irq"] == 2
    assert tb.out(q, "consumer") == 3 and tb.out(q, "prefetched") == pre
    # the other queue is unaffected
    d0 = [tb.write_desc(0, 0, RING[0], 3)]
    await tb.doorbell(0, 1)
    await tb.wait_for(lambda: tb.out(0, "ready"), "q0 head")
    await pop_check(tb, 0, 0, d0)
    await complete(tb, 0, irq=1)
    await drain_cpl(tb, 0, 1)
    await tb.fe(2)
    assert tb.counts[0]["cpl_irq"] == 1 and tb.out(0, "halted") == 0
    await tb.reset_queue(q)
    assert tb.out(q, "active") == 1 and tb.counts[q]["error_irq"] == 2
    check_memory(tb)
    tb.check_errors()


@cocotb.test()
async def t_reset(dut):
    """Reset with the firmware running: head no longer offered but the FIFO kept (and poppable)
    until completion, doorbells ignored, qreset_req until the ack, records of the queue still
    written, completion only after the queue's last completion request, FIFO emptied then; other
    queues keep running. Without firmware: immediate."""
    tb = TB(dut, "t_reset")
    await tb.start(fw_running=1)
    tb.set_pauses(0.2)
    q = 1
    await setup_queues(tb, 2, [0, q])
    descs = [tb.write_desc(q, i, RING[q], 2) for i in range(3)]
    await tb.doorbell(q, 3)
    await tb.wait_for(lambda: tb.out(q, "prefetched") == 3, "prefetch")
    await pop_check(tb, q, 0, descs)
    await tb.fe()
    await pop_check(tb, q, 1, descs)
    await tb.pulse((q, "reset"))
    assert tb.out(q, "resetting") == 1 and tb.out(q, "qreset_req") == 1
    assert tb.out(q, "prefetched") == 1 and tb.out(q, "ready") == 0 and tb.out(q, "active") == 0
    assert tb.out(q, "fetch") == 3 and tb.out(q, "producer") == 3
    await tb.doorbell(q, 4)
    assert tb.out(q, "producer") == 3, "doorbell taken while resetting"
    # queue 0 keeps working meanwhile
    d0 = [tb.write_desc(0, i, RING[0], 2) for i in range(2)]
    await tb.doorbell(0, 2)
    for i in range(2):
        await tb.wait_for(lambda: tb.out(0, "ready"), "q0 head")
        await pop_check(tb, 0, i, d0)
        await complete(tb, 0)
    # the firmware retires the two popped descriptors of q1; the second write is held back
    await complete(tb, q, tag=0x1111)
    await drain_cpl(tb, q, 1)
    tb.set_pauses(aw=1.0)
    await complete(tb, q, tag=0x2222, irq=1)
    await tb.fe(10)
    await tb.pulse((q, "qreset_ack"))
    assert tb.out(q, "qreset_req") == 0
    await tb.fe(100)
    assert tb.out(q, "resetting") == 1, "reset completed with a completion request pending"
    assert tb.out(q, "consumer") == 1
    # the issue unit still holds a descriptor of the queue: no completion without `drained`
    tb.qi[q]["drained"].value = 0
    tb.set_pauses(0.2)
    await tb.wait_for(lambda: tb.out(q, "consumer") == 2, "the last record")
    await tb.fe(50)
    assert tb.out(q, "resetting") == 1 and tb.counts[q]["cleared"] == 0, \
        "reset completed while the issue unit was not drained"
    tb.qi[q]["drained"].value = 1
    await tb.wait_for(lambda: not tb.out(q, "resetting"), "reset completion")
    assert tb.counts[q]["cleared"] == 1
    assert tb.counts[q]["retired"] == 2 and tb.counts[q]["cpl_irq"] == 1
    assert tb.ram.read(CPLB[q], 4) == struct.pack("<I", 2)
    for n in ("producer", "fetch", "consumer", "halted", "error", "error_index", "prefetched"):
        assert tb.out(q, n) == 0, n
    tb.exp_c[q] = 0
    await tb.fe(2)
    assert tb.out(q, "active") == 1
    # starts again from index 0
    descs = [tb.write_desc(q, i, RING[q], 2) for i in range(2)]
    await tb.doorbell(q, 2)
    for i in range(2):
        await tb.wait_for(lambda: tb.out(q, "ready"), "head after reset")
        await pop_check(tb, q, i, descs)
        await complete(tb, q)
    await drain_cpl(tb, q, 4)
    assert tb.out(q, "consumer") == 2
    # without firmware the acknowledge is immediate
    dut.fw_running.value = 0
    descs = [tb.write_desc(q, 2, RING[q], 2)]
    await tb.doorbell(q, 3)
    await tb.wait_for(lambda: tb.out(q, "prefetched") == 1, "prefetch")
    await tb.pulse((q, "reset"))
    req_cycles = 0
    for _ in range(6):
        req_cycles += tb.out(q, "qreset_req")
        if not tb.out(q, "resetting"):
            break
        await tb.fe()
    assert tb.out(q, "resetting") == 0 and req_cycles <= 1, req_cycles
    for n in ("producer", "fetch", "consumer", "prefetched"):
        assert tb.out(q, n) == 0, n
    await drain_cpl(tb, 0, 2)
    assert tb.out(0, "consumer") == 2 and tb.counts[0]["error_irq"] == 0
    check_memory(tb)
    tb.check_errors()


@cocotb.test()
async def t_reset_inflight(dut):
    """A read in flight when its queue is reset is discarded on return (also when it fails):
    the new descriptor 0 is fetched afterwards and nothing halts."""
    tb = TB(dut, "t_reset_inflight")
    await tb.start(fw_running=0)
    q = 0
    await setup_queues(tb, 2, [q])
    old = tb.write_desc(q, 0, RING[q], 2)
    tb.set_pauses(r=1.0)
    await tb.doorbell(q, 1)
    await tb.wait_for(lambda: len(tb.ars) == 1, "AR")
    await tb.pulse((q, "reset"))
    await tb.wait_for(lambda: not tb.out(q, "resetting"), "reset")
    new = tb.write_desc(q, 0, RING[q], 2)
    assert new != old
    await tb.doorbell(q, 1)
    await tb.fe(30)
    assert len(tb.ars) == 1 and tb.out(q, "fetch") == 0
    tb.set_pauses(r=0.0)
    await tb.wait_for(lambda: tb.out(q, "prefetched") == 1, "refetch")
    await tb.fe(30)
    assert len(tb.ars) == 2 and tb.out(q, "prefetched") == 1 and tb.out(q, "fetch") == 1
    await pop_check(tb, q, 0, [new])
    # the same with a read that fails: no halt
    tb.err_regions = [(RING[q] + 32, RING[q] + 64, AxiResp.SLVERR)]
    tb.write_desc(q, 1, RING[q], 2)
    tb.set_pauses(r=1.0)
    await tb.doorbell(q, 2)
    await tb.wait_for(lambda: len(tb.ars) == 3, "AR")
    await tb.pulse((q, "reset"))
    await tb.wait_for(lambda: not tb.out(q, "resetting"), "reset")
    tb.set_pauses(r=0.0)
    await tb.fe(50)
    assert tb.out(q, "halted") == 0 and tb.counts[q]["error_irq"] == 0
    assert tb.out(q, "prefetched") == 0 and tb.out(q, "active") == 1
    # reset in the cycle the read is chosen (fetch_fsm leaves IDLE while the pulse is up)
    tb.err_regions = []
    tb.write_desc(q, 0, RING[q], 2)
    n_ar = len(tb.ars)
    tb.set_pauses(r=1.0)
    await tb.fe()
    tb.qi[q]["doorbell"].value = 1
    tb.qi[q]["doorbell_we"].value = 1
    await tb.fe()           # P = 1 from here: the read is chosen at the next rising edge
    tb.qi[q]["doorbell_we"].value = 0
    tb.qi[q]["reset"].value = 1
    await tb.fe()
    tb.qi[q]["reset"].value = 0
    await tb.wait_for(lambda: not tb.out(q, "resetting"), "reset")
    await tb.wait_for(lambda: len(tb.ars) == n_ar + 1, "AR")
    tb.set_pauses(r=0.0)
    await tb.fe(50)
    assert tb.out(q, "prefetched") == 0 and tb.out(q, "fetch") == 0 and tb.out(q, "halted") == 0
    tb.check_errors()


@cocotb.test()
async def t_axi_errors(dut):
    """SLVERR/DECERR on a descriptor read (first or a middle beat): halt with the AXI code,
    error_index = F, descriptor dropped, F kept. On the record write or the consumer write: halt
    with the AXI code, error_index = the record index, C still advances."""
    tb = TB(dut, "t_axi_errors")
    await tb.start()
    tb.set_pauses(0.2)
    await setup_queues(tb, 3)
    descs = [[tb.write_desc(q, i, RING[q], 3) for i in range(4)] for q in range(N)]
    tb.err_regions = [
        (RING[0] + 64, RING[0] + 96, AxiResp.SLVERR),             # q0 slot 2, every beat
        (RING[1] + 16, RING[1] + 24, AxiResp.DECERR),             # q1 slot 0, third beat only
        (CPLB[2] + 16 + 16, CPLB[2] + 32 + 16, AxiResp.SLVERR),   # q2 record of index 1
        (CPLB[3], CPLB[3] + 4, AxiResp.DECERR),                   # q3 consumer index
    ]
    for q in range(N):
        await tb.doorbell(q, 4)
    await tb.fe(300)
    assert tb.out(0, "halted") == 1 and tb.out(0, "error") == ErrorCode.AXI_SLVERR.value
    assert tb.out(0, "error_index") == 2 and tb.out(0, "fetch") == 2
    assert tb.out(0, "prefetched") == 2
    assert tb.out(1, "halted") == 1 and tb.out(1, "error") == ErrorCode.AXI_DECERR.value
    assert tb.out(1, "error_index") == 0 and tb.out(1, "fetch") == 0
    assert tb.out(1, "prefetched") == 0
    reads = collections.Counter(queue_of(a) for _, a in tb.ars)
    assert reads[0] == 3 and reads[1] == 1, reads
    assert tb.counts[0]["error_irq"] == 1 and tb.counts[1]["error_irq"] == 1
    for q in (2, 3):
        assert tb.out(q, "prefetched") == 4 and tb.out(q, "halted") == 0
        for i in range(2):
            await pop_check(tb, q, i, descs[q])
    # q2: record 0 fine, record 1 lost (SLVERR) -> halted, C = 2; a third one keeps the error
    await complete(tb, 2, tag=1)
    await complete(tb, 2, tag=2, irq=1)
    await drain_cpl(tb, 2, 2)
    await tb.fe(2)
    assert tb.out(2, "halted") == 1 and tb.out(2, "error") == ErrorCode.AXI_SLVERR.value
    assert tb.out(2, "error_index") == 1 and tb.out(2, "consumer") == 2
    assert tb.ram.read(CPLB[2], 4) == struct.pack("<I", 2)
    assert tb.counts[2]["error_irq"] == 1 and tb.counts[2]["cpl_irq"] == 1
    # q3: consumer write fails (DECERR) on a halting completion: the AXI code wins
    await complete(tb, 3, halt=1, status=ErrorCode.BAD_SHAPE.value, tag=3)
    await drain_cpl(tb, 3, 1)
    await tb.fe(2)
    assert tb.out(3, "halted") == 1 and tb.out(3, "error") == ErrorCode.AXI_DECERR.value
    assert tb.out(3, "error_index") == 0 and tb.out(3, "consumer") == 1
    assert tb.counts[3]["error_irq"] == 1
    # later errors of halted queues keep the first
    await complete(tb, 3, halt=1, status=ErrorCode.BAD_SHAPE.value)
    await drain_cpl(tb, 3, 2)
    await tb.fe(2)
    assert tb.out(3, "error") == ErrorCode.AXI_DECERR.value and tb.out(3, "error_index") == 0
    assert tb.counts[3]["error_irq"] == 2 and tb.out(3, "consumer") == 2
    # reset clears and fetching resumes from 0 (q0's ring no longer errors)
    tb.err_regions = []
    await tb.reset_queue(0)
    await tb.doorbell(0, 3)
    await tb.wait_for(lambda: tb.out(0, "prefetched") == 3, "refetch")
    await pop_check(tb, 0, 0, descs[0])
    assert tb.out(0, "head") == descs[0][1] and tb.out(0, "head_index") == 1
    check_memory(tb)
    tb.check_errors()


@cocotb.test()
async def t_cpl_overflow(dut):
    """cpl_free counts free request slots; a request while full is dropped and sets the sticky
    cpl_overflow; the accepted ones are all written, the dropped one never."""
    tb = TB(dut, "t_cpl_overflow")
    await tb.start()
    await setup_queues(tb, 3, [0])
    assert int(dut.cpl_free.value) == CPL_DEPTH and int(dut.cpl_overflow.value) == 0
    tb.set_pauses(aw=1.0)
    await complete(tb, 0, tag=100)          # taken by the writer at once
    await tb.fe(3)
    assert int(dut.cpl_free.value) == CPL_DEPTH
    for k in range(CPL_DEPTH):
        await complete(tb, 0, tag=101 + k)
        assert int(dut.cpl_free.value) == CPL_DEPTH - 1 - k
    assert int(dut.cpl_overflow.value) == 0
    await tb.cpl(Cpl(0, 99, tag=0xDEAD, ts=0xDEAD), dropped=True)
    assert int(dut.cpl_overflow.value) == 1 and int(dut.cpl_free.value) == 0
    await tb.fe(20)
    assert tb.counts[0]["retired"] == 0
    tb.set_pauses(aw=0.0)
    await drain_cpl(tb, 0, CPL_DEPTH + 1)
    await tb.fe(50)
    assert tb.counts[0]["retired"] == CPL_DEPTH + 1 and tb.out(0, "consumer") == CPL_DEPTH + 1
    assert int(dut.cpl_free.value) == CPL_DEPTH and int(dut.cpl_overflow.value) == 1
    assert [c.tag for c in tb.retired_log[0]] == list(range(100, 101 + CPL_DEPTH))
    check_memory(tb)        # the dropped request (tag 0xDEAD) wrote nothing
    tb.check_errors()


@cocotb.test()
async def t_producer_behind_consumer(dut):
    """A producer moved back between C and F (accepted), then passed by C as the firmware retires
    the descriptors fetched before: nothing past P may be fetched. (Found by the formal proof of
    ring.fetch, docs/formal.md: the fetch condition (F - C) < (P - C) alone wraps once C > P and
    fetched slots the host never wrote.) A later doorbell ahead of C resumes fetching."""
    tb = TB(dut, "t_producer_behind_consumer")
    await tb.start()
    tb.set_pauses(0.2)
    q = 2
    await setup_queues(tb, 2, [q])
    descs = [tb.write_desc(q, i, RING[q], 2) for i in range(4)]
    await tb.doorbell(q, 4)
    await tb.wait_for(lambda: tb.out(q, "prefetched") == 4, "4 prefetched")
    await tb.doorbell(q, 1)                  # back between C = 0 and F = 4: accepted
    assert tb.out(q, "producer") == 1 and tb.out(q, "halted") == 0
    n_ar = len(tb.ars)
    for i in range(3):                       # C = 3 passes P = 1
        await pop_check(tb, q, i, descs)
        await complete(tb, q)
    await drain_cpl(tb, q, 3)
    await tb.fe(60)
    assert tb.out(q, "consumer") == 3 and tb.out(q, "producer") == 1
    assert len(tb.ars) == n_ar and tb.out(q, "fetch") == 4, \
        f"fetched past P: {len(tb.ars) - n_ar} reads, F = {tb.out(q, 'fetch')}"
    descs += [tb.write_desc(q, i, RING[q], 2) for i in (4, 5)]
    await tb.doorbell(q, 6)                  # 6 - C = 3 <= size: fetching resumes at F = 4
    await tb.wait_for(lambda: tb.out(q, "fetch") == 6, "fetch of 4 and 5")
    for i in (3, 4, 5):
        await tb.wait_for(lambda: tb.out(q, "ready"), "head")
        await pop_check(tb, q, i, descs)
        await complete(tb, q)
    await drain_cpl(tb, q, 6)
    assert tb.counts[q]["error_irq"] == 0 and tb.out(q, "halted") == 0


BUS_LIMIT = 200             #: bus_timeout of t_bus_timeouts


async def first_valid(tb, ch):
    """Wait for ``axi__<ch>valid`` to rise; returns the cycle (tb.cycle) it was first high."""
    await tb.wait_for(lambda: int(getattr(tb.dut, f"axi__{ch}valid").value), f"{ch}valid")
    return tb.cycle


async def halted_after(tb, q, code, index, since):
    """Wait for queue q to halt; check code and index; returns the cycles since ``since``."""
    await tb.wait_for(lambda: tb.out(q, "halted"), f"q{q} halt", cycles=2 * BUS_LIMIT + 100)
    assert tb.out(q, "error") == code.value and tb.out(q, "error_index") == index, \
        (q, tb.out(q, "error"), tb.out(q, "error_index"))
    return tb.cycle - since


@cocotb.test()
async def t_bus_timeouts(dut):
    """bus_timeout bounds every wait of the controller on the bus (the AXI RAM's channels paused
    for good, then released): a descriptor read whose AR is never accepted, or whose R never
    comes, halts its queue with BUS_TIMEOUT at F after bus_timeout cycles; the refused address
    stays offered and, while it is, the next queue's read times out too (the port is blocked); the
    data that comes late is dropped by ID (no push, F kept) and later reads, on a fresh ID, deliver
    the right descriptors. A record write whose B never comes, or whose AW is never accepted,
    completes as failed (C += 1, halt with BUS_TIMEOUT at its index, the consumer write
    skipped; a refused AW's data goes out without strobes when it is finally taken: nothing
    written); the queue's later records are dropped without bus traffic until it is reset."""
    tb = TB(dut, "t_bus_timeouts", abandons=True)
    await tb.start()
    dut.bus_timeout.value = BUS_LIMIT
    await setup_queues(tb, 3)
    descs = [[tb.write_desc(q, i, RING[q], 3) for i in range(4)] for q in range(N)]
    for q in range(N):
        tb.host_write(CPLB[q], bytes(4))
    # --- descriptor read, AR refused: q1 times out, then q2 behind it
    tb.set_pauses(ar=1.0)
    await tb.doorbell(1, 1)
    t0 = await first_valid(tb, "ar")
    waited = await halted_after(tb, 1, ErrorCode.BUS_TIMEOUT, 0, t0)
    assert BUS_LIMIT <= waited <= BUS_LIMIT + 4, f"AR refused: halted after {waited} cycles"
    await tb.doorbell(2, 1)
    await halted_after(tb, 2, ErrorCode.BUS_TIMEOUT, 0, tb.cycle)
    assert int(dut.axi__arvalid.value), "the refused address was withdrawn"
    tb.set_pauses(ar=0.0)
    await tb.fe(100)
    assert [tb.out(q, "prefetched") for q in (1, 2)] == [0, 0] and tb.out(1, "fetch") == 0
    assert len(tb.ars) == 1, f"the held address was offered once and taken once: {tb.ars}"
    # --- descriptor read, R withheld: q3 times out; late data dropped, q1/q2 refetch after reset
    tb.set_pauses(r=1.0)
    await tb.doorbell(3, 1)
    await tb.wait_for(lambda: len(tb.ars) == 2, "q3's AR")
    t0 = tb.ars[-1][0]
    waited = await halted_after(tb, 3, ErrorCode.BUS_TIMEOUT, 0, t0)
    assert BUS_LIMIT <= waited <= BUS_LIMIT + 4, f"R withheld: halted after {waited} cycles"
    for q in (1, 2):
        await tb.reset_queue(q)
    tb.set_pauses(r=0.0)
    for q in (1, 2):
        await tb.doorbell(q, 2)
    for q in (1, 2):
        await tb.wait_for(lambda q=q: tb.out(q, "prefetched") == 2, f"q{q} refetch")
        await pop_check(tb, q, 0, descs[q])
        await pop_check(tb, q, 1, descs[q])
    assert tb.out(3, "prefetched") == 0 and tb.out(3, "fetch") == 0, "late data of q3 was kept"
    # --- record write, B withheld: q1's record 0 times out; its record 1 is dropped at once
    tb.set_pauses(b=1.0)
    aws, irqs = len(tb.aws), tb.counts[1]["error_irq"]
    await tb.cpl(tb.next_cpl(1, tag=11, writes=("record",)))     # the RAM has taken the data
    await tb.wait_for(lambda: len(tb.aws) == aws + 1, "q1's record AW")
    t0 = tb.aws[-1][0]
    waited = await halted_after(tb, 1, ErrorCode.BUS_TIMEOUT, 0, t0)
    assert BUS_LIMIT <= waited <= BUS_LIMIT + 8, f"B withheld: halted after {waited} cycles"
    await drain_cpl(tb, 1, 1)
    await tb.cpl(tb.next_cpl(1, tag=12, writes=()))
    await drain_cpl(tb, 1, 2, cycles=50)
    assert len(tb.aws) == aws + 1 and tb.out(1, "consumer") == 2, "the dead area saw a write"
    assert tb.counts[1]["error_irq"] == irqs + 2, "each failed record raises error_irq"
    # The late B of the abandoned record is taken and dropped at once, though the writer is idle
    # (its own bready low): held, it would block every other manager's B on the shared port.
    bcount = tb.bcount
    tb.set_pauses(b=0.0)
    await tb.wait_for(lambda: tb.bcount == bcount + 1, "the orphan B taken", cycles=20)
    await tb.fe(2)
    assert not int(dut.axi__bvalid.value), "a B is still offered after the orphan's"
    # --- record write, AW refused: q2's record times out; its data, sent late, writes nothing
    tb.set_pauses(aw=1.0)
    await tb.cpl(tb.next_cpl(2, tag=21, writes=()))
    t0 = await first_valid(tb, "aw")
    waited = await halted_after(tb, 2, ErrorCode.BUS_TIMEOUT, 0, t0)
    assert BUS_LIMIT <= waited <= BUS_LIMIT + 4, f"AW refused: halted after {waited} cycles"
    await drain_cpl(tb, 2, 1)
    tb.set_pauses(aw=0.0)
    await tb.fe(100)
    # --- after a reset the completion areas work again, on fresh IDs
    for q in (1, 2):
        await tb.reset_queue(q)
        await tb.doorbell(q, 1)
        await tb.wait_for(lambda q=q: tb.out(q, "prefetched") == 1, f"q{q} fetch after reset")
        await pop_check(tb, q, 0, descs[q])
        retired = tb.counts[q]["retired"]
        await complete(tb, q, tag=30 + q)
        await drain_cpl(tb, q, retired + 1)
        assert tb.out(q, "halted") == 0
    await tb.fe(50)
    assert not tb.mon.core.outstanding(), tb.mon.core.summary()
    check_memory(tb)
    tb.check_errors()
