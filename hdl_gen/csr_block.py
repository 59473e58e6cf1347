"""The CSR block: an AXI4-Lite target over the registers of ``kaki_regs.rdl``."""
import functools
import operator

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .axi import RESP_OKAY, RESP_SLVERR, Axi4LiteSignature
from .formal import Axi4LiteSubordinate, Rules, contract_for, implies, past


class SimpleBusSignature(wiring.Signature):
    """A word bus, requester side: ``addr`` Out(32), ``en`` Out(1), ``we`` Out(1), ``wdata``
    Out(32), ``wstrb`` Out(4), ``rdata`` In(32), ``ack`` In(1). The requester holds a request until
    ``ack``; ``rdata`` is valid with ``ack``. (The control core's data bus has this shape.)"""

    def __init__(self):
        super().__init__({"addr": Out(32), "en": Out(1), "we": Out(1), "wdata": Out(32),
                          "wstrb": Out(4), "rdata": In(32), "ack": In(1)})

#: Registers per first-stage group of the AXI4-Lite read multiplexer (CsrBlock._grouped_read).
READ_GROUP = 16


def _or(items):
    return functools.reduce(operator.or_, items)


class CsrBlock(wiring.Component):
    """Register file generated from a SystemRDL register map, behind an AXI4-Lite or simple bus.

    AXI4-Lite (``bus_kind="axi4lite"``): one write and one read are served at a time (AW and W
    are taken together); a write answers in the next cycle, a read in the third (its address is
    registered, then the read multiplexer, which spans every register of the chip, runs in two
    registered stages); unmapped addresses answer SLVERR (reads return 0). Simple bus
    (``bus_kind="simple"``, :class:`SimpleBusSignature`): every request is acknowledged one cycle
    later; unmapped reads return 0 and unmapped writes are ignored. Byte
    strobes apply to RW fields. Only the low ``addr_bits`` address bits are decoded.

    Ports
    -----
    bus : In(Axi4LiteSignature(addr_bits)) or In(SimpleBusSignature()) — the register port
          (this block is the target).
    For every field ``F`` of register ``R`` (names from :func:`regmap.port_name`, ``r_f``):
      * ``ro``    — ``r_f``: In(width), the value software reads.
      * ``rw``    — ``r_f``: Out(width), the register's value.
      * ``wstrobe`` — as ``rw``, plus ``r_f_swmod``: Out(1), high in the cycle of every write.
      * ``pulse`` — ``r_f``: Out(width), high for the one cycle in which software writes 1s.
      * ``w1c``   — ``r_f``: Out(width) sticky value; ``r_f_set``: In(width), hardware set
        (a set in the same cycle as a software clear wins, so no event is lost).
      * ``const`` — no port; reads return the RDL reset value.
    """

    def __init__(self, regs=None, bus_kind="axi4lite"):
        if bus_kind not in ("axi4lite", "simple"):
            raise ValueError(f"bus_kind must be 'axi4lite' or 'simple', not {bus_kind!r}")
        self.regs = regs if regs is not None else regmap.load()
        self.bus_kind = bus_kind
        self.addr_bits = max(12, max(r.addr for r in self.regs).bit_length())
        bus = Axi4LiteSignature(self.addr_bits) if bus_kind == "axi4lite" else SimpleBusSignature()
        members = {"bus": In(bus)}
        for reg in self.regs:
            for f in reg.fields:
                name = regmap.port_name(reg, f)
                if f.kind == "ro":
                    members[name] = In(f.width)
                elif f.kind in ("rw", "wstrobe", "pulse"):
                    members[name] = Out(f.width, init=f.reset if f.kind != "pulse" else 0)
                    if f.kind == "wstrobe":
                        members[name + "_swmod"] = Out(1)
                elif f.kind == "w1c":
                    members[name] = Out(f.width, init=f.reset)
                    members[name + "_set"] = In(f.width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        port = self._axi_frontend(m) if self.bus_kind == "axi4lite" else self._simple_frontend(m)
        do_write, waddr, wdata, bytemask, do_read, raddr, rdata, mapped_w, mapped_r, stages = port
        reads = []
        for reg in self.regs:
            word = reg.addr >> 2
            hit = Signal(name=f"wr_{reg.ident.lower()}")
            m.d.comb += hit.eq(do_write & (waddr == word))
            with m.If(hit):
                m.d.sync += mapped_w.eq(1)
            value = Const(0, 32)
            for f in reg.fields:
                value = value | (self._field_logic(m, reg, f, hit, wdata, bytemask) << f.lsb)
            reads.append((word, value))
        if stages is None:
            for word, value in reads:
                with m.If(do_read & (raddr == word)):
                    m.d.sync += [rdata.eq(value), mapped_r.eq(1)]
        else:
            self._grouped_read(m, reads, raddr, rdata, mapped_r, *stages)
        if self.bus_kind == "axi4lite" and contract_for(platform, self):
            self._formal_contract(m, platform, stages)
        return m

    def _grouped_read(self, m, reads, raddr, rdata, mapped, rpend, rgroup):
        """The read multiplexer in two registered stages: while ``rpend`` each group of
        READ_GROUP registers (in address order) registers its selected value, while ``rgroup`` the
        groups are ORed into ``rdata``. The chip's registers sit next to the blocks they describe,
        all over the die; one multiplexer over all of them was the host CSR port's critical path."""
        values, hits = [], []
        for g, i in enumerate(range(0, len(reads), READ_GROUP)):
            val, hit = Signal(32, name=f"read_group{g}"), Signal(name=f"read_group{g}_hit")
            sel = [(raddr == word, value) for word, value in reads[i:i + READ_GROUP]]
            with m.If(rpend):
                m.d.sync += [val.eq(_or(Mux(h, v, 0) for h, v in sel)),
                             hit.eq(Cat(*[h for h, _ in sel]).any())]
            values.append(val)
            hits.append(hit)
        with m.If(rgroup):
            m.d.sync += [rdata.eq(_or(values)), mapped.eq(Cat(*hits).any())]

    def _formal_contract(self, m, platform, stages):
        """The AXI4-Lite port's contract (docs/formal.md): the subordinate-side rules of
        :class:`~hdl_gen.formal.Axi4LiteSubordinate` (one request of each kind at a time);
        ``b.latency`` / ``r.latency``: the write response follows in the cycle after the request
        is accepted, the read response in the third cycle after; ``b.decode`` / ``r.decode``:
        OKAY exactly for a mapped register address, SLVERR (and read data 0) otherwise;
        ``lite.open``: a request is open exactly while it is in one of the read stages or its
        response is offered, and a read is in one stage at a time."""
        bus = self.bus
        m.submodules.formal_bus = mon = Axi4LiteSubordinate(bus, max_outstanding=1, name="csr")
        rules = Rules(m, platform, "axi")
        # what is open is exactly what is being answered (the induction's invariant); a read is
        # in at most one of its stages (x & (x - 1) == 0: at most one bit set)
        reading = Cat(*stages, bus.rvalid)
        rules.guarantee("lite.open", (mon.open["aw"] == bus.bvalid) & (mon.open["w"] == bus.bvalid)
                        & (mon.open["ar"] == reading.any()) & ((reading & (reading - 1)) == 0))
        words = {r.addr >> 2 for r in self.regs}
        for ch, resp, addr, delay in (("aw", "b", bus.awaddr, 1), ("ar", "r", bus.araddr, 3)):
            accepted = getattr(bus, f"{ch}valid") & getattr(bus, f"{ch}ready")
            mapped = Cat(*[addr[2:self.addr_bits] == w for w in sorted(words)]).any()
            for k in range(delay):
                accepted = past(m, accepted, f"formal_{ch}_accepted{k}")
                mapped = past(m, mapped, f"formal_{ch}_mapped{k}")
            valid, code = getattr(bus, f"{resp}valid"), getattr(bus, f"{resp}resp")
            rules.guarantee(f"{resp}.latency", implies(accepted, valid))
            rules.guarantee(f"{resp}.decode", implies(accepted, code == Mux(mapped, RESP_OKAY,
                                                                             RESP_SLVERR)))
            if resp == "r":
                rules.guarantee("r.decode", implies(accepted & ~mapped, bus.rdata == 0))
            rules.cover(f"{resp}.slverr", accepted & ~mapped)
        rules.guarantee("w.pair", (bus.awready == bus.wready) & implies(bus.awready, bus.awvalid
                                                                        & bus.wvalid))

    def _axi_frontend(self, m):
        """AXI4-Lite target: returns the register-access strobes and response registers."""
        bus = self.bus
        bvalid, bok = Signal(), Signal()
        do_write = Signal()
        m.d.comb += [
            do_write.eq(bus.awvalid & bus.wvalid & ~bvalid),
            bus.awready.eq(do_write), bus.wready.eq(do_write),
            bus.bvalid.eq(bvalid), bus.bresp.eq(Mux(bok, RESP_OKAY, RESP_SLVERR)),
        ]
        with m.If(bvalid & bus.bready):
            m.d.sync += bvalid.eq(0)
        with m.If(do_write):
            m.d.sync += [bvalid.eq(1), bok.eq(0)]
        bytemask = Cat(*[b.replicate(8) for b in bus.wstrb])
        wdata = Signal(32)
        m.d.comb += wdata.eq(bus.wdata & bytemask)

        # A read takes three cycles: the address is registered, then each group of registers
        # registers its value, then the groups are combined into rdata (_grouped_read).
        rvalid, rok = Signal(), Signal()
        rdata = Signal(32)
        rpend = Signal(name="read_pending")         # address registered: the groups read now
        rgroup = Signal(name="read_grouped")        # the groups' values registered: combine them
        raddr = Signal(len(bus.araddr) - 2, name="read_word")
        m.d.comb += [
            bus.arready.eq(~rvalid & ~rpend & ~rgroup),
            bus.rvalid.eq(rvalid), bus.rdata.eq(rdata),
            bus.rresp.eq(Mux(rok, RESP_OKAY, RESP_SLVERR)),
        ]
        with m.If(rvalid & bus.rready):
            m.d.sync += rvalid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [rpend.eq(1), raddr.eq(bus.araddr[2:])]
        with m.If(rpend):
            m.d.sync += [rpend.eq(0), rgroup.eq(1)]
        with m.If(rgroup):
            m.d.sync += [rgroup.eq(0), rvalid.eq(1)]
        return (do_write, bus.awaddr[2:], wdata, bytemask, rpend, raddr, rdata, bok, rok,
                (rpend, rgroup))

    def _simple_frontend(self, m):
        """Simple-bus target: acknowledge every request one cycle later."""
        bus = self.bus
        ack = Signal()
        rdata = Signal(32)
        new = Signal()
        m.d.comb += [new.eq(bus.en & ~ack), bus.ack.eq(ack), bus.rdata.eq(rdata)]
        m.d.sync += ack.eq(new)
        with m.If(new):
            m.d.sync += rdata.eq(0)
        bytemask = Cat(*[b.replicate(8) for b in bus.wstrb])
        wdata = Signal(32)
        m.d.comb += wdata.eq(bus.wdata & bytemask)
        word = bus.addr[2:self.addr_bits]
        unused_w, unused_r = Signal(), Signal()   # the simple bus has no error response
        return (new & bus.we, word, wdata, bytemask, new & ~bus.we, word, rdata,
                unused_w, unused_r, None)

    def _field_logic(self, m, reg, f, hit, wdata, bytemask):
        """Drive the field's port from bus writes; return the value a read sees."""
        port = getattr(self, regmap.port_name(reg, f), None)
        bits = slice(f.lsb, f.lsb + f.width)
        if f.kind == "const":
            return Const(f.reset, f.width)
        if f.kind == "ro":
            return port
        if f.kind in ("rw", "wstrobe"):
            with m.If(hit):
                m.d.sync += port.eq((port & ~bytemask[bits]) | wdata[bits])
            if f.kind == "wstrobe":
                m.d.comb += getattr(self, regmap.port_name(reg, f) + "_swmod").eq(hit)
            return port
        if f.kind == "pulse":
            m.d.comb += port.eq(Cat(hit.replicate(f.width)) & wdata[bits])
            return Const(0, f.width)
        # w1c: hardware set wins over a software clear in the same cycle.
        setp = getattr(self, regmap.port_name(reg, f) + "_set")
        clear = Signal(f.width, name=f"clr_{regmap.port_name(reg, f)}")
        m.d.comb += clear.eq(Cat(hit.replicate(f.width)) & wdata[bits])
        m.d.sync += port.eq((port & ~clear) | setp)
        return port
