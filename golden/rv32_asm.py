"""RV32IM encoder for the Kaki control core (``docs/control_core.md``).

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

:data:`HALT_INSN` (``jal x0, 0``, a jump to itself) ends a test program; :func:`is_terminator`
recognises its commit record. The random-program generator is verif/rv32_random.py.
"""
from __future__ import annotations

M32 = 0xFFFF_FFFF

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
    """True for the commit record of :data:`HALT_INSN` (``jal x0, 0``), the end of a test program."""
    return rec is not None and not rec[4] and rec[1] == HALT_INSN
