"""Formal contracts: the property sets Kaki's blocks attach to their ports for SymbiYosys proofs.

A block elaborates its contract only in a formal build, when ``platform`` is a
:class:`FormalPlatform` naming that block as the proof's target (:func:`contract_for`). ``make
rtl`` passes no platform, so no property reaches ``rtl/*.v``. A ``FormalPlatform`` also compares
equal to ``"formal"``, so Amaranth's own FIFOs add their pointer invariants (``lib/fifo.py``).

Every property has a rule name (``"ar.hold"``, ``"rows.host"``...) that is also its message, so a
failing proof names the rule (``tools/formal.py`` reads it back from the RTLIL).

**Roles.** A port's rules are written once per bus; which of them a block asserts depends on its
side of the port: what the block drives is *asserted* (the proof shows the block keeps the rule),
what its environment drives is *assumed* (the proof holds for every environment that keeps it).
The manager-side and subordinate-side sets (:class:`Axi4Manager` / :class:`Axi4Subordinate`,
:class:`Axi4LiteManager` / :class:`Axi4LiteSubordinate`) are the same rules with Assert and Assume
swapped, so what one block assumes at a port is what the block across the wire is proven to
guarantee (assume-guarantee composition, docs/formal.md).

**Reset.** Contract state sits in the block's ``sync`` domain, so the free ``rst`` input of a
proof resets block and contract together: the proofs cover a reset at any cycle, and the
environment is taken to be reset with the block (AXI's ARESETn is chip-wide).
"""
from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal, Value
from amaranth.hdl import Assert, Assume, Cover
from amaranth.lib import fifo as _fifo

from .axi import BURST_INCR, RESP_EXOKAY

__all__ = ["FormalPlatform", "contract_for", "Rules", "past", "implies",
           "Axi4Manager", "Axi4Subordinate", "Axi4LiteManager", "Axi4LiteSubordinate",
           "fifo_contract", "Tracker", "peekable", "fifo_for"]


class FormalPlatform(str):
    """The ``platform`` of a formal build.

    ``target``: the block whose contract is elaborated (its submodules' contracts stay out: an
    assumption on a signal another block drives would restrict that block instead of checking it).
    ``groups``: rule groups (or single rule names) whose assertions are kept (``None``: all);
    assumptions and covers are
    always kept, so a proof of one group runs in the same environment as the others.
    ``relax``: rule names whose assumptions are dropped (a deliberately broken contract).
    ``options``: proof-specific switches a contract may read (``platform.options.get(name)``).
    """

    def __new__(cls, target, *, groups=None, relax=(), options=None):
        self = super().__new__(cls, "formal")
        self.target = target
        self.groups = None if groups is None else frozenset(groups)
        self.relax = frozenset(relax)
        self.options = dict(options or {})
        return self


def contract_for(platform, block):
    """True in a formal build whose target is ``block``: elaborate ``block``'s contract."""
    return isinstance(platform, FormalPlatform) and platform.target is block


def implies(a, b):
    return ~a | b


def past(m, value, name, init=0):
    """``value`` one cycle ago (``init`` in the first cycle and after a reset)."""
    reg = Signal(Value.cast(value).shape(), name=name, init=init)
    m.d.sync += reg.eq(value)
    return reg


class Rules:
    """Where a contract puts its properties, with the platform's group filter and relaxations.

    ``check(name, by_block, test)`` asserts ``test`` when the block drives what it constrains,
    else assumes it; ``guarantee`` / ``rely`` are the two cases; ``cover`` adds a Cover.
    ``group`` is the rule group ``name`` belongs to (the platform's ``groups`` filter).
    """

    def __init__(self, m, platform, group, skip_covers=()):
        self.m, self.platform, self.group = m, platform, group
        self.skip_covers = frozenset(skip_covers)

    def _keep_assert(self, name, group):
        groups = getattr(self.platform, "groups", None)
        return groups is None or (group or self.group) in groups or name in groups

    # src_loc_at: the statement's source location is the contract line that called the rule
    def guarantee(self, name, test, group=None, *, _depth=0):
        if self._keep_assert(name, group):
            self.m.d.comb += Assert(test, name, src_loc_at=1 + _depth)

    def rely(self, name, test, *, _depth=0):
        if name not in getattr(self.platform, "relax", ()):
            self.m.d.comb += Assume(test, name, src_loc_at=1 + _depth)

    def check(self, name, by_block, test, group=None):
        if by_block:
            self.guarantee(name, test, group, _depth=1)
        else:
            self.rely(name, test, _depth=1)

    def cover(self, name, test):
        if name not in self.skip_covers:
            self.m.d.comb += Cover(test, name, src_loc_at=1)


class _Entry:
    def __init__(self, name, fields):
        self.valid = Signal(name=f"{name}_valid")
        self.f = {k: Signal(w, name=f"{name}_{k}") for k, w in fields.items()}


class _Queue:
    """A first-in first-out queue of ``depth`` entries as a shift register: ``e[0]`` is the
    oldest; a pop moves every entry up, a push lands behind the last one left."""

    def __init__(self, m, name, depth, fields):
        self.m, self.depth, self.fields = m, depth, fields
        self.e = [_Entry(f"{name}{k}", fields) for k in range(depth)]
        self.count = Signal(range(depth + 1), name=f"{name}_count")
        m.d.comb += self.count.eq(sum(e.valid for e in self.e))

    def update(self, pop, push, push_fields):
        m, e = self.m, self.e
        for k in range(self.depth):
            nxt = e[k + 1] if k + 1 < self.depth else None
            valid = Mux(pop, nxt.valid if nxt else 0, e[k].valid)
            before = Mux(pop, e[k].valid, e[k - 1].valid) if k else 1   # entry k-1 after the pop
            here = push & ~valid & before
            m.d.sync += e[k].valid.eq(valid | here)
            for f in self.fields:
                kept = Mux(pop, nxt.f[f], e[k].f[f]) if nxt else e[k].f[f]
                m.d.sync += e[k].f[f].eq(Mux(here, push_fields[f], kept))


def _handshake_rules(rules, by_block, ch, valid, ready, payload):
    """VALID, once high, stays high until READY, with the payload unchanged."""
    m = rules.m
    waiting = past(m, valid & ~ready, f"{ch}_waiting")
    held = past(m, Cat(*payload), f"{ch}_held")
    rules.check(f"{ch}.hold", by_block, implies(waiting, valid), group="handshake")
    rules.check(f"{ch}.stable", by_block, implies(waiting, Cat(*payload) == held),
                group="handshake")


class _PortView:
    """The members of an AXI4 port, or of one half of it (:class:`~hdl_gen.axi.Axi4ReadSignature`,
    :class:`~hdl_gen.axi.Axi4WriteSignature`); a port without IDs (a manager whose IDs a bus
    guard assigns) reads as ID 0."""

    _IDS = ("arid", "rid", "awid", "bid")

    def __init__(self, port):
        self._port = port
        self.reads = hasattr(port, "arvalid")
        self.writes = hasattr(port, "awvalid")
        self.has_ids = hasattr(port, "arid") or hasattr(port, "awid")

    def __getattr__(self, name):
        if name in self._IDS and not self.has_ids:
            return Const(0, 1)
        return getattr(self._port, name)

    def fields(self, names):
        """``names`` without the ID members the port does not have."""
        return [f for f in names if self.has_ids or f not in self._IDS]


class _Axi4Rules(Elaboratable):
    """AXI4 rules on one port (flat members of :class:`~hdl_gen.axi.Axi4Signature`, or one
    half of it: the rules of the channels it has; without ID members, every ID is 0).

    Parameters: ``max_len`` beats per burst at most; ``max_reads`` / ``max_writes`` bursts
    outstanding at most (address accepted, last response not yet), which also sizes the
    contract's queues of outstanding bursts; ``per_id``: reads outstanding per ID at most (a
    smaller model where IDs split the total); ``ids``: the IDs the manager uses (``None``: any);
    ``full_width``: AxSIZE is the data width; ``aligned``: AxADDR aligned to AxSIZE;
    ``limits``: state the outstanding limits as rules (else they only size the queues: a block
    whose own limit is proven elsewhere); ``w_addr``: keep each burst's address, for ``w_addr``
    below.

    Rules, ``[manager]`` or ``[subordinate]`` by who drives what they constrain:

    * ``{aw,w,b,ar,r}.hold`` / ``.stable``: VALID held until READY, payload unchanged [sender];
    * ``ar.burst`` / ``aw.burst``: INCR, AxSIZE, AxLEN + 1 <= max_len, aligned, no 4 KiB
      crossing, ID allowed [manager];
    * ``ar.limit`` / ``aw.limit``: a new address only while fewer than max bursts are outstanding
      [manager];
    * ``w.after_aw``: W beats only for a burst whose AW has been accepted or is being offered
      (stricter than AXI, which lets W lead; every Kaki manager keeps it) [manager];
    * ``w.last``: WLAST on exactly beat AWLEN of its burst [manager];
    * ``r.request``: R only for an ID with a read outstanding; ``b.request``: B only for an ID with
      a write whose AW and all W data were accepted in earlier cycles and that has had no B yet:
      one B per write [subordinate];
    * ``r.last``: RLAST on exactly beat ARLEN of the oldest outstanding read of that ID: one
      response per request, in request order per ID [subordinate];
    * ``r.resp`` / ``b.resp``: never EXOKAY (Kaki makes no exclusive accesses) [subordinate].

    Covers (``no_cover`` names those the block cannot reach): ``ar.longest`` / ``aw.longest``
    (a burst of ``max_len`` beats), ``r.ids`` (an R beat while reads of two IDs are
    outstanding), ``w.early`` (a W beat accepted before its AW).

    Exposes for block contracts: ``ar_hs``, ``r_hs``, ``aw_hs``, ``w_hs``, ``b_hs`` (handshakes),
    ``w_addr`` (with ``w_addr=True``: the address of the W beat on the bus, for full-width
    bursts), ``reads`` / ``writes`` (outstanding bursts), ``w_id`` (the AWID of the W beat's
    burst), ``w_accepted`` (the AW of the W beat's burst was accepted in an earlier cycle).

    A manager that may abandon its transfers to a bus guard (``hdl_gen/axi_guard.py``) is
    checked with the rules under ``ResetInserter({"sync": guard.abandon})``: from the cycle after
    an abandon, the manager's side of the guard starts afresh (nothing outstanding, no VALID
    owed), which is what the guard promises the manager.
    """

    manager = None      # True: the block is the manager

    def __init__(self, port, *, max_len=256, max_reads=4, max_writes=4, ids=None,
                 per_id=None, full_width=True, aligned=True, limits=True, w_addr=False,
                 no_cover=(), name="axi"):
        self.port, self.name, self.no_cover = _PortView(port), name, no_cover
        port = self.port
        self.track_w_addr, self.limits = w_addr, limits
        self.len_bits = max(1, (max_len - 1).bit_length())     # AxLEN < max_len is a rule
        self.max_len, self.max_reads, self.max_writes = max_len, max_reads, max_writes
        self.ids = ids if port.has_ids else (0,)
        self.full_width, self.aligned = full_width, aligned
        self.per_id = per_id or max_reads
        self.addr_bits = len(port.araddr if port.reads else port.awaddr)
        self.id_bits = len(port.arid if port.reads else port.awid)
        self.data_bytes = len(port.rdata if port.reads else port.wdata) // 8
        self.beat_bits = (self.data_bytes - 1).bit_length()
        self.ar_hs, self.r_hs = Signal(name=f"{name}_ar_hs"), Signal(name=f"{name}_r_hs")
        self.aw_hs, self.w_hs = Signal(name=f"{name}_aw_hs"), Signal(name=f"{name}_w_hs")
        self.b_hs = Signal(name=f"{name}_b_hs")
        self.w_addr = Signal(self.addr_bits, name=f"{name}_w_addr")
        self.w_id = Signal(self.id_bits, name=f"{name}_w_id")
        self.w_accepted = Signal(name=f"{name}_w_accepted")
        self.reads = Signal(range(max_reads + 1), name=f"{name}_reads")
        self.writes = Signal(range(max_writes + 1), name=f"{name}_writes")

    def elaborate(self, platform):
        m = Module()
        p, mgr = self.port, self.manager
        rules = Rules(m, platform, "axi", skip_covers=self.no_cover)
        channels = []
        if p.writes:
            m.d.comb += [self.aw_hs.eq(p.awvalid & p.awready), self.w_hs.eq(p.wvalid & p.wready),
                         self.b_hs.eq(p.bvalid & p.bready)]
            channels += [("aw", ("awid", "awaddr", "awlen", "awsize", "awburst", "awprot"), True),
                         ("w", ("wdata", "wstrb", "wlast"), True), ("b", ("bid", "bresp"), False)]
        if p.reads:
            m.d.comb += [self.ar_hs.eq(p.arvalid & p.arready), self.r_hs.eq(p.rvalid & p.rready)]
            channels += [("ar", ("arid", "araddr", "arlen", "arsize", "arburst", "arprot"), True),
                         ("r", ("rid", "rdata", "rresp", "rlast"), False)]
        for ch, fields, sender_is_manager in channels:
            _handshake_rules(rules, sender_is_manager == mgr, ch, getattr(p, f"{ch}valid"),
                             getattr(p, f"{ch}ready"), [getattr(p, f) for f in p.fields(fields)])
        if p.reads:
            self._burst_rule(rules, "ar")
            self._reads(m, rules)
        if p.writes:
            self._burst_rule(rules, "aw")
            self._writes(m, rules)
        return m

    def _burst_rule(self, rules, ch):
        p = self.port
        valid, addr, size = getattr(p, f"{ch}valid"), getattr(p, f"{ch}addr"), getattr(p, f"{ch}size")
        length, burst, aid = getattr(p, f"{ch}len"), getattr(p, f"{ch}burst"), getattr(p, f"{ch}id")
        ok = (burst == BURST_INCR) & (length < self.max_len)
        ok &= (size == self.beat_bits) if self.full_width else (size <= self.beat_bits)
        if self.aligned:
            ok &= ~Cat(*[(size > k) & addr[k] for k in range(min(8, self.addr_bits))]).any()
        # the burst's bytes [addr, addr + (len+1) << size) stay in addr's 4 KiB page
        ok &= (addr[:12] + ((length + 1) << size)) <= 4096
        if self.ids is not None:
            ok &= Cat(*[aid == i for i in self.ids]).any()
        rules.check(f"{ch}.burst", self.manager, implies(valid, ok))
        rules.cover(f"{ch}.longest", valid & (length == self.max_len - 1))

    def _id_values(self):
        return list(self.ids) if self.ids is not None else list(range(2 ** self.id_bits))

    def _reads(self, m, rules):
        """Per ID, the outstanding reads in AR order and the beats received of the oldest."""
        p, mgr, lb = self.port, self.manager, self.len_bits
        found, last, count = [], [], []
        for x in self._id_values():
            q = _Queue(m, f"{self.name}_rq{x}", self.per_id, {"len": lb})
            beat = Signal(lb, name=f"{self.name}_rbeat{x}")
            mine = p.rid == x
            head_last = beat == q.e[0].f["len"]
            found.append(mine & q.e[0].valid)
            last.append(mine & head_last)
            count.append(q.count)
            with m.If(self.r_hs & mine):
                m.d.sync += beat.eq(Mux(p.rlast, 0, beat + 1))
            q.update(self.r_hs & mine & p.rlast, self.ar_hs & (p.arid == x), {"len": p.arlen[:lb]})
        m.d.comb += self.reads.eq(sum(count))
        per_id_full = Cat(*[(p.arid == x) & (c == self.per_id)
                            for x, c in zip(self._id_values(), count)]).any()
        if self.limits:
            rules.check("ar.limit", mgr, implies(p.arvalid, (self.reads < self.max_reads)
                                                 & ~per_id_full))
        found, last = Cat(*found).any(), Cat(*last).any()
        rules.check("r.request", not mgr, implies(p.rvalid, found))
        rules.check("r.last", not mgr, implies(p.rvalid & found, p.rlast == last))
        rules.check("r.resp", not mgr, implies(p.rvalid, p.rresp != RESP_EXOKAY))
        if len(count) > 1:
            rules.cover("r.ids", p.rvalid & (sum(c != 0 for c in count) > 1))

    def _writes(self, m, rules):
        """The bursts whose W data is incomplete, in AW order (W follows AW order), the beats sent
        of the oldest, and per ID the bursts whose data is complete and await their B."""
        p, mgr, name, lb = self.port, self.manager, self.name, self.len_bits
        fields = {"id": self.id_bits, "len": lb}
        if self.track_w_addr:
            fields["addr"] = self.addr_bits
        q = _Queue(m, f"{name}_wq", self.max_writes, fields)
        head = q.e[0]
        beat = Signal(lb, name=f"{name}_wbeat")
        # W beats may be accepted before their AW ("early"), for the AW being offered
        early_done = Signal(name=f"{name}_early_done")
        early = Signal(name=f"{name}_w_early")
        m.d.comb += early.eq(~head.valid & p.awvalid & ~early_done)
        length = Mux(head.valid, head.f["len"], p.awlen[:lb])
        m.d.comb += [self.w_id.eq(Mux(head.valid, head.f["id"], p.awid)),
                     self.w_accepted.eq(head.valid)]
        if self.track_w_addr:
            base = Mux(head.valid, head.f["addr"], p.awaddr)
            m.d.comb += self.w_addr.eq(base + (beat << self.beat_bits))
        rules.check("w.after_aw", mgr, implies(p.wvalid, head.valid | early))
        rules.check("w.last", mgr, implies(p.wvalid & (head.valid | early),
                                           p.wlast == (beat == length)))
        w_end = self.w_hs & p.wlast
        with m.If(self.w_hs):
            m.d.sync += beat.eq(Mux(p.wlast, 0, beat + 1))
        with m.If(self.aw_hs):
            m.d.sync += early_done.eq(0)
        with m.Elif(early & w_end):
            m.d.sync += early_done.eq(1)
        # the accepted AW's data is complete already when its W ran ahead to the last beat
        complete_at_aw = early_done | (early & w_end)
        q.update(head.valid & w_end, self.aw_hs & ~complete_at_aw,
                 {"id": p.awid, "len": p.awlen[:lb], "addr": p.awaddr})

        writes = self.writes
        m.d.sync += writes.eq(writes + self.aw_hs - self.b_hs)
        if self.limits:
            rules.check("aw.limit", mgr, implies(p.awvalid, writes < self.max_writes))
        due_any = []
        for x in self._id_values():
            due = Signal(range(self.max_writes + 1), name=f"{name}_bdue{x}")
            done_x = ((head.valid & w_end & (head.f["id"] == x))
                      | (self.aw_hs & complete_at_aw & (p.awid == x)))
            m.d.sync += due.eq(due + done_x - (self.b_hs & (p.bid == x)))
            due_any.append((p.bid == x) & (due != 0))
        rules.check("b.request", not mgr, implies(p.bvalid, Cat(*due_any).any()))
        rules.check("b.resp", not mgr, implies(p.bvalid, p.bresp != RESP_EXOKAY))
        rules.cover("w.early", self.w_hs & early)


class Axi4Manager(_Axi4Rules):
    """AXI4 rules for a port whose block is the manager (asserts AR/AW/W, assumes R/B)."""
    manager = True


class Axi4Subordinate(_Axi4Rules):
    """AXI4 rules for a port whose block is the subordinate (asserts R/B, assumes AR/AW/W)."""
    manager = False


class _Axi4LiteRules(Elaboratable):
    """AXI4-Lite rules on one port (:class:`~hdl_gen.axi.Axi4LiteSignature`).

    * ``{aw,w,b,ar,r}.hold`` / ``.stable`` [sender];
    * ``b.request``: B only for a write whose AW and W were both accepted in an earlier cycle and
      not yet answered; ``r.request``: R only for an accepted, unanswered read: one response
      per request, in order [subordinate];
    * ``b.resp`` / ``r.resp``: never EXOKAY [subordinate];
    * ``aw.limit`` / ``w.limit`` / ``ar.limit``: at most ``max_outstanding`` requests accepted and
      unanswered [subordinate: it accepts them]. This bounds the contract's counters.
    """

    manager = None

    def __init__(self, port, *, max_outstanding=1, no_cover=(), name="lite"):
        self.port, self.name, self.max_outstanding = port, name, max_outstanding
        self.no_cover = no_cover
        #: requests accepted and not yet answered, per request channel (for block invariants)
        self.open = {ch: Signal(range(max_outstanding + 1), name=f"{name}_{ch}_open")
                     for ch in ("aw", "w", "ar")}

    def elaborate(self, platform):
        m = Module()
        p, mgr, n = self.port, self.manager, self.max_outstanding
        rules = Rules(m, platform, "axi", skip_covers=self.no_cover)
        for ch, fields, sender_is_manager in (
                ("aw", ("awaddr", "awprot"), True), ("w", ("wdata", "wstrb"), True),
                ("b", ("bresp",), False), ("ar", ("araddr", "arprot"), True),
                ("r", ("rdata", "rresp"), False)):
            _handshake_rules(rules, sender_is_manager == mgr, ch, getattr(p, f"{ch}valid"),
                             getattr(p, f"{ch}ready"), [getattr(p, f) for f in fields])
        hs = {ch: getattr(p, f"{ch}valid") & getattr(p, f"{ch}ready") for ch in ("aw", "w", "b", "ar", "r")}
        open_ = self.open
        for ch, resp in (("aw", "b"), ("w", "b"), ("ar", "r")):
            rules.check(f"{ch}.limit", not mgr, implies(hs[ch], (open_[ch] < n) | hs[resp]))
            m.d.sync += open_[ch].eq(open_[ch] + hs[ch] - hs[resp])
        rules.check("b.request", not mgr, implies(p.bvalid, (open_["aw"] != 0) & (open_["w"] != 0)))
        rules.check("r.request", not mgr, implies(p.rvalid, open_["ar"] != 0))
        rules.check("b.resp", not mgr, implies(p.bvalid, p.bresp != RESP_EXOKAY))
        rules.check("r.resp", not mgr, implies(p.rvalid, p.rresp != RESP_EXOKAY))
        return m


class Axi4LiteManager(_Axi4LiteRules):
    """AXI4-Lite rules for a port whose block is the manager."""
    manager = True


class Axi4LiteSubordinate(_Axi4LiteRules):
    """AXI4-Lite rules for a port whose block is the subordinate."""
    manager = False


class Tracker:
    """Scoreboard of one arbitrarily chosen element through a first-in first-out path.

    The proof picks the element (``pick``, a free input sampled when an element enters) and
    follows it: ``ahead`` counts the elements that entered before it and are still inside. The
    element must leave after exactly those, with the data it entered with; since the pick is
    free, this holds for every element: order kept, nothing lost, duplicated or corrupted.
    """

    def __init__(self, m, name, width, depth):
        self.m = m
        self.armed = Signal(name=f"{name}_armed")       # the element is inside
        self.data = Signal(width, name=f"{name}_data")
        self.ahead = Signal(range(depth + 1), name=f"{name}_ahead")
        self.leaves = Signal(name=f"{name}_leaves")     # comb: the element leaves now

    def follow(self, rules, name, *, enter, enter_data, inside, leave, leave_data, pick, by_block=True):
        """``enter``/``leave``: an element goes in / comes out this cycle; ``inside``: elements
        inside before this cycle. The rule ``{name}.order`` is asserted (``by_block``)."""
        m = self.m
        m.d.comb += self.leaves.eq(self.armed & leave & (self.ahead == 0))
        rules.check(f"{name}.order", by_block, implies(self.leaves, leave_data == self.data))
        rules.check(f"{name}.inside", by_block, implies(self.armed, self.ahead < inside))
        with m.If(self.armed):
            with m.If(self.leaves):
                m.d.sync += self.armed.eq(0)
            with m.Elif(leave):
                m.d.sync += self.ahead.eq(self.ahead - 1)
        with m.Elif(enter & pick):
            m.d.sync += [self.armed.eq(1), self.data.eq(enter_data),
                         self.ahead.eq(inside - leave)]
        rules.cover(f"{name}.followed", self.leaves & (self.ahead == 0) & (inside > 1))


def peekable(cls):
    """``cls`` (Amaranth's ``SyncFIFO`` or ``SyncFIFOBuffered``) with its stored entries visible
    to a contract, for the invariants that let an order or bookkeeping proof close by induction:
    ``entries[k]`` is the k-th oldest entry of the storage (valid for ``k`` below the number
    stored; a buffered FIFO's oldest entry sits in ``r_data`` while ``r_rdy``). Reaches into
    the FIFO's elaborated module: Amaranth 0.5 names its storage ``storage``, whose first read
    port is addressed by the FIFO's ``consume`` pointer. Only formal builds use it."""
    buffered = issubclass(cls, _fifo.SyncFIFOBuffered)

    class Peekable(cls):
        def __init__(self, *, width, depth):
            super().__init__(width=width, depth=depth)
            self.stored = depth - 1 if buffered else depth
            self.entries = [Signal(width, name=f"peek{k}") for k in range(self.stored)]

        def elaborate(self, platform):
            m = super().elaborate(platform)
            storage, _ = m._named_submodules["storage"]
            consume = storage.read_ports[0].addr
            for k, entry in enumerate(self.entries):
                port = storage.read_port(domain="comb")
                slot = consume + k
                m.d.comb += [port.addr.eq(Mux(slot >= self.stored, slot - self.stored, slot)),
                             entry.eq(port.data)]
            return m

    Peekable.__name__ = f"Peekable{cls.__name__}"
    return Peekable


def fifo_for(platform, block, cls, **kwargs):
    """A ``cls`` FIFO for ``block``: :func:`peekable` in a proof of ``block``'s contract, else the
    plain class (so the RTL is unchanged)."""
    return (peekable(cls) if contract_for(platform, block) else cls)(**kwargs)


def fifo_contract(m, rules, fifo, name, *, pick, depth=None, by_block=True):
    """The contract of an Amaranth ``lib.fifo`` instance as a block uses it.

    ``{name}.level``: ``level`` stays within 0..depth and moves by exactly the writes and reads
    that happen; ``{name}.no_overflow``: ``w_rdy`` is low when full (a write then changes
    nothing); ``{name}.no_underflow``: ``r_rdy`` is low when empty (a read then changes nothing);
    ``{name}.order``: every element leaves in order with its data (:class:`Tracker`).
    """
    depth = fifo.depth if depth is None else depth
    do_w = fifo.w_en & fifo.w_rdy
    do_r = fifo.r_en & fifo.r_rdy
    level = fifo.level
    prev_level = past(m, level, f"{name}_prev_level")
    moved = past(m, Cat(do_w, do_r), f"{name}_moved")
    started = past(m, Const(1), f"{name}_started")
    rules.guarantee(f"{name}.level", (level <= depth)
                    & implies(started, level == prev_level + moved[0] - moved[1]), group="fifo")
    rules.guarantee(f"{name}.no_overflow", implies(level == depth, ~fifo.w_rdy), group="fifo")
    rules.guarantee(f"{name}.no_underflow", implies(level == 0, ~fifo.r_rdy), group="fifo")
    tr = Tracker(m, f"{name}_track", len(fifo.w_data), depth)
    tr.follow(rules, name, enter=do_w, enter_data=fifo.w_data, inside=level, leave=do_r,
              leave_data=fifo.r_data, pick=pick, by_block=by_block)
    rules.cover(f"{name}.full", level == depth)
    return tr
