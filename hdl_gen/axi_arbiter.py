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
from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import Axi4Signature
from .round_robin import round_robin

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
        """AR or AW: round-robin arbiter into a one-entry output register. Returns (take, sel)."""
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
        return take, sel

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
        self._addr_channel(m, "ar", _AR_FIELDS)
        self._resp_channel(m, "r", ("rdata", "rresp", "rlast"))

        # ---- write path: AW order FIFO of manager indices
        ptr_bits = max(1, (depth - 1).bit_length())
        fifo = Array(Signal(self.idx_bits, name=f"wq{k}") for k in range(depth))
        wq_rd = Signal(ptr_bits, name="wq_rd")
        wq_wr = Signal(ptr_bits, name="wq_wr")
        wq_count = Signal(range(depth + 1), name="wq_count")
        wq_full = Signal(name="wq_full")
        m.d.comb += wq_full.eq(wq_count == depth)
        aw_take, aw_sel = self._addr_channel(m, "aw", _AW_FIELDS, extra_block=~wq_full)

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
        return m
