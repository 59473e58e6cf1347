"""RV32IM encoder for the Kaki control core (``docs/control_core.md``) and a random-program generator.

Encoders return one 32-bit instruction word (``int``); pseudo-instructions that may need two words
(:func:`li`) return a list. Argument order follows the assembler syntax:

* R-type ``add(rd, rs1, rs2)``; I-type ``addi(rd, rs1, imm)``; shifts ``slli(rd, rs1, shamt)``;
* loads ``lw(rd, imm, rs1)`` (``lw rd, imm(rs1)``); stores ``sw(rs2, imm, rs1)`` (``sw rs2, imm(rs1)``);
* branches ``beq(rs1, rs2, offset)``; ``jal(rd, offset)``; ``jalr(rd, rs1, imm=0)``;
* ``lui(rd, imm20)`` / ``auipc(rd, imm20)`` take the 20-bit upper immediate (0..0xFFFFF, or the
  signed equivalent -0x80000..-1);
* CSR: ``csrrw(rd, csr, rs1)``, ``csrrwi(rd, csr, zimm)``; ``csr`` is an address or a name
  of :data:`CSR`.

Registers are ``0..31`` or names (``"x5"``, ``"t0"``, ``"zero"``, ...). Out-of-range immediates,
odd branch/jump offsets and bad registers raise :class:`ValueError` naming the value.

Random programs and their terminator
------------------------------------
:func:`random_program` produces a self-checking-free, always-terminating stream for comparing the
ISS and RTL commit traces. It ends with ``sw x?, -4(x?)`` of :data:`END_OF_TEST_VALUE` to
:data:`END_OF_TEST_ADDR` (``0x2000_FFFC``, the top MMIO word), immediately followed by
:data:`HALT_INSN` (``jal x0, 0``, a jump to itself). A test stops when the trace commits
``HALT_INSN`` (:func:`is_terminator`); the store is a bus-visible marker one instruction earlier.
``jal x0, 0`` never appears elsewhere in a random program (every other jump is forward).
"""
from __future__ import annotations

import random as _random

M32 = 0xFFFF_FFFF

END_OF_TEST_ADDR = 0x2000_FFFC
END_OF_TEST_VALUE = 0x600D_0001
HALT_INSN = 0x0000_006F  # jal x0, 0

CSR = {
    "mstatus": 0x300, "misa": 0x301, "mie": 0x304, "mtvec": 0x305, "mscratch": 0x340,
    "mepc": 0x341, "mcause": 0x342, "mtval": 0x343, "mip": 0x344,
    "mcycle": 0xB00, "mcycleh": 0xB80, "minstret": 0xB02, "minstreth": 0xB82,
    "cycle": 0xC00, "cycleh": 0xC80, "instret": 0xC02, "instreth": 0xC82, "mhartid": 0xF14,
}

_ABI = ["zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3",
        "a4", "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
        "t3", "t4", "t5", "t6"]
REG = {name: i for i, name in enumerate(_ABI)}
REG.update({f"x{i}": i for i in range(32)})
REG["fp"] = 8


def reg(r) -> int:
    """Register number of ``r`` (int 0..31 or a name)."""
    if isinstance(r, str):
        if r.lower() in REG:
            return REG[r.lower()]
        raise ValueError(f"unknown register {r!r}")
    if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 31:
        raise ValueError(f"register {r!r} out of range 0..31")
    return r


def csr_addr(c) -> int:
    """CSR address of ``c`` (int 0..0xFFF or a name of :data:`CSR`)."""
    if isinstance(c, str):
        if c.lower() in CSR:
            return CSR[c.lower()]
        raise ValueError(f"unknown CSR {c!r}")
    if not isinstance(c, int) or not 0 <= c <= 0xFFF:
        raise ValueError(f"CSR address {c!r} out of range 0..0xfff")
    return c


def _check(value, lo, hi, what, align=1):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} {value!r} is not an integer")
    if not lo <= value <= hi:
        raise ValueError(f"{what} {value} ({value:#x}) out of range {lo}..{hi}")
    if value % align:
        raise ValueError(f"{what} {value} ({value:#x}) is not a multiple of {align}")
    return value


# ---------------------------------------------------------------------------------------- formats
def r_type(opcode, rd, funct3, rs1, rs2, funct7) -> int:
    return ((funct7 & 0x7F) << 25 | reg(rs2) << 20 | reg(rs1) << 15 | (funct3 & 7) << 12
            | reg(rd) << 7 | (opcode & 0x7F))


def i_type(opcode, rd, funct3, rs1, imm, what="imm") -> int:
    _check(imm, -2048, 2047, what)
    return ((imm & 0xFFF) << 20 | reg(rs1) << 15 | (funct3 & 7) << 12 | reg(rd) << 7
            | (opcode & 0x7F))


def s_type(opcode, funct3, rs1, rs2, imm, what="imm") -> int:
    _check(imm, -2048, 2047, what)
    imm &= 0xFFF
    return ((imm >> 5) << 25 | reg(rs2) << 20 | reg(rs1) << 15 | (funct3 & 7) << 12
            | (imm & 0x1F) << 7 | (opcode & 0x7F))


def b_type(opcode, funct3, rs1, rs2, offset, what="branch offset") -> int:
    _check(offset, -4096, 4094, what, 2)
    o = offset & 0x1FFF
    return (((o >> 12) & 1) << 31 | ((o >> 5) & 0x3F) << 25 | reg(rs2) << 20 | reg(rs1) << 15
            | (funct3 & 7) << 12 | ((o >> 1) & 0xF) << 8 | ((o >> 11) & 1) << 7 | (opcode & 0x7F))


def u_type(opcode, rd, imm20, what="upper immediate") -> int:
    _check(imm20, -0x80000, 0xFFFFF, what)
    return (imm20 & 0xFFFFF) << 12 | reg(rd) << 7 | (opcode & 0x7F)


def j_type(opcode, rd, offset, what="jump offset") -> int:
    _check(offset, -(1 << 20), (1 << 20) - 2, what, 2)
    o = offset & 0x1FFFFF
    return (((o >> 20) & 1) << 31 | ((o >> 1) & 0x3FF) << 21 | ((o >> 11) & 1) << 20
            | ((o >> 12) & 0xFF) << 12 | reg(rd) << 7 | (opcode & 0x7F))


# ----------------------------------------------------------------------------------------- RV32I
def lui(rd, imm20): return u_type(0x37, rd, imm20, "lui immediate")
def auipc(rd, imm20): return u_type(0x17, rd, imm20, "auipc immediate")
def jal(rd, offset): return j_type(0x6F, rd, offset, "jal offset")
def jalr(rd, rs1, imm=0): return i_type(0x67, rd, 0, rs1, imm, "jalr immediate")


def _branch(f3, name):
    def enc(rs1, rs2, offset):
        return b_type(0x63, f3, rs1, rs2, offset, f"{name} offset")
    enc.__name__ = name
    enc.__doc__ = f"``{name} rs1, rs2, offset`` (offset relative to this instruction)."
    return enc


beq, bne, blt, bge, bltu, bgeu = (_branch(f, n) for f, n in
                                  [(0, "beq"), (1, "bne"), (4, "blt"), (5, "bge"),
                                   (6, "bltu"), (7, "bgeu")])


def _load(f3, name):
    def enc(rd, imm, rs1):
        return i_type(0x03, rd, f3, rs1, imm, f"{name} offset")
    enc.__name__ = name
    enc.__doc__ = f"``{name} rd, imm(rs1)``."
    return enc


lb, lh, lw, lbu, lhu = (_load(f, n) for f, n in
                        [(0, "lb"), (1, "lh"), (2, "lw"), (4, "lbu"), (5, "lhu")])


def _store(f3, name):
    def enc(rs2, imm, rs1):
        return s_type(0x23, f3, rs1, rs2, imm, f"{name} offset")
    enc.__name__ = name
    enc.__doc__ = f"``{name} rs2, imm(rs1)``."
    return enc


sb, sh, sw = (_store(f, n) for f, n in [(0, "sb"), (1, "sh"), (2, "sw")])


def _opimm(f3, name):
    def enc(rd, rs1, imm):
        return i_type(0x13, rd, f3, rs1, imm, f"{name} immediate")
    enc.__name__ = name
    return enc


addi, slti, sltiu, xori, ori, andi = (_opimm(f, n) for f, n in
                                      [(0, "addi"), (2, "slti"), (3, "sltiu"), (4, "xori"),
                                       (6, "ori"), (7, "andi")])


def _shift(f3, f7, name):
    def enc(rd, rs1, shamt):
        _check(shamt, 0, 31, f"{name} shift amount")
        return f7 << 25 | shamt << 20 | reg(rs1) << 15 | f3 << 12 | reg(rd) << 7 | 0x13
    enc.__name__ = name
    return enc


slli, srli, srai = _shift(1, 0, "slli"), _shift(5, 0, "srli"), _shift(5, 0x20, "srai")


def _op(f3, f7, name):
    def enc(rd, rs1, rs2):
        return r_type(0x33, rd, f3, rs1, rs2, f7)
    enc.__name__ = name
    return enc


R_OPS = {  # name: (funct3, funct7)
    "add": (0, 0), "sub": (0, 0x20), "sll": (1, 0), "slt": (2, 0), "sltu": (3, 0),
    "xor": (4, 0), "srl": (5, 0), "sra": (5, 0x20), "or": (6, 0), "and": (7, 0),
    "mul": (0, 1), "mulh": (1, 1), "mulhsu": (2, 1), "mulhu": (3, 1),
    "div": (4, 1), "divu": (5, 1), "rem": (6, 1), "remu": (7, 1),
}
add, sub, sll, slt, sltu, xor, srl, sra, or_, and_ = (
    _op(*R_OPS[n], n) for n in ["add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and"])
mul, mulh, mulhsu, mulhu, div, divu, rem, remu = (
    _op(*R_OPS[n], n) for n in ["mul", "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu"])
I_OPS = {"addi": addi, "slti": slti, "sltiu": sltiu, "xori": xori, "ori": ori, "andi": andi}
SHIFT_OPS = {"slli": slli, "srli": srli, "srai": srai}
R_ENC = {n: _op(*R_OPS[n], n) for n in R_OPS}


def fence(pred=0xF, succ=0xF): return (pred & 0xF) << 24 | (succ & 0xF) << 20 | 0x0F
def fence_i(): return 0x0000100F
def ecall(): return 0x00000073
def ebreak(): return 0x00100073
def mret(): return 0x30200073
def wfi(): return 0x10500073


def _csr(f3, name, imm_form):
    def enc(rd, csr, src):
        c = csr_addr(csr)
        s = _check(src, 0, 31, f"{name} zimm") if imm_form else reg(src)
        return c << 20 | s << 15 | f3 << 12 | reg(rd) << 7 | 0x73
    enc.__name__ = name
    enc.__doc__ = f"``{name} rd, csr, {'zimm' if imm_form else 'rs1'}``."
    return enc


csrrw, csrrs, csrrc = _csr(1, "csrrw", False), _csr(2, "csrrs", False), _csr(3, "csrrc", False)
csrrwi, csrrsi, csrrci = _csr(5, "csrrwi", True), _csr(6, "csrrsi", True), _csr(7, "csrrci", True)


# --------------------------------------------------------------------------------------- pseudos
def nop(): return addi(0, 0, 0)
def mv(rd, rs): return addi(rd, rs, 0)
def j(offset): return jal(0, offset)
def csrr(rd, csr): return csrrs(rd, csr, 0)
def csrw(csr, rs1): return csrrw(0, csr, rs1)
def csrs(csr, rs1): return csrrs(0, csr, rs1)
def csrc(csr, rs1): return csrrc(0, csr, rs1)


def li(rd, value) -> list[int]:
    """``li rd, value`` as ``[addi]`` or ``[lui, addi]`` (value is any 32-bit signed/unsigned)."""
    _check(value, -(1 << 31), M32, "li value")
    v = value & M32
    sv = v - (1 << 32) if v & 0x8000_0000 else v
    if -2048 <= sv <= 2047:
        return [addi(rd, 0, sv)]
    lo = ((v & 0xFFF) ^ 0x800) - 0x800
    hi = ((v - lo) >> 12) & 0xFFFFF
    out = [lui(rd, hi)]
    if lo:
        out.append(addi(rd, rd, lo))
    return out


def is_terminator(rec) -> bool:
    """True for the commit record of the random-program terminator (``jal x0, 0``)."""
    return rec is not None and not rec[4] and rec[1] == HALT_INSN


# --------------------------------------------------------------------------------- random programs
CORNERS = (0, 1, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 2, 0xFFFF_FFFE, 0x8000_0001, 0xFFFF,
           0xFFFF_8000, 0x80, 0x1F, 0x20)

# Words the contract makes illegal without doubt (no FENCE-field or CSR-range subtleties).
ILLEGAL_WORDS = (
    0x0000_0000, 0xFFFF_FFFF, 0x0000_0001,  # all zeros, all ones, a compressed c.nop
    0x0000_2007, 0x0000_2027, 0x0000_0053,  # flw, fsw, fadd.s (no F)
    0x1000_202F, 0x0000_000B, 0x0000_007B,  # lr.w (no A), custom-0, custom-3
    0x0400_00B3, 0x0200_1093, 0x2000_5093,  # OP funct7=2, slli shamt[5]=1, srai with funct7=0x10
    0x4000_10B3, 0x4000_40B3,               # sll/xor with funct7=0x20
    0x0000_3083, 0x0000_6083, 0x0000_3023,  # ld, lwu, sd (RV64)
    0x0000_2063, 0x0000_10E7, 0x0000_4073,  # branch funct3=2, jalr funct3=1, SYSTEM funct3=4
    0x1020_0073, 0x0020_0073,               # sret, uret
    0x7C00_20F3, 0x3200_20F3, 0x3060_20F3,  # csrrs x1 of 0x7C0, mcountinhibit, mcounteren (absent)
    0xC000_1073, 0xC020_90F3, 0xF140_1073,  # csrrw x0,cycle,x0; csrrw x1,instret,x1; csrw mhartid
    0xC000_E073,                            # csrrsi x0, cycle, 1 (write to read-only)
)


class _Rng:
    """Uniform interface over numpy Generators, random.Random and int seeds."""

    def __init__(self, rng):
        if isinstance(rng, int):
            rng = _random.Random(rng)
        self._np = hasattr(rng, "integers")
        self._r = rng

    def randint(self, lo, hi):  # inclusive
        if self._np:
            return int(self._r.integers(lo, hi + 1))
        return self._r.randint(lo, hi)

    def choice(self, seq):
        return seq[self.randint(0, len(seq) - 1)]

    def random(self):
        return float(self._r.random())

    def bits32(self):
        return self.randint(0, M32)


def random_program(rng, n_insns, *, dmem_base=0x1000_0000, dmem_size=16384) -> list[int]:
    """A random, always-terminating RV32IM program of about ``n_insns`` body instructions.

    ``rng``: a ``numpy.random.Generator``, ``random.Random`` or an int seed.

    Layout: ``0x0: jal x0, start``; ``0x4``: the trap handler (swap x31 with mscratch, mepc += 4,
    restore, ``mret``) so that every trap resumes at the next instruction; ``start``: the prologue
    sets ``mtvec`` = 4, writes every CSR the body reads (mstatus, mie, mscratch, mepc, mcause,
    mtval, minstret/minstreth) and every register x1..x31, and initialises the 256-byte DMEM
    window the body uses, so nothing depends on reset contents; then the body; then the
    terminator (module docstring).

    The body never jumps backwards and every trap resumes at mepc + 4, so each instruction runs
    at most once: a program of ``L`` words terminates within ``7 * L`` steps. ``x3`` (gp) is the
    DMEM base register (always inside the window). Values read from ``mcycle*``/``cycle*`` are
    overwritten by the next instruction so they never propagate. ``mie.MEIE`` is never set and
    ``WFI`` is never emitted, so no interrupt can fire and the core never sleeps.
    """
    r = _Rng(rng)
    win = 256
    if dmem_size < win:
        raise ValueError(f"dmem_size {dmem_size} smaller than the {win}-byte window")
    B = 3  # base register
    regs = [i for i in range(1, 32) if i != B]

    handler = [csrrw(31, "mscratch", 31), csrr(31, "mepc"), addi(31, 31, 4),
               csrw("mepc", 31), csrrw(31, "mscratch", 31), mret()]
    prog = [jal(0, 4 * (1 + len(handler)))] + handler
    t = 5
    prog += li(t, 4) + [csrw("mtvec", t)]
    for name in ("mstatus", "mie", "minstret", "minstreth", "mscratch", "mepc", "mcause", "mtval"):
        prog.append(csrw(name, 0))
    for rd in regs:
        prog += li(rd, r.choice(CORNERS) if r.random() < 0.6 else r.bits32())
    prog += li(B, dmem_base)
    for i in range(win // 4):
        prog.append(sw(regs[(i * 7) % len(regs)], 4 * i, B))
    prologue_bytes = 4 * len(prog)
    state = {"base": 0}  # base-register offset inside the window

    def rreg():
        return r.choice(regs)

    def corner_li():
        return li(rreg(), r.choice(CORNERS))

    def alu():
        out = []
        if r.random() < 0.3:
            rs = rreg()
            out += li(rs, r.choice(CORNERS))
        else:
            rs = rreg()
        rs2 = rreg() if r.random() < 0.8 else rs
        rd = rreg()
        p = r.random()
        if p < 0.6:
            out.append(R_ENC[r.choice(list(R_OPS))](rd, rs, rs2))
        elif p < 0.85:
            imm = r.choice((0, 1, -1, 2047, -2048, r.randint(-2048, 2047)))
            out.append(I_OPS[r.choice(list(I_OPS))](rd, rs, imm))
        else:
            shamt = r.choice((0, 1, 31, r.randint(0, 31)))
            out.append(SHIFT_OPS[r.choice(list(SHIFT_OPS))](rd, rs, shamt))
        return out

    def upper():
        f = lui if r.random() < 0.5 else auipc
        return [f(rreg(), r.randint(0, 0xFFFFF))]

    loads = [(lb, 1), (lh, 2), (lw, 4), (lbu, 1), (lhu, 2)]
    stores = [(sb, 1), (sh, 2), (sw, 4)]

    def mem_ok():
        enc, size = r.choice(loads + stores)
        addr = r.randint(0, (win - size) // size) * size
        off = addr - state["base"]
        return [enc(rreg(), off, B)]

    def mem_misaligned():
        enc, size = r.choice([x for x in loads + stores if x[1] > 1])
        addr = r.randint(0, (win - size) // size) * size + r.randint(1, size - 1)
        return [enc(rreg(), addr - state["base"], B)]

    def mem_fault():
        t = rreg()
        enc, size = r.choice(loads + stores)
        if enc in (sb, sh, sw) and r.random() < 0.3:
            addr = r.randint(0, 0x3FFF // size) * size  # store into IMEM
        else:
            addr = r.choice((0x0000_4000, dmem_base + dmem_size, dmem_base - 4, 0x2001_0000,
                             0x3000_0000, 0xFFFF_FFFC, 0x8000_0000, 0x0FFF_FFFC, 0x1FFF_FFFC))
        return li(t, addr) + [enc(rreg() if enc in (sb, sh, sw) else t, 0, t)]

    def imem_load():
        t = rreg()
        enc, size = r.choice(loads)
        addr = r.randint(0, (prologue_bytes - size) // size) * size
        return li(t, addr) + [enc(rreg(), 0, t)]

    def move_base():
        new = r.randint(0, win // 4 - 1) * 4
        d = new - state["base"]
        state["base"] = new
        return [addi(B, B, d)]

    def csr_op():
        name = r.choice(("mscratch", "mepc", "mcause", "mtval", "mie", "mstatus", "misa", "mip",
                         "mtvec", "mhartid"))
        rd = r.choice((0, rreg(), rreg()))
        if name in ("mtvec", "mhartid"):  # read only (mtvec must keep pointing at the handler)
            return [csrr(rd, name)]
        if name == "mie":
            t = rreg()
            v = r.bits32() & ~0x800
            k = r.randint(0, 3)
            if k == 0:
                return li(t, v) + [csrrw(rd, name, t)]
            if k == 1:
                return li(t, v) + [csrrs(rd, name, t)]
            if k == 2:
                return [csrrc(rd, name, rreg())]
            return [r.choice((csrrwi, csrrsi, csrrci))(rd, name, r.randint(0, 31))]
        k = r.randint(0, 5)
        if k < 3:
            return [(csrrw, csrrs, csrrc)[k](rd, name, r.choice((0, rreg(), rreg())))]
        return [(csrrwi, csrrsi, csrrci)[k - 3](rd, name, r.randint(0, 31))]

    def counters():
        rd = rreg()
        if r.random() < 0.6:
            return [csrr(rd, r.choice(("minstret", "minstreth", "instret", "instreth")))]
        if r.random() < 0.5:
            return [csrr(rd, r.choice(("mcycle", "mcycleh", "cycle", "cycleh"))),
                    addi(rd, 0, r.randint(-2048, 2047))]  # the cycle value must not propagate
        if r.random() < 0.5:  # write the cycle counter; an old value read into rd is dropped
            w = [csrrw(r.choice((0, rd)), r.choice(("mcycle", "mcycleh")), rreg())]
            return w + ([addi(rd, 0, r.randint(-2048, 2047))] if w[0] >> 7 & 31 else [])
        return [csrrw(r.choice((0, rd)), r.choice(("minstret", "minstreth")), rreg())]

    def traps():
        p = r.random()
        if p < 0.3:
            return [ecall()]
        if p < 0.5:
            return [ebreak()]
        return [r.choice(ILLEGAL_WORDS)]

    def fences():
        return [r.choice((fence(), fence_i(), fence(0x3, 0x2)))]

    simple = [(alu, 30), (corner_li, 6), (upper, 4), (mem_ok, 18), (mem_misaligned, 3),
              (mem_fault, 3), (imem_load, 1), (move_base, 2), (csr_op, 6), (counters, 3),
              (traps, 4), (fences, 1)]
    total_w = sum(w for _, w in simple)

    def pick_simple(in_filler=False):
        while True:
            x = r.randint(1, total_w)
            for f, w in simple:
                x -= w
                if x <= 0:
                    break
            if not (in_filler and f is move_base):  # skipped code must not move the base
                return f()

    def filler():
        out = []
        for _ in range(r.randint(0, 3)):
            out += pick_simple(True)
        return out

    def branch():
        skip = filler()
        enc = r.choice((beq, bne, blt, bge, bltu, bgeu))
        a = rreg()
        b = a if r.random() < 0.2 else rreg()
        return [enc(a, b, 4 * (len(skip) + 1))] + skip

    def jump():
        skip = filler()
        if r.random() < 0.5:
            return [jal(r.choice((0, rreg())), 4 * (len(skip) + 1))] + skip
        t = rreg()
        off = 8 + 4 * len(skip) + r.randint(0, 1)  # jalr clears bit 0 of the target
        return [auipc(t, 0), jalr(r.choice((0, rreg(), t)), t, off)] + skip

    def mret_fwd():
        t = rreg()
        return [auipc(t, 0), addi(t, t, 16), csrw("mepc", t), mret()]

    body = []
    while len(body) < n_insns:
        p = r.random()
        if p < 0.08:
            body += branch()
        elif p < 0.12:
            body += jump()
        elif p < 0.13:
            body += mret_fwd()
        else:
            body += pick_simple()
    t = 5
    epilogue = li(t, END_OF_TEST_ADDR + 4) + li(6, END_OF_TEST_VALUE) + [sw(6, -4, t), HALT_INSN]
    prog += body + epilogue
    if 4 * len(prog) > 0x4000:
        raise ValueError(f"random program of {len(prog)} words does not fit the 16 KiB IMEM")
    return prog
