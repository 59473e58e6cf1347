"""Control subsystem: the RV32IM core with its IMEM and DMEM, and its port to the MMIO registers."""
from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import regmap
from .csr_block import SimpleBusSignature
from .rv32_core import RV32Core
from .sram import Sram1R1W

MMIO_RDL = regmap.RDL.with_name("kaki_mmio.rdl")
IMEM_WORDS = DMEM_WORDS = 4096      # 16 KiB each (docs/control_core.md)
DMEM_BASE = 0x1000_0000
MMIO_ADDR_BITS = regmap.addr_bits(MMIO_RDL)


class ControlSubsystem(wiring.Component):
    """The control core and its memories, as the SoC sees them.

    The core is held in reset while ``run`` is 0 (the SoC holds the MMIO register block, which
    sits on ``mmio``, in reset with it); only then does the host load IMEM/DMEM, one word per
    ``load_data_we`` at the address set by ``load_addr_we`` (a core byte address, auto-incremented
    by 4). Words outside IMEM/DMEM are dropped.

    Ports
    -----
    run            : In(1)  — 1 releases the core from reset.
    load_addr      : In(32), load_addr_we : In(1) — set the load address (``load_addr`` valid the
                     cycle after the strobe, as a CSR register updates).
    load_data      : In(32), load_data_we : In(1) — store one word (same timing).
    irq            : In(1)  — machine external interrupt.
    sleeping       : Out(1) — the core sleeps in WFI.
    pc             : Out(32) — pc of the last committed instruction or trap (kept while the core is
                     held: a debugger's view for hang reports, host register CORE_PC).
    mmio           : Out(SimpleBusSignature()) — word accesses to the MMIO window
                     (0x2000_0000 + [0, 2**MMIO_ADDR_BITS)); the target acks one cycle later.
    """

    def __init__(self):
        super().__init__({
            "run": In(1), "load_addr": In(32), "load_addr_we": In(1),
            "load_data": In(32), "load_data_we": In(1), "irq": In(1), "sleeping": Out(1),
            "pc": Out(32),
            "mmio": Out(SimpleBusSignature()),
        })

    def elaborate(self, platform):
        m = Module()
        held = ~self.run
        core = RV32Core()
        mmio = self.mmio
        m.submodules.core = ResetInserter({"sync": held})(core)
        # No row is read in the cycle it is written: the host writes only while the core is held
        # (whatever the held core reads is discarded), and the core's one data access per cycle
        # is a load or a store. So IMEM and DMEM need no write-first bypass.
        m.submodules.imem = imem = Sram1R1W(IMEM_WORDS, 32, transparent=False)
        lanes = [Sram1R1W(DMEM_WORDS, 8, transparent=False) for _ in range(4)]
        for i, lane in enumerate(lanes):
            m.submodules[f"dmem{i}"] = lane

        # Host loads (only while held in reset).
        addr = Signal(32)
        addr_we, data_we = Signal(), Signal()
        m.d.sync += [addr_we.eq(self.load_addr_we), data_we.eq(self.load_data_we)]
        with m.If(addr_we):
            m.d.sync += addr.eq(self.load_addr)
        with m.Elif(data_we):
            m.d.sync += addr.eq(addr + 4)
        host_imem = data_we & held & (addr[14:] == 0)
        host_dmem = data_we & held & (addr[14:] == DMEM_BASE >> 14)

        # Instruction memory: fetch and IMEM loads by the core, writes by the host.
        m.d.comb += [imem.ren.eq(core.imem.en), imem.raddr.eq(core.imem.addr),
                     core.imem.gnt.eq(1), core.imem.data.eq(imem.rdata),
                     imem.wen.eq(host_imem), imem.waddr.eq(addr[2:14]),
                     imem.wdata.eq(self.load_data)]

        # Data bus: DMEM, the MMIO block, or nothing (acknowledged, reads 0).
        bus = core.dbus
        in_dmem = bus.addr[14:] == DMEM_BASE >> 14
        in_mmio = (bus.addr[16:] == 0x2000) & (bus.addr[2:16] < (1 << (MMIO_ADDR_BITS - 2)))
        ack, new, sel_dmem = Signal(), Signal(), Signal()
        m.d.comb += new.eq(bus.en & ~ack & ~in_mmio)
        m.d.sync += [ack.eq(new), sel_dmem.eq(new & in_dmem)]
        m.d.comb += [mmio.addr.eq(bus.addr), mmio.en.eq(bus.en & in_mmio),
                     mmio.we.eq(bus.we), mmio.wdata.eq(bus.wdata), mmio.wstrb.eq(bus.wstrb)]
        dmem_rdata = Cat(*[lane.rdata for lane in lanes])
        m.d.comb += [bus.ack.eq(ack | mmio.ack),
                     bus.rdata.eq(Mux(mmio.ack, mmio.rdata, Mux(sel_dmem, dmem_rdata, 0)))]
        for i, lane in enumerate(lanes):
            core_write = new & in_dmem & bus.we & bus.wstrb[i]
            byte = slice(8 * i, 8 * i + 8)
            m.d.comb += [lane.ren.eq(new & in_dmem & ~bus.we), lane.raddr.eq(bus.addr[2:14]),
                         lane.wen.eq(core_write | host_dmem),
                         lane.waddr.eq(Mux(host_dmem, addr[2:14], bus.addr[2:14])),
                         lane.wdata.eq(Mux(host_dmem, self.load_data[byte], bus.wdata[byte]))]

        m.d.comb += [self.sleeping.eq(core.sleeping), core.irq.eq(self.irq)]
        with m.If(core.trace_valid):
            m.d.sync += self.pc.eq(core.trace_pc)
        return m

