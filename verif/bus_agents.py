"""Pin-level passive agents for the chip's two buses, and a scoreboard that cross-checks them
against what the host did (docs/verification.md).

::

    CsrAgent     ─ AxiLiteMonitor (csr__* pins) ──ap: CsrTxn ───────┐
    HostMemAgent ─ AxiMonitor     (mem__* pins) ──ap: AxiBurstTxn ──┼→ BusScoreboard
    BoundaryMonitor (the probe) ──ap: RegisterTxn, DescriptorTxn,  ─┘   (CsrMatcher, StoreBytes,
                                      RecordTxn, QueueResetTxn,          HostShadow)
                                      HostWriteTxn

Layers, so the checks run without a simulator (tests/test_bus_agents.py):

* :class:`Channel`, :class:`AxiLiteCore`, :class:`Axi4Core` — pure Python. A core is fed, per
  sampled clock and per channel, ``step(cycle, channel, valid, ready, payload)``; it checks the
  handshake rules, pairs requests with responses and calls ``publish(txn)`` for each completed
  transaction. A violation raises :class:`ProtocolError` naming the bus, the channel and the cycle.
* :class:`PinSampler` — the cocotb side: cached GPI handles of one bus; sleeps on a rising edge of
  any VALID while the bus is idle and samples once per clock (at the falling edge, where every
  signal is stable) only while some VALID is high, reading all VALID/READY pairs in one packed
  read (``mon_<bus>_hs`` of the testbench top) and the payload, also packed, only of channels
  whose VALID is high.
* :class:`AxiLiteMonitor`, :class:`AxiMonitor` (uvm_monitor), in the passive :class:`CsrAgent`
  and :class:`HostMemAgent`; :class:`BusScoreboard` (uvm_subscriber) with its pure parts
  :class:`CsrMatcher`, :class:`StoreBytes` and :class:`HostShadow`.

``cycle`` in every transaction and message is the index of the rising clock edge at which the
handshake happened (edge k at ``FIRST_EDGE_NS + k * CLOCK_NS``, verif/soc_target.py).
"""
from collections import defaultdict, deque
from dataclasses import dataclass
from itertools import accumulate

from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, FallingEdge, RisingEdge
from pyuvm import (ConfigDB, UVMConfigItemNotFound, uvm_agent, uvm_analysis_port, uvm_monitor,
                   uvm_subscriber)

from spec import registers as R
from spec.commands import decode
from spec.descriptors import ErrorCode, Opcode

from . import boundary_monitor as BM
from .soc_target import CLOCK_NS, FIRST_EDGE_NS, HANDSHAKES, MONITOR_FIELDS
from .predictor import command_name, store_rows

__all__ = ["CsrTxn", "AxiBurstTxn", "ProtocolError", "BusMismatch", "Channel", "AxiLiteCore",
           "Axi4Core", "CsrMatcher", "StoreBytes", "HostShadow", "PinSampler", "AxiLiteMonitor", "AxiMonitor",
           "CsrAgent", "HostMemAgent", "BusScoreboard", "pin_agents_wanted"]

PAGE = 4096
INCR = 1
_REG_NAMES = {r.addr: r.name for r in R.REGISTERS.values()}


class ProtocolError(AssertionError):
    """A bus broke an AXI rule; the message names the bus, the channel and the cycle."""


class BusMismatch(AssertionError):
    """What the pins carried differs from what the host did or what landed in host memory."""


# ---------------------------------------------------------------------------- transactions
@dataclass(frozen=True)
class CsrTxn:
    """One completed AXI4-Lite access on the CSR port: request and its response."""
    kind: str                #: "write" or "read"
    addr: int
    data: int                #: WDATA, or RDATA
    strb: int                #: WSTRB (None for a read)
    resp: int                #: BRESP / RRESP
    cycle: int               #: of the response handshake

    @property
    def reg(self):
        """The register name at ``addr`` (spec/registers.py), or the address in hex."""
        return _REG_NAMES.get(self.addr, f"{self.addr:#x}")


@dataclass(frozen=True)
class AxiBurstTxn:
    """One completed AXI4 burst on the host-memory port (the chip is the manager)."""
    kind: str                #: "write" or "read"
    id: int
    addr: int
    len: int                 #: AxLEN: beats - 1
    size: int                #: AxSIZE: log2 bytes per beat
    burst: int               #: AxBURST (1 = INCR)
    resp: int                #: BRESP, or the worst RRESP of the beats
    data: bytes              #: every beat's full data bus, little-endian, beat after beat
    strb: tuple              #: WSTRB of each beat (all ones for a read)
    cycle: int               #: of the B handshake, or of the RLAST beat

    def written(self, data_bytes):
        """(host address, byte) of every byte lane the burst's strobes enable."""
        for i, strb in enumerate(self.strb):
            base = self._beat(i) & -data_bytes
            for k in range(data_bytes):
                if strb >> k & 1:
                    yield base + k, self.data[i * data_bytes + k]

    def read(self, data_bytes):
        """(host address, byte) of every byte a read burst transferred: each beat from its
        address to the end of its AxSIZE container (the first beat may start unaligned)."""
        step = 1 << self.size
        for i in range(self.len + 1):
            addr = self._beat(i)
            for a in range(addr, (addr & -step) + step):
                yield a, self.data[i * data_bytes + (a & (data_bytes - 1))]

    def _beat(self, i):
        """Address of beat ``i`` of an INCR burst."""
        return self.addr if i == 0 else (self.addr & -(1 << self.size)) + (i << self.size)


# ---------------------------------------------------------------------------- protocol cores
class Channel:
    """One VALID/READY channel: ``step`` returns the payload on a handshake, else None, after
    checking that a VALID not yet accepted stays high with its payload unchanged.

    (This check found cocotbext-axi's master re-offering accepted requests and withdrawing them:
    it read READY after the clock edge; verif/soc_target.py explains the fix.)
    """

    def __init__(self, bus, name, fields):
        self.bus, self.name, self.fields = bus, name, fields
        self.held = None             # payload offered without READY in the previous cycle
        self.history = deque(maxlen=4)   # the last samples, for the error message

    def step(self, cycle, valid, ready, payload):
        self.history.append((cycle, valid, ready, payload))
        held = self.held
        if held is not None and (not valid or payload != held):
            self._broken(cycle, valid, held, payload)
        if valid and not ready:
            self.held = payload
            return None
        self.held = None
        return payload if valid else None

    def _broken(self, cycle, valid, held, payload):
        if not valid:
            self._error(f"VALID dropped before READY at cycle {cycle} (payload {self._show(held)})")
        f = next(k for k, (a, b) in enumerate(zip(held, payload)) if a != b)
        self._error(f"{self.fields[f]} changed from {held[f]:#x} to {payload[f]:#x} while "
                    f"VALID && !READY at cycle {cycle}")

    def _show(self, payload):
        return " ".join(f"{n}={v:#x}" for n, v in zip(self.fields, payload))

    def _error(self, text):
        seen = "; ".join(f"{c}: valid={int(v)} ready={int(r)}" + (f" {self._show(p)}" if v else "")
                         for c, v, r, p in self.history)
        raise ProtocolError(f"{self.bus} {self.name.upper()}: {text} [last samples {seen}]")


class _Core:
    """Base of the bus cores: the channels named in ``CHANNELS`` (name -> payload fields), each
    handshake handed to the method ``_<channel>(cycle, payload)``."""
    CHANNELS = {}

    def __init__(self, publish, bus):
        self.publish, self.bus = publish, bus
        self.channels = {n: Channel(bus, n, f) for n, f in self.CHANNELS.items()}
        self.count = 0

    def step(self, cycle, name, valid, ready, payload):
        beat = self.channels[name].step(cycle, valid, ready, payload)
        if beat is not None:
            getattr(self, "_" + name)(cycle, *beat)

    def _out(self, txn):
        self.count += 1
        self.publish(txn)

    def _error(self, channel, text, cycle):
        raise ProtocolError(f"{self.bus} {channel}: {text} at cycle {cycle}")


class AxiLiteCore(_Core):
    """AXI4-Lite subordinate port seen from outside: writes complete at B (AW and W paired in
    order), reads at R; a response with no request outstanding is an error, and so (at
    :meth:`finish`) is a request never answered."""
    CHANNELS = MONITOR_FIELDS["csr"]     # requests before responses: the same-cycle order

    def __init__(self, publish, bus="csr"):
        super().__init__(publish, bus)
        self.aw, self.w, self.ar = deque(), deque(), deque()

    def _aw(self, cycle, addr):
        self.aw.append(addr)

    def _w(self, cycle, data, strb):
        self.w.append((data, strb))

    def _ar(self, cycle, addr):
        self.ar.append(addr)

    def _b(self, cycle, resp):
        if not (self.aw and self.w):
            self._error("B", f"response with no write outstanding ({len(self.aw)} AW, "
                             f"{len(self.w)} W unanswered)", cycle)
        data, strb = self.w.popleft()
        self._out(CsrTxn("write", self.aw.popleft(), data, strb, resp, cycle))

    def _r(self, cycle, data, resp):
        if not self.ar:
            self._error("R", "response with no read outstanding", cycle)
        self._out(CsrTxn("read", self.ar.popleft(), data, None, resp, cycle))

    def finish(self):
        """Raise if a request is still unanswered (call when the bus should be quiet)."""
        if self.aw or self.w or self.ar:
            raise ProtocolError(f"{self.bus}: requests never answered at the end: {len(self.aw)} AW, "
                                f"{len(self.w)} W, {len(self.ar)} AR (first AW "
                                f"{self.aw[0] if self.aw else None}, AR {self.ar[0] if self.ar else None})")


class _Burst:
    """A request being assembled: its AW/AR fields, then its beats."""

    def __init__(self, kind, cycle, id, addr, len, size, burst):
        self.kind, self.cycle = kind, cycle
        self.id, self.addr, self.len, self.size, self.burst = id, addr, len, size, burst
        self.beats, self.strb, self.resp = [], [], 0

    def __str__(self):
        return f"id {self.id} addr {self.addr:#x} len {self.len} (AR/AW at cycle {self.cycle})"

    def txn(self, data_bytes, cycle):
        data = b"".join(d.to_bytes(data_bytes, "little") for d in self.beats)
        return AxiBurstTxn(self.kind, self.id, self.addr, self.len, self.size, self.burst,
                           self.resp, data, tuple(self.strb), cycle)


class Axi4Core(_Core):
    """AXI4 manager port (the chip's host-memory master) seen from outside. Checks: INCR bursts of
    at most the bus width that never cross a 4 KiB boundary; write data in AW order with WLAST on
    exactly beat AWLEN (W may run ahead of AW); RLAST on exactly beat ARLEN; B and R only for an ID
    with a request outstanding, answered oldest first per ID."""
    CHANNELS = MONITOR_FIELDS["mem"]

    def __init__(self, publish, data_bytes, bus="mem"):
        super().__init__(publish, bus)
        self.data_bytes = data_bytes
        self.aw = deque()                   # write requests whose data is not complete
        self.wbeats = []                    # (data, strb) of the write burst in progress
        self.wdone = deque()                # completed write data bursts waiting for their AW
        self.writes = defaultdict(deque)    # id -> bursts with data, waiting for B
        self.reads = defaultdict(deque)     # id -> bursts waiting for (more) R beats

    def outstanding(self):
        return (len(self.aw) + sum(map(len, self.writes.values()))
                + sum(map(len, self.reads.values())))

    def _request(self, channel, cycle, fields):
        b = _Burst("write" if channel == "AW" else "read", cycle, *fields)
        nbytes = 1 << b.size
        last = (b.addr & -nbytes) + (b.len + 1) * nbytes - 1
        if b.burst != INCR:
            self._error(channel, f"burst type {b.burst} is not INCR ({b})", cycle)
        if nbytes > self.data_bytes:
            self._error(channel, f"size {b.size} wider than the {self.data_bytes}-byte bus ({b})", cycle)
        if b.addr // PAGE != last // PAGE:
            self._error(channel, f"burst crosses a 4 KiB boundary: bytes {b.addr:#x}..{last:#x} ({b})",
                        cycle)
        return b

    def _aw(self, cycle, *fields):
        self.aw.append(self._request("AW", cycle, fields))
        self._pair(cycle)

    def _ar(self, cycle, *fields):
        b = self._request("AR", cycle, fields)
        self.reads[b.id].append(b)

    def _w(self, cycle, data, strb, last):
        self.wbeats.append((data, strb))
        k = len(self.wbeats)
        owner = self.aw[len(self.wdone)] if len(self.wdone) < len(self.aw) else None
        if owner is not None and bool(last) != (k == owner.len + 1):
            self._error("W", f"WLAST={int(last)} on beat {k - 1} of a {owner.len + 1}-beat burst "
                             f"({owner})", cycle)
        if last:
            self.wdone.append(self.wbeats)
            self.wbeats = []
            self._pair(cycle)

    def _pair(self, cycle):
        """Give completed write data to its AW (in order); W that ran ahead is counted here."""
        while self.aw and self.wdone:
            b, beats = self.aw.popleft(), self.wdone.popleft()
            if len(beats) != b.len + 1:
                self._error("W", f"{len(beats)} beats up to WLAST for a {b.len + 1}-beat burst ({b})",
                            cycle)
            b.beats = [d for d, _ in beats]
            b.strb = [s for _, s in beats]
            self.writes[b.id].append(b)

    def _b(self, cycle, id, resp):
        if not self.writes[id]:
            self._error("B", f"response for id {id} with no write burst of that ID complete "
                             f"(AW and WLAST seen) and unanswered", cycle)
        b = self.writes[id].popleft()
        b.resp = resp
        self._out(b.txn(self.data_bytes, cycle))

    def _r(self, cycle, id, data, resp, last):
        if not self.reads[id]:
            self._error("R", f"beat for id {id} with no read of that ID outstanding", cycle)
        b = self.reads[id][0]
        b.beats.append(data)
        b.strb.append((1 << self.data_bytes) - 1)
        b.resp = max(b.resp, resp)
        k = len(b.beats)
        if bool(last) != (k == b.len + 1):
            self._error("R", f"RLAST={int(last)} on beat {k - 1} of a {b.len + 1}-beat burst ({b})",
                        cycle)
        if last:
            self.reads[id].popleft()
            self._out(b.txn(self.data_bytes, cycle))


# ---------------------------------------------------------------------------- cross-checks
class CsrMatcher:
    """The driver's register accesses (RegisterTxn, from the probe) against the accesses on the
    CSR pins (CsrTxn): per direction, the same addresses and data in the same order, full-word
    strobes on writes. The probe reports a write before it goes out and a read after it returned,
    so each side waits in a queue until the other catches up."""

    def __init__(self):
        self.driver = {"read": deque(), "write": deque()}
        self.pins = {"read": deque(), "write": deque()}
        self.matched = {"read": 0, "write": 0}

    def from_driver(self, txn):
        self.driver[txn.kind].append(txn)
        self._match(txn.kind)

    def from_pins(self, txn):
        self.pins[txn.kind].append(txn)
        self._match(txn.kind)

    def _match(self, kind):
        drv, pins = self.driver[kind], self.pins[kind]
        while drv and pins:
            d, p = drv.popleft(), pins.popleft()
            if (d.reg.addr, d.value) != (p.addr, p.data) or kind == "write" and p.strb != 0xF:
                strb = f" strb {p.strb:#x}" if kind == "write" else ""
                raise BusMismatch(f"CSR {kind} #{self.matched[kind]}: the driver's {d.reg.name} "
                                  f"({d.reg.addr:#x}) = {d.value:#x}, the pins' {p.reg} ({p.addr:#x}) "
                                  f"= {p.data:#x}{strb} at cycle {p.cycle}")
            self.matched[kind] += 1

    def finish(self):
        """Raise if either side has an access the other never showed."""
        for kind in ("write", "read"):
            for side, other, q in (("driver", "pins", self.driver[kind]), ("pins", "driver", self.pins[kind])):
                if q:
                    raise BusMismatch(f"CSR {kind} #{self.matched[kind]}: {len(q)} access(es) seen by "
                                      f"the {side} and never by the {other}; first {q[0]}")


@dataclass(frozen=True)
class StoreRegion:
    """A completed DMA_STORE: its rows ((address, bytes) pairs) spanning host bytes [lo, hi)."""
    queue: int
    index: int
    command: str
    rows: tuple
    lo: int
    hi: int


class StoreBytes:
    """A map of every host byte the mem port wrote (OKAY bursts only: an error response leaves
    memory unchanged), and the stores to compare: each DMA_STORE whose completion record says OK
    becomes a :class:`StoreRegion` when its record arrives; :meth:`compare` then requires host
    memory there to equal the last byte the pins wrote to each address."""

    def __init__(self, data_bytes):
        self.data_bytes = data_bytes
        self.bytes = {}
        self.descs = defaultdict(dict)       # queue -> index -> descriptor words
        self.compared = 0

    def burst(self, txn):
        if txn.kind == "write" and txn.resp == 0:
            self.bytes.update(txn.written(self.data_bytes))

    def descriptor(self, txn):
        self.descs[txn.queue][txn.index] = txn.words

    def reset(self, txn):
        self.descs.pop(txn.queue, None)

    def completed(self, txn):
        """The StoreRegion of a completion record, or None if it is not a successful store."""
        rec = txn.record
        words = self.descs[txn.queue].pop(rec["index"], None)
        if words is None or rec["opcode"] != Opcode.DMA_STORE or rec["status"] != ErrorCode.OK:
            return None
        d = decode(list(words))
        if not d["row_bytes"]:
            return None
        rows = tuple(store_rows(d))
        return StoreRegion(txn.queue, rec["index"], command_name(d), rows,
                           min(a for a, _ in rows), max(a + n for a, n in rows))

    def compare(self, region, host):
        """``host``: host memory [region.lo, region.hi) read back after the record arrived."""
        for addr, n in region.rows:
            for a in range(addr, addr + n):
                pin, got = self.bytes.get(a), host[a - region.lo]
                if pin != got:
                    want = "never written on the mem port" if pin is None else f"{pin:#04x}"
                    raise BusMismatch(f"queue {region.queue} index {region.index} ({region.command}): "
                                      f"host byte {a:#x} expected {want} (AXI writes on the mem "
                                      f"port), got {got:#04x} (host memory)")
        self.compared += 1


class HostShadow:
    """What host memory holds, as far as the traffic shows it: every host write (the probe's
    HostWriteTxn) and every OKAY write burst of the mem port, in the order they happen. Each
    OKAY read burst must return the shadow's bytes wherever the shadow knows them (bytes nobody
    wrote since reset — e.g. loaded through the backdoor before the probe — are not checked).
    Legal workloads never let the chip read what is being written, so the order of
    transactions is the order of memory."""

    def __init__(self, data_bytes):
        self.data_bytes = data_bytes
        self.bytes = {}
        self.checked = 0                     # bytes of read data compared

    def host_write(self, txn):
        self.bytes.update(zip(range(txn.addr, txn.addr + len(txn.data)), txn.data))

    def burst(self, txn):
        if txn.resp != 0:
            return                           # an error response carries no memory contents
        if txn.kind == "write":
            self.bytes.update(txn.written(self.data_bytes))
            return
        for a, got in txn.read(self.data_bytes):
            want = self.bytes.get(a)
            if want is None:
                continue
            if want != got:
                raise BusMismatch(f"mem port read burst id {txn.id} addr {txn.addr:#x} len {txn.len} "
                                  f"(RLAST at cycle {txn.cycle}): byte {a:#x} expected {want:#04x} "
                                  f"(last written by the host or the chip), got {got:#04x}")
            self.checked += 1


# ---------------------------------------------------------------------------- pins
class PinSampler:
    """Feeds a core from the pins of one bus of the chip testbench's top (soc_target.py).

    While the bus is idle it sleeps on a rising ``mon_<bus>_busy`` (any VALID); then, once per
    clock at the falling edge, it reads every VALID and READY at once from ``mon_<bus>_hs`` and
    the payload (``mon_<bus>_<channel>``: the channel's pins packed, split here by the widths of
    the pins ``<bus>__<channel><field>``) only of channels whose VALID is high, until a clock
    with no VALID high. Handles are looked up once and read through the GPI handle as
    binary strings (a LogicArray per read would add to the ~4 µs a read costs). ``cycles`` counts
    the clocks sampled, ``wakeups`` the idle-to-busy transitions.
    """

    def __init__(self, dut, bus, core):
        def reader(name):
            return getattr(dut, name)._handle.get_signal_val_binstr
        self.core, self.clk = core, dut.clk
        self.busy = getattr(dut, f"mon_{bus}_busy")
        self.handshakes = reader(f"mon_{bus}_hs")
        self.channels = []
        for name, fields in core.CHANNELS.items():
            widths = [len(getattr(dut, f"{bus}__{name}{f}")) for f in fields]
            spans = [(end - w, end) for w, end in zip(widths, accumulate(widths))]
            self.channels.append((name, core.channels[name], 2 * HANDSHAKES.index(name),
                                  reader(f"mon_{bus}_{name}"), spans))
        self.cycles = self.wakeups = 0

    async def run(self):
        fall, wake = FallingEdge(self.clk), RisingEdge(self.busy)
        while True:
            await wake
            self.wakeups += 1
            await fall
            cycle = int(get_sim_time("ns") - FIRST_EDGE_NS) // CLOCK_NS + 1
            while self.sample(cycle):   # one more sample after the last busy cycle: a VALID
                await fall              # dropped before READY shows there
                cycle += 1

    def sample(self, cycle):
        """Sample every channel once (the handshakes of rising edge ``cycle``); True if some
        VALID was high."""
        self.cycles += 1
        bits = self.handshakes()
        step = self.core.step
        for name, channel, i, payload, spans in self.channels:
            if bits[i] == "1":
                p = payload()
                step(cycle, name, True, bits[i + 1] == "1", tuple(int(p[a:b], 2) for a, b in spans))
            elif channel.held is not None:      # an idle channel has nothing to check
                step(cycle, name, False, False, None)
        return "1" in bits[::2]


class _PinMonitor(uvm_monitor):
    """Passive monitor of one bus of the chip testbench's top (ConfigDB "TB": the ChipTB): a
    :class:`PinSampler` feeds the core, whose transactions go out on ``ap``. The first protocol
    error stops the monitor and fails the test in check_phase."""
    BUS = ""

    def build_phase(self):
        self.ap = uvm_analysis_port("ap", self)
        self.dut = ConfigDB().get(self, "", "TB").dut
        self.core = self.make_core(self.ap.write)
        self.sampler = PinSampler(self.dut, self.BUS, self.core)
        self.error = None

    def make_core(self, publish):
        raise NotImplementedError

    async def run_phase(self):
        try:
            await self.sampler.run()
        except ProtocolError as e:
            self.error = e
            self.logger.error(str(e))

    def check_phase(self):
        if self.error:
            raise self.error

    def report_phase(self):
        s = self.sampler
        self.logger.info(f"{self.core.count} transactions, {s.cycles} cycles sampled after "
                         f"{s.wakeups} wake-ups")


class AxiLiteMonitor(_PinMonitor):
    """The CSR port ``csr__*`` (AXI4-Lite): publishes a :class:`CsrTxn` per completed access."""
    BUS = "csr"

    def make_core(self, publish):
        return AxiLiteCore(publish)

    def check_phase(self):
        super().check_phase()
        self.core.finish()          # the driver awaits every access: none may be left open


class AxiMonitor(_PinMonitor):
    """The host-memory port ``mem__*`` (AXI4, chip is manager): publishes an :class:`AxiBurstTxn`
    per completed burst. Bursts still open when the test ends (prefetches) are only reported."""
    BUS = "mem"

    def make_core(self, publish):
        return Axi4Core(publish, len(self.dut.mem__wdata) // 8)

    def report_phase(self):
        super().report_phase()
        self.logger.info(f"{self.core.outstanding()} bursts open at the end")


class CsrAgent(uvm_agent):
    """Passive agent of the CSR port: ``monitor`` (AxiLiteMonitor)."""

    def build_phase(self):
        self.monitor = AxiLiteMonitor("monitor", self)


class HostMemAgent(uvm_agent):
    """Passive agent of the host-memory port: ``monitor`` (AxiMonitor)."""

    def build_phase(self):
        self.monitor = AxiMonitor("monitor", self)


def pin_agents_wanted(component):
    """True when ConfigDB holds an RTL testbench ("TB" with a ``dut``) and "PIN_AGENTS" is not
    False: the pin agents need the simulator's handles."""
    db = ConfigDB()
    try:
        tb = db.get(component, "", "TB")
    except UVMConfigItemNotFound:
        return False
    try:
        wanted = db.get(component, "", "PIN_AGENTS")
    except UVMConfigItemNotFound:
        wanted = True
    return bool(wanted) and getattr(tb, "dut", None) is not None


class BusScoreboard(uvm_subscriber):
    """Cross-checks the pins against the host (connect the BoundaryMonitor's and both pin
    monitors' ``ap`` to ``analysis_export``): CSR accesses through :class:`CsrMatcher`, completed
    stores through :class:`StoreBytes` — host memory is read back (ConfigDB "TB" ``host_read``)
    in run_phase, under an objection so the test cannot end with a store unchecked —, read data
    of the mem port through :class:`HostShadow`. The first mismatch fails the test in
    check_phase."""

    def build_phase(self):
        self.tb = ConfigDB().get(self, "", "TB")
        self.csr = CsrMatcher()
        self.stores = StoreBytes(len(self.tb.dut.mem__wdata) // 8)
        self.shadow = HostShadow(self.stores.data_bytes)
        self.pending = deque()
        self.work = Event()
        self.objecting = False
        self.error = None
        self._route = {CsrTxn: self.csr.from_pins, BM.RegisterTxn: self.csr.from_driver,
                       AxiBurstTxn: self._burst, BM.HostWriteTxn: self.shadow.host_write,
                       BM.DescriptorTxn: self.stores.descriptor,
                       BM.QueueResetTxn: self.stores.reset, BM.RecordTxn: self._record}

    def write(self, txn):
        handler = self._route.get(type(txn))
        if handler is None or self.error:
            return
        try:
            handler(txn)
        except BusMismatch as e:
            self._fail(e)

    def _burst(self, txn):
        self.stores.burst(txn)
        self.shadow.burst(txn)

    def _record(self, txn):
        region = self.stores.completed(txn)
        if region is None:
            return
        self.pending.append(region)
        if not self.objecting:
            self.objecting = True
            self.raise_objection()
        self.work.set()

    def _fail(self, e):
        self.error = e
        self.logger.error(f"first mismatch: {e}")

    async def run_phase(self):
        while True:
            await self.work.wait()
            self.work.clear()
            while self.pending:
                region = self.pending.popleft()
                host = await self.tb.host_read(region.lo, region.hi - region.lo)
                if not self.error:
                    try:
                        self.stores.compare(region, host)
                    except BusMismatch as e:
                        self._fail(e)
            self.objecting = False
            self.drop_objection()

    def check_phase(self):
        if self.error:
            raise self.error
        self.csr.finish()
        m = self.csr.matched
        self.logger.info(f"bus scoreboard: {m['write']} CSR writes and {m['read']} reads matched "
                         f"on the pins, {self.stores.compared} stores equal to the mem-port writes, "
                         f"{self.shadow.checked} bytes of mem-port read data equal to host memory")
