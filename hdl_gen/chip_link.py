"""Chip-to-chip link: a credit-based beat stream between two Kaki chips, and the packets it carries.

Not yet wired into the chip (docs/cluster_link.md: what the SoC and the DMA will need).

Link layer (:class:`ChipLink` = :class:`LinkSender` → :class:`LinkWire` → :class:`LinkReceiver`)
--------------------------------------------------------------------------------------------------
A beat is ``nbytes`` bytes of ``data`` plus a ``first`` bit (the first beat of a packet). The
sender holds one credit per slot of the receiver's buffer (``depth`` slots) and sends a beat only
with a credit, so the buffer can never overflow; the receiver returns a credit each time its
consumer takes a beat out of the buffer. Beats and credits both cross the wire in ``latency``
cycles. A credit spent in cycle ``t`` can be spent again in cycle ``t + round_trip`` with
``round_trip = 2 * latency + 1`` (wire, one cycle in the buffer, wire back; a credit arriving is
usable in the cycle it arrives), so with ``depth >= round_trip`` and a consumer that never stalls
the link carries one beat every cycle, and ``depth / round_trip`` beats per cycle otherwise.

Every beat carries an even parity bit per byte (``first`` counted in byte 0); the receiver flags a
beat whose parity does not match as ``corrupt`` (one flipped bit per byte is always caught) and
delivers it flagged, in its place: the packet layer drops what is left of its packet.

*Peer not answering.* While the sender has a beat (``tx.valid``) and no credit, it counts the
cycles; a returned credit or an empty input restarts the count. When the count reaches
``timeout`` (0: never) the sender fails: ``failed`` rises and stays high until ``retrain``,
and from then on every beat offered is accepted at once and discarded, so whatever feeds the
link (a DMA, :class:`LinkTx`) runs to its end and reports the error: the sender is never held
for more than ``timeout`` cycles at a stretch. ``retrain`` resets both ends and the wire (credits
back to ``depth``, buffer and wire empty, ``failed`` cleared); in a cluster both chips retrain
together.

*Fault injection* (:class:`LinkWire`): while ``fault_down`` is high nothing enters the wire in
either direction (beats and credits sent are lost: the peer stops answering); ``fault_flip`` is
XORed into the beat entering the wire (``data`` bits, then ``first`` at bit ``8 * nbytes``).

Packet layer (:class:`LinkTx` → link → :class:`LinkRx`)
------------------------------------------------------
A packet is a :class:`LinkHeader` of 96 bits in ``header_beats(nbytes)`` beats (little-endian,
the first with ``first`` set), then ``rows`` rows of payload, each row of memory ``mem`` in
``ceil(width / (8 * nbytes))`` beats (little-endian, the last beat zero-padded). :class:`LinkRx`
checks the header (:class:`LinkError` 1..7, the lowest failing code is reported), writes the rows
through a :class:`~hdl_gen.mem_port.WritePortSignature` port per memory (retrying while ``gnt`` is
low), and after the grant of the last row of a ``WRITE_SIGNAL`` packet pulses ``event``. A
malformed header, a corrupt beat or a broken framing is reported on ``error`` and everything up to
the next beat with ``first`` set is dropped unwritten.
"""
from amaranth import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.asserts import AnySeq
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .formal import Rules, Tracker, contract_for, implies, past, peekable
from .mem_port import WritePortSignature

__all__ = ["LinkKind", "LinkError", "LinkHeader", "HEADER_BITS", "header_beats", "beat_layout",
           "rx_beat_layout", "LaneSignature", "LinkSender", "LinkWire", "LinkReceiver", "ChipLink",
           "EventSignalSignature", "LinkErrorSignature", "LinkTx", "LinkRx"]


class LinkKind(enum.Enum, shape=4):
    """What a packet asks of the receiving chip (:attr:`LinkHeader.kind`); other values are
    malformed (``BAD_KIND``)."""
    WRITE = 1           #: write ``rows`` rows of memory ``mem`` from row ``addr``
    WRITE_SIGNAL = 2    #: the same, then set event counter ``event`` to ``value`` after the last row is written


class LinkError(enum.Enum, shape=4):
    """Why :class:`LinkRx` dropped (part of) a packet, or why the link failed. A header failing
    several checks reports the lowest of codes 1..7."""
    NONE = 0
    BAD_KIND = 1        #: ``kind`` is neither WRITE nor WRITE_SIGNAL
    BAD_DEST = 2        #: ``dest`` is not the receiving chip's index
    BAD_MEM = 3         #: ``mem`` names no memory of the receiving chip
    ZERO_LENGTH = 4     #: ``rows`` is 0
    RANGE = 5           #: ``addr + rows`` exceeds the rows of memory ``mem``
    BAD_EVENT = 6       #: WRITE_SIGNAL with ``event`` outside the chip's event counters
    RESERVED = 7        #: a reserved header bit is set
    CORRUPT = 8         #: a beat failed the link's parity check: the rest of its packet is dropped
    FRAMING = 9         #: a packet cut short by the next packet's first beat, or a beat outside any packet
    TIMEOUT = 10        #: the peer returned no credit for ``timeout`` cycles while the sender had data (``ChipLink.failed``; not reported by LinkRx)


class LinkHeader(data.Struct):
    """The header of a link packet: the first 96 bits of the packet, in ``header_beats(nbytes)``
    beats. Rows ``addr`` .. ``addr + rows - 1`` of memory ``mem`` of chip ``dest`` are written
    with the ``rows`` payload rows that follow, in order."""
    kind: 4             #: LinkKind: 1 WRITE, 2 WRITE_SIGNAL
    dest: 4             #: destination chip index (the receiver's ``chip_id``)
    mem: 2              #: destination memory: 0 scratchpad, 1 accumulator (the order of LinkRx's ``mems``)
    reserved0: 6        #: must be 0
    rows: 16            #: rows in the payload, >= 1
    addr: 20            #: first row written in the destination memory
    event: 8            #: WRITE_SIGNAL: event counter set after the last row (ignored by WRITE)
    reserved1: 4        #: must be 0
    value: 32           #: WRITE_SIGNAL: the value the event counter is set to (ignored by WRITE)


HEADER_BITS = data.Layout.cast(LinkHeader).size


def header_beats(nbytes):
    """Beats of a packet header on a link of ``nbytes`` bytes per beat."""
    return -(-HEADER_BITS // (8 * nbytes))


def row_beats(width, nbytes):
    """Beats of one payload row of ``width`` bits."""
    return -(-width // (8 * nbytes))


def beat_layout(nbytes):
    """What the sender offers: ``data`` (``8 * nbytes`` bits, little-endian) and ``first``."""
    return data.StructLayout({"data": 8 * nbytes, "first": 1})


def rx_beat_layout(nbytes):
    """What the receiver delivers: the beat and ``corrupt`` (its parity check failed)."""
    return data.StructLayout({"data": 8 * nbytes, "first": 1, "corrupt": 1})


def _check_int(name, value, lo, hi=None):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise ValueError(f"{name} must be in {lo}..{hi if hi is not None else ''}, not {value}")


def _parity(data_bits, first, nbytes):
    """Even parity per byte; ``first`` belongs to byte 0."""
    return Cat(*[data_bits[8 * i:8 * i + 8].xor() ^ (first if i == 0 else 0)
                 for i in range(nbytes)])


class LaneSignature(wiring.Signature):
    """The wires between a sender and a receiver, from the sender's side: ``valid``, ``data``
    (``8 * nbytes``), ``first``, ``check`` (``nbytes`` parity bits) Out; ``credit`` In (one
    credit returned this cycle)."""

    def __init__(self, nbytes):
        self.nbytes = nbytes
        super().__init__({"valid": Out(1), "data": Out(8 * nbytes), "first": Out(1),
                          "check": Out(nbytes), "credit": In(1)})


class LinkSender(wiring.Component):
    """The sending end: credits, parity, the peer timeout.

    Ports
    -----
    tx      : In(stream.Signature(beat_layout(nbytes))) — beats to send.
    lane    : Out(LaneSignature(nbytes)) — towards the wire.
    timeout : In(timeout_bits) — cycles without a credit while ``tx.valid`` (0: never fail).
    credits : Out(range(depth + 1)) — credits held (slots free at the receiver, as far as known).
    failed  : Out(1) — the peer timed out; beats are accepted and discarded until reset.
    """

    def __init__(self, nbytes, depth, timeout_bits=16):
        _check_int("nbytes", nbytes, 1, 64)
        _check_int("depth", depth, 2)
        _check_int("timeout_bits", timeout_bits, 1, 32)
        self.nbytes, self.depth, self.timeout_bits = nbytes, depth, timeout_bits
        #: consecutive cycles with a beat waiting and no credit (saturating)
        self.waited = Signal(timeout_bits, name="waited")
        super().__init__({
            "tx": In(stream.Signature(beat_layout(nbytes))),
            "lane": Out(LaneSignature(nbytes)),
            "timeout": In(timeout_bits),
            "credits": Out(range(depth + 1), init=depth),
            "failed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        tx, lane = self.tx, self.lane
        has_credit = Signal()
        send = Signal()
        stall = Signal()
        m.d.comb += [
            has_credit.eq((self.credits != 0) | lane.credit),
            tx.ready.eq(self.failed | has_credit),
            send.eq(tx.valid & has_credit & ~self.failed),
            stall.eq(tx.valid & ~tx.ready),
            lane.valid.eq(send),
            lane.data.eq(tx.payload.data),
            lane.first.eq(tx.payload.first),
            lane.check.eq(_parity(tx.payload.data, tx.payload.first, self.nbytes)),
        ]
        m.d.sync += self.credits.eq(self.credits + lane.credit - send)
        top = 2 ** self.timeout_bits - 1
        with m.If(stall):
            m.d.sync += self.waited.eq(Mux(self.waited == top, top, self.waited + 1))
            with m.If((self.timeout != 0) & (self.waited + 1 >= self.timeout)):
                m.d.sync += self.failed.eq(1)
        with m.Else():
            m.d.sync += self.waited.eq(0)
        return m


class LinkWire(wiring.Component):
    """The wire between two chips: ``latency`` register stages each way, with fault injection.

    Ports
    -----
    a          : In(LaneSignature(nbytes)) — the sender's lane.
    b          : Out(LaneSignature(nbytes)) — the receiver's lane: what entered ``a``,
                 ``latency`` cycles later; ``a.credit`` is ``b.credit`` ``latency`` cycles later.
    fault_down : In(1) — nothing enters the wire this cycle, either way (lost).
    fault_flip : In(8 * nbytes + 1) — XORed into the entering beat's ``data`` and ``first``.
    """

    def __init__(self, latency, nbytes):
        _check_int("latency", latency, 1)
        _check_int("nbytes", nbytes, 1, 64)
        self.latency, self.nbytes = latency, nbytes
        w = 8 * nbytes
        #: forward stages (stage latency - 1 is the oldest, on ``b``) and credit stages
        self.fv = [Signal(name=f"fwd{k}_valid") for k in range(latency)]
        self.fd = [Signal(w, name=f"fwd{k}_data", reset_less=True) for k in range(latency)]
        self.ff = [Signal(name=f"fwd{k}_first", reset_less=True) for k in range(latency)]
        self.fc = [Signal(nbytes, name=f"fwd{k}_check", reset_less=True) for k in range(latency)]
        self.cv = [Signal(name=f"back{k}_credit") for k in range(latency)]
        super().__init__({
            "a": In(LaneSignature(nbytes)),
            "b": Out(LaneSignature(nbytes)),
            "fault_down": In(1),
            "fault_flip": In(8 * nbytes + 1),
        })

    def elaborate(self, platform):
        m = Module()
        a, b, w, up = self.a, self.b, 8 * self.nbytes, ~self.fault_down
        m.d.sync += [self.fv[0].eq(a.valid & up), self.fd[0].eq(a.data ^ self.fault_flip[:w]),
                     self.ff[0].eq(a.first ^ self.fault_flip[w]), self.fc[0].eq(a.check),
                     self.cv[0].eq(b.credit & up)]
        for k in range(1, self.latency):
            m.d.sync += [self.fv[k].eq(self.fv[k - 1]), self.fd[k].eq(self.fd[k - 1]),
                         self.ff[k].eq(self.ff[k - 1]), self.fc[k].eq(self.fc[k - 1]),
                         self.cv[k].eq(self.cv[k - 1])]
        m.d.comb += [b.valid.eq(self.fv[-1]), b.data.eq(self.fd[-1]), b.first.eq(self.ff[-1]),
                     b.check.eq(self.fc[-1]), a.credit.eq(self.cv[-1])]
        return m


class LinkReceiver(wiring.Component):
    """The receiving end: the ``depth``-beat buffer, the parity check, credit return.

    Ports
    -----
    lane : In(LaneSignature(nbytes)) — from the wire; ``lane.credit`` pulses when a beat leaves
           the buffer.
    rx   : Out(stream.Signature(rx_beat_layout(nbytes))) — the buffered beats, in order, each
           with ``corrupt`` set when its parity did not match.

    ``peek``: the buffer's entries visible to a contract (formal builds only).
    """

    def __init__(self, nbytes, depth, *, peek=False):
        _check_int("nbytes", nbytes, 1, 64)
        _check_int("depth", depth, 2)      # a 1-entry lib.fifo has zero-width pointers
        self.nbytes, self.depth = nbytes, depth
        width = data.Layout.cast(rx_beat_layout(nbytes)).size
        #: the buffer (an entry is an rx beat: data, first, corrupt)
        self.fifo = (peekable(fifo.SyncFIFO) if peek else fifo.SyncFIFO)(width=width, depth=depth)
        super().__init__({
            "lane": In(LaneSignature(nbytes)),
            "rx": Out(stream.Signature(rx_beat_layout(nbytes))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = q = self.fifo
        lane, rx = self.lane, self.rx
        bad = Signal()
        m.d.comb += [
            bad.eq((_parity(lane.data, lane.first, self.nbytes) ^ lane.check).any()),
            q.w_en.eq(lane.valid),
            q.w_data.eq(Cat(lane.data, lane.first, bad)),
            rx.valid.eq(q.r_rdy),
            rx.payload.eq(q.r_data),
            q.r_en.eq(rx.ready),
            lane.credit.eq(rx.valid & rx.ready),
        ]
        return m


class ChipLink(wiring.Component):
    """A whole link, sender to receiver: :class:`LinkSender`, :class:`LinkWire` and
    :class:`LinkReceiver` (module docstring: protocol, timeout, faults). In a cluster the sender
    sits in one chip, the receiver in the next and the wire between them; this block is the
    three together, as the block tests and the proofs use it.

    Parameters: ``latency`` (cycles each way, >= 1), ``nbytes`` (bytes per beat, the link
    width), ``depth`` (the receiver's buffer in beats: the sender's credits, >= 2),
    ``timeout_bits``.

    Ports
    -----
    tx         : In(stream.Signature(beat_layout(nbytes))) — beats into the link.
    rx         : Out(stream.Signature(rx_beat_layout(nbytes))) — beats out of it, in order, with
                 ``corrupt``; ``rx.ready`` low is the consumer's backpressure.
    timeout    : In(timeout_bits) — the peer timeout in cycles (0: off).
    retrain    : In(1) — reset both ends and the wire.
    fault_down : In(1) — the wire drops what enters it this cycle, both ways.
    fault_flip : In(8 * nbytes + 1) — bits flipped in the beat entering the wire.
    credits    : Out(range(depth + 1)) — the sender's credits.
    failed     : Out(1) — sticky until ``retrain``: the peer timed out (error ``TIMEOUT``); beats
                 offered are discarded.
    """

    def __init__(self, latency=2, nbytes=8, depth=5, timeout_bits=16):
        _check_int("latency", latency, 1)
        _check_int("nbytes", nbytes, 1, 64)
        _check_int("depth", depth, 2)
        _check_int("timeout_bits", timeout_bits, 1, 32)
        self.latency, self.nbytes, self.depth = latency, nbytes, depth
        self.timeout_bits = timeout_bits
        #: cycles from spending a credit to spending it again (no consumer stall)
        self.round_trip = 2 * latency + 1
        super().__init__({
            "tx": In(stream.Signature(beat_layout(nbytes))),
            "rx": Out(stream.Signature(rx_beat_layout(nbytes))),
            "timeout": In(timeout_bits),
            "retrain": In(1),
            "fault_down": In(1),
            "fault_flip": In(8 * nbytes + 1),
            "credits": Out(range(depth + 1)),
            "failed": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.sender = snd = LinkSender(self.nbytes, self.depth, self.timeout_bits)
        m.submodules.wire = wire = LinkWire(self.latency, self.nbytes)
        m.submodules.receiver = rcv = LinkReceiver(self.nbytes, self.depth,
                                                   peek=contract_for(platform, self))
        wiring.connect(m, wiring.flipped(self.tx), snd.tx)
        wiring.connect(m, snd.lane, wire.a)
        wiring.connect(m, wire.b, rcv.lane)
        wiring.connect(m, rcv.rx, wiring.flipped(self.rx))
        m.d.comb += [snd.timeout.eq(self.timeout), wire.fault_down.eq(self.fault_down),
                     wire.fault_flip.eq(self.fault_flip), self.credits.eq(snd.credits),
                     self.failed.eq(snd.failed)]
        if contract_for(platform, self):
            self._formal_contract(m, platform, snd, wire, rcv)
        return ResetInserter({"sync": self.retrain})(m)

    def _formal_contract(self, m, platform, snd, wire, rcv):
        """The link's contract (docs/formal.md), with any faults: beats lost while the wire is
        down, at most one bit flipped per beat (``flip.single``, relied on: the parity catches
        one flipped bit per byte).

        * ``credit.spend``: a beat is sent only with a credit (held, or arriving this cycle):
          credits never go negative; ``credit.conserve``: credits + beats on the wire + beats
          in the buffer + credits on the way back + what the wire lost = ``depth``, so credits
          never exceed ``depth``; ``credit.range``.
        * ``buffer.no_overflow``: a beat reaching the receiver always finds a free slot.
        * ``link.order``: every beat that entered the wire leaves the receiver once, after
          exactly the beats that entered before it, with its data and ``first``, flagged
          ``corrupt`` exactly when a bit of it was flipped (one beat followed, chosen freely:
          so every beat); ``link.place``: where it is (buffer slot or wire stage, an invariant
          for the induction).
        * ``timeout.bound``: with a constant ``timeout`` != 0 (relied on), the sender never
          waits more than ``timeout`` consecutive cycles with a beat offered;
          ``timeout.early``: it fails only after exactly ``timeout`` such cycles; and once
          failed it accepts every beat and sends none (``timeout.discard``).
        """
        rules = Rules(m, platform, "link")
        depth, w = self.depth, 8 * self.nbytes
        down, flip, tx, rx, q = self.fault_down, self.fault_flip, self.tx, self.rx, rcv.fifo
        rules.rely("flip.single", (flip & (flip - 1)) == 0)
        started = past(m, Const(1), "formal_started")
        rules.rely("timeout.stable", implies(started, self.timeout == past(m, self.timeout,
                                                                             "formal_timeout")))
        # ---- credits
        lost = Signal(range(depth + 1), name="formal_lost")
        m.d.sync += lost.eq(lost + (snd.lane.valid & down) + (rcv.lane.credit & down))
        on_wire = sum(wire.fv)
        returning = sum(wire.cv)
        rules.guarantee("credit.spend", implies(snd.lane.valid,
                                                (snd.credits != 0) | snd.lane.credit))
        rules.guarantee("credit.range", snd.credits <= depth)
        rules.guarantee("credit.conserve",
                        snd.credits + on_wire + q.level + returning + lost == depth)
        rules.guarantee("buffer.no_overflow", implies(rcv.lane.valid, q.w_rdy))
        rules.cover("buffer.full", q.level == depth)
        rules.cover("credit.none", tx.valid & (snd.credits == 0))
        rules.cover("credit.lost", lost != 0)

        # ---- order, exactly once, data, corrupt flag
        enter = snd.lane.valid & ~down
        arriving = Cat(snd.lane.data ^ flip[:w], snd.lane.first ^ flip[w], flip.any())
        tr = Tracker(m, "formal_beat", w + 2, depth)
        tr.follow(rules, "link", enter=enter, enter_data=arriving, inside=on_wire + q.level,
                  leave=rx.valid & rx.ready, leave_data=rx.payload.as_value(), pick=AnySeq(1))
        rules.guarantee("link.place", implies(tr.armed & (tr.ahead < q.level),
                                              Array(q.entries)[tr.ahead] == tr.data))
        older = 0
        for k in reversed(range(self.latency)):
            bad = (_parity(wire.fd[k], wire.ff[k], self.nbytes) ^ wire.fc[k]).any()
            here = tr.armed & wire.fv[k] & (tr.ahead == q.level + older)
            rules.guarantee("link.place", implies(here, Cat(wire.fd[k], wire.ff[k], bad)
                                                  == tr.data))
            older = older + wire.fv[k]
        rules.cover("link.corrupt", rx.valid & rx.ready & rx.payload.corrupt)

        # ---- timeout
        top = 2 ** self.timeout_bits - 1
        stall = tx.valid & ~tx.ready
        run = Signal(self.timeout_bits, name="formal_stall")
        m.d.sync += run.eq(Mux(stall, Mux(run == top, top, run + 1), 0))
        rules.guarantee("timeout.count", implies(~snd.failed, snd.waited == run))
        on = self.timeout != 0
        rules.guarantee("timeout.bound", implies(on, run <= self.timeout))
        rose = snd.failed & ~past(m, snd.failed, "formal_failed")
        rules.guarantee("timeout.early", implies(rose, on & (run == self.timeout)))
        rules.guarantee("timeout.discard", implies(snd.failed, tx.ready & ~snd.lane.valid))
        rules.cover("timeout.fired", rose)


# ------------------------------------------------------------------------------------------------
# Packets

class EventSignalSignature(wiring.Signature):
    """An event signal: ``valid`` pulses for one cycle; event counter ``index`` := ``value``."""

    def __init__(self):
        super().__init__({"valid": Out(1), "index": Out(8), "value": Out(32)})


class LinkErrorSignature(wiring.Signature):
    """An error report: ``valid`` pulses for one cycle with the cause ``code`` (:class:`LinkError`)."""

    def __init__(self):
        super().__init__({"valid": Out(1), "code": Out(LinkError)})


def _mem_widths(mem_widths):
    widths = tuple(mem_widths)
    if not 1 <= len(widths) <= 4:
        raise ValueError(f"need 1 to 4 memories (LinkHeader.mem is 2 bits), not {len(widths)}")
    for wd in widths:
        _check_int("memory width", wd, 1)
    return widths


class LinkTx(wiring.Component):
    """Packet sender: turns a header and its rows into link beats.

    Parameters: ``nbytes`` (the link's beat), ``mem_widths`` (row bits of memory 0, 1, ...: the
    receiving chip's scratchpad and accumulator rows). A header naming no memory (``mem`` out of
    range) is sent with rows of memory 0's width: it is the receiver that refuses it.

    Ports
    -----
    cmd  : In(stream.Signature(LinkHeader)) — one packet per header, sent as given.
    rows : In(stream.Signature(max(mem_widths))) — the payload rows, ``cmd.rows`` per packet
           (row bits beyond the memory's width are not sent).
    link : Out(stream.Signature(beat_layout(nbytes))) — towards :attr:`ChipLink.tx`.
    busy : Out(1) — a packet is being sent.

    A header is taken in the cycle the previous packet's last beat leaves, so back-to-back packets
    leave without a gap; a row passes through to the link beat by beat, without a copy.
    """

    def __init__(self, nbytes, mem_widths):
        _check_int("nbytes", nbytes, 1, 64)
        self.nbytes, self.mem_widths = nbytes, _mem_widths(mem_widths)
        self.max_width = max(self.mem_widths)
        self.hbeats = header_beats(nbytes)
        self.bprs = [row_beats(wd, nbytes) for wd in self.mem_widths]
        super().__init__({
            "cmd": In(stream.Signature(LinkHeader)),
            "rows": In(stream.Signature(self.max_width)),
            "link": Out(stream.Signature(beat_layout(nbytes))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W, hb = 8 * self.nbytes, self.hbeats
        cmd, rows, link = self.cmd, self.rows, self.link
        hdr = Signal(hb * W, name="hdr")
        in_header = Signal(name="in_header")
        in_payload = Signal(name="in_payload")
        beat = Signal(range(max(2, hb, *self.bprs)), name="beat")
        rows_left = Signal(16, name="rows_left")
        bpr = Signal(range(max(self.bprs) + 1), name="bpr")
        row = Signal(max(self.bprs) * W, name="row")
        # per memory index (an index naming no memory: memory 0), beats per row and row bits
        table = [*range(len(self.mem_widths)), *[0] * (4 - len(self.mem_widths))]
        bpr_of = Array(Const(self.bprs[i], bpr.shape()) for i in table)
        mask_of = Array(Const(2 ** self.mem_widths[i] - 1, self.max_width) for i in table)
        mask = Signal(self.max_width, name="mask")
        m.d.comb += [row.eq(rows.payload & mask), self.busy.eq(in_header | in_payload)]
        take = link.valid & link.ready
        ending = Signal(name="ending")
        with m.If(in_header):
            m.d.comb += [link.valid.eq(1), link.payload.data.eq(hdr.word_select(beat, W)),
                         link.payload.first.eq(beat == 0)]
            with m.If(take):
                m.d.sync += beat.eq(Mux(beat == hb - 1, 0, beat + 1))
                with m.If(beat == hb - 1):
                    m.d.sync += [in_header.eq(0), in_payload.eq(rows_left != 0)]
                    m.d.comb += ending.eq(rows_left == 0)
        with m.Elif(in_payload):
            last = beat == bpr - 1
            m.d.comb += [link.valid.eq(rows.valid), link.payload.data.eq(row.word_select(beat, W)),
                         rows.ready.eq(link.ready & last)]
            with m.If(take):
                m.d.sync += beat.eq(Mux(last, 0, beat + 1))
                with m.If(last):
                    m.d.sync += rows_left.eq(rows_left - 1)
                    with m.If(rows_left == 1):
                        m.d.sync += in_payload.eq(0)
                        m.d.comb += ending.eq(1)
        m.d.comb += cmd.ready.eq(~self.busy | ending)
        with m.If(cmd.valid & cmd.ready):
            h = cmd.payload
            m.d.sync += [hdr.eq(h.as_value()), rows_left.eq(h.rows), beat.eq(0),
                         in_header.eq(1), in_payload.eq(0), bpr.eq(bpr_of[h.mem]),
                         mask.eq(mask_of[h.mem])]
        return m


class LinkRx(wiring.Component):
    """Packet receiver: checks headers, writes the rows, signals events, reports errors.

    Parameters: ``nbytes`` (the link's beat), ``mems`` (``(rows, width)`` of memory 0, 1, ...: the
    chip's scratchpad and accumulator), ``events`` (the chip's event counters).

    Ports
    -----
    link    : In(stream.Signature(rx_beat_layout(nbytes))) — from :attr:`ChipLink.rx`.
    chip_id : In(4) — this chip's index (headers for another ``dest`` are refused).
    wr<i>   : Out(WritePortSignature(addr_bits(rows_i), width_i)) — row writes into memory ``i``;
              a write is held (``en``, ``addr``, ``data`` stable) until ``gnt``.
    event   : Out(EventSignalSignature()) — pulses in the cycle after the grant of the last row
              of a WRITE_SIGNAL packet.
    error   : Out(LinkErrorSignature()) — pulses in the cycle after the beat that showed the
              error: a malformed header (at its last beat), ``CORRUPT`` (any beat flagged),
              ``FRAMING``.

    Framing: a beat with ``first`` starts a header. Within a header or a payload, such a beat
    means the packet was cut short: ``FRAMING`` is reported, the beat is held for one cycle and
    then starts the new header (rows of the cut packet written before stay written, its event is
    not signalled). A beat without ``first`` outside a packet is reported ``FRAMING`` and dropped
    with every beat up to the next ``first``; so are the rest of a packet after a ``CORRUPT`` beat
    (the corrupt beat itself included, whatever its ``first``) and the payload of a malformed
    header: nothing of them is written. One beat a cycle is taken, so at most one error a cycle.
    """

    def __init__(self, nbytes, mems, events=16):
        _check_int("nbytes", nbytes, 1, 64)
        _check_int("events", events, 1, 256)
        self.nbytes = nbytes
        self.mems = tuple((int(r), int(wd)) for r, wd in mems)
        _mem_widths([wd for _, wd in self.mems])
        for r, _ in self.mems:
            _check_int("memory rows", r, 1, 2 ** 20)
        self.events = events
        self.hbeats = header_beats(nbytes)
        self.bprs = [row_beats(wd, nbytes) for _, wd in self.mems]
        self.addr_bits = [max(1, (r - 1).bit_length()) for r, _ in self.mems]
        members = {"link": In(stream.Signature(rx_beat_layout(nbytes))), "chip_id": In(4)}
        for i, ((_, wd), ab) in enumerate(zip(self.mems, self.addr_bits)):
            members[f"wr{i}"] = Out(WritePortSignature(ab, wd))
        members["event"] = Out(EventSignalSignature())
        members["error"] = Out(LinkErrorSignature())
        super().__init__(members)

    @property
    def wr(self):
        return [getattr(self, f"wr{i}") for i in range(len(self.mems))]

    def check(self, h, chip_id):
        """The :class:`LinkError` of header view ``h`` (0 when well formed): the lowest failing
        check."""
        n = len(self.mems)
        mem_rows = Array(Const(r, 21) for r, _ in self.mems)[h.mem[:max(1, (n - 1).bit_length())]]
        tests = [
            (LinkError.BAD_KIND, (h.kind != LinkKind.WRITE.value) & (h.kind != LinkKind.WRITE_SIGNAL.value)),
            (LinkError.BAD_DEST, h.dest != chip_id),
            (LinkError.BAD_MEM, h.mem >= n),
            (LinkError.ZERO_LENGTH, h.rows == 0),
            (LinkError.RANGE, h.addr + h.rows > mem_rows),
            (LinkError.BAD_EVENT, (h.kind == LinkKind.WRITE_SIGNAL.value) & (h.event >= self.events)),
            (LinkError.RESERVED, (h.reserved0 != 0) | (h.reserved1 != 0)),
        ]
        code = Const(LinkError.NONE.value, 4)
        for err, bad in reversed(tests):
            code = Mux(bad, err.value, code)
        return code

    def elaborate(self, platform):
        m = Module()
        W, hb, n = 8 * self.nbytes, self.hbeats, len(self.mems)
        link, beat = self.link, self.link.payload
        max_bpr = max(self.bprs)
        mem_bits = max(1, (n - 1).bit_length())

        # state: HEADER (hbeat: beats of the header so far), PAYLOAD, DROP
        HEADER, PAYLOAD, DROP = 0, 1, 2
        state = Signal(2, name="state")
        hbuf = Signal(hb * W, name="hbuf")
        hbeat = Signal(range(max(2, hb)), name="hbeat")
        # the packet being received
        mem = Signal(mem_bits, name="mem")
        addr = Signal(20, name="addr")
        rows_left = Signal(16, name="rows_left")
        signal = Signal(name="signal")
        ev_index = Signal(8, name="ev_index")
        ev_value = Signal(32, name="ev_value")
        bpr = Signal(range(max_bpr + 1), name="bpr")
        rbeat = Signal(range(max(2, max_bpr)), name="rbeat")
        row_buf = Signal(max_bpr * W, name="row_buf")
        # the row waiting for its write grant
        wp_valid = Signal(name="wp_valid")
        wp_mem = Signal(mem_bits, name="wp_mem")
        wp_addr = Signal(20, name="wp_addr")
        wp_data = Signal(max_bpr * W, name="wp_data")
        wp_signal = Signal(name="wp_signal")
        wp_index = Signal(8, name="wp_index")
        wp_value = Signal(32, name="wp_value")

        # ---- the write port of the pending row
        granted = Signal(name="granted")
        for i, (p, ab, (_, wd)) in enumerate(zip(self.wr, self.addr_bits, self.mems)):
            m.d.comb += [p.en.eq(wp_valid & (wp_mem == i)), p.addr.eq(wp_addr[:ab]),
                         p.data.eq(wp_data[:wd])]
        m.d.comb += granted.eq(Cat(*[p.en & p.gnt for p in self.wr]).any())
        with m.If(granted):
            m.d.sync += wp_valid.eq(0)
        m.d.sync += [self.event.valid.eq(granted & wp_signal), self.event.index.eq(wp_index),
                     self.event.value.eq(wp_value)]

        # ---- the beat on the link
        hdr_now = Signal(hb * W, name="hdr_now")
        m.d.comb += hdr_now.eq(Cat(*[Mux(hbeat == k, beat.data, hbuf[k * W:(k + 1) * W])
                                     for k in range(hb)]))
        h = data.View(LinkHeader, hdr_now[:HEADER_BITS])
        code = Signal(4, name="hdr_code")
        m.d.comb += code.eq(self.check(h, self.chip_id))
        row_now = Signal(max_bpr * W, name="row_now")
        m.d.comb += row_now.eq(Cat(*[Mux(rbeat == k, beat.data, row_buf[k * W:(k + 1) * W])
                                     for k in range(max_bpr)]))

        err = Signal(4, name="err")         # the error this beat shows (comb)
        ready = Signal(name="ready")
        m.d.comb += link.ready.eq(ready)
        m.d.sync += [self.error.valid.eq(err != 0), self.error.code.as_value().eq(err)]

        def header_beat():
            """Take ``beat`` as header beat ``hbeat``; check the header at its last beat."""
            with m.If(hbeat == hb - 1):
                m.d.sync += hbeat.eq(0)
                with m.If(code != 0):
                    m.d.comb += err.eq(code)
                    m.d.sync += state.eq(DROP)
                with m.Else():
                    m.d.sync += [state.eq(PAYLOAD), mem.eq(h.mem[:mem_bits]), addr.eq(h.addr),
                                 rows_left.eq(h.rows),
                                 signal.eq(h.kind == LinkKind.WRITE_SIGNAL.value),
                                 ev_index.eq(h.event), ev_value.eq(h.value), rbeat.eq(0),
                                 bpr.eq(Array(Const(b, bpr.shape()) for b in self.bprs)[
                                     h.mem[:mem_bits]])]
            with m.Else():
                m.d.sync += [hbuf.eq(hdr_now), hbeat.eq(hbeat + 1), state.eq(HEADER)]

        row_done = Signal(name="row_done")
        m.d.comb += row_done.eq(rbeat == bpr - 1)
        wfree = ~wp_valid | granted
        # the default: take the beat
        m.d.comb += ready.eq(1)
        with m.If(link.valid):
            with m.If(beat.corrupt):
                m.d.comb += err.eq(LinkError.CORRUPT.value)
                m.d.sync += [state.eq(DROP), hbeat.eq(0)]
            with m.Elif(state == DROP):
                with m.If(beat.first):      # hbeat is 0 in DROP
                    header_beat()
            with m.Elif(state == HEADER):
                with m.If(beat.first == (hbeat == 0)):
                    header_beat()
                with m.Elif(beat.first):        # a new packet cut this header short: hold it
                    m.d.comb += [err.eq(LinkError.FRAMING.value), ready.eq(0)]
                    m.d.sync += hbeat.eq(0)
                with m.Else():                  # a beat outside any packet
                    m.d.comb += err.eq(LinkError.FRAMING.value)
                    m.d.sync += state.eq(DROP)
            with m.Else():                      # PAYLOAD
                with m.If(beat.first):          # a new packet cut this one short: hold it
                    m.d.comb += [err.eq(LinkError.FRAMING.value), ready.eq(0)]
                    m.d.sync += [state.eq(HEADER), hbeat.eq(0)]
                with m.Elif(~row_done):
                    m.d.sync += [row_buf.eq(row_now), rbeat.eq(rbeat + 1)]
                with m.Elif(wfree):
                    m.d.sync += [wp_valid.eq(1), wp_mem.eq(mem), wp_addr.eq(addr),
                                 wp_data.eq(row_now), wp_signal.eq(signal & (rows_left == 1)),
                                 wp_index.eq(ev_index), wp_value.eq(ev_value),
                                 addr.eq(addr + 1), rows_left.eq(rows_left - 1), rbeat.eq(0)]
                    with m.If(rows_left == 1):
                        m.d.sync += [state.eq(HEADER), hbeat.eq(0)]
                with m.Else():                  # the previous row still waits for its grant
                    m.d.comb += ready.eq(0)
        if contract_for(platform, self):
            rules = Rules(m, platform, "link_rx")
            rules.guarantee("rx.state", state <= DROP)
            self._formal_contract(m, rules, in_payload=state == PAYLOAD, mem=mem, addr=addr,
                                  rows_left=rows_left, wp_valid=wp_valid, wp_mem=wp_mem,
                                  wp_addr=wp_addr, granted=granted, signal=signal,
                                  ev_index=ev_index, wp_signal=wp_signal, wp_index=wp_index,
                                  h=h)
        return m

    def _formal_contract(self, m, rules, *, in_payload, mem, addr, rows_left, wp_valid,
                         wp_mem, wp_addr, granted, signal, ev_index, wp_signal, wp_index, h):
        """The receiver's contract (docs/formal.md), for any beats (a stream: valid held with its
        payload until ready), any grants and a fixed ``chip_id``:

        * ``rx.accept``: a payload is taken only after a well-formed header (stated here apart
          from :meth:`check`: kind, dest, memory, length, range, event, reserved bits), for the
          memory, rows and first row that header names: no row of a malformed packet is written;
        * ``wr.range``: a write never leaves its memory; ``rx.inside``: the pending row and the
          rest of the packet lie inside the packet's memory (the invariant that makes it
          inductive);
        * ``wr.hold``: a write request is held, address and data unchanged, until granted;
          ``wr.one``: one memory written at a time;
        * ``event.after_write``: an event pulses only in the cycle after a granted write, for an
          event counter the chip has (``BAD_EVENT`` checked); ``rx.event``: so do the pending
          row's and the packet's (invariant).
        """
        link, n = self.link, len(self.mems)
        waiting = past(m, link.valid & ~link.ready, "formal_link_waiting")
        held = past(m, link.payload.as_value(), "formal_link_held")
        rules.rely("link.hold", implies(waiting, link.valid & (link.payload.as_value() == held)))
        started = past(m, Const(1), "formal_started")
        rules.rely("chip_id.stable", implies(started, self.chip_id == past(m, self.chip_id,
                                                                           "formal_chip_id")))
        mem_rows = Array(Const(r, 21) for r, _ in self.mems)
        is_signal = h.kind == LinkKind.WRITE_SIGNAL.value
        h_rows = Mux(h.mem < n, mem_rows[h.mem], 0)
        well_formed = ((is_signal | (h.kind == LinkKind.WRITE.value)) & (h.dest == self.chip_id)
                       & (h.mem < n) & (h.rows > 0) & (h.addr + h.rows <= h_rows)
                       & (~is_signal | (h.event < self.events))
                       & (h.reserved0 == 0) & (h.reserved1 == 0))
        rose = in_payload & ~past(m, in_payload, "formal_in_payload")
        ok = past(m, well_formed, "formal_well_formed")
        for name, reg, field in (("mem", mem, h.mem), ("addr", addr, h.addr),
                                 ("rows", rows_left, h.rows), ("signal", signal, is_signal),
                                 ("event", ev_index, h.event)):
            was = past(m, field, f"formal_header_{name}")
            rules.guarantee("rx.accept", implies(rose, ok & (reg == was)))
        for i, (p, (rows, _)) in enumerate(zip(self.wr, self.mems)):
            rules.guarantee("wr.range", implies(p.en, p.addr < rows))
            was = past(m, p.en & ~p.gnt, f"formal_wr{i}_waiting")
            before = past(m, Cat(p.addr, p.data), f"formal_wr{i}_held")
            rules.guarantee("wr.hold", implies(was, p.en & (Cat(p.addr, p.data) == before)))
            rules.cover("wr.granted", p.en & p.gnt & past(m, p.en & ~p.gnt, f"formal_wr{i}_denied"))
        rules.guarantee("wr.one", sum(p.en for p in self.wr) <= 1)
        rules.guarantee("rx.inside", implies(wp_valid, (wp_mem < n)
                                             & (wp_addr < mem_rows[wp_mem])))
        rules.guarantee("rx.inside", implies(in_payload, (mem < n) & (rows_left != 0)
                                             & (addr + rows_left <= mem_rows[mem])))
        rules.guarantee("rx.event", implies(wp_valid & wp_signal, wp_index < self.events)
                        & implies(in_payload & signal, ev_index < self.events))
        rules.guarantee("event.after_write", implies(self.event.valid, past(m, granted,
                                                                            "formal_granted")
                                                     & (self.event.index < self.events)))
        rules.cover("event.signalled", self.event.valid)
        for err in (LinkError.RANGE, LinkError.FRAMING, LinkError.CORRUPT):
            rules.cover(f"error.{err.name.lower()}", self.error.valid
                        & (self.error.code.as_value() == err.value))
