"""Random RV32IM programs for comparing the control core's RTL commit trace with the ISS
(cocotb_tests/cocotb_rv32_core.py, tests/test_rv32_iss.py), built with the encoders of
golden/rv32_asm.py.

:func:`random_program` produces a self-checking-free, always-terminating stream for comparing the
ISS and RTL commit traces. It ends with ``sw x?, -4(x?)`` of :data:`END_OF_TEST_VALUE` to
:data:`END_OF_TEST_ADDR` (``0x2000_FFFC``, the top MMIO word), immediately followed by
:data:`HALT_INSN` (``jal x0, 0``, a jump to itself). A test stops when the trace commits
``HALT_INSN`` (:func:`golden.rv32_asm.is_terminator`); the store is a bus-visible marker one instruction earlier.
``jal x0, 0`` never appears elsewhere in a random program (every other jump is forward).

:func:`signed_program` is the same program with a signature before that end, for a core whose
commit trace is out of sight (the chip's, seen from the host): it folds every register and the
DMEM window into a few words stored to MMIO addresses, which the ISS predicts from the same words.
"""
import random as _random

from golden.rv32_asm import (HALT_INSN, I_OPS, M32, R_ENC, R_OPS, SHIFT_OPS, addi, auipc, beq,
                             bge, bgeu, blt, bltu, bne, csrr, csrrc, csrrci, csrrs, csrrsi, csrrw,
                             csrrwi, csrw, ebreak, ecall, fence, fence_i, jal, jalr, lb, lbu, lh,
                             lhu, li, lui, lw, mret, sb, sh, sw)

__all__ = ["END_OF_TEST_ADDR", "END_OF_TEST_VALUE", "CORNERS", "ILLEGAL_WORDS", "random_program",
           "signed_program"]

END_OF_TEST_ADDR = 0x2000_FFFC
END_OF_TEST_VALUE = 0x600D_0001

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
    return _fits(prog + body + _epilogue())


def _epilogue():
    """The end of every program: the END_OF_TEST store, then HALT_INSN."""
    t = 5
    return li(t, END_OF_TEST_ADDR + 4) + li(6, END_OF_TEST_VALUE) + [sw(6, -4, t), HALT_INSN]


def _fits(prog):
    if 4 * len(prog) > 0x4000:
        raise ValueError(f"random program of {len(prog)} words does not fit the 16 KiB IMEM")
    return prog


#: odd, so that each multiply of the signature is a bijection: one differing word always shows
SIGNATURE_MULTIPLIER = 0x9E37_79B1


def signed_program(rng, n_insns, signature_addrs, *, dmem_base=0x1000_0000, dmem_size=16384):
    """:func:`random_program` that, before its end, stores x1..x31 after the 256-byte DMEM window
    (at ``x3 + 256``, x3 being inside the window) and folds the window and those words into
    ``len(signature_addrs)`` signatures, word ``i`` into signature ``i % n`` as
    ``s = s * SIGNATURE_MULTIPLIER ^ word`` (a multiply and an xor of the M and I extensions),
    each stored with ``sw`` to its address in ``signature_addrs`` (MMIO words the observer reads).
    The ISS run of the same words predicts them; a wrong register, DMEM byte or instruction
    result anywhere before shows in at least one of them."""
    n = len(signature_addrs)
    if not 1 <= n <= 8:
        raise ValueError(f"1 to 8 signature words, not {n}")
    if dmem_size < 256 + 256 + 4 * 31:
        raise ValueError(f"dmem_size {dmem_size} leaves no room after the window for x1..x31")
    prog = random_program(rng, n_insns, dmem_base=dmem_base, dmem_size=dmem_size)
    end = _epilogue()
    B = 3
    sig = [sw(rd, 256 + 4 * (rd - 1), B) for rd in range(1, 32)]   # every register is now free
    window, saved, mult, word = 4, 7, 5, 6
    accs = list(range(10, 10 + n))
    sig += li(window, dmem_base) + [addi(saved, B, 256)] + li(mult, SIGNATURE_MULTIPLIER)
    sig += [addi(a, 0, 0) for a in accs]
    words = [(window, 4 * i) for i in range(64)] + [(saved, 4 * i) for i in range(31)]
    for i, (base, off) in enumerate(words):
        a = accs[i % n]
        sig += [lw(word, off, base), R_ENC["mul"](a, a, mult), R_ENC["xor"](a, a, word)]
    t = 8
    for a, addr in zip(accs, signature_addrs):
        sig += li(t, addr) + [sw(a, 0, t)]
    return _fits(prog[:-len(end)] + sig + end)
