"""The AXI4 / AXI4-Lite protocol checker of every bench that watches a bus (docs/verif.md).

Two layers, so the rules are tested without a simulator (tests/test_axi_checker.py):

* the checking cores — pure Python, no cocotb: :class:`Channel` (one VALID/READY pair),
  :class:`AxiLiteChecker` (an AXI4-Lite subordinate port seen from outside) and
  :class:`Axi4Checker` (an AXI4 manager port seen from outside). A core is fed, per sampled clock
  and per channel, ``step(cycle, channel, valid, ready, payload)`` (``payload``: a tuple in the
  order of the core's ``CHANNELS[channel]`` fields, or None when VALID is low); it raises
  :class:`ProtocolError` (bus, channel, cycle, the last samples) at the first violation, calls
  ``publish(txn)`` for each completed transaction and every ``listeners`` entry for each
  handshake (``listener(cycle, channel, fields)``, fields a dict).
* the cocotb samplers that feed a core: :class:`SignalSampler` reads the pins
  ``<prefix><channel><field>`` of any bus (VALID/READY every clock, the payload only while VALID
  is high); :class:`PackedSampler` reads the packed copies the chip's testbench top provides
  (``mon_<bus>_hs``, ``mon_<bus>_<channel>``, verif/soc_target.py), one read per clock for all
  handshakes, and sleeps while the bus is idle. :class:`BusMonitor` runs a sampler as a cocotb
  task and keeps the first violation for ``check()``.

Rules (:class:`Axi4Checker`; ``cfg`` options in brackets):

* every channel: VALID, once high, stays high until READY, with its payload unchanged;
* AR/AW: AxBURST INCR; AxSIZE at most the bus width [``full_width``: exactly the bus width];
  AxLEN + 1 at most ``max_beats`` (256 for AXI4 INCR); the burst does not cross a 4 KiB
  boundary [``aligned``: AxADDR aligned to AxSIZE]; [``ids``: AxID in the allowed set];
* W: write data in AW order (W may run ahead of AW), WLAST on exactly beat AWLEN, no WSTRB bit
  outside the byte lanes of the beat (narrow and unaligned-start beats);
* R: RLAST on exactly beat ARLEN; B and R only for an ID with a request outstanding (and, for
  B, its data complete), answered oldest first per ID (per-ID order; different IDs may
  interleave);
* responses: RRESP/BRESP never EXOKAY (no exclusive accesses here) [``resp``: the allowed codes];
* outstanding bursts (AR until RLAST, AW until B) at most [``max_reads``, ``max_writes``];
* :meth:`Axi4Checker.finish` (bus quiet): no burst left open.

:class:`AxiLiteChecker`: VALID/READY as above on all five channels; AW and W paired in order;
B and R only with a request outstanding; no EXOKAY; :meth:`AxiLiteChecker.finish`: nothing open.

Benches: the chip's pin agents (verif/bus_agents.py, pyuvm env) on the CSR and host-memory
ports, the DMA engine bench (both paths: the ``ext__*`` pins, and on the fast path the harness's
packed copies ``mon_hm_*`` of the bus to the HDL host memory model), the queue-controller bench and
the AXI arbiter bench (subordinate side). The HDL host memory model (verif/hdl/kaki_host_mem.v)
still keeps its sticky protocol flags; the DMA fast path and the chip's pin agent require them to
stay clear as well (a second line of defence, duplicating rules checked here).
"""
from collections import defaultdict, deque
from dataclasses import dataclass
from itertools import accumulate

__all__ = ["OKAY", "EXOKAY", "SLVERR", "DECERR", "INCR", "ProtocolError", "CsrTxn", "AxiBurstTxn",
           "Channel", "AxiLiteChecker", "Axi4Checker", "AXI4_FIELDS", "AXI_LITE_FIELDS",
           "SignalSampler", "PackedSampler", "BusMonitor"]

OKAY, EXOKAY, SLVERR, DECERR = 0, 1, 2, 3
FIXED, INCR, WRAP = 0, 1, 2
PAGE = 4096
HANDSHAKES = ("aw", "w", "ar", "b", "r")

#: Payload fields per channel (signal ``<prefix><channel><field>``), requests before responses:
#: the order a core handles one clock's handshakes in.
AXI_LITE_FIELDS = {"aw": ("addr",), "w": ("data", "strb"), "ar": ("addr",), "b": ("resp",),
                   "r": ("data", "resp")}
AXI4_FIELDS = {"aw": ("id", "addr", "len", "size", "burst"), "w": ("data", "strb", "last"),
               "ar": ("id", "addr", "len", "size", "burst"), "b": ("id", "resp"),
               "r": ("id", "data", "resp", "last")}


class ProtocolError(AssertionError):
    """A bus broke an AXI rule; the message names the bus, the channel and the cycle."""


# ---------------------------------------------------------------------------- transactions
@dataclass(frozen=True)
class CsrTxn:
    """One completed AXI4-Lite access: request and its response."""
    kind: str                #: "write" or "read"
    addr: int
    data: int                #: WDATA, or RDATA
    strb: int                #: WSTRB (None for a read)
    resp: int                #: BRESP / RRESP
    cycle: int               #: of the response handshake

    @property
    def reg(self):
        """The Kaki register name at ``addr`` (spec/registers.py), or the address in hex."""
        from spec import registers as R
        names = {r.addr: r.name for r in R.REGISTERS.values()}
        return names.get(self.addr, f"{self.addr:#x}")


@dataclass(frozen=True)
class AxiBurstTxn:
    """One completed AXI4 burst."""
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


# ---------------------------------------------------------------------------- checking cores
class Channel:
    """One VALID/READY channel: ``step`` returns the payload on a handshake, else None, after
    checking that a VALID not yet accepted stays high with its payload unchanged. ``stalls``
    counts samples with VALID high and READY low, ``handshakes`` the transfers.

    (This check found cocotbext-axi's master re-offering accepted requests and withdrawing them:
    it read READY after the clock edge; verif/soc_target.py explains the fix.)
    """

    def __init__(self, bus, name, fields):
        self.bus, self.name, self.fields = bus, name, fields
        self.held = None             # payload offered without READY in the previous cycle
        self.history = deque(maxlen=4)   # the last samples, for the error message
        self.stalls = self.handshakes = 0

    def step(self, cycle, valid, ready, payload):
        self.history.append((cycle, valid, ready, payload))
        held = self.held
        if held is not None and (not valid or payload != held):
            self._broken(cycle, valid, held, payload)
        if valid and not ready:
            self.held = payload
            self.stalls += 1
            return None
        self.held = None
        if valid:
            self.handshakes += 1
            return payload
        return None

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
    """Base of the bus cores: the channels of ``fields`` (name -> payload field names), each
    handshake handed, as a dict of its fields, to the method ``_<channel>(cycle, f)`` and to the
    listeners."""

    def __init__(self, publish, bus, fields):
        self.publish, self.bus = publish or (lambda txn: None), bus
        self.CHANNELS = fields
        self.channels = {n: Channel(bus, n, f) for n, f in fields.items()}
        self.listeners = []
        self.count = 0

    def step(self, cycle, name, valid, ready, payload):
        channel = self.channels[name]
        beat = channel.step(cycle, valid, ready, payload)
        if beat is not None:
            f = dict(zip(channel.fields, beat))
            getattr(self, "_" + name)(cycle, f)
            for listener in self.listeners:
                listener(cycle, name, f)

    def _out(self, txn):
        self.count += 1
        self.publish(txn)

    def _error(self, channel, text, cycle):
        raise ProtocolError(f"{self.bus} {channel}: {text} at cycle {cycle}")

    def _resp(self, channel, resp, allowed, cycle):
        if resp not in allowed:
            self._error(channel, f"response {resp} ({_RESP.get(resp, '?')}) not allowed here "
                                 f"(allowed {', '.join(_RESP[r] for r in sorted(allowed))})", cycle)


_RESP = {OKAY: "OKAY", EXOKAY: "EXOKAY", SLVERR: "SLVERR", DECERR: "DECERR"}


class AxiLiteChecker(_Core):
    """AXI4-Lite subordinate port seen from outside: writes complete at B (AW and W paired in
    order), reads at R; a response with no request outstanding is an error, so is EXOKAY, and
    (at :meth:`finish`) a request never answered. Publishes a :class:`CsrTxn` per access."""

    def __init__(self, publish=None, bus="csr", fields=AXI_LITE_FIELDS):
        super().__init__(publish, bus, fields)
        self.aw, self.w, self.ar = deque(), deque(), deque()

    def _aw(self, cycle, f):
        self.aw.append(f["addr"])

    def _w(self, cycle, f):
        self.w.append((f["data"], f["strb"]))

    def _ar(self, cycle, f):
        self.ar.append(f["addr"])

    def _b(self, cycle, f):
        if not (self.aw and self.w):
            self._error("B", f"response with no write outstanding ({len(self.aw)} AW, "
                             f"{len(self.w)} W unanswered)", cycle)
        self._resp("B", f["resp"], (OKAY, SLVERR, DECERR), cycle)
        data, strb = self.w.popleft()
        self._out(CsrTxn("write", self.aw.popleft(), data, strb, f["resp"], cycle))

    def _r(self, cycle, f):
        if not self.ar:
            self._error("R", "response with no read outstanding", cycle)
        self._resp("R", f["resp"], (OKAY, SLVERR, DECERR), cycle)
        self._out(CsrTxn("read", self.ar.popleft(), f["data"], None, f["resp"], cycle))

    def finish(self):
        """Raise if a request is still unanswered (call when the bus should be quiet)."""
        if self.aw or self.w or self.ar:
            raise ProtocolError(f"{self.bus}: requests never answered at the end: {len(self.aw)} AW, "
                                f"{len(self.w)} W, {len(self.ar)} AR (first AW "
                                f"{self.aw[0] if self.aw else None}, AR {self.ar[0] if self.ar else None})")


class _Burst:
    """A request being assembled: its AW/AR fields, then its beats."""

    def __init__(self, kind, cycle, f):
        self.kind, self.cycle = kind, cycle
        self.id, self.addr, self.len = f.get("id", 0), f["addr"], f["len"]
        self.size, self.burst = f.get("size", 0), f.get("burst", INCR)
        self.beats, self.strb, self.resp = [], [], 0

    def __str__(self):
        return f"id {self.id} addr {self.addr:#x} len {self.len} (AR/AW at cycle {self.cycle})"

    def lanes(self, i, data_bytes):
        """The WSTRB bits beat ``i`` may set: the bytes from the beat's address to the end of its
        AxSIZE container, within the data bus."""
        n = 1 << self.size
        addr = self.addr if i == 0 else (self.addr & -n) + (i << self.size)
        lo, hi = addr % data_bytes, (addr & -n) % data_bytes + n
        return ((1 << hi) - 1) & ~((1 << lo) - 1)

    def txn(self, data_bytes, cycle):
        data = b"".join(d.to_bytes(data_bytes, "little") for d in self.beats)
        return AxiBurstTxn(self.kind, self.id, self.addr, self.len, self.size, self.burst,
                           self.resp, data, tuple(self.strb), cycle)


class Axi4Checker(_Core):
    """AXI4 manager port seen from outside (module docstring: the rules and the options).
    Publishes an :class:`AxiBurstTxn` per completed burst (at B, or at RLAST). ``reads`` /
    ``writes`` are the bursts outstanding now, ``max_reads_seen`` / ``max_writes_seen`` the most
    at once; ``ar_count`` / ``aw_count`` the requests accepted."""

    def __init__(self, publish=None, data_bytes=8, bus="mem", fields=AXI4_FIELDS, *, max_beats=256,
                 full_width=False, aligned=False, ids=None, resp=(OKAY, SLVERR, DECERR),
                 max_reads=None, max_writes=None):
        super().__init__(publish, bus, fields)
        self.data_bytes = data_bytes
        self.max_beats, self.full_width, self.aligned = max_beats, full_width, aligned
        self.ids = None if ids is None else frozenset(ids)
        self.resp_ok = frozenset(resp)
        self.max_reads, self.max_writes = max_reads, max_writes
        self.aw = deque()                   # write requests whose data is not complete
        self.wbeats = []                    # (data, strb) of the write burst in progress
        self.wdone = deque()                # completed write data bursts waiting for their AW
        self.writes = defaultdict(deque)    # id -> bursts with data, waiting for B
        self.reads_open = defaultdict(deque)    # id -> bursts waiting for (more) R beats
        self.n_reads = self.n_writes = 0    # outstanding bursts
        self.max_reads_seen = self.max_writes_seen = 0
        self.ar_count = self.aw_count = 0

    def outstanding(self):
        return self.n_reads + self.n_writes

    def _request(self, channel, cycle, f):
        b = _Burst("write" if channel == "AW" else "read", cycle, f)
        nbytes = 1 << b.size
        last = (b.addr & -nbytes) + (b.len + 1) * nbytes - 1
        if b.burst != INCR:
            self._error(channel, f"burst type {b.burst} is not INCR ({b})", cycle)
        if nbytes > self.data_bytes:
            self._error(channel, f"size {b.size} wider than the {self.data_bytes}-byte bus ({b})", cycle)
        if self.full_width and nbytes != self.data_bytes:
            self._error(channel, f"size {b.size} is not the full {self.data_bytes}-byte bus ({b})", cycle)
        if b.len + 1 > self.max_beats:
            self._error(channel, f"{b.len + 1} beats, more than {self.max_beats} ({b})", cycle)
        if self.aligned and b.addr % nbytes:
            self._error(channel, f"address not aligned to the {nbytes}-byte beat ({b})", cycle)
        if b.addr // PAGE != last // PAGE:
            self._error(channel, f"burst crosses a 4 KiB boundary: bytes {b.addr:#x}..{last:#x} ({b})",
                        cycle)
        if self.ids is not None and b.id not in self.ids:
            self._error(channel, f"id {b.id:#x} not one of {sorted(self.ids)} ({b})", cycle)
        return b

    def _aw(self, cycle, f):
        self.aw.append(self._request("AW", cycle, f))
        self.aw_count += 1
        self.n_writes += 1
        self.max_writes_seen = max(self.max_writes_seen, self.n_writes)
        if self.max_writes is not None and self.n_writes > self.max_writes:
            self._error("AW", f"{self.n_writes} write bursts outstanding, more than {self.max_writes}",
                        cycle)
        self._pair(cycle)

    def _ar(self, cycle, f):
        b = self._request("AR", cycle, f)
        self.reads_open[b.id].append(b)
        self.ar_count += 1
        self.n_reads += 1
        self.max_reads_seen = max(self.max_reads_seen, self.n_reads)
        if self.max_reads is not None and self.n_reads > self.max_reads:
            self._error("AR", f"{self.n_reads} read bursts outstanding, more than {self.max_reads}",
                        cycle)

    def _w(self, cycle, f):
        self.wbeats.append((f["data"], f["strb"]))
        k = len(self.wbeats)
        owner = self.aw[len(self.wdone)] if len(self.wdone) < len(self.aw) else None
        if owner is not None:
            if bool(f["last"]) != (k == owner.len + 1):
                self._error("W", f"WLAST={int(f['last'])} on beat {k - 1} of a {owner.len + 1}-beat "
                                 f"burst ({owner})", cycle)
            self._strobes(owner, k - 1, f["strb"], cycle)
        if f["last"]:
            self.wdone.append(self.wbeats)
            self.wbeats = []
            self._pair(cycle)

    def _strobes(self, b, i, strb, cycle):
        lanes = b.lanes(i, self.data_bytes)
        if strb & ~lanes:
            self._error("W", f"WSTRB {strb:#x} on beat {i} enables bytes outside its lanes "
                             f"{lanes:#x} ({b})", cycle)

    def _pair(self, cycle):
        """Give completed write data to its AW (in order); W that ran ahead is checked here."""
        while self.aw and self.wdone:
            b, beats = self.aw.popleft(), self.wdone.popleft()
            if len(beats) != b.len + 1:
                self._error("W", f"{len(beats)} beats up to WLAST for a {b.len + 1}-beat burst ({b})",
                            cycle)
            for i, (_, s) in enumerate(beats):
                self._strobes(b, i, s, cycle)
            b.beats = [d for d, _ in beats]
            b.strb = [s for _, s in beats]
            self.writes[b.id].append(b)

    def _b(self, cycle, f):
        id = f.get("id", 0)
        if not self.writes[id]:
            self._error("B", f"response for id {id} with no write burst of that ID complete "
                             f"(AW and WLAST seen) and unanswered", cycle)
        self._resp("B", f["resp"], self.resp_ok, cycle)
        b = self.writes[id].popleft()
        b.resp = f["resp"]
        self.n_writes -= 1
        self._out(b.txn(self.data_bytes, cycle))

    def _r(self, cycle, f):
        id = f.get("id", 0)
        if not self.reads_open[id]:
            self._error("R", f"beat for id {id} with no read of that ID outstanding", cycle)
        self._resp("R", f["resp"], self.resp_ok, cycle)
        b = self.reads_open[id][0]
        b.beats.append(f["data"])
        b.strb.append((1 << self.data_bytes) - 1)
        b.resp = max(b.resp, f["resp"])
        k = len(b.beats)
        if bool(f["last"]) != (k == b.len + 1):
            self._error("R", f"RLAST={int(f['last'])} on beat {k - 1} of a {b.len + 1}-beat burst "
                             f"({b})", cycle)
        if f["last"]:
            self.reads_open[id].popleft()
            self.n_reads -= 1
            self._out(b.txn(self.data_bytes, cycle))

    def open_bursts(self):
        """A description of what is still open, or "" when the bus is quiet."""
        parts = []
        if self.aw:
            parts.append(f"{len(self.aw)} AW without all their W beats (first {self.aw[0]})")
        if self.wbeats or self.wdone:
            parts.append(f"{len(self.wdone)} W bursts and {len(self.wbeats)} beats without an AW")
        waiting = [b for q in self.writes.values() for b in q]
        if waiting:
            parts.append(f"{len(waiting)} writes without B (first {waiting[0]})")
        reading = [b for q in self.reads_open.values() for b in q]
        if reading:
            parts.append(f"{len(reading)} reads without RLAST (first {reading[0]})")
        return "; ".join(parts)

    def finish(self):
        """Raise if a burst is still open (call when the bus should be quiet)."""
        left = self.open_bursts()
        if left:
            raise ProtocolError(f"{self.bus}: bursts open at the end: {left}")

    def summary(self):
        return (f"{self.bus}: {self.ar_count} AR, {self.aw_count} AW, {self.count} bursts completed, "
                f"{self.n_reads} reads and {self.n_writes} writes outstanding (max "
                f"{self.max_reads_seen} / {self.max_writes_seen})")


# ---------------------------------------------------------------------------- cocotb samplers
def _reader(handle):
    return handle._handle.get_signal_val_binstr


class SignalSampler:
    """Feeds a core from the pins ``<prefix><channel><field>`` / ``<prefix><channel>valid`` /
    ``ready`` of any bus, once per clock: at the falling edge (``edge="falling"``, every signal
    stable) or in the read-only phase after the rising edge (``edge="readonly"``, for benches
    whose own coroutines sample there). VALID and READY are read every clock, the payload only of
    a channel whose VALID is high; handles are looked up once and read as binary strings.
    ``cycle`` counts the clocks sampled (the handshake of a sample happens at the next rising
    edge)."""

    def __init__(self, dut, prefix, core, *, clk=None, edge="falling"):
        if edge not in ("falling", "readonly"):
            raise ValueError(f"edge must be 'falling' or 'readonly', not {edge!r}")
        self.core, self.clk, self.edge = core, clk if clk is not None else dut.clk, edge
        self.channels = []
        for name, fields in core.CHANNELS.items():
            self.channels.append((name, core.channels[name],
                                  _reader(getattr(dut, f"{prefix}{name}valid")),
                                  _reader(getattr(dut, f"{prefix}{name}ready")),
                                  [_reader(getattr(dut, f"{prefix}{name}{f}")) for f in fields]))
        self.cycle = 0

    async def run(self):
        from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
        if self.edge == "falling":
            fall = FallingEdge(self.clk)
            while True:
                await fall
                self.cycle += 1
                self.sample(self.cycle)
        rise, ro = RisingEdge(self.clk), ReadOnly()
        while True:
            await rise
            await ro
            self.cycle += 1
            self.sample(self.cycle)

    def sample(self, cycle):
        step = self.core.step
        for name, channel, valid, ready, payload in self.channels:
            if valid() == "1":
                step(cycle, name, True, ready() == "1", tuple(int(p(), 2) for p in payload))
            elif channel.held is not None:      # an idle channel has nothing to check
                step(cycle, name, False, False, None)


class PackedSampler:
    """Feeds a core from the packed copies of one bus on a testbench top (verif/soc_target.py).

    While the bus is idle it sleeps on a rising ``mon_<bus>_busy`` (any VALID); then, once per
    clock at the falling edge, it reads every VALID and READY at once from ``mon_<bus>_hs``
    ({valid, ready} per channel of ``handshakes``, the first in the top bits) and the payload
    (``mon_<bus>_<channel>``: the channel's pins packed, split here by the widths of the pins
    ``<bus>__<channel><field>``) only of channels whose VALID is high, until a clock with no VALID
    high. Handles are looked up once and read through the GPI handle as binary strings (a
    LogicArray per read would add to the ~4 µs a read costs). ``cycles`` counts the clocks
    sampled, ``wakeups`` the idle-to-busy transitions; a sample's cycle is the index of the rising
    edge at which its handshakes happen (edge k at ``first_edge_ns + k * clock_ns``).
    ``widths`` ({signature member name: width}, e.g. ``verif.soc_target.signature_widths``) splits
    the payload instead of the pins, for a top that exposes only the packed copies.

    Sampling at the falling edge assumes every VALID, READY and payload bit is stable from the
    falling edge to the next rising edge: true of the chip's top (its own Verilog clock, the CSR
    outputs copied at the falling edge) and of a cocotb-clocked top such as the DMA bench's as
    long as Python writes at a falling edge change no READY or VALID of a channel whose VALID is
    high (Python's writes land after this sample, in the ReadWrite phase).
    """

    def __init__(self, dut, bus, core, *, clock_ns, first_edge_ns, handshakes=HANDSHAKES,
                 widths=None):
        self.core, self.clk = core, dut.clk
        self.clock_ns, self.first_edge_ns = clock_ns, first_edge_ns
        self.busy = getattr(dut, f"mon_{bus}_busy")
        self.handshakes = _reader(getattr(dut, f"mon_{bus}_hs"))
        self.channels = []
        for name, fields in core.CHANNELS.items():
            sizes = [len(getattr(dut, f"{bus}__{name}{f}")) if widths is None else widths[name + f]
                     for f in fields]
            spans = [(end - w, end) for w, end in zip(sizes, accumulate(sizes))]
            self.channels.append((name, core.channels[name], 2 * handshakes.index(name),
                                  _reader(getattr(dut, f"mon_{bus}_{name}")), spans))
        self.cycles = self.wakeups = 0

    async def run(self):
        from cocotb.simtime import get_sim_time
        from cocotb.triggers import FallingEdge, RisingEdge
        fall, wake = FallingEdge(self.clk), RisingEdge(self.busy)
        while True:
            await wake
            self.wakeups += 1
            await fall
            cycle = int(get_sim_time("ns") - self.first_edge_ns) // self.clock_ns + 1
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


class BusMonitor:
    """A sampler run as a cocotb task: the first :class:`ProtocolError` stops it and is kept;
    :meth:`check` raises it (call at the bench's checkpoints), :meth:`finish` also requires the
    bus quiet. ``core``: the checker (:attr:`core`), e.g.
    ``BusMonitor(SignalSampler(dut, "ext__", Axi4Checker(data_bytes=8, max_reads=4)))``."""

    def __init__(self, sampler):
        import cocotb
        self.sampler, self.core = sampler, sampler.core
        self.error = None
        self.task = cocotb.start_soon(self._run())

    async def _run(self):
        try:
            await self.sampler.run()
        except ProtocolError as e:
            self.error = e

    def check(self, what=""):
        if self.error is not None:
            raise ProtocolError(f"{what}: {self.error}" if what else str(self.error))

    def finish(self, what=""):
        self.check(what)
        try:
            self.core.finish()
        except ProtocolError as e:
            raise ProtocolError(f"{what}: {e}" if what else str(e)) from None

    def stop(self):
        self.task.cancel()
