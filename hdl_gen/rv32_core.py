"""RV32IM machine-mode control core (the contract is ``docs/control_core.md``).

Ports of :class:`RV32Core` (directions from the core's side):

===============  ==========  =====================================================================
port             width/dir   meaning
===============  ==========  =====================================================================
``imem``         Out(ReadPortSignature(addr_bits=12, width=32)): ``addr`` Out(12) word address
                             (= byte address[13:2]), ``en`` Out(1), ``gnt`` In(1), ``data`` In(32)
                             valid the cycle after a granted read. ``gnt`` = 0 means retry. The port
                             serves instruction fetch *and* loads from IMEM (constants): both are
                             serialized by the core's FSM.
``dbus``         Out(DataBusSignature()): ``addr`` Out(32), ``en`` Out(1), ``we`` Out(1),
                             ``wdata`` Out(32), ``wstrb`` Out(4), ``rdata`` In(32), ``ack`` In(1).
                             Carries DMEM (0x1000_0000-0x1000_3FFF) and MMIO
                             (0x2000_0000-0x2000_FFFF) accesses only. ``addr`` is the full byte
                             address with bits [1:0] cleared; ``wstrb`` has the accessed byte
                             lanes (for loads too, as information); ``wdata`` has the store data
                             already placed in its lanes. A request (``en`` = 1 and the other
                             outputs) is held unchanged until the cycle in which ``ack`` = 1
                             (``ack`` may come in the request's first cycle); load data is taken
                             from ``rdata`` in that cycle. ``en`` drops in the cycle after ``ack``.
``irq``          In(1)       machine external interrupt level (mip.MEIP).
``sleeping``     Out(1)      1 while the core sleeps after a ``WFI``.
``trace_valid``  Out(1)      one cycle per commit record (retired instruction or trap).
``trace_pc``     Out(32)     pc of the instruction (for an interrupt: the next, not executed one).
``trace_insn``   Out(32)     instruction word; for an interrupt the word at ``pc`` (the next,
                             not executed instruction); 0 for a fetch fault (there is no word).
``trace_rd``     Out(5)      register written, 0 if none (stores, branches, x0, traps).
``trace_value``  Out(32)     value written, 0 if ``trace_rd`` = 0.
``trace_trap``   Out(1)      the record is a trap (exception or interrupt).
``trace_cause``  Out(32)     ``mcause`` of the trap, 0 if not a trap.
===============  ==========  =====================================================================

The trace ports are combinational outputs of the commit cycle (valid while ``trace_valid`` = 1).

Microarchitecture: three stages, F (fetch), D (decode) and E (execute, the FSM ``core_fsm``),
with sequential prefetch. The block RAM's clock-to-output (~6 ns on ECP5) and the register-file
read ahead of the ALU do not fit one 20 ns cycle with the execution behind them
(docs/synthesis.md), so D reads the register file into registers and E executes from them.

* F requests the word at the fetch pc on ``imem`` whenever D is free at the end of the cycle
  (retry while ``gnt`` = 0) and moves on to pc + 4. A fetch pc outside IMEM or misaligned is not
  requested: D gets a fault entry instead, which traps (cause 1 / 0, ``mtval`` = pc) only if it
  reaches E — a sequential prefetch past a jump never traps.
* D has the word on ``imem.data`` (held in a register while E is busy) and reads ``rs1``/``rs2``
  from the register file (LUT RAM, read without a clock); E takes the word and the two values when it is free. A
  register written by the instruction that commits in that same cycle is bypassed into E.
* E decodes and executes: ALU, shift, LUI/AUIPC, branch, jump, CSR, FENCE, ECALL/EBREAK/MRET/WFI
  and illegal instructions commit in **1 cycle** each. A taken branch, a jump, MRET or a trap
  empties D and E and registers its target, fetched in the next cycle (the branch compare and the
  jump adder feed only flip-flops, not the block RAM's address): **3 cycles** for taken branches
  and jumps, traps and MRET.
  A pending, enabled external interrupt is taken in E instead of executing the word.
* Loads/stores to DMEM/MMIO: ``EXEC`` checks alignment and the memory map, registers the request,
  ``MEM`` holds it on ``dbus`` until ``ack``; a store commits in the ``ack`` cycle, a load
  registers the word and commits in ``LD_FIN`` (extraction and write-back from the register). A
  store acked at once takes 2 cycles, a DMEM load (1-cycle SRAM) 4 cycles.
  A misaligned or unmapped access goes to ``LS_TRAP`` instead, which traps one cycle later (so
  the address adder and map compares do not feed the flush of the same cycle).
* Loads from IMEM: ``ILOAD`` requests the word on ``imem`` (retries), ``ILOAD_W`` registers it,
  ``LD_FIN`` commits: 4 cycles.
* MUL/MULH/MULHSU/MULHU: ``EXEC`` registers the 33-bit operands, ``MUL`` multiplies them as
  two 33x17 halves into registers, ``MUL_FIN`` adds the halves and commits: 3 cycles (a one-cycle
  33x33 multiply behind the register file does not fit the clock, docs/synthesis.md).
* DIV/DIVU/REM/REMU: iterative restoring division on magnitudes, one quotient bit per cycle
  (``DIV``, 32 cycles) then ``DIV_FIN`` fixes signs and the divide-by-zero case and commits:
  34 cycles in all.
* ``WFI`` retires in ``EXEC`` and the core enters ``SLEEP`` (``sleeping`` = 1) until
  ``irq & mie.MEIE``; it then executes the next instruction (where an enabled interrupt is taken).

Choices where the contract leaves room (the same as ``golden/rv32_iss.py``'s, checked by the
commit-trace comparison in ``cocotb_tests/test_rv32_core.py``):

* Fetch faults: branch/jump targets are not checked at the jump; the jump retires and the fetch of
  a misaligned pc (cause 0) or of a pc outside IMEM (cause 1) traps: record ``(pc, 0, 0, 0)``,
  ``mtval`` = pc, ``mepc`` = pc with bits [1:0] cleared (its read mask). An enabled pending
  interrupt takes precedence over a fetch fault.
* Load/store: address misaligned has priority over access fault; MMIO accepts word accesses only
  (byte/half = access fault); stores to IMEM are access faults. Faulting accesses never reach the
  bus. ``mtval`` = the address.
* Illegal: every word outside RV32IM's encodings, including shifts with a bad funct7, SYSTEM
  funct3 = 0 words other than exactly ECALL/EBREAK/MRET/WFI, MISC-MEM funct3 other than 0/1 (the
  other FENCE fields are ignored), CSR funct3 = 4, unknown CSRs and writes to read-only CSRs
  (CSRRW/CSRRWI always write; CSRRS/CSRRC and their immediate forms only with rs1/uimm != 0).
* Counters: ``mcycle`` counts clock cycles (so its values differ from the ISS's, which counts
  steps; the trace comparison ignores them). ``minstret`` counts retired instructions. A CSR write
  of a counter half is applied on top of that instruction's increment: writing the low half
  replaces the incremented low half (the write wins), writing the high half keeps the incremented
  low half. Reads return the value before the reading instruction.
* Reset: pc = ``reset_vector``, registers and CSRs 0 (``mstatus`` reads 0x1800), not sleeping.
* Interrupt sampling: ``irq`` is used combinationally at the instruction boundary (an
  instruction or fault entry in E) and for the ``SLEEP`` wake-up; there is no synchroniser inside.
"""
from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib.memory import Memory
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .mem_port import ReadPortSignature

__all__ = ["DataBusSignature", "RV32Core", "CAUSE", "CSR_ADDR"]

IMEM_ADDR_BITS = 12

CAUSE = {
    "insn_misaligned": 0, "insn_access": 1, "illegal": 2, "breakpoint": 3,
    "load_misaligned": 4, "load_access": 5, "store_misaligned": 6, "store_access": 7,
    "ecall_m": 11, "m_external_irq": 0x8000_000B,
}

CSR_ADDR = {
    "mstatus": 0x300, "misa": 0x301, "mie": 0x304, "mtvec": 0x305, "mscratch": 0x340,
    "mepc": 0x341, "mcause": 0x342, "mtval": 0x343, "mip": 0x344,
    "mcycle": 0xB00, "mcycleh": 0xB80, "minstret": 0xB02, "minstreth": 0xB82,
    "cycle": 0xC00, "cycleh": 0xC80, "instret": 0xC02, "instreth": 0xC82, "mhartid": 0xF14,
}
MISA_VALUE = 0x4000_1100

# opcodes
OP_LOAD, OP_MISC_MEM, OP_OP_IMM, OP_AUIPC = 0x03, 0x0F, 0x13, 0x17
OP_STORE, OP_OP, OP_LUI, OP_BRANCH = 0x23, 0x33, 0x37, 0x63
OP_JALR, OP_JAL, OP_SYSTEM = 0x67, 0x6F, 0x73

INSN_ECALL, INSN_EBREAK, INSN_MRET, INSN_WFI = 0x0000_0073, 0x0010_0073, 0x3020_0073, 0x1050_0073


class DataBusSignature(wiring.Signature):
    """Data bus requester: ``addr`` Out(32), ``en`` Out(1), ``we`` Out(1), ``wdata`` Out(32),
    ``wstrb`` Out(4), ``rdata`` In(32), ``ack`` In(1). A request is held until ``ack``; ``rdata``
    is valid with ``ack``."""

    def __init__(self):
        super().__init__({"addr": Out(32), "en": Out(1), "we": Out(1), "wdata": Out(32),
                          "wstrb": Out(4), "rdata": In(32), "ack": In(1)})


def _in_imem(a):
    return a[14:32] == 0


def _in_dmem(a):
    return a[14:32] == (0x1000_0000 >> 14)


def _in_mmio(a):
    return a[16:32] == 0x2000


class RV32Core(wiring.Component):
    """RV32IM machine-mode core; see the module docstring for ports and timing.

    ``reset_vector``: byte address of the first fetch (the contract fixes 0; must be a word
    address inside IMEM).
    """

    def __init__(self, *, reset_vector=0):
        if not isinstance(reset_vector, int) or isinstance(reset_vector, bool):
            raise TypeError(f"reset_vector must be an int, not {reset_vector!r}")
        if reset_vector % 4 or not 0 <= reset_vector < 4 << IMEM_ADDR_BITS:
            raise ValueError(f"reset_vector must be a word address inside IMEM "
                             f"(0..{(4 << IMEM_ADDR_BITS) - 4:#x}), not {reset_vector:#x}")
        self.reset_vector = reset_vector
        super().__init__({
            "imem": Out(ReadPortSignature(addr_bits=IMEM_ADDR_BITS, width=32)),
            "dbus": Out(DataBusSignature()),
            "irq": In(1),
            "sleeping": Out(1),
            "trace_valid": Out(1), "trace_pc": Out(32), "trace_insn": Out(32),
            "trace_rd": Out(5), "trace_value": Out(32), "trace_trap": Out(1),
            "trace_cause": Out(32),
        })

    def elaborate(self, platform):
        m = Module()

        # ---------------------------------------------------------------- architectural state
        # The register file is LUT RAM (two asynchronous read ports, one write port): a 32:1
        # multiplexer of flip-flops behind the block RAM's output does not fit the cycle.
        # LUT RAM has no reset, so ``written`` (flip-flops) makes every register read 0 until
        # written after reset, as the contract says.
        m.submodules.regfile = regfile = Memory(shape=32, depth=32, init=[])
        rf_rs1, rf_rs2 = regfile.read_port(domain="comb"), regfile.read_port(domain="comb")
        rf_wr = regfile.write_port()
        written = Signal(32)

        st_mie, st_mpie = Signal(), Signal()  # mstatus.MIE / MPIE
        ie_meie, ie_mtie = Signal(), Signal()
        mtvec = Signal(30)                    # bits [31:2]
        mscratch = Signal(32)
        mepc = Signal(30)                     # bits [31:2]
        mcause = Signal(32)
        mtval = Signal(32)
        mcycle = Signal(64)
        minstret = Signal(64)

        # ---------------------------------------------------------------- fetch and decode stages
        # F: the address of the next word to fetch. D: the word fetched for it (on imem.data the
        # cycle after the grant, then held in d_ir) and its register reads. E: the instruction
        # being executed, with the operands D read when E took it.
        # The fetch pc is f_last + 4, or f_last again after a fetch that did not deliver a word:
        # kept as (f_last, f_again) so the jump target reaches the register without an adder.
        f_last = Signal(32, init=self.reset_vector)
        f_again = Signal(init=1)
        f_pc = Signal(32)
        m.d.comb += f_pc.eq(f_last + Mux(f_again, 0, 4))
        d_valid = Signal()
        d_fresh = Signal()                    # the word is on imem.data this cycle
        d_pc = Signal(32)
        d_ir = Signal(32)
        d_fault = Signal()                    # no word: the fetch of d_pc faults when it executes
        d_word = Signal(32)
        m.d.comb += d_word.eq(Mux(d_fresh, self.imem.data, d_ir))
        m.d.sync += d_ir.eq(d_word)

        e_valid = Signal()
        pc = Signal(32, init=self.reset_vector)   # the pc of the instruction in E
        ir = Signal(32)
        e_fault = Signal()
        e_rs1_read = Signal(32)               # 0 for a register not written since reset
        e_rs2_read = Signal(32)
        # The register write committed in the cycle E took its instruction: the reads D made in
        # that cycle missed it (the register file updates at the clock edge), so E takes the
        # committed value instead (``fw_val``, selected by ``e_byp1``/``e_byp2`` decided in D).
        e_byp1 = Signal()
        e_byp2 = Signal()
        fw_val = Signal(32)

        # ---------------------------------------------------------------- decode
        insn = ir
        opcode, rd, f3 = insn[0:7], insn[7:12], insn[12:15]
        rs1, rs2, f7 = insn[15:20], insn[20:25], insn[25:32]
        sgn = insn[31]
        imm_i = Cat(insn[20:32], sgn.replicate(20))
        imm_s = Cat(insn[7:12], insn[25:32], sgn.replicate(20))
        imm_b = Cat(Const(0, 1), insn[8:12], insn[25:31], insn[7], sgn.replicate(20))
        imm_u = Cat(Const(0, 12), insn[12:32])
        imm_j = Cat(Const(0, 1), insn[21:31], insn[20], insn[12:20], sgn.replicate(12))

        rs1v = Signal(32)
        rs2v = Signal(32)
        m.d.comb += [rs1v.eq(Mux(e_byp1, fw_val, e_rs1_read)),
                     rs2v.eq(Mux(e_byp2, fw_val, e_rs2_read))]
        pc4 = Signal(32)
        m.d.comb += pc4.eq(pc + 4)

        # ---------------------------------------------------------------- ALU (OP / OP-IMM)
        is_op = opcode == OP_OP
        alu_b = Signal(32)
        m.d.comb += alu_b.eq(Mux(is_op, rs2v, imm_i))
        shamt = alu_b[0:5]
        alu_res = Signal(32)
        with m.Switch(f3):
            with m.Case(0):
                m.d.comb += alu_res.eq(Mux(is_op & f7[5], rs1v - alu_b, rs1v + alu_b))
            with m.Case(1):
                m.d.comb += alu_res.eq((rs1v << shamt)[0:32])
            with m.Case(2):
                m.d.comb += alu_res.eq(rs1v.as_signed() < alu_b.as_signed())
            with m.Case(3):
                m.d.comb += alu_res.eq(rs1v < alu_b)
            with m.Case(4):
                m.d.comb += alu_res.eq(rs1v ^ alu_b)
            with m.Case(5):
                m.d.comb += alu_res.eq(Mux(f7[5], (rs1v.as_signed() >> shamt)[0:32],
                                           rs1v >> shamt))
            with m.Case(6):
                m.d.comb += alu_res.eq(rs1v | alu_b)
            with m.Case(7):
                m.d.comb += alu_res.eq(rs1v & alu_b)
        op_imm_legal = Signal()
        m.d.comb += op_imm_legal.eq(Mux(f3 == 1, f7 == 0,
                                        Mux(f3 == 5, (f7 == 0) | (f7 == 0x20), 1)))
        op_alu_legal = Signal()
        m.d.comb += op_alu_legal.eq((f7 == 0) | ((f7 == 0x20) & ((f3 == 0) | (f3 == 5))))
        is_muldiv = is_op & (f7 == 1)

        # ---------------------------------------------------------------- multiplier
        mul_a = Signal(33)
        mul_b = Signal(33)
        a_signed = (f3 == 1) | (f3 == 2)      # MULH, MULHSU
        b_signed = f3 == 1                    # MULH
        m.d.comb += [mul_a.eq(Cat(rs1v, a_signed & rs1v[31])),
                     mul_b.eq(Cat(rs2v, b_signed & rs2v[31]))]
        # Two cycles after EXEC (docs/synthesis.md): MUL multiplies the registered operands as two
        # 33x17 halves, MUL_FIN adds them and commits.
        mul_ra = Signal(33)
        mul_rb = Signal(33)
        mul_lo = Signal(signed(51))           # a * b[0:17] (the low half of b unsigned)
        mul_hi = Signal(signed(50))           # a * b[17:33] (the high half signed)
        product = Signal(66)
        m.d.comb += product.eq(mul_lo + (mul_hi << 17))
        mul_res = Signal(32)
        m.d.comb += mul_res.eq(Mux(f3 == 0, product[0:32], product[32:64]))

        # ---------------------------------------------------------------- branch
        br_eq = rs1v == rs2v
        br_lt = rs1v.as_signed() < rs2v.as_signed()
        br_ltu = rs1v < rs2v
        br_taken = Signal()
        with m.Switch(f3):
            with m.Case(0):
                m.d.comb += br_taken.eq(br_eq)
            with m.Case(1):
                m.d.comb += br_taken.eq(~br_eq)
            with m.Case(4):
                m.d.comb += br_taken.eq(br_lt)
            with m.Case(5):
                m.d.comb += br_taken.eq(~br_lt)
            with m.Case(6):
                m.d.comb += br_taken.eq(br_ltu)
            with m.Case(7):
                m.d.comb += br_taken.eq(~br_ltu)
        br_legal = (f3 != 2) & (f3 != 3)
        br_target = Signal(32)
        m.d.comb += br_target.eq(pc + imm_b)
        jal_target = Signal(32)
        m.d.comb += jal_target.eq(pc + imm_j)
        jalr_target = Signal(32)
        m.d.comb += jalr_target.eq((rs1v + imm_i) & 0xFFFF_FFFE)

        # ---------------------------------------------------------------- CSRs
        csr_addr = insn[20:32]
        csr_src = Signal(32)
        m.d.comb += csr_src.eq(Mux(f3[2], rs1, rs1v))    # rs1 field = uimm for the I forms
        # CSRRW/CSRRWI always write; CSRRS/C(I) only with rs1/uimm != 0
        csr_writes = (f3[0:2] == 1) | (rs1 != 0)
        csr_old = Signal(32)
        csr_known = Signal()
        csr_ro = Signal()
        mip_val = Cat(Const(0, 11), self.irq)
        mstatus_val = Cat(Const(0, 3), st_mie, Const(0, 3), st_mpie, Const(0, 3), Const(3, 2))
        mie_val = Cat(Const(0, 7), ie_mtie, Const(0, 3), ie_meie)
        csr_table = [
            (0x300, mstatus_val, False), (0x301, Const(MISA_VALUE, 32), False),
            (0x304, mie_val, False), (0x305, Cat(Const(0, 2), mtvec), False),
            (0x340, mscratch, False), (0x341, Cat(Const(0, 2), mepc), False),
            (0x342, mcause, False), (0x343, mtval, False), (0x344, mip_val, False),
            (0xB00, mcycle[0:32], False), (0xB80, mcycle[32:64], False),
            (0xB02, minstret[0:32], False), (0xB82, minstret[32:64], False),
            (0xC00, mcycle[0:32], True), (0xC80, mcycle[32:64], True),
            (0xC02, minstret[0:32], True), (0xC82, minstret[32:64], True),
            (0xF14, Const(0, 32), True),
        ]
        with m.Switch(csr_addr):
            for addr, val, ro in csr_table:
                with m.Case(addr):
                    m.d.comb += [csr_old.eq(val), csr_known.eq(1), csr_ro.eq(int(ro))]
        csr_wval = Signal(32)
        with m.Switch(f3[0:2]):
            with m.Case(1):
                m.d.comb += csr_wval.eq(csr_src)
            with m.Case(2):
                m.d.comb += csr_wval.eq(csr_old | csr_src)
            with m.Case(3):
                m.d.comb += csr_wval.eq(csr_old & ~csr_src)
        csr_illegal = Signal()
        m.d.comb += csr_illegal.eq(~csr_known | (csr_writes & csr_ro) | (f3[0:2] == 0))

        irq_take = Signal()
        m.d.comb += irq_take.eq(st_mie & ie_meie & self.irq)
        wake = Signal()
        m.d.comb += wake.eq(self.irq & ie_meie)

        # ---------------------------------------------------------------- load/store unit
        is_store = opcode == OP_STORE
        ls_addr = Signal(32)
        m.d.comb += ls_addr.eq(rs1v + Mux(is_store, imm_s, imm_i))
        ls_size = f3[0:2]                                 # 0 byte, 1 half, 2 word
        ls_misaligned = Signal()
        m.d.comb += ls_misaligned.eq(((ls_size == 1) & ls_addr[0]) |
                                     ((ls_size == 2) & (ls_addr[0:2] != 0)))
        ld_legal = (f3 != 3) & (f3 != 6) & (f3 != 7)
        st_legal = (f3 == 0) | (f3 == 1) | (f3 == 2)
        ls_strb = Signal(4)
        with m.Switch(ls_size):
            with m.Case(0):
                m.d.comb += ls_strb.eq(Const(1, 4) << ls_addr[0:2])
            with m.Case(1):
                m.d.comb += ls_strb.eq(Mux(ls_addr[1], 0b1100, 0b0011))
            with m.Default():
                m.d.comb += ls_strb.eq(0b1111)
        st_data = Signal(32)
        with m.Switch(ls_size):
            with m.Case(0):
                m.d.comb += st_data.eq(rs2v[0:8].replicate(4))
            with m.Case(1):
                m.d.comb += st_data.eq(rs2v[0:16].replicate(2))
            with m.Default():
                m.d.comb += st_data.eq(rs2v)
        # map check: IMEM any-width loads; DMEM everything; MMIO word only
        ls_fault = Signal()
        ls_to_imem = Signal()
        m.d.comb += [
            ls_to_imem.eq(~is_store & _in_imem(ls_addr)),
            ls_fault.eq(~(ls_to_imem | _in_dmem(ls_addr) | (_in_mmio(ls_addr) & (ls_size == 2)))),
        ]
        # load data extraction, from the word registered as it leaves the memory (the block RAM's
        # clock-to-output and the extraction do not fit one cycle with the register-file write)
        ld_word = Signal(32)
        ld_off = Signal(2)                                # byte offset of the pending access
        ld_shift = Signal(32)
        m.d.comb += ld_shift.eq(ld_word >> Cat(Const(0, 3), ld_off))
        ld_val = Signal(32)
        with m.Switch(f3):
            with m.Case(0):
                m.d.comb += ld_val.eq(Cat(ld_shift[0:8], ld_shift[7].replicate(24)))
            with m.Case(1):
                m.d.comb += ld_val.eq(Cat(ld_shift[0:16], ld_shift[15].replicate(16)))
            with m.Case(4):
                m.d.comb += ld_val.eq(ld_shift[0:8])
            with m.Case(5):
                m.d.comb += ld_val.eq(ld_shift[0:16])
            with m.Default():
                m.d.comb += ld_val.eq(ld_shift)

        ls_addr_r = Signal(32)                            # the address of the access in E
        ls_misaligned_r = Signal()
        bus_addr = Signal(32)
        m.d.comb += bus_addr.eq(Cat(Const(0, 2), ls_addr_r[2:32]))
        bus_en = Signal()
        bus_we = Signal()
        bus_wdata = Signal(32)
        bus_wstrb = Signal(4)
        m.d.comb += [self.dbus.addr.eq(bus_addr), self.dbus.en.eq(bus_en),
                     self.dbus.we.eq(bus_we), self.dbus.wdata.eq(bus_wdata),
                     self.dbus.wstrb.eq(bus_wstrb)]

        # ---------------------------------------------------------------- divider
        div_quo = Signal(32)       # dividend magnitude shifting out / quotient shifting in
        div_rem = Signal(32)
        div_den = Signal(32)       # divisor magnitude
        div_cnt = Signal(5)
        div_negq = Signal()
        div_negr = Signal()
        div_zero = Signal()
        div_a = Signal(32)         # original dividend (for x / 0)
        div_rem_sh = Signal(33)
        div_diff = Signal(33)
        m.d.comb += [div_rem_sh.eq(Cat(div_quo[31], div_rem)),
                     div_diff.eq(div_rem_sh - div_den)]
        div_signed = ~f3[0]                               # DIV (4) / REM (6)
        a_neg = div_signed & rs1v[31]
        b_neg = div_signed & rs2v[31]

        # ---------------------------------------------------------------- commit interface
        c_valid = Signal()
        c_trap = Signal()
        c_cause = Signal(32)
        c_tval = Signal(32)
        c_insn = Signal(32)
        c_rd = Signal(5)
        c_value = Signal(32)
        c_npc = Signal(32)                    # the target of a jump, taken branch or MRET
        c_jump = Signal()                     # ... which then replaces the sequential pc + 4
        c_sleep = Signal()
        c_mret = Signal()
        c_csr_we = Signal()

        m.d.comb += [
            self.trace_valid.eq(c_valid),
            self.trace_pc.eq(pc),
            self.trace_insn.eq(c_insn),
            self.trace_rd.eq(Mux(c_trap, 0, c_rd)),
            self.trace_value.eq(Mux(c_trap | (c_rd == 0), 0, c_value)),
            self.trace_trap.eq(c_trap),
            self.trace_cause.eq(Mux(c_trap, c_cause, 0)),
        ]
        retire = c_valid & ~c_trap
        m.d.comb += [rf_wr.addr.eq(c_rd), rf_wr.data.eq(c_value),
                     rf_wr.en.eq(retire & (c_rd != 0))]
        with m.If(retire & (c_rd != 0)):
            m.d.sync += written.bit_select(c_rd, 1).eq(1)
        # the register an instruction in E writes when it retires (0: none), by opcode alone
        wb_rd = Signal(5)
        m.d.comb += wb_rd.eq(Mux(opcode.matches(OP_LUI, OP_AUIPC, OP_JAL, OP_JALR, OP_OP_IMM, OP_OP,
                                                OP_LOAD) | ((opcode == OP_SYSTEM) & (f3 != 0)),
                                 rd, 0))
        # The value a single-cycle instruction writes, by opcode (the multi-cycle states override
        # c_value with their result in their commit cycle)
        m.d.comb += c_rd.eq(wb_rd)
        with m.Switch(opcode):
            with m.Case(OP_LUI):
                m.d.comb += c_value.eq(imm_u)
            with m.Case(OP_AUIPC):
                m.d.comb += c_value.eq((pc + imm_u)[0:32])
            with m.Case(OP_JAL, OP_JALR):
                m.d.comb += c_value.eq(pc4)
            with m.Case(OP_SYSTEM):
                m.d.comb += c_value.eq(csr_old)
            with m.Default():
                m.d.comb += c_value.eq(alu_res)
        with m.If(c_valid & c_trap):
            m.d.sync += [mepc.eq(pc[2:32]), mcause.eq(c_cause), mtval.eq(c_tval),
                         st_mpie.eq(st_mie), st_mie.eq(0)]
        with m.If(retire & c_mret):
            m.d.sync += [st_mie.eq(st_mpie), st_mpie.eq(1)]

        # counters (a CSR write wins over the increment)
        csr_we = retire & c_csr_we
        mcycle_inc = Signal(64)
        minstret_inc = Signal(64)
        m.d.comb += [mcycle_inc.eq(mcycle + 1), minstret_inc.eq(minstret + retire)]
        m.d.sync += [mcycle.eq(mcycle_inc), minstret.eq(minstret_inc)]
        with m.If(csr_we):
            with m.Switch(csr_addr):
                with m.Case(0x300):
                    m.d.sync += [st_mie.eq(csr_wval[3]), st_mpie.eq(csr_wval[7])]
                with m.Case(0x304):
                    m.d.sync += [ie_mtie.eq(csr_wval[7]), ie_meie.eq(csr_wval[11])]
                with m.Case(0x305):
                    m.d.sync += mtvec.eq(csr_wval[2:32])
                with m.Case(0x340):
                    m.d.sync += mscratch.eq(csr_wval)
                with m.Case(0x341):
                    m.d.sync += mepc.eq(csr_wval[2:32])
                with m.Case(0x342):
                    m.d.sync += mcause.eq(csr_wval)
                with m.Case(0x343):
                    m.d.sync += mtval.eq(csr_wval)
                with m.Case(0xB00):
                    m.d.sync += mcycle.eq(Cat(csr_wval, mcycle_inc[32:64]))
                with m.Case(0xB80):
                    m.d.sync += mcycle.eq(Cat(mcycle_inc[0:32], csr_wval))
                with m.Case(0xB02):
                    m.d.sync += minstret.eq(Cat(csr_wval, minstret_inc[32:64]))
                with m.Case(0xB82):
                    m.d.sync += minstret.eq(Cat(minstret_inc[0:32], csr_wval))

        def trap(cause, tval=0, insn_word=None):
            m.d.comb += [c_valid.eq(1), c_trap.eq(1), c_cause.eq(cause), c_tval.eq(tval)]
            if insn_word is not None:
                m.d.comb += c_insn.eq(insn_word)

        def retire_insn(target=None, taken=1):
            """Commit the instruction in E: it writes ``wb_rd`` with ``c_value`` (both chosen by
            opcode and state alone, below, so that no legality or trap condition lengthens the
            path into the register file) and jumps to ``target`` if ``taken``."""
            m.d.comb += [c_valid.eq(1), c_insn.eq(insn)]
            if target is not None:
                m.d.comb += [c_npc.eq(target), c_jump.eq(taken)]

        # ---------------------------------------------------------------- pipeline control
        # A trap or a jump (flush) empties D and E at the end of its cycle and registers its
        # target (redirect); F fetches the target in the next cycle. The branch compare and the
        # jump adder so feed only a few flip-flops, never the block RAM's address. E takes D's
        # instruction whenever it is done with its own (e_adv: empty, committing or trapping),
        # which does not depend on whether the commit jumps.
        flush = Signal()
        next_pc = Signal(32)
        redirect = Signal()
        redirect_pc = Signal(32)
        e_adv = Signal()
        iload = Signal()                      # E reads IMEM this cycle: no fetch
        m.d.comb += [flush.eq(c_valid & (c_trap | c_jump)),
                     next_pc.eq(Mux(c_trap, Cat(Const(0, 2), mtvec), c_npc))]
        m.d.sync += [redirect.eq(flush), redirect_pc.eq(next_pc)]

        f_addr = Signal(32)
        f_slot = Signal()                     # D is free at the end of this cycle
        m.d.comb += [f_addr.eq(Mux(redirect, redirect_pc, f_pc)),
                     f_slot.eq(~d_valid | e_adv)]
        # The port reads at f_addr whenever E does not use it: which word D keeps is decided
        # from registers, off the block RAM's address path.
        with m.If(~iload):
            m.d.comb += [self.imem.en.eq(f_slot), self.imem.addr.eq(f_addr[2:14])]
        with m.If(f_slot):
            m.d.sync += f_last.eq(f_addr)
        with m.If(flush):                     # what F fetched in this cycle is on the old path
            m.d.sync += [d_valid.eq(0), d_fresh.eq(0)]
        with m.Elif(f_slot & ~iload):
            with m.If(_in_imem(f_addr) & (f_addr[0:2] == 0)):
                m.d.sync += [d_valid.eq(self.imem.gnt), d_fresh.eq(self.imem.gnt), d_fault.eq(0),
                             d_pc.eq(f_addr), f_again.eq(~self.imem.gnt)]
            with m.Else():
                m.d.sync += [d_valid.eq(1), d_fresh.eq(0), d_fault.eq(1), d_pc.eq(f_addr),
                             f_again.eq(1)]
        with m.Elif(f_slot):
            m.d.sync += [d_valid.eq(0), d_fresh.eq(0), f_again.eq(1)]
        with m.Else():
            m.d.sync += d_fresh.eq(0)

        with m.If(c_sleep):
            m.d.sync += e_valid.eq(0)
        with m.Elif(e_adv):
            d_rs1, d_rs2 = d_word[15:20], d_word[20:25]
            m.d.sync += [e_valid.eq(d_valid & ~flush), pc.eq(d_pc), ir.eq(d_word),
                         e_fault.eq(d_fault),
                         e_rs1_read.eq(Mux(written.bit_select(d_rs1, 1), rf_rs1.data, 0)),
                         e_rs2_read.eq(Mux(written.bit_select(d_rs2, 1), rf_rs2.data, 0)),
                         # a valid instruction in E that is done retires (or traps and flushes)
                         e_byp1.eq(e_valid & (wb_rd != 0) & (wb_rd == d_rs1)),
                         e_byp2.eq(e_valid & (wb_rd != 0) & (wb_rd == d_rs2))]
        m.d.comb += [rf_rs1.addr.eq(d_word[15:20]), rf_rs2.addr.eq(d_word[20:25])]
        m.d.sync += fw_val.eq(c_value)

        def after_commit():
            """In a multi-cycle state's commit cycle: E is free again."""
            m.d.comb += e_adv.eq(1)
            m.next = "EXEC"

        def finish(value):
            """A multi-cycle state's commit: write ``value`` (to ``wb_rd``), E is free again."""
            m.d.comb += c_value.eq(value)
            retire_insn()
            after_commit()

        def exec_body():
            """EXEC state body: decode and execute the word on ``imem.data``."""
            def illegal():
                trap(CAUSE["illegal"], insn, insn)

            with m.Switch(opcode):
                with m.Case(OP_LUI):
                    retire_insn()
                with m.Case(OP_AUIPC):
                    retire_insn()
                with m.Case(OP_JAL):
                    retire_insn(jal_target)
                with m.Case(OP_JALR):
                    with m.If(f3 == 0):
                        retire_insn(jalr_target)
                    with m.Else():
                        illegal()
                with m.Case(OP_BRANCH):
                    with m.If(br_legal):
                        retire_insn(br_target, br_taken)
                    with m.Else():
                        illegal()
                with m.Case(OP_OP_IMM):
                    with m.If(op_imm_legal):
                        retire_insn()
                    with m.Else():
                        illegal()
                with m.Case(OP_OP):
                    with m.If(is_muldiv):
                        with m.If(f3[2]):                 # DIV/DIVU/REM/REMU
                            a_mag = Mux(a_neg, -rs1v, rs1v)[0:32]
                            b_mag = Mux(b_neg, -rs2v, rs2v)[0:32]
                            m.d.sync += [
                                div_quo.eq(a_mag), div_rem.eq(0), div_den.eq(b_mag),
                                div_cnt.eq(0), div_a.eq(rs1v),
                                div_zero.eq(rs2v == 0),
                                div_negq.eq(a_neg ^ b_neg), div_negr.eq(a_neg),
                            ]
                            m.next = "DIV"
                        with m.Else():
                            m.d.sync += [mul_ra.eq(mul_a), mul_rb.eq(mul_b)]
                            m.next = "MUL"
                    with m.Elif(op_alu_legal):
                        retire_insn()
                    with m.Else():
                        illegal()
                with m.Case(OP_LOAD, OP_STORE):
                    with m.If(Mux(is_store, ~st_legal, ~ld_legal)):
                        illegal()
                    with m.Else():
                        # The address checks decide the next state but trap only in LS_TRAP, a
                        # cycle later: the adder and the map compares stay off the flush path.
                        m.d.sync += [ls_addr_r.eq(ls_addr), ls_misaligned_r.eq(ls_misaligned),
                                     ld_off.eq(ls_addr[0:2])]
                        with m.If(ls_misaligned | ls_fault):
                            m.next = "LS_TRAP"
                        with m.Elif(ls_to_imem):
                            m.next = "ILOAD"
                        with m.Else():
                            m.d.sync += [bus_en.eq(1), bus_we.eq(is_store), bus_wdata.eq(st_data),
                                         bus_wstrb.eq(ls_strb)]
                            m.next = "MEM"
                with m.Case(OP_MISC_MEM):
                    with m.If((f3 == 0) | (f3 == 1)):         # FENCE / FENCE.I: no-ops
                        retire_insn()
                    with m.Else():
                        illegal()
                with m.Case(OP_SYSTEM):
                    with m.If(f3 == 0):
                        with m.If(insn == INSN_ECALL):
                            trap(CAUSE["ecall_m"], 0, insn)
                        with m.Elif(insn == INSN_EBREAK):
                            trap(CAUSE["breakpoint"], 0, insn)
                        with m.Elif(insn == INSN_MRET):
                            m.d.comb += c_mret.eq(1)
                            retire_insn(Cat(Const(0, 2), mepc))
                        with m.Elif(insn == INSN_WFI):
                            m.d.comb += c_sleep.eq(1)
                            retire_insn()
                        with m.Else():
                            illegal()
                    with m.Elif(csr_illegal):
                        illegal()
                    with m.Else():
                        m.d.comb += c_csr_we.eq(csr_writes)
                        retire_insn()
                with m.Default():
                    illegal()
            # every path above commits in this cycle except MUL, DIV and the memory accesses
            with m.If(c_sleep):
                m.next = "SLEEP"

        # ---------------------------------------------------------------- control FSM (stage E)
        with m.FSM(init="EXEC", name="core_fsm"):
            with m.State("EXEC"):
                # done unless it starts a multi-cycle state or sleeps (WFI keeps D for the wake)
                m.d.comb += e_adv.eq(~e_valid | (c_valid & ~c_sleep))
                with m.If(e_valid):
                    with m.If(irq_take):
                        trap(CAUSE["m_external_irq"], 0, Mux(e_fault, 0, insn))
                    with m.Elif(e_fault):
                        trap(Mux(pc[0:2] != 0, CAUSE["insn_misaligned"], CAUSE["insn_access"]), pc)
                    with m.Else():
                        exec_body()

            with m.State("MEM"):
                with m.If(self.dbus.ack):
                    m.d.sync += [bus_en.eq(0), ld_word.eq(self.dbus.rdata)]
                    with m.If(is_store):
                        retire_insn()
                        after_commit()
                    with m.Else():
                        m.next = "LD_FIN"

            with m.State("LS_TRAP"):
                with m.If(ls_misaligned_r):
                    trap(Mux(is_store, CAUSE["store_misaligned"], CAUSE["load_misaligned"]),
                         ls_addr_r, insn)
                with m.Else():
                    trap(Mux(is_store, CAUSE["store_access"], CAUSE["load_access"]),
                         ls_addr_r, insn)
                m.d.comb += e_adv.eq(1)
                m.next = "EXEC"

            with m.State("ILOAD"):
                m.d.comb += [iload.eq(1), self.imem.en.eq(1), self.imem.addr.eq(bus_addr[2:14])]
                with m.If(self.imem.gnt):
                    m.next = "ILOAD_W"

            with m.State("ILOAD_W"):
                m.d.sync += ld_word.eq(self.imem.data)
                m.next = "LD_FIN"

            with m.State("LD_FIN"):
                finish(ld_val)

            with m.State("MUL"):
                m.d.sync += [mul_lo.eq(mul_ra.as_signed() * mul_rb[0:17]),
                             mul_hi.eq(mul_ra.as_signed() * mul_rb[17:33].as_signed())]
                m.next = "MUL_FIN"

            with m.State("MUL_FIN"):
                finish(mul_res)

            with m.State("DIV"):
                with m.If(div_diff[32]):             # borrow: keep the shifted remainder
                    m.d.sync += [div_rem.eq(div_rem_sh[0:32]), div_quo.eq(Cat(0, div_quo[0:31]))]
                with m.Else():
                    m.d.sync += [div_rem.eq(div_diff[0:32]), div_quo.eq(Cat(1, div_quo[0:31]))]
                m.d.sync += div_cnt.eq(div_cnt + 1)
                with m.If(div_cnt == 31):
                    m.next = "DIV_FIN"

            with m.State("DIV_FIN"):
                q = Mux(div_zero, 0xFFFF_FFFF, Mux(div_negq, -div_quo, div_quo))
                r = Mux(div_zero, div_a, Mux(div_negr, -div_rem, div_rem))
                finish(Mux(f3[1], r, q)[0:32])

            with m.State("SLEEP"):
                m.d.comb += self.sleeping.eq(1)
                with m.If(wake):
                    m.next = "EXEC"

        return m
