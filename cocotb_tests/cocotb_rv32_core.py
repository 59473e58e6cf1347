"""cocotb side of test_rv32_core: directed per-class tests and commit-trace comparison with the ISS.

Directed tests assemble small programs with ``golden.rv32_asm``, run them on the harness until the
terminator ``jal x0, 0`` commits, and check the commit records and the register values they wrote
against hand-computed constants. The trace tests run ``verif.rv32_random.random_program`` streams (and
interrupt-heavy programs built here) on the RTL and on ``golden.rv32_iss.RV32ISS`` and compare every
record with ``golden.rv32_iss.trace_key`` (which blanks values read from ``mcycle*``/``cycle*``).
``t_firmware_trace`` runs the real firmware ELF on the RTL core, its MMIO answered by a golden
``ChipModel``'s hardware while the test drives queue scenarios as host, then replays the run on the
ISS (same MMIO read data and irq boundaries) and compares every record.
Every random choice seeds from ``KAKI_SEED`` (logged).
"""
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

import golden.rv32_asm as A
import verif.rv32_random as RND
from spec import mmio_registers as MR
from spec import registers as R
from spec.capabilities import Capabilities
from spec.commands import encode
from spec.completion import RECORD_BYTES, unpack_record
from spec.descriptors import Engine, ErrorCode, Opcode
from spec.firmware_image import FirmwareImage, FirmwareState
from firmware import build as fw_build
from driver.ops import run_async
from verif import chip_scenarios as S
from spec.chip import QUEUES
from verif.error_injection import ERROR_KINDS, blackhole_window
from verif.queue_host import configure
from verif.ring_layout import QueueConfig
from golden.chip_model import ChipModel
from golden.rv32_iss import CYCLE_CSRS, RV32ISS, CommitRecord, trace_key
from hdl_gen.config import KakiConfig

REGRESS = os.environ.get("KAKI_REGRESS", "0") not in ("", "0")
#: Commit records the firmware trace must compare (make test, make regress).
MIN_TRACE, MIN_TRACE_REGRESS = 400, 900
HALT = A.HALT_INSN
IMEM_BYTES = 0x4000            # IMEM is 0..0x3FFF: fetches and loads beyond it fault
DMEM = 0x1000_0000
MMIO = 0x2000_0000
IRQ_ACK = 0x2000_0100          # a write here drops irq in the directed interrupt tests
MASK32 = 0xFFFF_FFFF
PATTERN_BITS = 256


def seed_of(dut, name):
    seed = int(os.environ["KAKI_SEED"])
    dut._log.info(f"{name}: KAKI_SEED={seed}")
    return seed


# ------------------------------------------------------------------------------------------------
# A tiny assembler with labels (on top of golden.rv32_asm's encoders)

class Prog:
    def __init__(self):
        self.words = []
        self.labels = {}
        self.fixups = []

    @property
    def pc(self):
        return 4 * len(self.words)

    def __call__(self, *items):
        for it in items:
            if isinstance(it, (list, tuple)):
                self(*it)
            else:
                self.words.append(it & MASK32)
        return self

    def label(self, name):
        self.labels[name] = self.pc
        return self

    def org(self, addr):
        assert addr >= self.pc and addr % 4 == 0
        while self.pc < addr:
            self.words.append(0)
        return self

    def ref(self, enc, *args, target, absolute=False):
        """An instruction whose last argument is the pc-relative offset to label ``target``
        (its absolute address with ``absolute=True``)."""
        self.fixups.append((len(self.words), enc, args, target, absolute))
        self.words.append(0)
        return self

    def halt(self):
        return self(HALT)

    def assemble(self):
        for idx, enc, args, target, absolute in self.fixups:
            off = self.labels[target] - (0 if absolute else 4 * idx)
            self.words[idx] = enc(*args, off) & MASK32
        return list(self.words)


# ------------------------------------------------------------------------------------------------
# MMIO device model (one instance on the RTL side, one given to the ISS)

class MmioModel:
    """Word registers: reads of a never-written address return a fixed address-derived value."""

    def __init__(self):
        self.regs = {}
        self.log = []

    def read(self, addr):
        v = self.regs.get(addr, (0x5A00_0000 | (addr & 0xFFFF)) ^ 0x0013_0000)
        self.log.append(("r", addr, v))
        return v

    def write(self, addr, value, wstrb=0xF):
        self.log.append(("w", addr, value))
        self.regs[addr] = value


# ------------------------------------------------------------------------------------------------
# Testbench driver

class Tb:
    def __init__(self, dut, rng, *, imem_stall=0, dmem_stall=0, mmio_delay=(0, 0)):
        self.dut = dut
        self.rng = rng
        self.imem_stall, self.dmem_stall = imem_stall, dmem_stall
        self.mmio_delay = mmio_delay
        self.mmio = MmioModel()
        self.on_mmio_write = None
        self.cycle = 0
        self.at_edge = False      # True when run()/idle() returned just after a rising edge
        self.mmio_pend = None

    async def start(self):
        d = self.dut
        Clock(d.clk, 10, unit="ns").start()
        for name in ("hold", "imem_bd_we", "dmem_bd_we", "dmem_bd_re", "dmem_clear", "mmio_ack",
                     "irq", "irq_sched_en"):
            getattr(d, name).value = 0
        d.irq_pattern.value = 0
        d.mmio_rdata.value = 0
        d.imem_stall.value = self.imem_stall
        d.dmem_stall.value = self.dmem_stall
        d.rst.value = 1
        await RisingEdge(d.clk)
        await RisingEdge(d.clk)
        d.rst.value = 0
        self.at_edge = True

    async def edge(self):
        if not self.at_edge:
            await RisingEdge(self.dut.clk)
        self.at_edge = False

    async def load(self, words, *, clear_dmem=True, dmem=None):
        """Hold the core in reset, write ``words`` into IMEM at 0, zero DMEM, release the core."""
        d = self.dut
        await self.edge()
        d.hold.value = 1
        await RisingEdge(d.clk)
        if clear_dmem:
            d.dmem_clear.value = 1
            await RisingEdge(d.clk)
            d.dmem_clear.value = 0
        d.imem_bd_we.value = 1
        for i, w in enumerate(words):
            d.imem_bd_addr.value = i
            d.imem_bd_data.value = w & MASK32
            await RisingEdge(d.clk)
        d.imem_bd_we.value = 0
        if clear_dmem:
            while True:
                await ReadOnly()
                if not int(d.dmem_busy.value):
                    break
                await RisingEdge(d.clk)
            await RisingEdge(d.clk)
        for addr, w in (dmem or {}).items():
            d.dmem_bd_we.value = 1
            d.dmem_bd_addr.value = (addr - DMEM) >> 2
            d.dmem_bd_data.value = w
            await RisingEdge(d.clk)
        d.dmem_bd_we.value = 0
        self.mmio_pend = None
        self.mmio_ack_now = False
        d.mmio_ack.value = 0
        d.hold.value = 0
        self.cycle = 0
        self.at_edge = False

    async def read_dmem(self, addr):
        d = self.dut
        await self.edge()
        d.dmem_bd_re.value = 1
        d.dmem_bd_addr.value = (addr - DMEM) >> 2
        await RisingEdge(d.clk)
        d.dmem_bd_re.value = 0
        await ReadOnly()
        v = int(d.dmem_bd_rdata.value)
        await RisingEdge(d.clk)
        self.at_edge = True
        return v

    async def run(self, *, until=None, max_cycles=20000, stop_on_sleep=False, records=None):
        """Clock the core, answering MMIO, until a record satisfies ``until`` (default: the
        terminator) or the core sleeps (``stop_on_sleep``). Returns the list of records."""
        d = self.dut
        until = until or (lambda r: r.insn == HALT and not r.trap)
        records = [] if records is None else records
        for _ in range(max_cycles):
            await self.edge()
            self.cycle += 1
            # MMIO: acknowledge a pending request when its delay has run out
            self.mmio_ack_now = False
            if self.mmio_pend is not None:
                if self.mmio_pend["delay"] == 0:
                    p = self.mmio_pend
                    if p["we"]:
                        self.mmio.write(p["addr"], p["wdata"], p["wstrb"])
                        if self.on_mmio_write:
                            self.on_mmio_write(p["addr"], p["wdata"])
                    else:
                        d.mmio_rdata.value = self.mmio.read(p["addr"])
                    d.mmio_ack.value = 1
                    self.mmio_ack_now = True
                    self.mmio_pend = None
                else:
                    self.mmio_pend["delay"] -= 1
                    d.mmio_ack.value = 0
            else:
                d.mmio_ack.value = 0
            await ReadOnly()
            if int(d.trace_valid.value):
                rec = CommitRecord(int(d.trace_pc.value), int(d.trace_insn.value),
                                   int(d.trace_rd.value), int(d.trace_value.value),
                                   bool(int(d.trace_trap.value)), int(d.trace_cause.value))
                records.append(rec)
                if until(rec):
                    return await self._stop(records)
            if int(d.mmio_req.value) and not self.mmio_ack_now and self.mmio_pend is None:
                self.mmio_pend = dict(addr=int(d.mmio_addr.value), we=int(d.mmio_we.value),
                                      wdata=int(d.mmio_wdata.value),
                                      wstrb=int(d.mmio_wstrb.value),
                                      delay=self.rng.randint(*self.mmio_delay))
            if stop_on_sleep and int(d.sleeping.value):
                return await self._stop(records)
        raise AssertionError(f"no stop condition within {max_cycles} cycles; last records: "
                             f"{[fmt(r) for r in records[-5:]]}")

    async def _stop(self, records):
        """Leave run() just after the next rising edge (so the caller may drive inputs)."""
        await RisingEdge(self.dut.clk)
        self.at_edge = True
        self.dut.mmio_ack.value = 0
        self.mmio_ack_now = False
        return records

    async def idle(self, n):
        """Clock ``n`` cycles without expecting commits; returns the number of records seen."""
        seen = 0
        for _ in range(n):
            await self.edge()
            self.cycle += 1
            await ReadOnly()
            seen += int(self.dut.trace_valid.value)
        await RisingEdge(self.dut.clk)
        self.at_edge = True
        return seen


def fmt(r):
    if r is None:
        return "None"
    return (f"pc={r.pc:#010x} insn={r.insn:#010x} rd={r.rd} value={r.value:#010x} "
            f"trap={int(bool(r.trap))} cause={r.cause:#x}")


def reg_writes(records):
    """Final register values written by the records (absent = never written)."""
    regs = {}
    for r in records:
        if not r.trap and r.rd:
            regs[r.rd] = r.value
    return regs


def check_regs(records, expect):
    regs = reg_writes(records)
    bad = []
    for rd, v in expect.items():
        got = regs.get(rd)
        want = None if v is None else v & MASK32
        if got != want:
            bad.append(f"x{rd}: got {'never written' if got is None else hex(got)}, "
                       f"expected {'never written' if want is None else hex(want)}")
    assert not bad, "register mismatches:\n  " + "\n  ".join(bad)


def check_no_bus_err(dut):
    assert int(dut.bus_err.value) == 0, "dbus request outside DMEM/MMIO or misaligned"


async def run_prog(dut, prog, *, tb=None, stalls=False, **kw):
    """Load and run ``prog`` (a Prog or word list) until the terminator; returns (tb, records)."""
    if tb is None:
        tb = Tb(dut, random.Random(int(os.environ["KAKI_SEED"])), mmio_delay=(0, 3))
        await tb.start()
    dut.imem_stall.value = 64 if stalls else 0
    dut.dmem_stall.value = 64 if stalls else 0
    words = prog.assemble() if isinstance(prog, Prog) else prog
    await tb.load(words)
    recs = await tb.run(**kw)
    check_no_bus_err(dut)
    iss_crosscheck(words, recs)
    return tb, recs


def iss_crosscheck(words, recs):
    """The ISS, run on the same program (no interrupts), must produce the same records."""
    iss, _ = make_iss(words)
    for n, rec in enumerate(recs):
        compare(rec, iss.step(), recs[:n], n)


async def run_both(dut, build, expect, name):
    """Run the program without and with random IMEM/DMEM stalls; check the same expectations."""
    seed_of(dut, name)
    first = None
    tb = None
    for stalls in (False, True):
        tb, recs = await run_prog(dut, build(), tb=tb, stalls=stalls)
        check_regs(recs, expect)
        key = [trace_key(r) for r in recs]
        if first is None:
            first = key
        else:
            assert key == first, "commit trace changed under memory stalls"
    return recs


# ------------------------------------------------------------------------------------------------
# Directed tests

@cocotb.test()
async def t_alu(dut):
    """Register-register and register-immediate ALU operations on edge values; writes to x0."""
    def build():
        p = Prog()
        p(A.li(1, 0x7FFF_FFFF), A.li(2, 0x8000_0000), A.li(3, -1), A.li(4, 5))
        p(A.add(5, 1, 4), A.sub(6, 4, 3), A.sub(7, 2, 4), A.slt(8, 2, 1), A.slt(9, 1, 2),
          A.sltu(10, 2, 1), A.sltu(11, 1, 3), A.xor(12, 1, 3), A.or_(13, 2, 4), A.and_(14, 3, 1),
          A.addi(15, 1, 1), A.addi(16, 4, -2048), A.slti(17, 3, 0), A.slti(18, 4, -1),
          A.sltiu(19, 4, -1), A.sltiu(20, 3, 2047), A.xori(21, 3, 0x555), A.ori(22, 4, -16),
          A.andi(23, 3, 0x7F0), A.addi(0, 1, 1), A.add(24, 0, 0), A.sub(25, 3, 3),
          A.xori(26, 2, -1), A.add(0, 1, 1), A.addi(27, 0, 2047), A.slt(28, 3, 3))
        return p.halt()
    expect = {5: 0x8000_0004, 6: 6, 7: 0x7FFF_FFFB, 8: 1, 9: 0, 10: 0, 11: 1, 12: 0x8000_0000,
              13: 0x8000_0005, 14: 0x7FFF_FFFF, 15: 0x8000_0000, 16: 0xFFFF_F805, 17: 1, 18: 0,
              19: 1, 20: 0, 21: 0xFFFF_FAAA, 22: 0xFFFF_FFF5, 23: 0x7F0, 24: 0, 25: 0,
              26: 0x7FFF_FFFF, 27: 2047, 28: 0}
    recs = await run_both(dut, build, expect, "t_alu")
    x0_writes = [r for r in recs if r.insn in (A.addi(0, 1, 1), A.add(0, 1, 1))]
    assert len(x0_writes) == 2 and all(r.rd == 0 and r.value == 0 for r in x0_writes), x0_writes


@cocotb.test()
async def t_shifts(dut):
    """SLL/SRL/SRA by register (low 5 bits only) and by immediate, shamt 0 and 31."""
    def build():
        p = Prog()
        p(A.li(1, 0x8000_0001), A.li(2, 33), A.li(3, 31), A.li(4, 0x7FFF_FFFF), A.li(19, -32))
        p(A.sll(5, 1, 2), A.srl(6, 1, 2), A.sra(7, 1, 2), A.sll(8, 1, 3), A.srl(9, 1, 3),
          A.sra(10, 1, 3), A.slli(11, 1, 4), A.srli(12, 1, 4), A.srai(13, 1, 4),
          A.slli(14, 1, 0), A.srai(15, 1, 0), A.srai(16, 4, 31), A.sra(17, 4, 0),
          A.srli(18, 1, 31), A.sll(20, 1, 19), A.srai(21, 1, 31), A.slli(22, 4, 31))
        return p.halt()
    expect = {5: 2, 6: 0x4000_0000, 7: 0xC000_0000, 8: 0x8000_0000, 9: 1, 10: 0xFFFF_FFFF,
              11: 0x10, 12: 0x0800_0000, 13: 0xF800_0000, 14: 0x8000_0001, 15: 0x8000_0001,
              16: 0, 17: 0x7FFF_FFFF, 18: 1, 20: 0x8000_0001, 21: 0xFFFF_FFFF, 22: 0x8000_0000}
    await run_both(dut, build, expect, "t_shifts")


@cocotb.test()
async def t_lui_auipc(dut):
    """LUI and AUIPC (pc-relative, wrapping), including rd = x0."""
    def build():
        p = Prog()
        p(A.lui(5, 0x12345), A.lui(6, 0xFFFFF), A.lui(7, 0), A.auipc(8, 0), A.auipc(9, 1),
          A.auipc(10, 0xFFFFF), A.lui(0, 0x12345), A.auipc(11, 0x80000))
        return p.halt()
    # pcs: lui@0 lui@4 lui@8 auipc@12 auipc@16 auipc@20 lui@24 auipc@28
    expect = {5: 0x1234_5000, 6: 0xFFFF_F000, 7: 0, 8: 12, 9: 0x1010, 10: 0xFFFF_F014,
              11: 0x8000_001C}
    recs = await run_both(dut, build, expect, "t_lui_auipc")
    assert recs[6].rd == 0 and recs[6].value == 0


@cocotb.test()
async def t_branches(dut):
    """Every branch taken and not taken (signed/unsigned, equal operands), and a backward loop."""
    cases = [  # (encoder, rs1, rs2, taken)
        (A.beq, 1, 3, True), (A.beq, 1, 2, False), (A.bne, 1, 2, True), (A.bne, 1, 3, False),
        (A.blt, 1, 2, True), (A.blt, 2, 1, False), (A.blt, 1, 3, False), (A.bge, 2, 1, True),
        (A.bge, 1, 2, False), (A.bge, 1, 3, True), (A.bltu, 2, 1, True), (A.bltu, 1, 2, False),
        (A.bgeu, 1, 2, True), (A.bgeu, 2, 1, False), (A.bgeu, 2, 2, True), (A.bltu, 2, 2, False),
    ]

    def build():
        p = Prog()
        p(A.li(1, -1), A.li(2, 1), A.li(3, -1))
        for i, (enc, a, b, _) in enumerate(cases):
            rd = 5 + i
            p(A.addi(rd, 0, 0))
            p.ref(enc, a, b, target=f"skip{i}")
            p(A.addi(rd, 0, 1))
            p.label(f"skip{i}")
        p(A.li(26, 0), A.li(27, 5))
        p.label("loop")
        p(A.addi(26, 26, 3), A.addi(27, 27, -1))
        p.ref(A.bne, 27, 0, target="loop")
        p(A.addi(28, 26, 1))
        return p.halt()
    expect = {5 + i: 0 if taken else 1 for i, (_, _, _, taken) in enumerate(cases)}
    expect.update({26: 15, 27: 0, 28: 16})
    recs = await run_both(dut, build, expect, "t_branches")
    for r in recs:
        if (r.insn & 0x7F) == 0x63:
            assert r.rd == 0 and r.value == 0 and not r.trap, fmt(r)


@cocotb.test()
async def t_jumps(dut):
    """JAL/JALR forward and backward, link values, odd JALR targets masked, rd = x0, rd = rs1."""
    def build():
        p = Prog()
        p.ref(A.jal, 1, target="a")                  # 0: x1 = 4
        p(A.addi(5, 0, 99))                          # 4: skipped
        p.label("a")
        p(A.auipc(6, 0), A.addi(6, 6, 21))           # 8, 12: x6 = 29 -> target 28
        p(A.jalr(7, 6, 0))                           # 16: x7 = 20
        p(A.addi(8, 0, 99), A.addi(8, 0, 98))        # 20, 24: skipped
        p(A.addi(9, 0, 1))                           # 28
        p(A.auipc(10, 0), A.jalr(11, 10, 13))        # 32, 36: target 45 & ~1 = 44, x11 = 40
        p(A.addi(12, 0, 99))                         # 40: skipped
        p.ref(A.jal, 0, target="b")                  # 44: no link
        p(A.addi(13, 0, 99))                         # 48: skipped
        p.label("b")
        p(A.auipc(14, 0), A.addi(14, 14, 16))        # 52, 56: x14 = 68
        p(A.jalr(14, 14, 0))                         # 60: x14 = 64, target 68
        p(A.addi(15, 0, 99))                         # 64: skipped
        p.ref(A.jal, 0, target="c")                  # 68
        p.label("back")
        p(A.addi(17, 0, 7))                          # 72
        p.ref(A.jal, 0, target="end")                # 76
        p.label("c")
        p.ref(A.jal, 18, target="back")              # 80: x18 = 84, backwards
        p(A.addi(19, 0, 99))                         # 84: skipped
        p.label("end")
        p(A.jalr(0, 0, 0x5C + 1))                    # 88: to 93 & ~1 = 92
        p.halt()                                     # 92
        return p
    expect = {1: 4, 5: None, 6: 29, 7: 20, 8: None, 9: 1, 10: 32, 11: 40, 12: None, 13: None,
              14: 64, 15: None, 17: 7, 18: 84, 19: None}
    recs = await run_both(dut, build, expect, "t_jumps")
    pcs = [r.pc for r in recs]
    assert pcs == [0, 8, 12, 16, 28, 32, 36, 44, 52, 56, 60, 68, 80, 72, 76, 88, 92], pcs


@cocotb.test()
async def t_loads_stores(dut):
    """Every load/store width and sign on DMEM (all byte offsets, top word, negative offsets),
    loads of IMEM constants of every width."""
    def build():
        p = Prog()
        p(A.li(1, DMEM), A.li(2, 0xF1E2_D3C4), A.li(3, 0x1122_3344))
        p(A.sw(2, 0, 1), A.sw(3, 4, 1))
        p(A.lb(5, 0, 1), A.lb(6, 1, 1), A.lb(7, 2, 1), A.lb(8, 3, 1), A.lbu(9, 3, 1),
          A.lbu(10, 4, 1), A.lh(11, 0, 1), A.lh(12, 2, 1), A.lhu(13, 2, 1), A.lh(14, 6, 1),
          A.lw(15, 4, 1))
        p(A.sb(3, 1, 1), A.sh(3, 6, 1), A.lw(16, 0, 1), A.lw(17, 4, 1))
        p(A.sb(2, 7, 1), A.lw(18, 4, 1))
        p(A.addi(19, 1, 8), A.lw(20, -8, 19))
        p(A.li(21, DMEM + 0x3FFC), A.sw(3, 0, 21), A.lw(22, 0, 21), A.lbu(23, 3, 21))
        p(A.sh(2, 0, 21), A.lhu(31, 0, 21), A.lw(30, 0, 21))
        # IMEM constants: the word at label "data", absolute addresses with rs1 = x0
        p.ref(lambda a: A.lw(24, a, 0), target="data", absolute=True)
        p.ref(lambda a: A.lb(25, a + 1, 0), target="data", absolute=True)
        p.ref(lambda a: A.lhu(26, a + 2, 0), target="data", absolute=True)
        p.ref(lambda a: A.lh(27, a + 2, 0), target="data", absolute=True)
        p.ref(lambda a: A.lbu(28, a, 0), target="data", absolute=True)
        p(A.lw(29, 0, 0))                            # the first instruction word
        # the last IMEM word is fetched and loaded like the first (a narrower IMEM decode faults)
        p.ref(A.jal, 19, target="top")
        p(A.li(4, IMEM_BYTES - 4), A.lw(4, 0, 4))
        p.halt()
        p.label("data")
        p(0x8081_C2E3)
        p.org(IMEM_BYTES - 4)
        p.label("top")
        p(A.jalr(0, 19, 0))
        return p
    w0 = build().assemble()[0]
    expect = {5: 0xFFFF_FFC4, 6: 0xFFFF_FFD3, 7: 0xFFFF_FFE2, 8: 0xFFFF_FFF1, 9: 0xF1, 10: 0x44,
              11: 0xFFFF_D3C4, 12: 0xFFFF_F1E2, 13: 0xF1E2, 14: 0x1122, 15: 0x1122_3344,
              16: 0xF1E2_44C4, 17: 0x3344_3344, 18: 0xC444_3344, 20: 0xF1E2_44C4,
              22: 0x1122_3344, 23: 0x11, 31: 0xD3C4, 30: 0x1122_D3C4,
              24: 0x8081_C2E3, 25: 0xFFFF_FFC2, 26: 0x8081, 27: 0xFFFF_8081, 28: 0xE3, 29: w0,
              4: A.jalr(0, 19, 0) & MASK32}
    await run_both(dut, build, expect, "t_loads_stores")
    # backdoor check of DMEM after the last (stalled) run
    tb = Tb(dut, random.Random(0))
    assert await tb.read_dmem(DMEM) == 0xF1E2_44C4
    assert await tb.read_dmem(DMEM + 4) == 0xC444_3344
    assert await tb.read_dmem(DMEM + 0x3FFC) == 0x1122_D3C4


@cocotb.test()
async def t_mmio(dut):
    """Word loads/stores to MMIO answered by cocotb with random ack delays; order is kept."""
    seed = seed_of(dut, "t_mmio")
    p = Prog()
    p(A.li(1, MMIO), A.li(2, 0xCAFE_BABE), A.li(3, MMIO + 0xFFFC))
    p(A.sw(2, 0, 1), A.lw(5, 0, 1), A.lw(6, 4, 1), A.sw(5, 8, 1), A.addi(2, 2, 1), A.sw(2, 0, 3),
      A.lw(7, 0, 3), A.lw(8, 8, 1), A.lw(9, 0x7FC, 1))
    p.halt()
    words = p.assemble()
    tb = Tb(dut, random.Random(seed))
    await tb.start()
    for delays in ((0, 0), (1, 6)):
        tb.mmio = MmioModel()
        tb.mmio_delay = delays
        await tb.load(words)
        recs = await tb.run()
        check_no_bus_err(dut)
        iss_crosscheck(words, recs)
        d4 = (0x5A00_0000 | 4) ^ 0x0013_0000
        d7fc = (0x5A00_0000 | 0x7FC) ^ 0x0013_0000
        check_regs(recs, {5: 0xCAFE_BABE, 6: d4, 7: 0xCAFE_BABF, 8: 0xCAFE_BABE, 9: d7fc})
        assert tb.mmio.log == [
            ("w", MMIO, 0xCAFE_BABE), ("r", MMIO, 0xCAFE_BABE), ("r", MMIO + 4, d4),
            ("w", MMIO + 8, 0xCAFE_BABE), ("w", MMIO + 0xFFFC, 0xCAFE_BABF),
            ("r", MMIO + 0xFFFC, 0xCAFE_BABF), ("r", MMIO + 8, 0xCAFE_BABE),
            ("r", MMIO + 0x7FC, d7fc)], tb.mmio.log


@cocotb.test()
async def t_muldiv(dut):
    """MUL/MULH/MULHSU/MULHU and DIV/DIVU/REM/REMU corner cases (overflow, /0, signs)."""
    MIN = 0x8000_0000

    def build1():
        p = Prog()
        p(A.li(1, MIN), A.li(2, -1), A.li(3, 0), A.li(4, 7), A.li(30, -7))
        p(A.mul(5, 1, 2), A.mulh(6, 1, 2), A.mulhu(7, 1, 2), A.mulhsu(8, 1, 2),
          A.mulh(9, 30, 4), A.mul(10, 30, 4), A.mulhsu(11, 4, 30), A.mulhu(12, 2, 2),
          A.mulh(13, 1, 1), A.div(14, 1, 2), A.rem(15, 1, 2), A.div(16, 4, 3), A.divu(17, 4, 3),
          A.rem(18, 30, 3), A.remu(19, 30, 3), A.mulhsu(20, 2, 2), A.mul(21, 0, 2),
          A.divu(22, 1, 2), A.remu(23, 1, 2), A.div(24, 3, 30), A.rem(25, 3, 4),
          A.mulhsu(26, 30, 4), A.div(0, 4, 4))
        return p.halt()
    expect1 = {5: MIN, 6: 0, 7: 0x7FFF_FFFF, 8: MIN, 9: 0xFFFF_FFFF, 10: 0xFFFF_FFCF, 11: 6,
               12: 0xFFFF_FFFE, 13: 0x4000_0000, 14: MIN, 15: 0, 16: 0xFFFF_FFFF,
               17: 0xFFFF_FFFF, 18: 0xFFFF_FFF9, 19: 0xFFFF_FFF9, 20: 0xFFFF_FFFF, 21: 0,
               22: 0, 23: MIN, 24: 0, 25: 0, 26: 0xFFFF_FFFF}
    # 20: mulhsu(-1, 0xFFFFFFFF) = -(2^32-1) -> high word 0xFFFFFFFF
    # 26: mulhsu(-7, 7) = -49 -> high 0xFFFFFFFF
    await run_both(dut, build1, expect1, "t_muldiv/1")

    def build2():
        p = Prog()
        p(A.li(1, MIN), A.li(2, 2), A.li(3, -2), A.li(4, 7), A.li(30, -7), A.li(31, 3))
        p(A.div(5, 30, 2), A.rem(6, 30, 2), A.div(7, 4, 3), A.rem(8, 4, 3), A.divu(9, 30, 4),
          A.remu(10, 30, 4), A.div(11, 30, 30), A.rem(12, 1, 31), A.div(13, 1, 31),
          A.divu(14, 1, 31), A.remu(15, 1, 31), A.div(16, 30, 3), A.rem(17, 30, 3),
          A.div(4, 4, 2), A.rem(18, 1, 1), A.divu(19, 2, 30), A.remu(20, 2, 30),
          A.mul(21, 31, 31), A.mul(22, 22, 22))
        return p.halt()
    expect2 = {5: 0xFFFF_FFFD, 6: 0xFFFF_FFFF, 7: 0xFFFF_FFFD, 8: 1, 9: 0x2492_4923, 10: 4,
               11: 1, 12: 0xFFFF_FFFE, 13: 0xD555_5556, 14: 0x2AAA_AAAA, 15: 2, 16: 3,
               17: 0xFFFF_FFFF,
               4: 3, 18: 0, 19: 0, 20: 2, 21: 9, 22: 0}
    await run_both(dut, build2, expect2, "t_muldiv/2")


TRAP_HANDLER = 0x800


def trap_handler(p, *, resume="mepc+4"):
    """At TRAP_HANDLER: read mcause/mepc/mtval/mstatus into x28/x29/x30/x27 (visible in the
    trace), then resume at mepc + 4 (or jump to x31)."""
    p.org(TRAP_HANDLER)
    p(A.csrr(28, "mcause"), A.csrr(29, "mepc"), A.csrr(30, "mtval"), A.csrr(27, "mstatus"))
    if resume == "mepc+4":
        p(A.addi(26, 29, 4), A.csrw("mepc", 26), A.mret())
    else:
        p(A.jalr(0, 31, 0))


def handler_views(recs):
    """(trap record, mcause, mepc, mtval, mstatus) for every trap in ``recs``."""
    out = []
    for i, r in enumerate(recs):
        if r.trap:
            h = recs[i + 1:i + 5]
            assert [x.pc for x in h] == [TRAP_HANDLER + 4 * k for k in range(4)], \
                [fmt(x) for x in h]
            out.append((r, h[0].value, h[1].value, h[2].value, h[3].value))
    return out


def csr_prog(body):
    p = Prog()
    p(A.li(1, -1), A.li(2, TRAP_HANDLER), A.csrw("mtvec", 2))
    p(*body)
    p.halt()
    trap_handler(p)
    return p.assemble()


@cocotb.test()
async def t_csr(dut):
    """CSRRW/S/C and the immediate forms on every CSR of the contract; read-only and unknown
    CSRs trap as illegal; minstret/mcycle behaviour (write of a half after the increment)."""
    seed_of(dut, "t_csr")
    tb = Tb(dut, random.Random(0))
    await tb.start()

    async def run(body):
        _, recs = await run_prog(dut, csr_prog(body), tb=tb)
        return recs

    # mstatus (only MIE/MPIE writable, MPP reads 3), misa, mhartid, mip, mie
    recs = await run([
        A.csrr(5, "mstatus"), A.csrrw(6, "mstatus", 1), A.csrr(7, "mstatus"),
        A.csrrci(8, "mstatus", 8), A.csrrsi(9, "mstatus", 8), A.csrrc(10, "mstatus", 1),
        A.csrrwi(11, "mstatus", 0x1F), A.csrrwi(0, "mstatus", 0), A.csrr(21, "mstatus"),
        A.csrr(12, "misa"), A.csrrw(13, "misa", 1), A.csrr(14, "misa"), A.csrr(15, "mhartid"),
        A.csrrw(16, "mip", 1), A.csrr(17, "mip"),
        A.csrrw(18, "mie", 1), A.csrrc(19, "mie", 1), A.csrr(20, "mie")])
    check_regs(recs, {5: 0x1800, 6: 0x1800, 7: 0x1888, 8: 0x1888, 9: 0x1880, 10: 0x1888,
                      11: 0x1800, 21: 0x1800, 12: 0x4000_1100, 13: 0x4000_1100,
                      14: 0x4000_1100, 15: 0, 16: 0, 17: 0, 18: 0, 19: 0x880, 20: 0})
    assert not any(r.trap for r in recs)

    # mscratch/mcause/mtval full, mepc/mtvec bits [1:0] read 0
    recs = await run([
        A.li(3, 0x1234_5678),
        A.csrrw(5, "mscratch", 1), A.csrrc(6, "mscratch", 3), A.csrrs(7, "mscratch", 0),
        A.csrrsi(8, "mscratch", 0x10), A.csrr(9, "mscratch"),
        A.csrrw(10, "mepc", 1), A.csrr(11, "mepc"), A.csrrw(12, "mcause", 3),
        A.csrrci(13, "mcause", 0x18), A.csrr(14, "mcause"), A.csrrw(15, "mtval", 1),
        A.csrrwi(16, "mtval", 5), A.csrr(17, "mtval"),
        A.csrrw(18, "mtvec", 1), A.csrrci(19, "mtvec", 0x1F), A.csrrw(20, "mtvec", 2)])
    check_regs(recs, {5: 0, 6: 0xFFFF_FFFF, 7: 0xEDCB_A987, 8: 0xEDCB_A987, 9: 0xEDCB_A997,
                      10: 0, 11: 0xFFFF_FFFC, 12: 0, 13: 0x1234_5678, 14: 0x1234_5660,
                      15: 0, 16: 0xFFFF_FFFF, 17: 5, 18: TRAP_HANDLER, 19: 0xFFFF_FFFC,
                      20: 0xFFFF_FFE0})

    # counters
    recs = await run([
        A.li(3, 100), A.li(4, 0xFFFF_FFFF), A.li(6, 7),
        A.csrw("minstret", 3), A.nop(), A.csrr(5, "minstret"), A.csrr(7, "instret"),
        A.csrw("minstreth", 6), A.csrr(8, "minstreth"), A.csrr(9, "minstret"),
        A.csrw("minstret", 4), A.csrr(10, "minstreth"), A.csrr(11, "instreth"),
        A.csrr(12, "minstret"),
        A.li(13, 0xFFFF_FFF0), A.li(14, 5), A.csrw("mcycleh", 14), A.csrw("mcycle", 13),
        *[A.nop() for _ in range(20)],
        A.csrr(15, "mcycleh"), A.csrr(16, "cycleh"), A.csrr(17, "mcycle"), A.csrr(18, "cycle"),
        A.csrrs(19, "cycle", 0), A.csrrsi(20, "instret", 0), A.csrrc(21, "instreth", 0)])
    # minstret: 100 after the write, +1 per retired instruction; minstreth := 7 on top of the
    # incremented low half (104); minstret := 0xFFFFFFFF then carries into the high half.
    check_regs(recs, {5: 101, 7: 102, 8: 7, 9: 105, 10: 7, 11: 8, 12: 1, 15: 6, 16: 6, 21: 8})
    regs = reg_writes(recs)
    i12 = next(i for i, r in enumerate(recs) if r.rd == 12)
    i20 = next(i for i, r in enumerate(recs) if r.rd == 20)
    assert regs[20] == regs[12] + (i20 - i12), (regs[12], regs[20])
    assert 20 <= (regs[17] - 0xFFFF_FFF0) & MASK32 <= 60, hex(regs[17])
    assert 0 < (regs[18] - regs[17]) & MASK32 < 8 and regs[19] > regs[18]

    # illegal CSR accesses: writes to read-only CSRs, unknown addresses (each traps; the handler
    # resumes at mepc + 4)
    illegal = [A.csrrw(5, "cycle", 1), A.csrrs(5, "cycle", 1), A.csrrwi(5, "mhartid", 0),
               A.csrrw(5, 0x7C0, 1), A.csrr(5, 0xF11), A.csrr(5, 0x3A0), A.csrrci(5, "instret", 1),
               A.csrrw(5, "cycleh", 0), A.csrr(5, 0x303), A.csrrw(0, "minstreth", 0) | (0x4 << 20)]
    recs = await run([*illegal, A.csrr(6, "mhartid")])
    views = handler_views(recs)
    assert len(views) == len(illegal), [fmt(v[0]) for v in views]
    for (r, cause, epc, tval, mst), word in zip(views, illegal):
        assert (r.insn, r.rd, r.value, r.cause, cause, tval) == (word, 0, 0, 2, 2, word), fmt(r)
        assert epc == r.pc
    assert 5 not in reg_writes(recs) and reg_writes(recs)[6] == 0


@cocotb.test()
async def t_traps(dut):
    """ECALL, EBREAK, illegal encodings, misaligned and access-fault loads/stores; MRET back;
    mstatus MIE/MPIE stacking; trapping instructions neither write rd nor count in minstret and
    access faults never reach the bus."""
    seed_of(dut, "t_traps")
    p = Prog()
    p(A.li(2, TRAP_HANDLER), A.csrw("mtvec", 2), A.li(1, DMEM), A.li(3, MMIO),
      A.li(4, 0x3000_0000), A.li(6, 0x4000), A.li(7, DMEM + 0x4000), A.csrrsi(0, "mstatus", 8),
      A.li(5, 0x55))
    ILL = None   # tval = the instruction word
    cases = [  # (word, cause, tval)
        (A.ecall(), 11, 0), (A.ebreak(), 3, 0),
        (0x0000_0000, 2, ILL), (0xFFFF_FFFF, 2, ILL), (0x0000_4501, 2, ILL),
        (A.slli(5, 5, 1) | (1 << 25), 2, ILL), (A.srai(5, 5, 1) | (1 << 26), 2, ILL),
        (A.add(5, 5, 5) | (0x20 << 25) | (1 << 12), 2, ILL),    # sll with funct7 0x20
        (A.add(5, 5, 5) | (0x02 << 25), 2, ILL),                # funct7 2
        (A.beq(0, 0, 8) | (2 << 12), 2, ILL), (A.lw(5, 0, 1) | (3 << 12), 2, ILL),
        (A.sw(5, 0, 1) | (3 << 12), 2, ILL), (A.jalr(5, 0, 0) | (1 << 12), 2, ILL),
        (A.fence() | (2 << 12), 2, ILL), (A.ecall() | (4 << 12), 2, ILL),
        (A.ecall() | (5 << 7), 2, ILL), (A.mret() | (1 << 15), 2, ILL), (0x0000_0077, 2, ILL),
        (A.lw(5, 2, 1), 4, DMEM + 2), (A.lh(5, 1, 1), 4, DMEM + 1), (A.lhu(5, 3, 1), 4, DMEM + 3),
        (A.sw(5, 1, 1), 6, DMEM + 1), (A.sh(5, 3, 1), 6, DMEM + 3),
        (A.lw(5, 0, 4), 5, 0x3000_0000), (A.lw(5, 2, 4), 4, 0x3000_0002),
        (A.lb(5, 0, 3), 5, MMIO), (A.lhu(5, 2, 3), 5, MMIO + 2), (A.lw(5, -4, 1), 5, DMEM - 4),
        (A.lw(5, 0, 6), 5, 0x4000), (A.lw(5, 0, 7), 5, DMEM + 0x4000),
        (A.sw(5, 0x100, 0), 7, 0x100), (A.sb(5, 0, 3), 7, MMIO), (A.sh(5, 0, 3), 7, MMIO),
        (A.sw(5, -4, 0), 7, 0xFFFF_FFFC), (A.sb(5, 0x7FF, 4), 7, 0x3000_07FF),
        (A.sw(5, 3, 4), 6, 0x3000_0003),
    ]
    cases = [(w, c, w if t is ILL else t) for w, c, t in cases]
    p(A.csrr(8, "minstret"))
    p(*[w for w, _, _ in cases])
    p(A.csrr(9, "minstret"), A.csrr(10, "mstatus"), A.addi(11, 5, 0))
    p.halt()
    trap_handler(p)
    tb, recs = await run_prog(dut, p.assemble())
    assert tb.mmio.log == [], tb.mmio.log
    views = handler_views(recs)
    assert len(views) == len(cases), (len(views), len(cases))
    for (r, cause, epc, tval, mst), (w, ecause, etval) in zip(views, cases):
        exp = (w, 0, 0, True, ecause, ecause, r.pc, etval, 0x1880)
        got = (r.insn, r.rd, r.value, r.trap, r.cause, cause, epc, tval, mst)
        assert got == exp, f"{fmt(r)}: got {got}, expected {exp}"
    regs = reg_writes(recs)
    # between the two minstret reads: the first csrr + 7 retired handler instructions per trap
    assert regs[9] - regs[8] == 1 + 7 * len(cases), (regs[8], regs[9])
    assert regs[10] == 0x1888 and regs[11] == 0x55   # MIE restored by MRET; x5 never written


@cocotb.test()
async def t_fetch_faults(dut):
    """Fetches outside IMEM (cause 1) and misaligned (cause 0) trap at the fetch with insn 0,
    mtval = pc, mepc = pc & ~3; the jump or branch that got there retires."""
    seed_of(dut, "t_fetch_faults")
    p = Prog()
    p(A.li(2, TRAP_HANDLER), A.csrw("mtvec", 2))
    cases = []   # (label of the jump, its rd, expected fault pc or None = misaligned)
    for i, t in enumerate([IMEM_BYTES, DMEM, MMIO, 0xFFFF_FFFC, 0x3FFC + 4]):
        p(A.li(10, t))
        p.ref(A.jal, 31, target=f"r{i}")            # x31 = address of r{i}
        p.label(f"r{i}")
        p(A.addi(31, 31, 8))                         # -> the nop after the jump
        p.label(f"j{i}")
        p(A.jalr(1, 10, 0), A.nop())
        cases.append((f"j{i}", 1, t))
    p.ref(A.jal, 31, target="m0")
    p.label("m0")
    p(A.addi(31, 31, 12), A.auipc(10, 0))
    p.label("jm0")
    p(A.jalr(1, 10, 6), A.nop())                     # target m0 + 10
    cases.append(("jm0", 1, None))
    p.ref(A.jal, 31, target="m1")
    p.label("m1")
    p(A.addi(31, 31, 8))
    p.label("jm1")
    p(A.beq(0, 0, 6), A.nop())
    cases.append(("jm1", 0, None))
    p.ref(A.jal, 31, target="m2")
    p.label("m2")
    p(A.addi(31, 31, 8))
    p.label("jm2")
    p(A.jal(1, 2), A.nop())
    cases.append(("jm2", 1, None))
    p.halt()
    trap_handler(p, resume="x31")
    _, recs = await run_prog(dut, p.assemble())
    traps = [(i, r) for i, r in enumerate(recs) if r.trap]
    assert len(traps) == len(cases), [fmt(r) for _, r in traps]
    for (i, r), (jl, jrd, t) in zip(traps, cases):
        jump = recs[i - 1]
        jpc = p.labels[jl]
        assert jump.pc == jpc and not jump.trap, fmt(jump)
        assert (jump.rd, jump.value) == ((1, jpc + 4) if jrd else (0, 0)), fmt(jump)
        if t is None:
            t = {"jm0": p.labels["m0"] + 10, "jm1": jpc + 6, "jm2": jpc + 2}[jl]
        assert (r.pc, r.insn, r.rd, r.value, r.cause) == (t, 0, 0, 0, 1 if t % 4 == 0 else 0), \
            fmt(r)
        h = recs[i + 1:i + 4]
        assert (h[0].value, h[1].value, h[2].value) == (r.cause, t & ~3, t), [fmt(x) for x in h]
        assert recs[i + 6].pc == jpc + 4            # back at the nop after the jump


# ------------------------------------------------------------------------------------------------
# WFI and interrupts

def irq_prologue(p):
    p(A.li(2, TRAP_HANDLER), A.csrw("mtvec", 2), A.li(3, IRQ_ACK), A.li(4, 1 << 11))


def irq_handler(p, *, ack_after=1):
    """At TRAP_HANDLER: read mcause/mepc/mtval, count entries in x20, ack the irq (MMIO write)
    every ``ack_after`` entries; MRET to mepc (an interrupt resumes there)."""
    p.org(TRAP_HANDLER)
    p(A.csrr(28, "mcause"), A.csrr(29, "mepc"), A.csrr(30, "mtval"), A.addi(20, 20, 1))
    if ack_after > 1:
        p(A.addi(21, 21, 1), A.addi(22, 0, ack_after))
        p(A.bne(21, 22, 12), A.sw(0, 0, 3), A.addi(21, 0, 0), A.mret())
    else:
        p(A.sw(0, 0, 3), A.mret())


def ack_drops_irq(tb):
    tb.on_mmio_write = lambda addr, v: setattr(tb.dut.irq, "value", 0) if addr == IRQ_ACK else None


@cocotb.test()
async def t_wfi_irq(dut):
    """WFI sleeps until irq & MEIE; with MIE = 0 the core just continues, with MIE = 1 it takes
    the interrupt (mepc = the instruction after WFI, insn = its word); an irq while running
    interrupts a loop without losing or repeating an instruction; MEIE = 0 keeps WFI asleep."""
    seed = seed_of(dut, "t_wfi_irq")
    d = dut
    p = Prog()
    irq_prologue(p)
    p(A.csrw("mie", 4))                               # MEIE, mstatus.MIE = 0
    p.label("wfi1")
    p(A.wfi(), A.addi(5, 0, 1), A.csrr(6, "mip"), A.csrrsi(0, "mstatus", 8))
    p.label("wfi2")
    p(A.wfi())
    p.label("after2")
    p(A.addi(7, 0, 2), A.csrr(8, "mip"), A.addi(9, 0, 0), A.addi(10, 0, 300))
    p.label("loop")
    p(A.addi(9, 9, 1), A.addi(11, 9, 0))
    p.ref(A.blt, 9, 10, target="loop")
    p(A.csrr(12, "mstatus"), A.csrw("mie", 0))
    p.label("wfi3")
    p(A.wfi(), A.nop())
    p.halt()
    irq_handler(p)
    tb = Tb(dut, random.Random(seed), mmio_delay=(0, 2))
    ack_drops_irq(tb)
    await tb.start()
    await tb.load(p.assemble())
    recs = await tb.run(stop_on_sleep=True)
    assert recs[-1].pc == p.labels["wfi1"] and not recs[-1].trap, fmt(recs[-1])
    assert int(d.sleeping.value) == 1
    assert await tb.idle(50) == 0
    assert int(d.sleeping.value) == 1
    d.irq.value = 1                                   # wakes; MIE = 0: no trap
    recs += await tb.run(until=lambda r: r.rd == 6)
    assert not int(d.sleeping.value)
    assert recs[-2].pc == p.labels["wfi1"] + 4 and recs[-2].rd == 5 and not recs[-2].trap
    assert recs[-1].value == 0x800                    # mip.MEIP
    d.irq.value = 0
    recs += await tb.run(stop_on_sleep=True)
    assert recs[-1].pc == p.labels["wfi2"]
    assert await tb.idle(30) == 0
    d.irq.value = 1                                   # wakes and traps
    recs += await tb.run(until=lambda r: r.pc == p.labels["after2"] and not r.trap)
    traps = [i for i, r in enumerate(recs) if r.trap]
    assert len(traps) == 1
    tr = recs[traps[0]]
    assert (tr.pc, tr.insn, tr.rd, tr.value, tr.cause) == \
        (p.labels["after2"], A.addi(7, 0, 2), 0, 0, 0x8000_000B), fmt(tr)
    h = recs[traps[0] + 1:traps[0] + 4]
    assert [x.value for x in h] == [0x8000_000B, p.labels["after2"], 0]
    assert int(d.irq.value) == 0                      # the handler acked it
    # interrupt the loop after a random number of cycles
    wait = random.Random(seed).randrange(20, 200)
    recs += await tb.run(until=lambda r: r.rd == 10)
    start = tb.cycle
    recs += await tb.run(until=lambda r: tb.cycle - start >= wait)
    d.irq.value = 1
    recs += await tb.run(stop_on_sleep=True)
    traps = [r for r in recs if r.trap]
    assert len(traps) == 2, [fmt(r) for r in traps]
    assert p.labels["loop"] <= traps[1].pc <= p.labels["loop"] + 8, fmt(traps[1])
    regs = reg_writes(recs)
    assert regs[9] == 300 and regs[11] == 300 and regs[12] == 0x1888 and regs[20] == 2
    body = [r for r in recs if p.labels["loop"] <= r.pc <= p.labels["loop"] + 8 and not r.trap]
    assert len(body) == 900, len(body)                # nothing lost or repeated
    assert recs[-1].pc == p.labels["wfi3"]
    d.irq.value = 1                                   # MEIE = 0: irq does not wake WFI
    assert await tb.idle(40) == 0 and int(d.sleeping.value) == 1
    check_no_bus_err(dut)


@cocotb.test()
async def t_irq_masking(dut):
    """irq is ignored while mstatus.MIE or mie.MEIE is 0 (mip still shows it) and taken at the
    very next instruction once both are set; MRET with irq still high re-enters at once."""
    seed_of(dut, "t_irq_masking")
    d = dut
    p = Prog()
    irq_prologue(p)
    p(A.csrw("mie", 4))                               # MEIE = 1, MIE = 0
    p(*[A.addi(5, 5, 1) for _ in range(10)], A.csrr(6, "mip"))
    p(A.csrrsi(0, "mstatus", 8))
    p.label("t1")
    p(A.addi(7, 0, 1))
    p(A.csrw("mie", 0), A.csrrsi(0, "mstatus", 8))   # MIE = 1, MEIE = 0
    p(*[A.addi(8, 8, 1) for _ in range(10)], A.csrr(13, "mip"))
    p(A.csrw("mie", 4))
    p.label("t2")
    p(A.addi(9, 0, 1))
    p.halt()
    irq_handler(p, ack_after=3)
    tb = Tb(dut, random.Random(2))
    ack_drops_irq(tb)
    await tb.start()
    await tb.load(p.assemble())
    recs = await tb.run(until=lambda r: r.insn == A.csrw("mie", 4))
    d.irq.value = 1
    recs += await tb.run(until=lambda r: r.insn == A.csrw("mie", 0))
    d.irq.value = 1
    recs += await tb.run()
    traps = [(r.pc, r.insn, r.cause) for r in recs if r.trap]
    assert traps == [(p.labels["t1"], A.addi(7, 0, 1), 0x8000_000B)] * 3 + \
        [(p.labels["t2"], A.addi(9, 0, 1), 0x8000_000B)] * 3, traps
    check_regs(recs, {5: 10, 6: 0x800, 7: 1, 8: 10, 13: 0x800, 9: 1, 20: 6})
    check_no_bus_err(dut)


# ------------------------------------------------------------------------------------------------
# Cycles per instruction

@cocotb.test()
async def t_cpi(dut):
    """Cycles per instruction of each class with a fully granting memory (logged and bounded)."""
    seed_of(dut, "t_cpi")
    N = 40
    classes = {   # name: (instruction, bound on cycles per instruction)
        "alu": (A.addi(5, 5, 1), 1), "mul": (A.mul(6, 5, 5), 3),
        "branch_not_taken": (A.bne(0, 0, 8), 1), "branch_taken": (A.beq(0, 0, 4), 3),
        "jal": (A.jal(0, 4), 3), "csr": (A.csrr(7, "mscratch"), 1),
        "lw_dmem": (A.lw(8, 0, 1), 4), "sw_dmem": (A.sw(8, 0, 1), 2),
        "lw_imem": (A.lw(8, 0, 0), 4), "lw_mmio": (A.lw(8, 0, 2), 4),
        "sw_mmio": (A.sw(8, 0, 2), 3), "div": (A.div(9, 5, 4), 34),
    }
    tb = Tb(dut, random.Random(0))
    await tb.start()
    report = {}
    for name, (insn, bound) in classes.items():
        p = Prog()
        p(A.li(1, DMEM), A.li(2, MMIO), A.li(4, 3))
        p.label("body")
        p(*([insn] * N))
        p.halt()
        await tb.load(p.assemble())
        first = []

        def until(r, first=first, pc0=p.labels["body"]):
            if r.pc == pc0:
                first.append(tb.cycle)
            return r.insn == HALT
        await tb.run(until=until)
        cpi = (tb.cycle - first[0]) / N
        report[name] = cpi
        assert cpi <= bound, f"{name}: {cpi} cycles/insn > {bound}"
    dut._log.info("CPI: " + ", ".join(f"{k}={v:.2f}" for k, v in report.items()))


# ------------------------------------------------------------------------------------------------
# Commit-trace comparison with the ISS

class Mismatch(AssertionError):
    pass


def compare(rtl, iss_rec, history, n):
    a = trace_key(rtl)
    b = trace_key(iss_rec) if iss_rec is not None else None
    if a != b:
        prev = "\n    ".join(fmt(r) for r in history[-5:])
        raise Mismatch(f"commit record #{n} differs\n  RTL: {fmt(rtl)}\n  ISS: {fmt(iss_rec)}\n"
                       f"  previous records (equal on both sides):\n    {prev}")


def make_iss(words):
    mmio = MmioModel()
    iss = RV32ISS(b"".join(w.to_bytes(4, "little") for w in words), dmem_size=16384, mmio=mmio)
    return iss, mmio


async def compare_program(tb, words, *, max_cycles, irq_pattern=None):
    """Run ``words`` on the RTL and on a fresh ISS; compare record by record.

    Returns (records compared, interrupt records among them)."""
    d = tb.dut
    iss, iss_mmio = make_iss(words)
    tb.mmio = MmioModel()
    d.irq_pattern.value = irq_pattern or 0
    d.irq_sched_en.value = int(irq_pattern is not None)
    await tb.load(words)
    history = []
    irqs = 0

    def until(rec):
        nonlocal irqs
        n = len(history)
        if irq_pattern is not None:
            iss.set_irq(bool((irq_pattern >> (n % PATTERN_BITS)) & 1))
        exp = iss.step()
        if exp is None:
            raise Mismatch(f"ISS asleep at record #{n} while the RTL committed {fmt(rec)}")
        compare(rec, exp, history, n)
        history.append(rec)
        irqs += rec.trap and rec.cause == 0x8000_000B
        return A.is_terminator(rec)
    await tb.run(until=until, max_cycles=max_cycles)
    check_no_bus_err(d)
    assert tb.mmio.log == iss_mmio.log, "MMIO access sequences differ"
    return len(history), irqs


def set_stalls(tb, rng, stalls):
    tb.mmio_delay = (0, 4) if stalls else (0, 0)
    tb.dut.imem_stall.value = rng.randrange(32, 128) if stalls else 0
    tb.dut.dmem_stall.value = rng.randrange(32, 128) if stalls else 0


@cocotb.test()
async def t_trace_random(dut):
    """verif.rv32_random.random_program streams on the RTL and the ISS, every record compared;
    programs alternate between a granting memory and random IMEM/DMEM/MMIO stalls."""
    seed = seed_of(dut, "t_trace_random")
    n_progs, n_insns = (100, 1000) if REGRESS else (20, 500)
    rng = random.Random(seed)
    tb = Tb(dut, rng)
    await tb.start()
    total = 0
    for k in range(n_progs):
        pseed = rng.randrange(1 << 31)
        words = RND.random_program(random.Random(pseed), n_insns)
        stalls = k % 2 == 1
        set_stalls(tb, rng, stalls)
        try:
            n, _ = await compare_program(tb, words, max_cycles=60 * len(words) + 1000)
        except Mismatch as e:
            raise Mismatch(f"program {k} (random_program(random.Random({pseed}), {n_insns}), "
                           f"stalls={stalls}): {e}") from None
        total += n
    dut._log.info(f"t_trace_random: {n_progs} programs, {total} commit records compared "
                  f"(KAKI_SEED={seed})")


def irq_program(rng, n_body):
    """A straight-line random program with interrupts enabled: the handler reads mcause/mepc/
    mtval/mip/mstatus (so their values are compared), bumps a counter and MRETs to mepc."""
    p = Prog()
    p.ref(A.jal, 0, target="start")
    p.label("handler")
    p(A.csrr(28, "mcause"), A.csrr(29, "mepc"), A.csrr(30, "mtval"), A.csrr(27, "mip"),
      A.csrr(26, "mstatus"), A.addi(25, 25, 1), A.mret())
    p.label("start")
    p(A.li(1, 4), A.csrw("mtvec", 1), A.li(2, 1 << 11), A.csrw("mie", 2), A.li(3, DMEM))
    for r in range(4, 25):
        p(A.li(r, rng.getrandbits(32)))
    p(A.csrrsi(0, "mstatus", 8))
    regs = list(range(4, 25))
    alu_r = [A.add, A.sub, A.sll, A.slt, A.sltu, A.xor, A.srl, A.sra, A.or_, A.and_, A.mul,
             A.mulh, A.mulhsu, A.mulhu, A.div, A.divu, A.rem, A.remu]
    alu_i = [A.addi, A.slti, A.sltiu, A.xori, A.ori, A.andi]
    for _ in range(n_body):
        c = rng.random()
        rd, a, b = rng.choice(regs), rng.choice(regs), rng.choice(regs)
        if c < 0.45:
            p(rng.choice(alu_r)(rd, a, b))
        elif c < 0.65:
            p(rng.choice(alu_i)(rd, a, rng.randrange(-2048, 2048)))
        elif c < 0.75:
            p(rng.choice([A.slli, A.srli, A.srai])(rd, a, rng.randrange(32)))
        elif c < 0.85:
            off = rng.randrange(0, 256, 4)
            p(A.sw(a, off, 3) if rng.random() < 0.5 else A.lw(rd, off, 3))
        elif c < 0.9:
            off = rng.randrange(0, 256)
            p(rng.choice([A.lb, A.lbu])(rd, off, 3) if rng.random() < 0.5 else A.sb(a, off, 3))
        elif c < 0.95:
            p(A.csrr(rd, rng.choice(["mip", "mstatus", "mscratch", "minstret", "mepc"])))
        else:
            p(rng.choice([A.csrrci, A.csrrsi])(0, "mstatus", 8) if rng.random() < 0.5
              else A.csrrw(rd, "mscratch", a))
    p(A.csrrci(0, "mstatus", 8))      # no interrupt can hit the terminator
    p.halt()
    return p.assemble()


@cocotb.test()
async def t_trace_irq(dut):
    """Random straight-line programs with interrupts enabled; the harness derives irq from the
    commit-record count (bit k mod 256 of a random pattern) and the ISS is given the same level
    before each step, so interrupt records (and mip reads) are compared exactly."""
    seed = seed_of(dut, "t_trace_irq")
    n_progs, n_insns = (60, 600) if REGRESS else (16, 400)
    rng = random.Random(seed)
    tb = Tb(dut, rng)
    await tb.start()
    total = irqs = 0
    for k in range(n_progs):
        pseed = rng.randrange(1 << 31)
        prng = random.Random(pseed)
        words = irq_program(prng, n_insns)
        pattern, bit = 0, 0                          # runs of ones and zeros, ~30 % high
        while bit < PATTERN_BITS:
            run = prng.randrange(1, 12)
            if prng.random() < 0.3:
                pattern |= ((1 << run) - 1) << bit
            bit += run
        pattern &= (1 << PATTERN_BITS) - 1
        stalls = k % 2 == 1
        set_stalls(tb, rng, stalls)
        try:
            n, ni = await compare_program(tb, words, max_cycles=100 * len(words) + 1000,
                                          irq_pattern=pattern)
        except Mismatch as e:
            raise Mismatch(f"irq program {k} (seed {pseed}, stalls={stalls}): {e}") from None
        total += n
        irqs += ni
    assert irqs > 10 * n_progs, f"only {irqs} interrupts taken"
    dut._log.info(f"t_trace_irq: {n_progs} programs, {total} commit records compared, "
                  f"{irqs} of them interrupts (KAKI_SEED={seed})")


# ------------------------------------------------------------------------------------------------
# The real firmware: RTL core against the golden chip model's hardware, trace compared with the ISS

FW_CAPS = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=128, acc_bank_rows=128))
FW_HOST_BYTES = 1 << 18
INSN_WFI = A.wfi()
CAUSE_IRQ = 0x8000_000B


def _reads_cycle_csr(rec):
    """The record is a CSR instruction that wrote an ``mcycle*``/``cycle*`` value to a register
    (the value trace_key blanks)."""
    return (not rec.trap and rec.rd and (rec.insn & 0x7F) == 0x73 and (rec.insn >> 12) & 3
            and (rec.insn >> 20) in CYCLE_CSRS)


def _bimodal(rng):
    """Engine delay: mostly quick, sometimes slow, so barriers and events really have to wait and
    the firmware polls busy engines (tests/test_chip_model.py uses the same shape)."""
    return rng.integers(150, 700) if rng.random() < 0.15 else rng.integers(1, 30)


class FirmwareBench:
    """The RTL core running the firmware, its MMIO answered by a :class:`ChipModel`'s hardware.

    One :meth:`ChipModel._tick` per RTL clock cycle (the model's own ISS never runs); the core's
    ``irq`` input is the model's firmware interrupt ``(WORK & ~WORK_MASK) != 0`` after that cycle's
    step. The commit trace, the irq level in each commit cycle and every MMIO access (reads with
    the value returned) are recorded for the ISS replay. The methods ``read``/``write``/
    ``host_read``/``host_write``/``wait`` make it a device for ``driver.ops.run_async``
    (the test acts as host on the chip model while the RTL runs).

    While the core sleeps with ``irq`` low nothing but the model can change, so those cycles are
    stepped in the model alone and the simulator is advanced by the same count at once.
    """

    def __init__(self, dut, chip, rng, *, mmio_delay=(0, 0)):
        self.dut, self.chip, self.rng = dut, chip, rng
        self.mmio_delay = mmio_delay
        self.records = []          # CommitRecord per RTL commit
        self.irq_at = []           # irq input level in each record's commit cycle
        self.mmio_log = []         # (we, addr, data, wstrb): data read or written, in order
        self.cycle = 0
        self.irq = False
        self.pend = None           # [addr, we, wdata, wstrb, delay] of the MMIO request
        self.ack_high = False
        self.after_wfi = False     # the last record was a WFI: the core may be asleep
        self.ff = False            # the core sleeps with irq low: fast-forward the next cycles
        self.sleep_cycles = 0      # cycles fast-forwarded asleep
        self.sleeps = 0            # times the core was seen asleep after a WFI

    # ---------------------------------------------------------------- scenario device
    async def read(self, reg):
        return self.chip.read(reg)

    async def write(self, reg, value):
        self.chip.write(reg, value)

    async def host_read(self, addr, n):
        return self.chip.host_read(addr, n)

    async def host_write(self, addr, data):
        self.chip.host_write(addr, data)

    async def wait(self, cycles):
        await self.run(cycles)

    # ---------------------------------------------------------------- clocking
    async def run(self, n, until=None):
        """Clock ``n`` cycles (fewer if ``until()`` becomes true after a cycle)."""
        d, chip, regs = self.dut, self.chip, self.chip.regs
        clk = d.clk
        tick = chip._tick
        records, irq_at, log = self.records, self.irq_at, self.mmio_log
        end = self.cycle + n
        while self.cycle < end:
            ack = False
            if self.ff:
                k = 0
                while self.cycle + k < end:
                    tick()
                    k += 1
                    if chip.iss.irq:
                        break
                await ClockCycles(clk, k)
                self.cycle += k
                self.sleep_cycles += k
                self.ff = not chip.iss.irq          # else still asleep at the end of the run
            else:
                await RisingEdge(clk)
                self.cycle += 1
                p = self.pend
                if p is not None:
                    if p[4] == 0:
                        addr, we, wdata, wstrb = p[0], p[1], p[2], p[3]
                        if we:
                            regs.write(addr, wdata, wstrb)
                            log.append((1, addr, wdata, wstrb))
                        else:
                            v = regs.read(addr) & MASK32
                            d.mmio_rdata.value = v
                            log.append((0, addr, v, wstrb))
                        d.mmio_ack.value = 1
                        ack = True
                        self.pend = None
                    else:
                        p[4] -= 1
                if self.ack_high and not ack:
                    d.mmio_ack.value = 0
                self.ack_high = ack
                tick()
            irq = chip.iss.irq
            if irq != self.irq:
                d.irq.value = int(irq)
                self.irq = irq
            await ReadOnly()
            if d.trace_valid.value:
                rec = CommitRecord(int(d.trace_pc.value), int(d.trace_insn.value),
                                   int(d.trace_rd.value), int(d.trace_value.value),
                                   bool(int(d.trace_trap.value)), int(d.trace_cause.value))
                records.append(rec)
                irq_at.append(irq)
                self.after_wfi = rec.insn == INSN_WFI and not rec.trap
            if not ack and self.pend is None:
                if d.mmio_req.value:
                    self.pend = [int(d.mmio_addr.value), int(d.mmio_we.value),
                                 int(d.mmio_wdata.value), int(d.mmio_wstrb.value),
                                 self.rng.randint(*self.mmio_delay)]
                elif self.after_wfi and not irq and d.sleeping.value:
                    self.ff = True
                    self.sleeps += 1
                    self.after_wfi = False
            if until is not None and until():
                break
        return self.cycle


class ReplayMMIO:
    """The ISS's MMIO device: replays the RTL's MMIO accesses in order, checking each one."""

    class Differs(AssertionError):
        pass

    def __init__(self, log):
        self.log = log
        self.pos = 0

    def _next(self, what):
        if self.pos >= len(self.log):
            raise self.Differs(f"ISS makes MMIO access #{self.pos} ({what}) but the RTL made only "
                               f"{len(self.log)}")
        e = self.log[self.pos]
        self.pos += 1
        return e

    @staticmethod
    def _fmt(e):
        we, addr, data, wstrb = e
        return (f"write {addr:#010x} = {data:#010x} wstrb {wstrb:#x}" if we
                else f"read {addr:#010x} (returned {data:#010x})")

    def read(self, addr):
        e = self._next(f"read {addr:#010x}")
        if e[0] or e[1] != addr:
            raise self.Differs(f"MMIO access #{self.pos - 1}: ISS reads {addr:#010x}, RTL "
                               f"{self._fmt(e)}")
        return e[2]

    def write(self, addr, value, wstrb):
        e = self._next(f"write {addr:#010x} = {value:#010x}")
        if (e[0], e[1], e[2], e[3]) != (1, addr, value & MASK32, wstrb):
            raise self.Differs(f"MMIO access #{self.pos - 1}: ISS writes {addr:#010x} = "
                               f"{value:#010x} wstrb {wstrb:#x}, RTL {self._fmt(e)}")


def replay_on_iss(elf, records, irq_at, mmio_log):
    """Run the ISS on ``elf`` for as many steps as the RTL committed records and compare each
    record (``trace_key``). Inputs the RTL saw are fed to the ISS at the same instruction
    boundaries:

    * MMIO read data, in order (:class:`ReplayMMIO`, which also checks address, direction, write
      data and strobes);
    * the ``irq`` level: before step *k* the level the RTL core saw when record *k* committed
      (the cycle an interrupt trap or a CSR read samples it), and 1 for the step after a WFI (the
      RTL left WFI, which only ``irq & mie.MEIE`` does);
    * the values read from ``mcycle*``/``cycle*`` (cycle counts differ by design; trace_key does
      not compare them), written into the ISS's destination register after the step, so the
      firmware's watchdog arithmetic follows the same path.

    Returns (records compared, interrupt records, WFI records)."""
    mmio = ReplayMMIO(mmio_log)
    iss = RV32ISS.from_elf(elf, dmem_size=16384, mmio=mmio)
    regs = iss.regs
    step, set_irq = iss.step, iss.set_irq
    prev_wfi = False
    irqs = wfis = 0
    for n, rec in enumerate(records):
        set_irq(prev_wfi or irq_at[n])
        try:
            exp = step()
        except ReplayMMIO.Differs as e:
            prev = "\n    ".join(fmt(r) for r in records[max(0, n - 5):n])
            raise Mismatch(f"commit record #{n} (RTL pc={rec.pc:#010x}): {e}\n  RTL: {fmt(rec)}\n"
                           f"  previous records (equal on both sides):\n    {prev}") from None
        if exp is None:
            raise Mismatch(f"ISS asleep at record #{n} while the RTL committed {fmt(rec)}")
        if trace_key(rec) != trace_key(exp):
            compare(rec, exp, records[max(0, n - 5):n], n)
        if _reads_cycle_csr(rec):
            regs[rec.rd] = rec.value
        prev_wfi = exp.insn == INSN_WFI and not exp.trap
        wfis += prev_wfi
        irqs += rec.trap and rec.cause == CAUSE_IRQ
    if mmio.pos != len(mmio_log):
        raise Mismatch(f"the ISS made {mmio.pos} MMIO accesses in {len(records)} records, the RTL "
                       f"{len(mmio_log)}; next RTL access: {ReplayMMIO._fmt(mmio_log[mmio.pos])}")
    return len(records), irqs, wfis


def _mmio_counts(log):
    """{register name: (writes, nonzero writes)} of the MMIO writes in ``log``."""
    names = {r.addr: n for n, r in MR.REGISTERS.items()}
    out = {}
    for we, addr, data, _ in log:
        if we:
            name = names.get(addr - MMIO, hex(addr))
            w, nz = out.get(name, (0, 0))
            out[name] = (w + 1, nz + (data != 0))
    return out


async def event_wait_blocks(fb):
    """Directed: a WAIT_EVENT on queue 1 blocks (Q_STATUS.WAITING; the core sleeps) until a
    SIGNAL_EVENT submitted much later on queue 0 releases it; both complete with OK."""
    chip = fb.chip
    cfgs = {q: QueueConfig(0x1000 + 0x1000 * q, 3, 0x8000 + 0x1000 * q, 0x20000, 0x1000)
            for q in (0, 1)}
    for q, cfg in cfgs.items():
        await run_async(configure(q, cfg), fb)
        chip.host_write(cfg.cpl_base, bytes(4))
    event, value = 3, 0x1234

    def submit(q, words):
        chip.host_write(cfgs[q].ring_base, b"".join(w.to_bytes(4, "little") for w in words))
        chip.write(R.REGISTERS[f"Q_DOORBELL{q}"], 1)
    submit(1, encode(Opcode.WAIT_EVENT, event=event, value=value, tag=0x51))
    await fb.run(3000)
    assert R.Q_STATUS1.WAITING.get(chip.read(R.Q_STATUS1)), "WAIT_EVENT did not block"
    assert chip.read(R.Q_CONSUMER1) == 0 and fb.ff, "the firmware should sleep on a blocked queue"
    submit(0, encode(Opcode.SIGNAL_EVENT, event=event, value=value, tag=0x50))
    await fb.run(20_000, until=lambda: chip.read(R.Q_CONSUMER1) == 1 and fb.ff)
    for q, op in ((0, Opcode.SIGNAL_EVENT), (1, Opcode.WAIT_EVENT)):
        assert chip.read(R.REGISTERS[f"Q_CONSUMER{q}"]) == 1
        rec = unpack_record(chip.host_read(cfgs[q].record_addr(0), RECORD_BYTES))
        assert (rec["opcode"], rec["status"], rec["index"]) == (op, ErrorCode.OK, 0), rec
    assert chip.read(R.REGISTERS[f"EVENT{event}"]) == value


@cocotb.test()
async def t_firmware_trace(dut):
    """The firmware ELF on the RTL core, serving real queue work on a golden ChipModel (its
    hardware steps once per RTL cycle and answers the core's MMIO; the test is the host): queue
    scenarios of verif/chip_scenarios.py with DMA/GEMM/VECTOR jobs, NOP, BARRIER,
    SIGNAL/WAIT_EVENT, an injected error (BAD_OPCODE, plus a seeded second kind) with the queue
    reset afterwards, and engine delays long enough for WFI and blocked queues. The scenario
    scoreboard checks every record and status; then the ISS replays the run (same MMIO read data,
    irq at the same boundaries) and every commit record is compared."""
    seed = seed_of(dut, "t_firmware_trace")
    elf = os.environ["KAKI_FW_ELF"]
    image = FirmwareImage.from_elf(elf)
    rng = random.Random(seed)
    chip = ChipModel(FW_CAPS, host_bytes=FW_HOST_BYTES, blackhole=blackhole_window(FW_HOST_BYTES),
                     seed=seed, engine_delay=_bimodal,
                     fetch_latency=(2, 40), cpl_latency=(2, 30))
    chip.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(1))          # its ISS is never stepped
    tb = Tb(dut, rng)
    await tb.start()
    stalls = rng.random() < 0.5
    dut.imem_stall.value = rng.randrange(16, 64) if stalls else 0
    dut.dmem_stall.value = rng.randrange(16, 64) if stalls else 0
    imem = image.imem + bytes(-len(image.imem) % 4)
    dmem = image.dmem + bytes(-len(image.dmem) % 4)
    words = [int.from_bytes(imem[i:i + 4], "little") for i in range(0, len(imem), 4)]
    dwords = {DMEM + i: int.from_bytes(dmem[i:i + 4], "little") for i in range(0, len(dmem), 4)}
    await tb.load(words, dmem={a: w for a, w in dwords.items() if w})
    fb = FirmwareBench(dut, chip, rng, mmio_delay=(0, 3) if stalls else (0, 1))

    def ready_and_asleep():
        return (MR.FW_STATUS.STATE.get(chip.regs[MR.FW_STATUS]) == FirmwareState.READY
                and fb.ff)
    await fb.run(50_000, until=ready_and_asleep)
    assert ready_and_asleep(), f"firmware not READY and asleep after boot: {chip.fault_summary()}"
    assert chip.regs[MR.FW_VERSION] == fw_build.version()[1]

    await event_wait_blocks(fb)
    # Work: every error the firmware decides (the heads the issue unit leaves to it) and a
    # seeded engine-decided kind; with KAKI_REGRESS every kind of
    # verif.error_injection.ERROR_KINDS, in a seeded order.
    firmware_kinds = ["bad_opcode", "reserved_flags", "reserved_event", "bad_event"]
    others = sorted(set(ERROR_KINDS) - set(firmware_kinds))
    if REGRESS:
        kinds = firmware_kinds + rng.sample(others, len(others))
    else:
        kinds = firmware_kinds + [rng.choice(others)]
    jobs = 16
    summary = []

    def disable_queues():
        # The scenarios expect inactive queues (configuration checks run on activation); the
        # queues are idle between scenarios and keep their indices.
        for q in range(QUEUES):
            chip.write(R.REGISTERS[f"Q_CTRL{q}"], 0)
    for i, kind in enumerate(kinds):
        sseed = seed + 1000 * i
        disable_queues()
        rep = await run_async(S.error_scenario(FW_CAPS, sseed, kind, host_bytes=FW_HOST_BYTES,
                                                 jobs=jobs, poll=150, budget=600_000,
                                                 watchdog=3000), fb)
        n_desc = rep.descriptors + sum(p.descriptors for p in rep.phases)
        summary.append(f"{kind}: {n_desc} descriptors")
        await fb.run(rng.randrange(200, 2000))                # idle: the firmware sleeps
    # Random DAGs on all four queues: the issue unit serves them while the firmware sleeps.
    for k in range(6 if REGRESS else 2):
        disable_queues()
        mmio_before = len(fb.mmio_log)
        dag = await run_async(S.dag_scenario(FW_CAPS, seed + 7 + k, host_bytes=FW_HOST_BYTES,
                                               jobs=40 if REGRESS else jobs, poll=150,
                                               budget=600_000, fill_host=False), fb)
        summary.append(f"dag: {dag.descriptors} descriptors")
        writes = [a for we, a, _, _ in fb.mmio_log[mmio_before:] if we]
        assert not writes, f"the firmware acted during a well-formed DAG: {writes}"
    # Let the in-flight instruction commit and the core go back to sleep.
    await fb.run(5000, until=lambda: fb.ff)
    check_no_bus_err(dut)
    assert MR.FW_STATUS.STATE.get(chip.regs[MR.FW_STATUS]) == FirmwareState.READY, \
        chip.fault_summary()
    assert chip.now == fb.cycle, (chip.now, fb.cycle)

    # The firmware's paths ran: the issue unit enabled at boot, malformed heads popped with
    # their error (one halting the queue per error scenario), queue resets acknowledged, sleeps.
    # Engine commands, events and barriers are the issue unit's: the firmware writes no EVENT.
    counts = _mmio_counts(fb.mmio_log)
    pops = [MR.Q_POP.STATUS.get(data) for we, addr, data, _ in fb.mmio_log
            if we and addr - MMIO == MR.Q_POP.addr]
    need = {"ISSUE": 1, "Q_POP": 1, "QRESET_ACK": 1}
    missing = {k: counts.get(k, (0, 0)) for k, v in need.items() if counts.get(k, (0, 0))[1] < v}
    assert not missing, f"firmware paths not exercised (writes, nonzero writes): {missing}"
    decided = {ErrorCode.BAD_OPCODE, ErrorCode.RESERVED_BITS, ErrorCode.BAD_EVENT}
    assert decided <= set(pops), f"errors the firmware decided: {pops}"
    assert not any(k.startswith("EVENT") for k in counts), "the firmware wrote an EVENT register"
    assert fb.sleeps >= 3, f"the core slept only {fb.sleeps} times"

    # The ISS on the same ELF with the same inputs: every record compared.
    n, irqs, wfis = replay_on_iss(elf, fb.records, fb.irq_at, fb.mmio_log)
    assert n >= (MIN_TRACE_REGRESS if REGRESS else MIN_TRACE), f"only {n} instructions compared"
    dut._log.info(f"t_firmware_trace: {n} commit records compared with the ISS ({wfis} WFI, "
                  f"{irqs} interrupts, {len(fb.mmio_log)} MMIO accesses) over {fb.cycle} cycles "
                  f"({fb.sleep_cycles} asleep, {fb.sleeps} sleeps); stalls={stalls}; "
                  f"{'; '.join(summary)} (KAKI_SEED={seed})")
    dut._log.info("t_firmware_trace: firmware MMIO writes (all, nonzero): "
                  + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
