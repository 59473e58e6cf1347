"""Bus guards: every wait on the host memory port ends, and an abandoned AXI4 transfer stays harmless.

A manager that must not hang on an unresponsive subordinate (a DMA channel, the queue
controller's descriptor fetcher and completion writer) reaches the port through a guard: an
:class:`AxiReadGuard` for AR/R or an :class:`AxiWriteGuard` for AW/W/B. The guard lives outside
the manager's reset domain, so a manager that is reset in the middle of a burst, or that gives up
after a timeout, leaves the port (and the AXI arbiter behind it) consistent:

* **Timeout.** ``timeout`` rises in the cycle after the manager has waited ``limit``
  consecutive cycles without progress (0 disables it), whatever that cycle brings. Waiting
  means: a request offered and not accepted (AR/AW, and W for writes), or a response owed by the
  bus (R beats of an accepted read; B of a write whose last W beat was sent). Progress means: an
  address or W handshake, or a response beat offered to the manager (a manager that itself holds
  ``rready``/``bready`` low is not waiting on the bus). The manager answers a timeout by
  abandoning (``abandon``), unless its transfer completes in that very cycle.
* **Abandon** (``abandon``, one cycle: a timeout taken or a reset of the manager): every transfer
  the manager has on the bus becomes an orphan. An address the manager was offering and the port
  had not accepted stays offered, unchanged, until accepted (AXI forbids withdrawing a VALID), from
  a register of the guard; so does a W beat being offered. The W beats still owed for every write
  burst whose address was (or will be) accepted are sent by the guard with ``wstrb`` = 0 (they write
  nothing) and ``wlast`` on the burst's last beat, so the subordinate and the arbiter's W order stay
  in step. Responses of orphans (R beats, B) are accepted and dropped: they never reach the manager.
* **IDs.** Transactions carry the manager's *current* ID; after an abandon the manager's next
  transaction waits until the guard has moved to an ID with no transaction outstanding (the
  current one once its orphans have been answered, else the next free one, one step per cycle).
  AXI orders responses only within an ID, so a late response of an orphan is recognised by its ID
  and can never be taken for the data of a newer transaction. A subordinate that never answers
  costs one ID for good; with every ID held by orphans the manager's requests wait, and time out.

Per-ID counts (transactions accepted and not yet answered) are bounded by ``max_out``: the guard
holds the manager's next request while its current ID has ``max_out`` outstanding. Orphans do not
count towards a manager's own limit, so the subordinate may see more than ``max_out`` transactions
of one manager after an abandon.

Ports (``up``: the manager's side, without IDs; ``down``: towards the port, with IDs):

* ``up``: ``In(Axi4ReadSignature(addr_bits, data_bits, 0))`` (or the write signature).
* ``down``: ``Out(Axi4ReadSignature(addr_bits, data_bits, id_bits))`` (or the write signature).
* ``abandon``: ``In(1)``; ``limit``: ``In(32)`` (BUS_TIMEOUT.CYCLES); ``timeout``: ``Out(1)``.

Address and W payloads the manager offers pass through combinationally (no added latency);
``down`` valids never depend on ``down`` readies.
"""
from amaranth import Array, Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from .axi import Axi4ReadSignature, Axi4WriteSignature
from .formal import Axi4Manager, Axi4Subordinate, Rules, contract_for, implies

__all__ = ["AxiReadGuard", "AxiWriteGuard"]


def _check_int(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, not {value}")


class _Guard(wiring.Component):
    """What both guards share: parameters, ID bookkeeping, the held address, the timer."""

    _signature = None        # Axi4ReadSignature or Axi4WriteSignature
    _ch = None               # "ar" or "aw"

    def __init__(self, addr_bits=32, data_bits=64, id_bits=3, max_out=4):
        _check_int("addr_bits", addr_bits, 12)
        _check_int("data_bits", data_bits, 8)
        _check_int("id_bits", id_bits, 1)
        _check_int("max_out", max_out, 1)
        self.id_bits, self.max_out = id_bits, max_out
        super().__init__({
            "up": In(self._signature(addr_bits, data_bits, 0)),
            "down": Out(self._signature(addr_bits, data_bits, id_bits)),
            "abandon": In(1), "limit": In(32), "timeout": Out(1),
        })

    def _ids(self, m, end, end_id, room=1):
        """Outstanding counts per ID, the current ID and the address channel with its hold
        register. ``end``/``end_id``: a transaction of that ID was answered this cycle. ``room``:
        the manager's request may pass (besides the guard's own conditions). Returns the signals
        ``(cur, dirty, live_out, hs, hs_id)``: the current ID, "it may have orphans", the
        transactions of the manager outstanding, the address handshake and its ID."""
        ch, up, down = self._ch, self.up, self.down
        n = 1 << self.id_bits
        cnt = Array(Signal(range(self.max_out + 1), name=f"{ch}_out{k}") for k in range(n))
        cur = Signal(self.id_bits, name=f"{ch}_cur")
        dirty = Signal(name=f"{ch}_dirty")          # cur may have orphans: find a free ID first
        hold_valid = Signal(name=f"{ch}_hold_valid")
        hold_id = Signal(self.id_bits, name=f"{ch}_hold_id")
        fields = [f for f in up.signature.members if f.startswith(ch) and f[2:] not in ("valid", "ready")]
        hold = {f: Signal.like(getattr(up, f), name=f"{ch}_hold_{f[2:]}") for f in fields}
        up_valid, up_ready = getattr(up, f"{ch}valid"), getattr(up, f"{ch}ready")
        down_valid, down_ready = getattr(down, f"{ch}valid"), getattr(down, f"{ch}ready")

        passing = Signal(name=f"{ch}_pass")         # the manager's request reaches the port
        hs = Signal(name=f"{ch}_hs")
        hs_id = Signal(self.id_bits, name=f"{ch}_hs_id")
        live_out = Signal(range(self.max_out + 1), name=f"{ch}_live_out")
        m.d.comb += [
            passing.eq(~hold_valid & ~dirty & (cnt[cur] != self.max_out) & room),
            down_valid.eq(hold_valid | (up_valid & passing)),
            up_ready.eq(down_ready & passing),
            hs_id.eq(Mux(hold_valid, hold_id, cur)),
            getattr(down, f"{ch}id").eq(hs_id),
            hs.eq(down_valid & down_ready),
            live_out.eq(Mux(dirty, 0, cnt[cur])),
        ]
        for f in fields:
            m.d.comb += getattr(down, f).eq(Mux(hold_valid, hold[f], getattr(up, f)))

        # An abandoned request the port has not taken stays offered, unchanged, until it is.
        with m.If(hs):
            m.d.sync += hold_valid.eq(0)
        with m.If(self.abandon & up_valid & passing & ~down_ready):
            m.d.sync += [hold_valid.eq(1), hold_id.eq(cur)]
            m.d.sync += [hold[f].eq(getattr(up, f)) for f in fields]

        for k in range(n):
            m.d.sync += cnt[k].eq(cnt[k] + (hs & (hs_id == k)) - (end & (end_id == k)))
        clean = (cnt[cur] == 0) & ~(hold_valid & (hold_id == cur))
        with m.If(self.abandon):
            m.d.sync += dirty.eq(1)
        with m.Elif(dirty):
            with m.If(clean):
                m.d.sync += dirty.eq(0)
            with m.Else():
                m.d.sync += cur.eq(cur + 1)
        return cur, dirty, live_out, hs, hs_id

    def _timer(self, m, waiting, progress):
        """``timeout`` once the manager has waited ``limit`` consecutive cycles without progress.
        It comes from registers only (the manager's valids depend on it)."""
        stalled = Signal(name=f"{self._ch}_stalled")
        timer = Signal(32, name=f"{self._ch}_timer")     # consecutive stalled cycles so far
        m.d.comb += [stalled.eq(waiting & ~progress),
                     self.timeout.eq((self.limit != 0) & (timer >= self.limit))]
        m.d.sync += timer.eq(Mux(stalled & ~self.abandon, timer + 1, 0))


    def _formal_contract(self, m, platform, **no_cover):
        """The guard's contract (docs/formal.md); returns the two rule sets and a :class:`Rules`.

        * ``down`` keeps the AXI4 manager rules: bursts as the manager offered them, at most
          ``max_out`` outstanding per ID (orphans included), VALID and payload held until READY
          across an abandon, W in AW order with WLAST on beat AWLEN.
        * ``up`` keeps the AXI4 subordinate rules towards the manager, restarted at every abandon
          (the rules run under ``ResetInserter(abandon)``): from the next cycle the manager has
          nothing outstanding and sees no response of an orphan; one response per request, in
          order, RLAST on the last beat.

        The environment: the manager keeps the AXI4 manager rules on ``up`` (also restarted at
        an abandon, so it may drop a VALID then) except the outstanding limit, which the guard
        enforces itself; the subordinate keeps them on ``down``; ``abandon`` and ``limit`` are
        free. The proof option ``max_len`` is the manager's longest burst.
        """
        n_ids = 1 << self.id_bits
        shape = dict(max_len=platform.options.get("max_len", 4), full_width=False, aligned=False,
                     w_addr=True)
        down = Axi4Manager(self.down, max_reads=n_ids * self.max_out, per_id=self.max_out,
                           max_writes=n_ids * self.max_out, name="down",
                           no_cover=("w.early",) + no_cover.get("down", ()), **shape)
        up = Axi4Subordinate(self.up, max_reads=self.max_out, max_writes=self.max_out,
                             limits=False, name="up", no_cover=("w.early",), **shape)
        m.submodules.formal_down = down
        m.submodules.formal_up = ResetInserter({"sync": self.abandon})(up)
        rules = Rules(m, platform, "guard")
        rules.cover("abandon", self.abandon & getattr(self.up, f"{self._ch}valid")
                    & ~getattr(self.up, f"{self._ch}ready"))
        rules.cover("timeout", self.timeout)
        return down, up, rules


class AxiReadGuard(_Guard):
    """AR/R guard of one manager (module docstring). ``max_out``: read bursts the manager keeps
    in flight at most."""

    _signature = Axi4ReadSignature
    _ch = "ar"

    def elaborate(self, platform):
        m = Module()
        up, down = self.up, self.down
        end = Signal(name="r_end")                  # the last beat of a burst was taken
        cur, dirty, live_out, hs, _ = self._ids(m, end, down.rid)
        live = Signal(name="r_live")                # the beat on R belongs to the manager
        m.d.comb += [
            live.eq(~dirty & (down.rid == cur)),
            up.rvalid.eq(down.rvalid & live), up.rdata.eq(down.rdata), up.rresp.eq(down.rresp),
            up.rlast.eq(down.rlast),
            down.rready.eq(Mux(live, up.rready, 1)),          # orphans' beats are dropped
            end.eq(down.rvalid & down.rready & down.rlast),
        ]
        self._timer(m, waiting=(up.arvalid & ~up.arready) | ((live_out != 0) & ~up.rvalid),
                    progress=hs | up.rvalid)
        if contract_for(platform, self):
            _, _, rules = self._formal_contract(m, platform)
            rules.cover("orphan", down.rvalid & down.rready & ~up.rvalid)
        return m


class AxiWriteGuard(_Guard):
    """AW/W/B guard of one manager (module docstring). ``max_out``: write bursts the manager has
    awaiting their B at most. W beats pass only for bursts whose AW the port accepted (neither
    Kaki manager sends W ahead of its AW); ``wlast`` is generated from AWLEN."""

    _signature = Axi4WriteSignature
    _ch = "aw"

    def elaborate(self, platform):
        m = Module()
        up, down = self.up, self.down
        b_end = Signal(name="b_end")
        # Bursts whose address was accepted and whose W beats are not all sent, in AW order
        # (orphans and the manager's own): AXI sends W in AW order.
        entry = data.StructLayout({"len": 8, "id": self.id_bits})
        m.submodules.w_order = wq = fifo.SyncFIFO(width=entry.size, depth=self.max_out + 1)
        cur, dirty, _, hs, hs_id = self._ids(m, b_end, down.bid, room=wq.w_rdy)
        m.d.comb += [wq.w_en.eq(hs), wq.w_data.eq(Cat(down.awlen, hs_id))]

        head = data.View(entry, wq.r_data)
        beat = Signal(8, name="w_beat")
        head_live = Signal(name="w_head_live")       # the head burst is the manager's to send
        w_hs = Signal(name="w_hs")
        hold_valid = Signal(name="w_hold_valid")     # a beat offered when the manager let go
        hold_data = Signal.like(up.wdata, name="w_hold_data")
        hold_strb = Signal.like(up.wstrb, name="w_hold_strb")
        m.d.comb += [
            head_live.eq(wq.r_rdy & ~dirty & (head.id == cur)),
            down.wlast.eq(beat == head.len),
            w_hs.eq(down.wvalid & down.wready),
            wq.r_en.eq(w_hs & down.wlast),
        ]
        with m.If(hold_valid):
            m.d.comb += [down.wvalid.eq(1), down.wdata.eq(hold_data), down.wstrb.eq(hold_strb)]
        with m.Elif(head_live):
            m.d.comb += [down.wvalid.eq(up.wvalid), down.wdata.eq(up.wdata),
                         down.wstrb.eq(up.wstrb), up.wready.eq(down.wready)]
        with m.Elif(wq.r_rdy):
            m.d.comb += down.wvalid.eq(1)            # an orphan's beat: no strobes, no data
        with m.If(w_hs):
            m.d.sync += [beat.eq(Mux(down.wlast, 0, beat + 1)), hold_valid.eq(0)]
        with m.If(self.abandon & head_live & up.wvalid & ~down.wready):
            m.d.sync += [hold_valid.eq(1), hold_data.eq(up.wdata), hold_strb.eq(up.wstrb)]

        live = Signal(name="b_live")
        m.d.comb += [
            live.eq(~dirty & (down.bid == cur)),
            up.bvalid.eq(down.bvalid & live), up.bresp.eq(down.bresp),
            down.bready.eq(Mux(live, up.bready, 1)),
            b_end.eq(down.bvalid & down.bready),
        ]
        # The manager's bursts whose last W beat was sent and whose B has not come.
        b_owed = Signal(range(self.max_out + 1), name="b_owed")
        with m.If(self.abandon):
            m.d.sync += b_owed.eq(0)
        with m.Else():
            m.d.sync += b_owed.eq(b_owed + (w_hs & down.wlast & head_live)
                                  - (up.bvalid & up.bready & (b_owed != 0)))
        self._timer(m, waiting=(up.awvalid & ~up.awready) | (up.wvalid & ~up.wready)
                    | ((b_owed != 0) & ~up.bvalid),
                    progress=hs | w_hs | up.bvalid)
        if contract_for(platform, self):
            self._formal_w_beats(m, platform)
        return m

    def _formal_w_beats(self, m, platform):
        """The write guard's contract: :meth:`_Guard._formal_contract`, and ``w.source``: a W beat
        that writes (any strobe set) is the manager's beat passed in this cycle or the beat it
        offered when it abandoned (sent once; a beat of a burst whose AW was accepted), with its
        data and strobes, for the same address (the beat's place in its burst): the guard writes only bytes the manager offered, where
        the manager offered them; the other beats of orphans write nothing."""
        up, down = self.up, self.down
        f_down, f_up, rules = self._formal_contract(m, platform)
        left = Signal(name="formal_left")            # the beat offered at the abandon is unsent
        left_beat = Signal(len(Cat(up.wdata, up.wstrb, f_up.w_addr)), name="formal_left_beat")
        beat = Cat(down.wdata, down.wstrb, f_down.w_addr)
        passed = f_up.w_hs & (Cat(up.wdata, up.wstrb, f_up.w_addr) == beat)
        sent = f_down.w_hs & ~f_up.w_hs
        with m.If(self.abandon & up.wvalid & ~up.wready & f_up.w_accepted & ~left):
            m.d.sync += [left.eq(1), left_beat.eq(Cat(up.wdata, up.wstrb, f_up.w_addr))]
        with m.Elif(sent):
            m.d.sync += left.eq(0)
        rules.guarantee("w.source", implies(f_up.w_hs, f_down.w_hs))
        rules.guarantee("w.source", implies(f_down.w_hs & down.wstrb.any(),
                                            passed | (sent & left & (beat == left_beat))))
        rules.cover("w.orphan", sent & ~left)
        rules.cover("w.left", sent & left)
