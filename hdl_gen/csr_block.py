"""The CSR block: an AXI4-Lite target over the registers of ``kaki_regs.rdl``."""
from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .axi import RESP_OKAY, RESP_SLVERR, Axi4LiteSignature


class CsrBlock(wiring.Component):
    """AXI4-Lite register file generated from the SystemRDL register map.

    One write and one read are served at a time (AW and W are taken together); each answers in one
    cycle. Unmapped addresses answer SLVERR (reads return 0). Byte strobes apply to RW fields.

    Ports
    -----
    bus : In(Axi4LiteSignature(addr_bits)) — the host's register port (this block is the target).
    For every field ``F`` of register ``R`` (names from :func:`regmap.port_name`, ``r_f``):
      * ``ro``    — ``r_f``: In(width), the value software reads.
      * ``rw``    — ``r_f``: Out(width), the register's value.
      * ``pulse`` — ``r_f``: Out(width), high for the one cycle in which software writes 1s.
      * ``w1c``   — ``r_f``: Out(width) sticky value; ``r_f_set``: In(width), hardware set
        (a set in the same cycle as a software clear wins, so no event is lost).
      * ``const`` — no port; reads return the RDL reset value.
    """

    def __init__(self, regs=None):
        self.regs = regs if regs is not None else regmap.load()
        self.addr_bits = max(12, max(r.addr for r in self.regs).bit_length())
        members = {"bus": In(Axi4LiteSignature(self.addr_bits))}
        for reg in self.regs:
            for f in reg.fields:
                name = regmap.port_name(reg, f)
                if f.kind == "ro":
                    members[name] = In(f.width)
                elif f.kind in ("rw", "pulse"):
                    members[name] = Out(f.width, init=f.reset if f.kind == "rw" else 0)
                elif f.kind == "w1c":
                    members[name] = Out(f.width, init=f.reset)
                    members[name + "_set"] = In(f.width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # --- write channel: AW and W together, one transaction at a time.
        bvalid = Signal()
        bresp = Signal(2)
        do_write = Signal()
        m.d.comb += [
            do_write.eq(bus.awvalid & bus.wvalid & ~bvalid),
            bus.awready.eq(do_write), bus.wready.eq(do_write),
            bus.bvalid.eq(bvalid), bus.bresp.eq(bresp),
        ]
        with m.If(bvalid & bus.bready):
            m.d.sync += bvalid.eq(0)
        with m.If(do_write):
            m.d.sync += [bvalid.eq(1), bresp.eq(RESP_SLVERR)]

        bytemask = Cat(*[b.replicate(8) for b in bus.wstrb])
        wdata = Signal(32)
        m.d.comb += wdata.eq(bus.wdata & bytemask)
        waddr = bus.awaddr[2:]

        # --- read channel: answer one cycle after AR.
        rvalid = Signal()
        rdata = Signal(32)
        rresp = Signal(2)
        do_read = Signal()
        m.d.comb += [
            do_read.eq(bus.arvalid & ~rvalid),
            bus.arready.eq(do_read),
            bus.rvalid.eq(rvalid), bus.rdata.eq(rdata), bus.rresp.eq(rresp),
        ]
        with m.If(rvalid & bus.rready):
            m.d.sync += rvalid.eq(0)
        with m.If(do_read):
            m.d.sync += [rvalid.eq(1), rdata.eq(0), rresp.eq(RESP_SLVERR)]

        for reg in self.regs:
            word = reg.addr >> 2
            hit = Signal(name=f"wr_{reg.ident.lower()}")
            m.d.comb += hit.eq(do_write & (waddr == word))
            with m.If(hit):
                m.d.sync += bresp.eq(RESP_OKAY)
            value = Const(0, 32)
            for f in reg.fields:
                value = value | (self._field_logic(m, reg, f, hit, wdata, bytemask) << f.lsb)
            with m.If(do_read & (bus.araddr[2:] == word)):
                m.d.sync += [rdata.eq(value), rresp.eq(RESP_OKAY)]
        return m

    def _field_logic(self, m, reg, f, hit, wdata, bytemask):
        """Drive the field's port from bus writes; return the value a read sees."""
        port = getattr(self, regmap.port_name(reg, f), None)
        bits = slice(f.lsb, f.lsb + f.width)
        if f.kind == "const":
            return Const(f.reset, f.width)
        if f.kind == "ro":
            return port
        if f.kind == "rw":
            with m.If(hit):
                m.d.sync += port.eq((port & ~bytemask[bits]) | wdata[bits])
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
