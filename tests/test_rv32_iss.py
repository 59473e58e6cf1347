"""Golden RV32IM ISS (golden/rv32_iss.py) and encoder (golden/rv32_asm.py) against
docs/control_core.md. Expected values are computed by hand, not by the ISS."""
import os
import struct
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from golden import rv32_asm as A
from verif import rv32_random as RND
from golden.rv32_iss import CommitRecord, RV32ISS, load_elf, trace_key

SEED = int(os.environ.get("SEED") or 20260611)
DMEM = 0x1000_0000
HANDLER = 0x100  # trap vector used by the trap tests


def seeded(offset=0):
    print(f"SEED={SEED} (+{offset})")
    return np.random.default_rng(SEED + offset)


def make(words, regs=None, handler=True):
    """ISS with ``words`` at 0, ``jal x0, 0`` after them, optional handler (an ``addi x31,x31,1``
    then ``jal x0, 0``) at HANDLER and mtvec pointing there."""
    words = list(words) + [A.HALT_INSN]
    iss = RV32ISS(words)
    if handler:
        iss.load_imem([A.addi(31, 31, 1), A.HALT_INSN], HANDLER)
        iss.csr["mtvec"] = HANDLER
    for r, v in (regs or {}).items():
        iss.regs[r] = v & 0xFFFF_FFFF
    return iss


def rec(pc, insn, rd=0, value=0, trap=False, cause=0):
    return CommitRecord(pc, insn, rd, value, trap, cause)


# ------------------------------------------------------------------------------- encoder
KNOWN = [
    (A.addi(1, 0, 1), 0x00100093), (A.lui(5, 0x12345), 0x123452B7), (A.mret(), 0x30200073),
    (A.wfi(), 0x10500073), (A.ecall(), 0x00000073), (A.ebreak(), 0x00100073),
    (A.nop(), 0x00000013), (A.jal(0, 0), 0x0000006F), (A.jalr(0, "ra", 0), 0x00008067),
    (A.lw("a0", 0, "sp"), 0x00012503), (A.sw("ra", 12, "sp"), 0x00112623),
    (A.addi("sp", "sp", -16), 0xFF010113), (A.csrr("a0", "mcause"), 0x34202573),
    (A.add(3, 1, 2), 0x002081B3), (A.mul("a0", "a0", "a1"), 0x02B50533),
    (A.beq("a0", 0, 8), 0x00050463), (A.bne("a0", "a1", -8), 0xFEB51CE3),
    (A.jal(0, -4), 0xFFDFF06F), (A.fence(), 0x0FF0000F), (A.fence_i(), 0x0000100F),
    (A.csrw("mtvec", "t0"), 0x30529073), (A.srai(1, 1, 1), 0x4010D093),
]


@pytest.mark.parametrize("word,expected", KNOWN, ids=[f"{e:08x}" for _, e in KNOWN])
def test_known_encodings(word, expected):
    assert word == expected, f"{word:#010x} != {expected:#010x}"


@pytest.mark.parametrize("call,bad", [
    (lambda: A.addi(1, 0, 2048), "2048"), (lambda: A.addi(1, 0, -2049), "-2049"),
    (lambda: A.lw(1, 4096, 2), "4096"), (lambda: A.sw(1, -3000, 2), "-3000"),
    (lambda: A.beq(1, 2, 3), "3"), (lambda: A.beq(1, 2, 4096), "4096"),
    (lambda: A.jal(1, 1 << 20), str(1 << 20)), (lambda: A.jal(1, 6 - 7), "-1"),
    (lambda: A.lui(1, 0x100000), str(0x100000)), (lambda: A.slli(1, 1, 32), "32"),
    (lambda: A.csrrwi(1, "mscratch", 32), "32"), (lambda: A.addi(32, 0, 0), "32"),
    (lambda: A.csrrw(1, 0x1000, 0), str(0x1000)), (lambda: A.addi("q7", 0, 0), "q7"),
])
def test_encoder_rejects_bad_immediates(call, bad):
    with pytest.raises(ValueError, match=bad):
        call()


def test_li_covers_all_values():
    for v in (0, 1, -1, 2047, -2048, 2048, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_F800, 0x1234_5FFF,
              0xDEAD_BEEF, 0x800, 0xFFFF_F7FF):
        iss = RV32ISS(A.li(7, v))
        for _ in A.li(7, v):
            iss.step()
        assert iss.regs[7] == v & 0xFFFF_FFFF, hex(v)


# ------------------------------------------------------------------------------- ALU / M
def _s(v):
    return v & 0xFFFF_FFFF


R_CASES = [  # (op, rs1, rs2, expected) -- all by hand
    ("add", 5, 7, 12), ("add", 0xFFFF_FFFF, 1, 0), ("add", 0x7FFF_FFFF, 1, 0x8000_0000),
    ("sub", 5, 7, 0xFFFF_FFFE), ("sub", 0, 0x8000_0000, 0x8000_0000), ("sub", 0, 1, 0xFFFF_FFFF),
    ("sll", 1, 31, 0x8000_0000), ("sll", 1, 32, 1), ("sll", 0xFFFF_FFFF, 4, 0xFFFF_FFF0),
    ("slt", 0xFFFF_FFFF, 0, 1), ("slt", 0, 0xFFFF_FFFF, 0), ("slt", 0x8000_0000, 0x7FFF_FFFF, 1),
    ("slt", 3, 3, 0), ("sltu", 0xFFFF_FFFF, 0, 0), ("sltu", 0, 0xFFFF_FFFF, 1),
    ("xor", 0xF0F0_F0F0, 0xFF00_FF00, 0x0FF0_0FF0), ("or", 0xF0F0_0000, 0x0000_0F0F, 0xF0F0_0F0F),
    ("and", 0xF0F0_F0F0, 0xFF00_FF00, 0xF000_F000),
    ("srl", 0x8000_0000, 31, 1), ("srl", 0x8000_0000, 33, 0x4000_0000),
    ("sra", 0x8000_0000, 31, 0xFFFF_FFFF), ("sra", 0x8000_0000, 4, 0xF800_0000),
    ("sra", 0x4000_0000, 4, 0x0400_0000), ("sra", 0x8000_0000, 32, 0x8000_0000),
    ("mul", 7, 6, 42), ("mul", 0xFFFF_FFFF, 0xFFFF_FFFF, 1), ("mul", 0x10000, 0x10000, 0),
    ("mul", 0x8000_0000, 2, 0), ("mul", 0xFFFF_FFFF, 5, 0xFFFF_FFFB),
    # MULH: signed x signed
    ("mulh", 0xFFFF_FFFF, 0xFFFF_FFFF, 0), ("mulh", 0x8000_0000, 0x8000_0000, 0x4000_0000),
    ("mulh", 0x8000_0000, 1, 0xFFFF_FFFF), ("mulh", 0xFFFF_FFFF, 1, 0xFFFF_FFFF),
    ("mulh", 0x7FFF_FFFF, 0x7FFF_FFFF, 0x3FFF_FFFF), ("mulh", 0x8000_0000, 0x7FFF_FFFF, 0xC000_0000),
    ("mulh", 0x0001_0000, 0x0001_0000, 1),
    # MULHSU: signed x unsigned
    ("mulhsu", 0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF), ("mulhsu", 0x8000_0000, 0xFFFF_FFFF, 0x8000_0000),
    ("mulhsu", 1, 0xFFFF_FFFF, 0), ("mulhsu", 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7FFF_FFFE),
    ("mulhsu", 0xFFFF_FFFF, 1, 0xFFFF_FFFF), ("mulhsu", 0xFFFF_FFFF, 0, 0),
    # MULHU: unsigned x unsigned
    ("mulhu", 0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFE), ("mulhu", 0x8000_0000, 2, 1),
    ("mulhu", 0x8000_0000, 0x8000_0000, 0x4000_0000),
    # DIV / REM, including divide by zero and overflow
    ("div", 7, 2, 3), ("div", _s(-7), 2, _s(-3)), ("div", 7, _s(-2), _s(-3)), ("div", _s(-7), _s(-2), 3),
    ("div", 5, 0, 0xFFFF_FFFF), ("div", 0, 0, 0xFFFF_FFFF), ("div", _s(-5), 0, 0xFFFF_FFFF),
    ("div", 0x8000_0000, 0xFFFF_FFFF, 0x8000_0000), ("div", 0x8000_0000, 1, 0x8000_0000),
    ("divu", 7, 2, 3), ("divu", 0xFFFF_FFFF, 2, 0x7FFF_FFFF), ("divu", 5, 0, 0xFFFF_FFFF),
    ("divu", 0x8000_0000, 0xFFFF_FFFF, 0),
    ("rem", 7, 2, 1), ("rem", _s(-7), 2, 0xFFFF_FFFF), ("rem", 7, _s(-2), 1),
    ("rem", _s(-7), _s(-2), 0xFFFF_FFFF), ("rem", 5, 0, 5), ("rem", _s(-5), 0, _s(-5)),
    ("rem", 0x8000_0000, 0xFFFF_FFFF, 0), ("rem", 0x8000_0000, 3, _s(-2)),
    ("remu", 7, 2, 1), ("remu", 0xFFFF_FFFF, 10, 5), ("remu", 5, 0, 5), ("remu", 0, 0, 0),
]


@pytest.mark.parametrize("op,a,b,exp", R_CASES, ids=[f"{c[0]}-{c[1]:x}-{c[2]:x}" for c in R_CASES])
def test_r_type(op, a, b, exp):
    insn = A.R_ENC[op](3, 1, 2)
    iss = make([insn], {1: a, 2: b})
    assert iss.step() == rec(0, insn, 3, exp)
    assert iss.regs[3] == exp and iss.regs[1] == a and iss.regs[2] == b and iss.pc == 4


def test_r_type_same_register_and_x0_destination():
    iss = make([A.add(1, 1, 1), A.sub(0, 1, 1), A.mul(0, 1, 1)], {1: 21})
    assert iss.step() == rec(0, A.add(1, 1, 1), 1, 42)
    assert iss.step() == rec(4, A.sub(0, 1, 1))
    assert iss.step() == rec(8, A.mul(0, 1, 1))
    assert iss.regs[0] == 0


I_CASES = [  # (encoder, rs1, imm, expected)
    (A.addi, 5, -1, 4), (A.addi, 0xFFFF_FFFF, 1, 0), (A.addi, 0, -2048, 0xFFFF_F800),
    (A.addi, 0, 2047, 0x7FF), (A.slti, 0xFFFF_FFFF, 0, 1), (A.slti, 0, -1, 0),
    (A.slti, 0x8000_0000, -2048, 1), (A.sltiu, 0, -1, 1), (A.sltiu, 0xFFFF_FFFF, -1, 0),
    (A.sltiu, 1, 2047, 1), (A.sltiu, 0, 0, 0), (A.xori, 0x0F, -1, 0xFFFF_FFF0),
    (A.xori, 0xFF, 0x0F, 0xF0), (A.ori, 0xF0, 0x0F, 0xFF), (A.ori, 0, -2048, 0xFFFF_F800),
    (A.andi, 0xFFFF_FFFF, 0x7F0, 0x7F0), (A.andi, 0xFFFF_FFFF, -16, 0xFFFF_FFF0),
    (A.slli, 1, 31, 0x8000_0000), (A.slli, 0x8000_0001, 1, 2), (A.srli, 0x8000_0000, 31, 1),
    (A.srli, 0xFFFF_FFFF, 0, 0xFFFF_FFFF), (A.srai, 0x8000_0000, 1, 0xC000_0000),
    (A.srai, 0x7FFF_FFFF, 30, 1), (A.srai, 0x8000_0000, 31, 0xFFFF_FFFF),
]


@pytest.mark.parametrize("enc,a,imm,exp", I_CASES,
                         ids=[f"{c[0].__name__}-{c[1]:x}-{c[2]}" for c in I_CASES])
def test_i_type(enc, a, imm, exp):
    insn = enc(3, 1, imm)
    iss = make([insn], {1: a})
    assert iss.step() == rec(0, insn, 3, exp)
    assert iss.regs[3] == exp


def test_lui_auipc():
    iss = make([A.nop(), A.lui(5, 0x12345), A.auipc(6, 0xFFFFF), A.auipc(7, 1), A.lui(0, 5)])
    iss.step()
    assert iss.step() == rec(4, 0x123452B7, 5, 0x1234_5000)
    assert iss.step() == rec(8, A.auipc(6, 0xFFFFF), 6, 0xFFFF_F008)
    assert iss.step() == rec(12, A.auipc(7, 1), 7, 0x100C)
    assert iss.step() == rec(16, A.lui(0, 5))
    assert iss.regs[0] == 0


# ------------------------------------------------------------------------------ control flow
BR_CASES = [  # (encoder, a, b, taken)
    (A.beq, 5, 5, True), (A.beq, 5, 6, False), (A.bne, 5, 6, True), (A.bne, 0, 0, False),
    (A.blt, 0xFFFF_FFFF, 0, True), (A.blt, 0, 0xFFFF_FFFF, False), (A.blt, 3, 3, False),
    (A.bge, 0, 0xFFFF_FFFF, True), (A.bge, 3, 3, True), (A.bge, 0x8000_0000, 0x7FFF_FFFF, False),
    (A.bltu, 0, 0xFFFF_FFFF, True), (A.bltu, 0xFFFF_FFFF, 0, False),
    (A.bgeu, 0xFFFF_FFFF, 0, True), (A.bgeu, 0, 1, False), (A.bgeu, 7, 7, True),
]


@pytest.mark.parametrize("enc,a,b,taken", BR_CASES,
                         ids=[f"{c[0].__name__}-{c[1]:x}-{c[2]:x}" for c in BR_CASES])
def test_branches(enc, a, b, taken):
    insn = enc(1, 2, 12)
    iss = make([A.nop(), A.nop(), insn], {1: a, 2: b})
    iss.step(), iss.step()
    assert iss.step() == rec(8, insn)
    assert iss.pc == (20 if taken else 12)


def test_backward_branch_and_jumps():
    prog = [A.nop(), A.nop(), A.beq(0, 0, -8), A.jal(1, 8), A.nop(), A.jalr(5, 1, 13)]
    iss = make(prog)
    iss.step(), iss.step()
    assert iss.step() == rec(8, prog[2]) and iss.pc == 0
    iss.pc = 12
    assert iss.step() == rec(12, prog[3], 1, 16) and iss.pc == 20
    # jalr: target = (x1 + 13) & ~1 = 28, link = 24
    assert iss.step() == rec(20, prog[5], 5, 24) and iss.pc == 28
    # jalr with rd == rs1 uses the old rs1
    iss = make([A.jalr(1, 1, 4)], {1: 0x100})
    assert iss.step() == rec(0, A.jalr(1, 1, 4), 1, 4) and iss.pc == 0x104
    # jal with rd = x0 writes nothing
    iss = make([A.jal(0, 8)])
    assert iss.step() == rec(0, A.jal(0, 8)) and iss.pc == 8
    # negative jal and jalr with negative immediate
    iss = make([A.nop(), A.nop(), A.jal(2, -8), A.jalr(0, 3, -4)], {3: 0x20})
    iss.pc = 8
    assert iss.step() == rec(8, A.jal(2, -8), 2, 12) and iss.pc == 0
    iss.pc = 12
    assert iss.step() == rec(12, A.jalr(0, 3, -4)) and iss.pc == 0x1C


def test_fence_is_nop():
    iss = make([A.fence(), A.fence_i(), A.fence(0x3, 0x2)])
    for pc in (0, 4, 8):
        r = iss.step()
        assert r == rec(pc, r.insn) and not r.trap
    assert iss.instret == 3


# ----------------------------------------------------------------------------------- memory
def test_loads_all_widths():
    iss = make([A.lb(3, 0, 1), A.lbu(4, 0, 1), A.lh(5, 2, 1), A.lhu(6, 2, 1), A.lw(7, 4, 1),
                A.lb(8, 1, 1), A.lh(9, 6, 1), A.lw(0, 4, 1), A.lw(10, -4, 11)],
               {1: DMEM + 8, 11: DMEM + 16})
    iss.dmem[8:16] = bytes([0x80, 0x7F, 0x34, 0x92, 0x78, 0x56, 0x34, 0x12])
    iss.dmem[12:16] = bytes([0x78, 0x56, 0x34, 0x12])
    exp = [(3, 0xFFFF_FF80), (4, 0x80), (5, 0xFFFF_9234), (6, 0x9234), (7, 0x1234_5678),
           (8, 0x7F), (9, 0x1234), (0, 0), (10, 0x1234_5678)]
    for i, (rd, v) in enumerate(exp):
        r = iss.step()
        assert r == rec(4 * i, r.insn, rd, v), i
        assert iss.regs[rd] == v


def test_stores_all_widths_and_readback():
    iss = make([A.sw(2, 0, 1), A.sb(3, 1, 1), A.sh(3, 6, 1), A.sw(2, 0x7FC, 4), A.lw(5, 0, 1)],
               {1: DMEM + 0x20, 2: 0xDEAD_BEEF, 3: 0xCAFE_BA55, 4: DMEM + 0x3800})
    for pc in (0, 4, 8, 12):
        assert iss.step() == rec(pc, struct.unpack_from("<I", iss.imem, pc)[0])
    assert bytes(iss.dmem[0x20:0x28]) == bytes([0xEF, 0x55, 0xAD, 0xDE, 0, 0, 0x55, 0xBA])
    assert bytes(iss.dmem[0x3FFC:0x4000]) == bytes([0xEF, 0xBE, 0xAD, 0xDE])  # last DMEM word
    assert iss.step().value == 0xDEAD_55EF


def test_imem_loads_allowed():
    prog = [A.lw(1, 0, 0), A.lbu(2, 3, 0)]
    iss = make(prog)
    assert iss.step() == rec(0, prog[0], 1, prog[0])
    assert iss.step() == rec(4, prog[1], 2, prog[0] >> 24)
    iss = make([A.lw(1, -4, 2)], {2: 0x4000})  # last IMEM word
    iss.load_imem([0xA5A5_5A5A], 0x3FFC)
    assert iss.step() == rec(0, A.lw(1, -4, 2), 1, 0xA5A5_5A5A)


class FakeMMIO:
    def __init__(self):
        self.log = []

    def read(self, addr):
        self.log.append(("r", addr))
        return 0x1_0000_0000 + addr  # upper bits must be dropped

    def write(self, addr, value, wstrb):
        self.log.append(("w", addr, value, wstrb))


def test_mmio_word_accesses():
    mm = FakeMMIO()
    iss = RV32ISS([A.lw(2, 4, 1), A.sw(3, 8, 1), A.sw(3, -4, 4)], mmio=mm)
    iss.regs[1], iss.regs[3], iss.regs[4] = 0x2000_0000, 0x55AA_1234, 0x2001_0000
    assert iss.step() == rec(0, A.lw(2, 4, 1), 2, 0x2000_0004)
    iss.step(), iss.step()
    assert mm.log == [("r", 0x2000_0004), ("w", 0x2000_0008, 0x55AA_1234, 0xF),
                      ("w", 0x2000_FFFC, 0x55AA_1234, 0xF)]


# ------------------------------------------------------------------------------------ traps
def trap_check(iss, pc, insn, cause, tval, mepc=None):
    r = iss.step()
    assert r == rec(pc, insn, 0, 0, True, cause), r
    assert iss.pc == HANDLER
    assert iss.csr["mcause"] == cause
    assert iss.csr["mepc"] == (pc if mepc is None else mepc)
    assert iss.csr["mtval"] == tval
    return r


@pytest.mark.parametrize("insn,regs,cause,tval", [
    (A.lw(5, 2, 1), {1: DMEM}, 4, DMEM + 2),
    (A.lh(5, 1, 1), {1: DMEM}, 4, DMEM + 1),
    (A.lhu(5, 3, 1), {1: DMEM}, 4, DMEM + 3),
    (A.lw(5, 1, 1), {1: 0x3000_0000}, 4, 0x3000_0001),   # misaligned wins over the map
    (A.lw(5, 0, 1), {1: 0x3000_0000}, 5, 0x3000_0000),
    (A.lw(5, 0, 1), {1: DMEM + 0x4000}, 5, DMEM + 0x4000),
    (A.lb(5, -1, 1), {1: DMEM}, 5, DMEM - 1),
    (A.lw(5, 0, 1), {1: 0x4000}, 5, 0x4000),
    (A.lh(5, 0, 1), {1: 0x2000_0000}, 5, 0x2000_0000),  # MMIO is word-only
    (A.lbu(5, 3, 1), {1: 0x2000_0000}, 5, 0x2000_0003),
    (A.lw(5, 0, 1), {1: 0x2001_0000}, 5, 0x2001_0000),
    (A.lw(5, -4, 0), {}, 5, 0xFFFF_FFFC),
    (A.sw(5, 2, 1), {1: DMEM}, 6, DMEM + 2),
    (A.sh(5, 1, 1), {1: DMEM}, 6, DMEM + 1),
    (A.sw(5, 0, 1), {1: 0}, 7, 0),                        # IMEM is not writable
    (A.sb(5, 0x7FF, 1), {1: 0x3800}, 7, 0x3FFF),
    (A.sw(5, 0, 1), {1: DMEM + 0x4000}, 7, DMEM + 0x4000),
    (A.sb(5, 0, 1), {1: 0x2000_0010}, 7, 0x2000_0010),
    (A.sh(5, 0, 1), {1: 0x2000_0010}, 7, 0x2000_0010),
    (A.sw(5, 0, 1), {1: 0x8000_0000}, 7, 0x8000_0000),
    (A.ecall(), {}, 11, 0),
    (A.ebreak(), {}, 3, 0),
])
def test_exception_causes(insn, regs, cause, tval):
    mm = FakeMMIO()
    iss = make([A.nop(), insn], {5: 0x1234_5678, **regs})
    iss.mmio = mm
    iss.dmem[:] = bytes(range(256)) * 64
    before = bytes(iss.dmem)
    iss.csr["mstatus"] = 0x8  # MIE=1
    iss.step()
    trap_check(iss, 4, insn, cause, tval)
    assert iss.regs[5] == 0x1234_5678  # a trapping load writes nothing
    assert bytes(iss.dmem) == before and mm.log == []
    assert iss.csr["mstatus"] == 0x1880  # MPIE <- MIE(1), MIE <- 0, MPP reads 3
    assert iss.instret == 1  # the trapping instruction did not retire


ILLEGAL = [
    0x0000_0000, 0xFFFF_FFFF, 0x0000_0001, 0x0000_4501,  # compressed forms
    0x0000_2007, 0x0000_0053, 0x1000_202F, 0x0000_000B, 0x0000_0057,
    0x0400_00B3, 0x4000_10B3, 0x4000_20B3, 0x4000_70B3, 0x4200_00B3, 0x8000_00B3,  # OP funct7
    0x0200_1093, 0x4000_1093, 0x2000_5093, 0x0200_5093,  # shift-immediate funct7
    0x0000_3083, 0x0000_6083, 0x0000_7083, 0x0000_3023, 0x0000_4023,  # load/store funct3
    0x0000_2063, 0x0000_3063, 0x0000_10E7,  # branch funct3, jalr funct3
    0x0000_200F, 0x0000_700F,  # MISC-MEM funct3 other than FENCE/FENCE.I
    0x0000_4073, 0x1020_0073, 0x0020_0073, 0x7B20_0073, 0x0010_0873, 0x3020_00F3,
    0x1050_8073,  # wfi with rs1 != 0
    0x0000_00F3,  # ecall with rd != 0
]


@pytest.mark.parametrize("insn", ILLEGAL, ids=[f"{w:08x}" for w in ILLEGAL])
def test_illegal_instructions(insn):
    iss = make([insn], {1: 7})
    trap_check(iss, 0, insn, 2, insn)
    assert iss.regs[1] == 7 and iss.instret == 0


def test_random_program_illegal_words_are_illegal():
    for insn in RND.ILLEGAL_WORDS:
        iss = make([insn])
        assert iss.step() == rec(0, insn, 0, 0, True, 2), hex(insn)


def test_fetch_faults():
    # misaligned target reached by jalr (bit 1 set): the jalr retires, the fetch traps
    iss = make([A.jalr(1, 2, 0)], {2: 0x22})
    assert iss.step() == rec(0, A.jalr(1, 2, 0), 1, 4)
    trap_check(iss, 0x22, 0, 0, 0x22, mepc=0x20)
    # outside IMEM (jal past its end, and a jalr into DMEM)
    iss = make([A.jal(0, 0x4000)])
    iss.step()
    trap_check(iss, 0x4000, 0, 1, 0x4000)
    iss = make([A.jalr(0, 2, 0)], {2: DMEM})
    iss.step()
    trap_check(iss, DMEM, 0, 1, DMEM)
    assert iss.instret == 1


def test_mret_and_handler_round_trip():
    # handler at HANDLER: mepc += 4; mret
    handler = [A.csrr(30, "mepc"), A.addi(30, 30, 4), A.csrw("mepc", 30), A.mret()]
    iss = RV32ISS([A.ecall(), A.addi(1, 0, 9), A.HALT_INSN])
    iss.load_imem(handler, HANDLER)
    iss.csr["mtvec"] = HANDLER | 3  # bits [1:0] read 0
    assert iss.csr["mtvec"] == HANDLER
    iss.csr["mstatus"] = 0x8
    assert iss.step() == rec(0, A.ecall(), 0, 0, True, 11)
    assert iss.csr["mstatus"] == 0x1880
    for _ in range(3):
        iss.step()
    assert iss.step() == rec(HANDLER + 12, A.mret())
    assert iss.pc == 4 and iss.csr["mstatus"] == 0x1888  # MIE <- MPIE(1), MPIE <- 1
    assert iss.step() == rec(4, A.addi(1, 0, 9), 1, 9)
    # MRET with MPIE = 0: MIE <- 0, MPIE <- 1
    iss = make([A.mret()])
    iss.csr["mepc"] = 0x41
    iss.csr["mstatus"] = 0x8
    assert iss.csr["mepc"] == 0x40
    assert iss.step() == rec(0, A.mret()) and iss.pc == 0x40
    assert iss.csr["mstatus"] == 0x1880


def test_trap_with_mie_clear_sets_mpie_zero():
    iss = make([A.ebreak()])
    iss.csr["mstatus"] = 0x80
    trap_check(iss, 0, A.ebreak(), 3, 0)
    assert iss.csr["mstatus"] == 0x1800


# ------------------------------------------------------------------------------------- CSRs
def test_csr_read_values_and_masks():
    iss = make([])
    assert iss.csr["misa"] == 0x4000_1100 and iss.csr["mhartid"] == 0
    assert iss.csr["mstatus"] == 0x1800  # MPP reads 3
    for name, wr, rd in [("mstatus", 0xFFFF_FFFF, 0x1888), ("mie", 0xFFFF_FFFF, 0x880),
                         ("mtvec", 0x1237, 0x1234), ("mscratch", 0xFFFF_FFFF, 0xFFFF_FFFF),
                         ("mepc", 0xFFFF_FFFF, 0xFFFF_FFFC), ("mcause", 0x8000_0003, 0x8000_0003),
                         ("mtval", 0xDEAD_BEEF, 0xDEAD_BEEF), ("misa", 0, 0x4000_1100),
                         ("mip", 0xFFFF_FFFF, 0), ("mstatus", 0x0000_1800, 0x1800),
                         ("mstatus", 0x88, 0x1888), ("mie", 0x800, 0x800), ("mie", 0x7FF, 0x80)]:
        li = A.li(1, wr)
        iss = make(li + [A.csrrw(0, name, 1), A.csrrs(2, name, 0)])
        for _ in range(len(li) + 1):
            assert not iss.step().trap, name
        r = iss.step()
        assert (r.trap, r.rd, r.value) == (False, 2, rd), name
        assert iss.csr[name] == rd


def test_csr_instruction_semantics():
    prog = [A.csrrw(2, "mscratch", 1),     # x2 = 0, mscratch = 0xF0
            A.csrrs(3, "mscratch", 4),     # x3 = 0xF0, mscratch |= 0x0F
            A.csrrc(5, "mscratch", 6),     # x5 = 0xFF, mscratch &= ~0x3C -> 0xC3
            A.csrrwi(7, "mscratch", 0x15),  # x7 = 0xC3, mscratch = 0x15
            A.csrrsi(8, "mscratch", 0x0A),  # x8 = 0x15, mscratch = 0x1F
            A.csrrci(9, "mscratch", 0x03),  # x9 = 0x1F, mscratch = 0x1C
            A.csrrw(1, "mscratch", 1),     # rd == rs1: x1 = 0x1C, mscratch = old x1 (0xF0)
            A.csrrs(0, "mscratch", 0)]
    iss = make(prog, {1: 0xF0, 4: 0x0F, 6: 0x3C})
    exp = [(2, 0), (3, 0xF0), (5, 0xFF), (7, 0xC3), (8, 0x15), (9, 0x1F), (1, 0x1C), (0, 0)]
    for i, (rd, v) in enumerate(exp):
        assert iss.step() == rec(4 * i, prog[i], rd, v), i
    assert iss.csr["mscratch"] == 0xF0


def test_mip_mirrors_irq():
    iss = make([A.csrr(1, "mip"), A.csrr(2, "mip"), A.csrrw(3, "mip", 4)], {4: 0})
    assert iss.step().value == 0
    iss.set_irq(True)
    assert iss.step() == rec(4, A.csrr(2, "mip"), 2, 0x800)
    assert iss.step() == rec(8, A.csrrw(3, "mip", 4), 3, 0x800)  # write ignored, no trap
    assert iss.csr["mip"] == 0x800


@pytest.mark.parametrize("insn,legal", [
    (A.csrr(1, "cycle"), True), (A.csrr(1, "cycleh"), True), (A.csrr(1, "instret"), True),
    (A.csrr(1, "instreth"), True), (A.csrr(1, "mhartid"), True),
    (A.csrrsi(1, "instret", 0), True), (A.csrrci(1, "cycle", 0), True),
    (A.csrrc(1, "instreth", 0), True),
    (A.csrrw(0, "cycle", 0), False), (A.csrrw(1, "instret", 2), False),
    (A.csrrs(1, "cycle", 2), False),  # rs1 != x0 writes even if the value is 0
    (A.csrrc(1, "cycleh", 2), False), (A.csrrwi(0, "instreth", 0), False),
    (A.csrrsi(1, "cycle", 1), False), (A.csrrci(1, "instret", 31), False),
    (A.csrrw(0, "mhartid", 2), False), (A.csrrs(1, "mhartid", 2), False),
    (A.csrr(1, 0xF11), False), (A.csrr(1, 0xF12), False), (A.csrr(1, 0xF13), False),
    (A.csrr(1, 0xC01), False), (A.csrr(1, 0xB03), False), (A.csrr(1, 0x7C0), False),
    (A.csrr(1, 0x306), False), (A.csrr(1, 0x320), False), (A.csrr(1, 0x180), False),
    (A.csrrw(0, 0x3A0, 1), False), (A.csrr(1, 0x000), False), (A.csrr(1, 0xFFF), False),
    (A.csrr(1, 0x302), False), (A.csrr(1, 0x303), False),
])
def test_csr_legality(insn, legal):
    iss = make([A.nop(), insn], {1: 0x77, 2: 0})
    iss.step()
    if legal:
        r = iss.step()
        assert not r.trap and r.rd == 1
    else:
        trap_check(iss, 4, insn, 2, insn)
        assert iss.regs[1] == 0x77


def test_minstret_counts_and_write_wins():
    prog = [A.nop(), A.nop(), A.csrr(1, "minstret"),   # reads 2
            A.ecall(),                                  # traps: does not count
            A.csrr(2, "instret"),                      # reads 7 (2 + the 4 handler insns + 1)
            A.addi(3, 0, 100), A.csrw("minstret", 3),  # minstret = 100 after this instruction
            A.csrr(4, "minstret"), A.csrr(5, "minstret"),  # 100, 101
            A.addi(6, 0, -1), A.csrw("minstret", 6),   # 0xFFFFFFFF
            A.csrr(7, "minstret"), A.csrr(8, "minstreth"), A.csrr(9, "instreth"),  # -1, 1, 1
            A.csrrw(10, "minstreth", 0),               # x10 = 1, minstreth = 0
            A.csrr(11, "minstreth"), A.csrr(12, "minstret")]
    iss = RV32ISS(prog + [A.HALT_INSN])
    iss.load_imem([A.csrr(30, "mepc"), A.addi(30, 30, 4), A.csrw("mepc", 30), A.mret()], HANDLER)
    iss.csr["mtvec"] = HANDLER
    iss.run(100, until=A.is_terminator)
    r = iss.regs
    assert (r[1], r[2], r[4], r[5]) == (2, 7, 100, 101)
    assert (r[7], r[8], r[9], r[10], r[11]) == (0xFFFF_FFFF, 1, 1, 1, 0)
    # the x10 write of minstreth applies after the increment: low half 3, then x11 -> 4
    assert r[12] == 4


def test_mcycle_counts_steps_and_write_wins():
    prog = [A.nop(), A.csrr(1, "mcycle"), A.addi(2, 0, 1000), A.csrw("mcycle", 2),
            A.csrr(3, "cycle"), A.csrr(4, "mcycleh"), A.csrr(5, "cycleh"),
            A.addi(6, 0, 7), A.csrw("mcycleh", 6), A.csrr(7, "cycleh")]
    iss = make(prog)
    for _ in prog:
        iss.step()
    assert (iss.regs[1], iss.regs[3], iss.regs[4], iss.regs[5], iss.regs[7]) == (1, 1000, 0, 0, 7)
    assert iss.cycle == (7 << 32) + 1000 + 6


# ---------------------------------------------------------------------------- interrupts
def irq_core(prog, mstatus=0x8, mie=0x800):
    iss = make(prog)
    iss.csr["mstatus"] = mstatus
    iss.csr["mie"] = mie
    return iss


def test_external_interrupt_taken_before_next_instruction():
    iss = irq_core([A.addi(1, 0, 1), A.addi(2, 0, 2), A.addi(3, 0, 3)])
    assert iss.step() == rec(0, A.addi(1, 0, 1), 1, 1)
    iss.set_irq(True)
    assert iss.step() == rec(4, A.addi(2, 0, 2), 0, 0, True, 0x8000_000B)
    assert iss.regs[2] == 0 and iss.pc == HANDLER and iss.instret == 1
    assert (iss.csr["mepc"], iss.csr["mcause"], iss.csr["mtval"]) == (4, 0x8000_000B, 0)
    assert iss.csr["mstatus"] == 0x1880
    assert iss.step() == rec(HANDLER, A.addi(31, 31, 1), 31, 1)  # MIE = 0 now: no re-entry


@pytest.mark.parametrize("mstatus,mie", [(0, 0x800), (0x8, 0), (0x8, 0x080), (0x80, 0x800)])
def test_interrupt_masked(mstatus, mie):
    iss = irq_core([A.addi(1, 0, 1)], mstatus, mie)
    iss.set_irq(True)
    assert iss.step() == rec(0, A.addi(1, 0, 1), 1, 1)


def test_interrupt_has_priority_over_exceptions():
    handler = [A.csrr(20, "mcause"), A.mret()]
    iss = RV32ISS([A.ecall(), A.HALT_INSN])
    iss.load_imem(handler, HANDLER)
    iss.csr["mtvec"] = HANDLER
    iss.csr["mstatus"] = 0x8
    iss.csr["mie"] = 0x800
    iss.set_irq(True)
    assert iss.step() == rec(0, A.ecall(), 0, 0, True, 0x8000_000B)
    iss.set_irq(False)
    iss.step()
    assert iss.step() == rec(HANDLER + 4, A.mret()) and iss.pc == 0
    assert iss.step() == rec(0, A.ecall(), 0, 0, True, 11)  # now the ecall traps
    assert iss.csr["mepc"] == 0


def test_enabling_mie_with_pending_irq_interrupts_next():
    iss = irq_core([A.csrrsi(0, "mstatus", 8), A.nop()], mstatus=0)
    iss.set_irq(True)
    assert iss.step() == rec(0, A.csrrsi(0, "mstatus", 8))
    assert iss.step() == rec(4, A.nop(), 0, 0, True, 0x8000_000B)
    assert iss.csr["mepc"] == 4


def test_wfi_sleeps_and_wakes_without_mie():
    iss = irq_core([A.wfi(), A.addi(1, 0, 5)], mstatus=0)
    assert iss.step() == rec(0, A.wfi())
    assert iss.sleeping and iss.pc == 4 and iss.instret == 1
    for _ in range(5):
        assert iss.step() is None
    assert iss.cycle == 6 and iss.instret == 1
    assert iss.run(1000) < 1000  # run returns early when nothing can wake the core
    iss.set_irq(True)
    assert iss.step() == rec(4, A.addi(1, 0, 5), 1, 5)  # continues, no interrupt taken
    assert not iss.sleeping


def test_wfi_wakes_into_interrupt_with_mie():
    iss = irq_core([A.wfi(), A.addi(1, 0, 5)])
    iss.step()
    assert iss.step() is None
    iss.set_irq(True)
    assert iss.step() == rec(4, A.addi(1, 0, 5), 0, 0, True, 0x8000_000B)
    assert iss.csr["mepc"] == 4 and not iss.sleeping and iss.regs[1] == 0


def test_wfi_not_woken_by_disabled_source():
    iss = irq_core([A.wfi(), A.addi(1, 0, 5)], mstatus=0x8, mie=0x080)  # only MTIE: no timer
    iss.step()
    iss.set_irq(True)
    assert all(iss.step() is None for _ in range(10))
    assert iss.csr["mip"] == 0x800 and iss.sleeping
    iss.csr["mie"] = 0x880
    assert iss.step().cause == 0x8000_000B


def test_wfi_with_pending_wakeup_falls_through():
    iss = irq_core([A.wfi(), A.addi(1, 0, 5)], mstatus=0)
    iss.set_irq(True)
    assert iss.step() == rec(0, A.wfi())
    assert iss.step() == rec(4, A.addi(1, 0, 5), 1, 5)


# ---------------------------------------------------------------------------- random programs
def test_random_program_terminates_and_exercises_traps():
    causes = Counter()
    rng = seeded()
    for i in range(200):
        prog = RND.random_program(rng, int(rng.integers(50, 400)))
        assert A.HALT_INSN not in prog[:-1]
        iss = RV32ISS(prog)
        trace = []
        n = iss.run(7 * len(prog), until=A.is_terminator, trace=trace)
        assert A.is_terminator(trace[-1]), f"program {i} did not terminate in {n} steps"
        assert trace[-1].pc == 4 * (len(prog) - 1)
        assert iss.mmio.writes == [(RND.END_OF_TEST_ADDR, RND.END_OF_TEST_VALUE, 0xF)]
        assert all(r is not None for r in trace) and not iss.sleeping
        causes.update(r.cause for r in trace if r.trap)
    print("trap causes over 200 programs:", dict(sorted(causes.items())))
    assert set(causes) == {2, 3, 4, 5, 6, 7, 11}


def test_random_program_is_independent_of_reset_state():
    """The prologue initialises everything the body reads: a core with garbage registers, DMEM
    and CSRs produces the same comparable trace (trace_key drops cycle-counter values)."""
    rng = seeded(1)
    cycle_reads = raw_diff = 0
    for _ in range(5):
        prog = RND.random_program(rng, 800)
        a = RV32ISS(prog)
        b = RV32ISS(prog)
        b.regs = [int(x) for x in rng.integers(0, 1 << 32, 32)]
        b.dmem[:] = rng.integers(0, 256, len(b.dmem), dtype=np.uint8).tobytes()
        for name in ("mscratch", "mepc", "mcause", "mtval", "minstret", "minstreth", "mcycle"):
            b.csr[name] = int(rng.integers(0, 1 << 32))
        b.csr["mstatus"] = 0x80
        for _ in range(7):
            b.step()  # shift the cycle counter too
        b.pc = 0
        ta, tb = [], []
        a.run(8 * len(prog), until=A.is_terminator, trace=ta)
        b.run(8 * len(prog), until=A.is_terminator, trace=tb)
        assert A.is_terminator(ta[-1])
        assert [trace_key(r) for r in ta] == [trace_key(r) for r in tb]
        cycle_reads += sum(trace_key(r) != tuple(r) for r in ta)
        raw_diff += sum(ra != rb for ra, rb in zip(ta, tb))
    assert cycle_reads > 0 and raw_diff > 0  # cycle values differ and are the only difference


def test_random_program_accepts_seeds_and_rejects_oversize():
    assert RND.random_program(5, 100) == RND.random_program(5, 100)
    with pytest.raises(ValueError, match="16 KiB"):
        RND.random_program(seeded(2), 5000)


def test_signed_program_signs_every_register_and_the_window():
    """signed_program = random_program up to its end, then the signature block: the ISS writes the
    signature words to the given addresses in order just before the END_OF_TEST store, and one
    register or DMEM window bit changed before the block changes a signature."""
    addrs = [0x2000_0000, 0x2000_0008, 0x2000_000C]
    rng = seeded(3)
    for i in range(6):
        seed = int(rng.integers(1 << 30))
        prog = RND.signed_program(seed, 300, addrs)
        plain = RND.random_program(seed, 300)
        start = next(k for k, (a, b) in enumerate(zip(prog, plain)) if a != b)   # the block
        assert prog[-(len(plain) - start):] == plain[start:], "the same end follows the block"

        def run(corrupt=None):
            iss = RV32ISS(prog)
            for _ in range(8 * len(prog)):
                if iss.pc == 4 * start:
                    break
                iss.step()
            assert iss.pc == 4 * start
            if corrupt:
                corrupt(iss)
            iss.run(8 * len(prog), until=A.is_terminator)
            return iss.mmio.writes

        writes = run()
        assert [a for a, _, _ in writes] == [*addrs, RND.END_OF_TEST_ADDR]
        reg, bit = int(rng.integers(1, 32)), int(rng.integers(32))

        def flip_reg(iss):
            iss.regs[reg] ^= 1 << bit

        def flip_dmem(iss):
            iss.dmem[int(rng.integers(256))] ^= 1 << (bit % 8)
        for corrupt in (flip_reg, flip_dmem):
            assert run(corrupt)[:3] != writes[:3], f"program {i}: {corrupt.__name__} not signed"


def test_decode_cache_follows_imem_writes():
    """A word rewritten through load_imem executes as the new instruction: the handler decoded
    for that pc, and the (insn, rd) its commit record is made of, are dropped."""
    iss = RV32ISS([A.addi(1, 0, 5), A.HALT_INSN])
    assert iss.step() == rec(0, A.addi(1, 0, 5), 1, 5)
    iss.load_imem([A.addi(2, 0, 7)], 0)
    iss.pc = 0
    assert iss.step() == rec(0, A.addi(2, 0, 7), 2, 7)
    assert iss.regs[1:3] == [5, 7]


def _state(iss):
    return (iss.pc, list(iss.regs), iss.csr.as_dict(), iss.cycle, iss.instret, iss.sleeping,
            bytes(iss.dmem), list(iss.mmio.writes))


class _Clock:
    """A system around the core for burst(): after a full tick, the next one is due a random
    number of steps later."""

    def __init__(self, rng):
        self.rng, self.now, self.deadline, self.ticks = rng, 0, 0, []

    def tick(self):
        self.ticks.append(self.now)
        self.now += 1
        self.deadline = self.now + int(self.rng.integers(0, 40))


def test_burst_takes_the_steps_step_takes():
    """burst() builds no records but leaves the state step() leaves after as many steps (traps,
    interrupts, sleep included); the clock counts every step, tick() runs for each step at or
    after the deadline and ends the burst."""
    rng = seeded(4)
    # Random programs never enable the interrupt; this loop sleeps, wakes and takes interrupts
    # (the handler at HANDLER returns) with irq toggled at random below.
    irq_loop = A.li(1, 0x800) + [A.csrs("mie", 1), A.wfi(), A.addi(5, 5, 1), A.csrrsi(0, "mstatus", 8),
                                 A.addi(6, 6, 1), A.csrrci(0, "mstatus", 8), A.j(-20)]
    handler = [A.addi(31, 31, 1), A.mret()]
    for i in range(30):
        if i < 5:
            a, b = make(irq_loop), make(irq_loop)
            for iss in (a, b):
                iss.load_imem(handler, HANDLER)
        else:
            prog = RND.random_program(rng, 300)
            a, b = RV32ISS(prog), RV32ISS(prog)
        clock = _Clock(rng)
        n = 0
        while n < 3000:
            if rng.random() < 0.1:
                level = bool(rng.integers(0, 2))
                a.set_irq(level)
                b.set_irq(level)
            deadline, ticks = clock.deadline, len(clock.ticks)
            k = a.burst(3000 - n, clock, clock.tick)
            assert k >= 1
            for _ in range(k):
                b.step()
            n += k
            assert clock.now == n, "the clock counts each step once"
            if len(clock.ticks) > ticks:
                assert clock.ticks[ticks:] == [n - 1] and n - 1 >= deadline, "a tick ends the burst"
            else:
                assert n - 1 < deadline and (a.sleeping or a.irq or n == 3000)
            assert _state(a) == _state(b)
        if i < 5:
            assert a.regs[5] > 10 and a.regs[31] > 10, "woke from WFI and took interrupts"


def test_speed_report():
    rng = seeded(3)
    prog = RND.random_program(rng, 3500)
    iss = RV32ISS(prog)
    t0 = time.perf_counter()
    cold = iss.run(10 ** 6, until=A.is_terminator)
    t1 = time.perf_counter()
    n = 0
    while n < 100_000:  # the decode cache survives reset(): steady-state speed
        iss.reset()
        n += iss.run(10 ** 6, until=A.is_terminator)
    t2 = time.perf_counter()
    print(f"ISS speed: {cold / (t1 - t0):,.0f} insn/s cold (first run, decoding), "
          f"{n / (t2 - t1):,.0f} insn/s over {n} steps with a warm decode cache")


# ------------------------------------------------------------------------------------ ELF
def _elf(segments, entry=0):
    """Minimal ELF32 RISC-V executable: segments = [(paddr, data, memsz)]."""
    phoff, n = 52, len(segments)
    off = phoff + 32 * n
    hdr = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    hdr += struct.pack("<HHIIIIIHHHHHH", 2, 243, 1, entry, phoff, 0, 0, 52, 32, n, 40, 0, 0)
    ph, body = b"", b""
    for paddr, data, memsz in segments:
        ph += struct.pack("<IIIIIIII", 1, off + len(body), paddr, paddr, len(data), memsz, 7, 4)
        body += data
    return hdr + ph + body


def test_load_elf_hand_built():
    code = struct.pack("<3I", A.lui(1, 0x10000), A.lw(2, 4, 1), A.HALT_INSN)
    data = struct.pack("<2I", 0x1111_1111, 0xCAFE_F00D)
    elf = _elf([(0, code, len(code)), (DMEM, data, 16)])
    img = load_elf(elf)
    assert img.imem[:12] == code and img.dmem[:8] == data and img.dmem[8:16] == bytes(8)
    iss = RV32ISS.from_elf(elf)
    iss.run(10, until=A.is_terminator)
    assert iss.regs[2] == 0xCAFE_F00D


@pytest.mark.parametrize("seg,where", [
    ((0x3FF0, bytes(32), 32), "0x00003ff0"), ((0x2000_0000, bytes(4), 4), "0x20000000"),
    ((DMEM + 0x3FFC, bytes(4), 8), "0x10003ffc"), ((0x8000_0000, b"", 4), "0x80000000"),
])
def test_load_elf_rejects_outside_segments(seg, where):
    with pytest.raises(ValueError, match=f"segment 1 at {where}"):
        load_elf(_elf([(0, bytes(8), 8), seg]))


C_SRC = r"""
typedef unsigned int u32;
volatile u32 result[4];
__asm__(".section .text.start,\"ax\"\n.globl _start\n_start:\n"
        "  li sp, 0x10004000\n  call main\n1: j 1b\n");
static const u32 table[4] = {3, 5, 7, 11};
u32 mix(u32 a, u32 b) { return a * b + a / (b | 1) - (u32)((int)a % 7); }
int main(void) {
    u32 acc = 1;
    for (int i = 0; i < 4; i++) { acc = mix(acc + table[i], 0x9E3779B9u ^ (u32)i); result[i] = acc; }
    *(volatile u32 *)0x2000FFFCu = 0x600D0001u;
    for (;;) {}
}
"""
LD = """ENTRY(_start)
MEMORY { IMEM (rx) : ORIGIN = 0x0, LENGTH = 16K  DMEM (rw) : ORIGIN = 0x10000000, LENGTH = 16K }
SECTIONS { .text : { *(.text.start) *(.text .text.*) } > IMEM
  .rodata : { *(.rodata .rodata.* .srodata*) } > IMEM
  .data : { *(.data .data.* .sdata*) } > DMEM
  .bss : { *(.bss .bss.* .sbss* COMMON) } > DMEM
  /DISCARD/ : { *(.comment) *(.riscv.attributes) *(.note*) *(.eh_frame*) } }
"""


def test_load_elf_compiled_with_zig(tmp_path):
    (tmp_path / "t.c").write_text(C_SRC)
    (tmp_path / "t.ld").write_text(LD)
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", "riscv32-freestanding-none",
           "-mcpu=generic_rv32+m", "-O2", "-nostdlib", "-ffreestanding", "-fno-builtin",
           "-Wl,-T," + str(tmp_path / "t.ld"), "-o", str(tmp_path / "t.elf"), str(tmp_path / "t.c")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}{res.stderr}"
    iss = RV32ISS.from_elf(tmp_path / "t.elf")
    mm = iss.mmio
    iss.run(10_000, until=lambda r: bool(mm.writes))
    assert mm.writes == [(0x2000_FFFC, 0x600D_0001, 0xF)]
    # the same computation in Python, 32-bit unsigned
    acc, exp = 1, []
    for i, t in enumerate((3, 5, 7, 11)):
        a, b = (acc + t) & 0xFFFF_FFFF, 0x9E37_79B9 ^ i
        sa = a - (1 << 32) if a >> 31 else a
        r7 = abs(sa) % 7 * (-1 if sa < 0 else 1)
        acc = (a * b + a // (b | 1) - r7) & 0xFFFF_FFFF
        exp.append(acc)
    import elftools.elf.elffile as ef
    import io
    elf = ef.ELFFile(io.BytesIO((tmp_path / "t.elf").read_bytes()))
    sym = elf.get_section_by_name(".symtab").get_symbol_by_name("result")[0]["st_value"]
    got = struct.unpack_from("<4I", iss.dmem, sym - DMEM)
    assert list(got) == exp


def test_construction_and_accessors():
    with pytest.raises(ValueError, match="16384"):
        RV32ISS(bytes(0x4004))
    iss = RV32ISS([A.addi(1, 0, 3)])
    with pytest.raises(KeyError, match="0x7c0|1984"):
        iss.csr[0x7C0]
    iss.csr["cycle"] = 5  # read-only CSRs ignore writes from the outside
    assert iss.csr["cycle"] == 0 and "mscratch" in iss.csr and iss.csr.as_dict()["misa"] == 0x4000_1100
    iss.regs = list(range(32))
    assert iss.regs[0] == 0 and iss.regs[31] == 31
    assert iss.step() == (0, 0x00300093, 1, 3, False, 0) and iss.load(0, 4) == 0x00300093
    with pytest.raises(ValueError, match="cause 5"):
        iss.load(0x3000_0000, 4)
    import random
    assert RND.random_program(random.Random(SEED), 50)[-1] == A.HALT_INSN
