"""AXI4 N:1 arbiter: several managers share one subordinate port, responses routed back by ID.

Ports (``idx_bits = max(1, ceil(log2(n_managers)))``):

* ``m[i]``: ``In(Axi4Signature(addr_bits, data_bits, id_bits))`` for ``i`` in ``range(n_managers)``,
  the subordinate side that manager ``i`` connects to (Verilog ``m__<i>__awaddr`` …).
* ``s``: ``Out(Axi4Signature(addr_bits, data_bits, id_bits + idx_bits))``, the manager side towards
  memory (Verilog ``s__awaddr`` …). ``s.arid``/``s.awid`` are ``Cat(manager_id, manager_index)``: the
  manager index occupies the top ``idx_bits`` of the ID.

Design:

* AR and AW each have a round-robin arbiter (priority starts after the last granted manager)
  feeding a one-entry output register; the register refills in the cycle it drains, so one
  address per cycle passes. ``s.arvalid``/``s.awvalid`` and their payloads come straight from
  flops. A manager's ``arready``/``awready`` depends on its own and the other managers' valids
  (AXI allows ready to depend on valid) and on ``s.arready``/``s.awready``; no valid depends on a
  ready, so no combinational loop can form with compliant neighbours.
* W beats must follow AW order: each granted AW pushes its manager index into a FIFO of
  ``w_fifo_depth`` entries (AW is not granted while it is full). W is passed through from the
  manager at the FIFO head until the beat with ``wlast``, which pops it. W of a manager whose AW
  has not been granted yet waits (legal: managers may not make W depend on AWREADY, and AW is
  never held back waiting for W).
* R and B are passed through combinationally and routed by the top ``idx_bits`` of ``s.rid`` /
  ``s.bid``; the manager sees the low ``id_bits``. A response carrying an index >= ``n_managers``
  (cannot happen for IDs this arbiter issued) is accepted and dropped.

Any number of transactions from any manager may be outstanding at once; ordering per (manager, ID)
is preserved because the subordinate sees one unique ID per (manager, ID).
"""
from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import Axi4Signature
from .formal import Axi4Manager, Axi4Subordinate, Rules, contract_for, implies
from .round_robin import round_robin, round_robin_contract

_AR_FIELDS = ("araddr", "arlen", "arsize", "arburst", "arprot")
_AW_FIELDS = ("awaddr", "awlen", "awsize", "awburst", "awprot")
_W_FIELDS = ("wdata", "wstrb", "wlast")


def _check_int(name, value, lo):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, not {value}")


class Axi4Arbiter(wiring.Component):
    """Round-robin AXI4 arbiter, ``n_managers`` managers onto one subordinate port ``s``.

    Parameters: ``n_managers`` (>= 1), ``addr_bits`` (>= 12), ``data_bits`` (power of two, 8..1024),
    ``id_bits`` (>= 1), ``w_fifo_depth`` (>= 1; number of granted write bursts whose W beats may
    be pending at once). See the module docstring for ports and behaviour.
    """

    def __init__(self, n_managers=2, addr_bits=32, data_bits=64, id_bits=4, w_fifo_depth=4):
        _check_int("n_managers", n_managers, 1)
        _check_int("addr_bits", addr_bits, 12)
        _check_int("data_bits", data_bits, 8)
        _check_int("id_bits", id_bits, 1)
        _check_int("w_fifo_depth", w_fifo_depth, 1)
        if data_bits & (data_bits - 1) or data_bits > 1024:
            raise ValueError(f"data_bits must be a power of two from 8 to 1024, not {data_bits}")
        self.n_managers = n_managers
        self.addr_bits = addr_bits
        self.data_bits = data_bits
        self.id_bits = id_bits
        self.idx_bits = max(1, (n_managers - 1).bit_length())
        self.w_fifo_depth = w_fifo_depth
        super().__init__({
            "m": In(Axi4Signature(addr_bits, data_bits, id_bits)).array(n_managers),
            "s": Out(Axi4Signature(addr_bits, data_bits, id_bits + self.idx_bits)),
        })

    # ------------------------------------------------------------------------------------------
    def _addr_channel(self, m, ch, fields, extra_block=None):
        """AR or AW: round-robin arbiter into a one-entry output register. Returns (take, sel,
        any, last)."""
        n, s = self.n_managers, self.s
        valids = [getattr(self.m[i], f"{ch}valid") for i in range(n)]
        last = Signal(self.idx_bits, name=f"{ch}_last", init=n - 1)
        any_, sel = round_robin(m, valids, last, ch)
        out_valid = getattr(s, f"{ch}valid")
        free = Signal(name=f"{ch}_free")
        m.d.comb += free.eq(~out_valid | getattr(s, f"{ch}ready"))
        if extra_block is not None:
            ok = Signal(name=f"{ch}_ok")
            m.d.comb += ok.eq(free & extra_block)
        else:
            ok = free
        take = Signal(name=f"{ch}_take")
        m.d.comb += take.eq(any_ & ok)
        for i in range(n):
            m.d.comb += getattr(self.m[i], f"{ch}ready").eq(take & (sel == i))
        with m.If(getattr(s, f"{ch}ready")):
            m.d.sync += out_valid.eq(0)
        with m.If(take):
            m.d.sync += [out_valid.eq(1), last.eq(sel)]
            for f in fields:
                m.d.sync += getattr(s, f).eq(Array(getattr(self.m[i], f) for i in range(n))[sel])
            ids = Array(getattr(self.m[i], f"{ch}id") for i in range(n))
            m.d.sync += getattr(s, f"{ch}id").eq(Cat(ids[sel], sel))
        return take, sel, any_, last

    def _resp_channel(self, m, ch, fields):
        """R or B: route by the top idx_bits of the ID; ready muxed back."""
        n, s, ib = self.n_managers, self.s, self.id_bits
        sid = getattr(s, f"{ch}id")
        idx = Signal(self.idx_bits, name=f"{ch}_idx")
        m.d.comb += idx.eq(sid[ib:])
        readies = [getattr(self.m[i], f"{ch}ready") for i in range(n)]
        ready = Signal(name=f"{ch}_route_ready", init=1)
        with m.Switch(idx):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += ready.eq(readies[i])
            with m.Default():
                m.d.comb += ready.eq(1)          # unknown index: drop
        m.d.comb += getattr(s, f"{ch}ready").eq(ready)
        for i in range(n):
            mi = self.m[i]
            m.d.comb += [
                getattr(mi, f"{ch}valid").eq(getattr(s, f"{ch}valid") & (idx == i)),
                getattr(mi, f"{ch}id").eq(sid[:ib]),
            ]
            for f in fields:
                m.d.comb += getattr(mi, f).eq(getattr(s, f))

    def elaborate(self, platform):
        m = Module()
        n, s, depth = self.n_managers, self.s, self.w_fifo_depth

        # ---- read path
        ar = self._addr_channel(m, "ar", _AR_FIELDS)
        self._resp_channel(m, "r", ("rdata", "rresp", "rlast"))

        # ---- write path: AW order FIFO of manager indices
        ptr_bits = max(1, (depth - 1).bit_length())
        fifo = Array(Signal(self.idx_bits, name=f"wq{k}") for k in range(depth))
        wq_rd = Signal(ptr_bits, name="wq_rd")
        wq_wr = Signal(ptr_bits, name="wq_wr")
        wq_count = Signal(range(depth + 1), name="wq_count")
        wq_full = Signal(name="wq_full")
        m.d.comb += wq_full.eq(wq_count == depth)
        aw = self._addr_channel(m, "aw", _AW_FIELDS, extra_block=~wq_full)
        aw_take, aw_sel = aw[:2]

        head = Signal(self.idx_bits, name="w_head")
        w_active = Signal(name="w_active")
        m.d.comb += [head.eq(fifo[wq_rd]), w_active.eq(wq_count != 0)]
        wvalid = Signal(name="w_sel_valid")
        with m.Switch(head):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += wvalid.eq(self.m[i].wvalid)
                    for f in _W_FIELDS:
                        m.d.comb += getattr(s, f).eq(getattr(self.m[i], f))
        m.d.comb += s.wvalid.eq(w_active & wvalid)
        for i in range(n):
            m.d.comb += self.m[i].wready.eq(w_active & (head == i) & s.wready)
        pop = Signal(name="wq_pop")
        m.d.comb += pop.eq(s.wvalid & s.wready & s.wlast)

        def bump(p):
            return Mux(p == depth - 1, 0, p + 1)

        with m.If(aw_take):
            m.d.sync += [fifo[wq_wr].eq(aw_sel), wq_wr.eq(bump(wq_wr))]
        with m.If(pop):
            m.d.sync += wq_rd.eq(bump(wq_rd))
        with m.If(aw_take & ~pop):
            m.d.sync += wq_count.eq(wq_count + 1)
        with m.Elif(pop & ~aw_take):
            m.d.sync += wq_count.eq(wq_count - 1)

        self._resp_channel(m, "b", ("bresp",))
        if contract_for(platform, self):
            self._formal_contract(m, platform, ar, aw, wq_rd, wq_wr, wq_count, head)
        return m

    # ------------------------------------------------------------------------------------------
    def _formal_contract(self, m, platform, ar, aw, wq_rd, wq_wr, wq_count, head):
        """The arbiter's contract (docs/formal.md).

        Every ``m[i]`` is an AXI4 subordinate port (the manager's rules assumed: at most
        ``max_reads`` / ``max_writes`` bursts of at most ``max_len`` beats outstanding, from the
        proof's options) and ``s`` a manager port; the AR and AW choices are round-robin
        (:func:`round_robin_contract`); at most one manager is granted per channel per cycle and
        only a requesting one; ``s`` carries exactly the address the granted manager offered,
        once, with its index in the ID; W, R and B beats pass between ``s`` and exactly one
        manager, the right one; the W order FIFO never overflows or underflows and its head is
        the manager of the oldest write burst on ``s`` whose data is incomplete. With
        ``ar_stall`` (option), a subordinate that never holds ARREADY low for more than that many
        cycles makes every manager's ARVALID accepted within ``n * (ar_stall + 1)`` cycles.
        """
        opt = platform.options
        n, s, ib = self.n_managers, self.s, self.id_bits
        reads, writes = opt.get("max_reads", 2), opt.get("max_writes", 2)
        max_len = opt.get("max_len", 4)
        for i in range(n):
            m.submodules[f"formal_m{i}"] = Axi4Subordinate(
                self.m[i], max_reads=reads, max_writes=writes, max_len=max_len, full_width=False,
                aligned=False, no_cover=("w.early",), name=f"m{i}")
        sm = m.submodules.formal_s = Axi4Manager(
            s, max_reads=n * reads, max_writes=n * writes, per_id=reads, max_len=max_len, full_width=False,
            aligned=False, name="s")
        rules = Rules(m, platform, "arbiter")

        for ch, (take, sel, any_, last), fields in (("ar", ar, _AR_FIELDS), ("aw", aw, _AW_FIELDS)):
            valids = [getattr(self.m[i], f"{ch}valid") for i in range(n)]
            readies = [getattr(self.m[i], f"{ch}ready") for i in range(n)]
            rules.guarantee(f"{ch}.exclusive", sum(readies) <= 1)
            for v, r in zip(valids, readies):
                rules.guarantee(f"{ch}.grant", implies(r, v))
            rules.guarantee(f"{ch}.last", last < n)
            round_robin_contract(m, rules, valids, last, any_, sel, take, name=f"{ch}_rr")
            # s offers exactly the address accepted from the granted manager, once
            hs = [v & r for v, r in zip(valids, readies)]
            shadow = Signal(len(Cat(*[getattr(s, f) for f in fields], getattr(s, f"{ch}id"))),
                            name=f"formal_{ch}_shadow")
            pending = Signal(name=f"formal_{ch}_pending")
            for i in range(n):
                with m.If(hs[i]):
                    mi = self.m[i]
                    m.d.sync += shadow.eq(Cat(*[getattr(mi, f) for f in fields],
                                              getattr(mi, f"{ch}id"), Const(i, self.idx_bits)))
            out_hs = getattr(s, f"{ch}valid") & getattr(s, f"{ch}ready")
            m.d.sync += pending.eq(Cat(*hs).any() | (pending & ~out_hs))
            rules.guarantee(f"{ch}.forward", getattr(s, f"{ch}valid") == pending)
            rules.guarantee(f"{ch}.forward", implies(
                pending, Cat(*[getattr(s, f) for f in fields], getattr(s, f"{ch}id")) == shadow))

        # responses: routed by the ID's top bits to exactly that manager, ready back from it
        for ch, fields in (("r", ("rdata", "rresp", "rlast")), ("b", ("bresp",))):
            valid, ready, sid = (getattr(s, f"{ch}valid"), getattr(s, f"{ch}ready"),
                                 getattr(s, f"{ch}id"))
            for i in range(n):
                mi = self.m[i]
                to_i = valid & (sid[ib:] == i)
                rules.guarantee(f"{ch}.route", getattr(mi, f"{ch}valid") == to_i)
                rules.guarantee(f"{ch}.route", implies(to_i, (ready == getattr(mi, f"{ch}ready"))
                                                       & (getattr(mi, f"{ch}id") == sid[:ib])
                                                       & (Cat(*[getattr(mi, f) for f in fields])
                                                          == Cat(*[getattr(s, f) for f in fields]))))

        # W: the beat on s is the one the manager of its burst (ID top bits) hands over now
        w_idx = sm.w_id[ib:]
        for i in range(n):
            mi = self.m[i]
            mine = w_idx == i
            rules.guarantee("w.route", implies(mi.wvalid & mi.wready, s.wvalid & s.wready & mine),
                            group="routing")
            rules.guarantee("w.route", implies(s.wvalid & mine, mi.wvalid & (Cat(
                mi.wdata, mi.wstrb, mi.wlast) == Cat(s.wdata, s.wstrb, s.wlast))
                & (mi.wready == s.wready)), group="routing")
        depth = self.w_fifo_depth
        rules.guarantee("wq.bounds", wq_count <= depth)
        rules.guarantee("wq.bounds", implies(aw[0], wq_count < depth))
        ptr = wq_rd + wq_count
        rules.guarantee("wq.bounds", (wq_rd < depth)
                        & (wq_wr == Mux(ptr >= depth, ptr - depth, ptr)))
        rules.guarantee("wq.head", implies(wq_count != 0, head == w_idx), group="routing")
        rules.cover("wq.full", wq_count == depth)

        stall_limit = opt.get("ar_stall")
        if stall_limit is not None:
            stalled = Signal(range(stall_limit + 1), name="formal_s_ar_stalled")
            m.d.sync += stalled.eq(Mux(s.arvalid & ~s.arready, stalled + 1, 0))
            rules.rely("s.ar.live", implies(stalled == stall_limit, s.arready | ~s.arvalid))
            bound = n * (stall_limit + 1)
            for i in range(n):
                mi = self.m[i]
                waited = Signal(range(bound + 1), name=f"formal_m{i}_ar_waited")
                m.d.sync += waited.eq(Mux(mi.arvalid & ~mi.arready, waited + 1, 0))
                rules.guarantee("ar.wait", waited < bound, group="liveness")
                rules.cover("ar.waited", mi.arvalid & mi.arready & (waited == bound - 1))
