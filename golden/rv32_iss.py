"""Golden RV32IM instruction-set simulator of the Kaki control core, written from
``docs/control_core.md`` (independently of the RTL core).

``RV32ISS.step()`` executes one instruction (or takes one interrupt) and returns its
:class:`CommitRecord` ``(pc, insn, rd, value, trap, cause)``, the contract's commit trace.
``RV32ISS.burst(n, clock, tick)`` takes the same steps without building records (the chip model's
fast path); both run the same code. Each instruction word is decoded once into a handler (cached by
pc, dropped when IMEM is written, which only :meth:`~RV32ISS.load_imem` does) that returns the
next pc; a record is made from the decoded ``(insn, rd)`` and the register file afterwards.

Choices where the contract leaves room (all documented here, keep the RTL in line):

* **Timing.** One :meth:`~RV32ISS.step` is one cycle: ``mcycle`` counts steps (including the ones
  spent asleep); a read returns the count *before* the reading instruction. ``minstret`` counts
  retired instructions; a read returns the count before the reading instruction. A CSR write of a
  counter half is applied after that instruction's increment (so a write of ``minstret``/``mcycle``
  wins over it, as the contract requires; a write of the high half leaves the incremented low half).
* **Sleeping.** ``WFI`` retires (one record) and sets :attr:`~RV32ISS.sleeping`. A step while
  asleep and ``(mip & mie) == 0`` produces no record and returns ``None``. Once
  ``mip & mie != 0`` (only MEIP can be pending: there is no timer) the same step wakes and either
  takes the interrupt (``mstatus.MIE`` = 1) or executes the next instruction.
* **Interrupt records.** ``(pc, insn, 0, 0, True, 0x8000000B)`` with ``pc`` = ``mepc`` = the next
  instruction not yet executed and ``insn`` its word (0 if that pc is not fetchable).
* **Fetch faults.** A fetch at ``pc[1:0] != 0`` traps with cause 0, else a fetch outside IMEM
  with cause 1, at the fetch (the jump that got there retired normally): record
  ``(pc, 0, 0, 0, True, cause)``, ``mtval`` = ``pc``, ``mepc`` = ``pc`` with bits [1:0] cleared
  (the contract's ``mepc`` read mask).
* **Loads/stores.** Alignment is checked before the memory map (a misaligned access outside the
  map is "misaligned"); MMIO byte/half accesses are access faults; ``mtval`` is the address.
* **Illegal encodings.** Everything outside RV32IM's defined encodings (including SLLI/SRLI/SRAI
  with bad funct7, SYSTEM funct3 = 0 words other than ECALL/EBREAK/MRET/WFI exactly, and
  MISC-MEM funct3 other than 0/1) is illegal; FENCE/FENCE.I fields are otherwise ignored.
* **Reset.** Registers, CSRs and counters are 0 (``mstatus`` reads 0x1800), pc = 0, DMEM zeroed.
"""
from __future__ import annotations

import io
import operator
import struct
from pathlib import Path
from typing import Callable, NamedTuple

M32 = 0xFFFF_FFFF
M64 = (1 << 64) - 1
IMEM_BASE, IMEM_SIZE = 0x0000_0000, 0x4000
DMEM_BASE = 0x1000_0000
MMIO_BASE, MMIO_SIZE = 0x2000_0000, 0x1_0000

CAUSE_FETCH_MISALIGNED = 0
CAUSE_FETCH_FAULT = 1
CAUSE_ILLEGAL = 2
CAUSE_BREAKPOINT = 3
CAUSE_LOAD_MISALIGNED = 4
CAUSE_LOAD_FAULT = 5
CAUSE_STORE_MISALIGNED = 6
CAUSE_STORE_FAULT = 7
CAUSE_ECALL_M = 11
CAUSE_EXT_IRQ = 0x8000_000B

MSTATUS_MIE, MSTATUS_MPIE, MSTATUS_MPP = 1 << 3, 1 << 7, 3 << 11
MIE_MEIE, MIE_MTIE = 1 << 11, 1 << 7
MISA_VALUE = 0x4000_1100

CSR_NAMES = {
    "mstatus": 0x300, "misa": 0x301, "mie": 0x304, "mtvec": 0x305, "mscratch": 0x340,
    "mepc": 0x341, "mcause": 0x342, "mtval": 0x343, "mip": 0x344,
    "mcycle": 0xB00, "mcycleh": 0xB80, "minstret": 0xB02, "minstreth": 0xB82,
    "cycle": 0xC00, "cycleh": 0xC80, "instret": 0xC02, "instreth": 0xC82, "mhartid": 0xF14,
}
READ_ONLY_CSRS = frozenset((0xC00, 0xC80, 0xC02, 0xC82, 0xF14))
# Values of these CSRs are excluded from trace comparison (cycle counts differ RTL vs ISS).
CYCLE_CSRS = frozenset((0xB00, 0xB80, 0xC00, 0xC80))


class CommitRecord(NamedTuple):
    """One commit-trace entry (``docs/control_core.md``, "Commit trace")."""
    pc: int
    insn: int
    rd: int
    value: int
    trap: bool = False
    cause: int = 0


_rec = tuple.__new__


class _Unclocked:
    """The clock of a core alone (:meth:`RV32ISS.step`): no step needs more than counting, and
    nothing reads the count."""
    now = 0
    deadline = float("inf")


_UNCLOCKED = _Unclocked()


class _Trap(Exception):
    def __init__(self, cause, tval=0):
        self.cause = cause
        self.tval = tval


class MMIOLog:
    """Default MMIO device: reads return 0, writes are appended to :attr:`writes`."""

    def __init__(self):
        self.writes: list[tuple[int, int, int]] = []

    def read(self, addr):
        return 0

    def write(self, addr, value, wstrb):
        self.writes.append((addr, value, wstrb))


def _s32(v):
    return v - 0x1_0000_0000 if v & 0x8000_0000 else v


def _sext(v, bits):
    m = 1 << (bits - 1)
    return (v & (m - 1)) - (v & m)


# R-type operations on unsigned 32-bit operands -> unsigned 32-bit result.
def _div(a, b):
    if b == 0:
        return M32
    sa, sb = _s32(a), _s32(b)
    if sa == -0x8000_0000 and sb == -1:
        return 0x8000_0000
    q = abs(sa) // abs(sb)
    return (-q if (sa < 0) != (sb < 0) else q) & M32


def _rem(a, b):
    if b == 0:
        return a
    sa, sb = _s32(a), _s32(b)
    if sa == -0x8000_0000 and sb == -1:
        return 0
    r = abs(sa) % abs(sb)
    return (-r if sa < 0 else r) & M32


_R_OPS = {
    (0, 0x00): lambda a, b: (a + b) & M32,
    (0, 0x20): lambda a, b: (a - b) & M32,
    (1, 0x00): lambda a, b: (a << (b & 31)) & M32,
    (2, 0x00): lambda a, b: 1 if _s32(a) < _s32(b) else 0,
    (3, 0x00): lambda a, b: 1 if a < b else 0,
    (4, 0x00): operator.xor,       # C functions where no mask is needed: no Python call
    (5, 0x00): lambda a, b: a >> (b & 31),
    (5, 0x20): lambda a, b: (_s32(a) >> (b & 31)) & M32,
    (6, 0x00): operator.or_,
    (7, 0x00): operator.and_,
    (0, 0x01): lambda a, b: (a * b) & M32,
    (1, 0x01): lambda a, b: ((_s32(a) * _s32(b)) >> 32) & M32,
    (2, 0x01): lambda a, b: ((_s32(a) * b) >> 32) & M32,
    (3, 0x01): lambda a, b: (a * b) >> 32,
    (4, 0x01): _div,
    (5, 0x01): lambda a, b: a // b if b else M32,
    (6, 0x01): _rem,
    (7, 0x01): lambda a, b: a % b if b else a,
}
# OP-IMM operations (funct3 -> op on (rs1, imm & M32)); shifts are handled separately.
_I_OPS = {0: _R_OPS[(0, 0)], 2: _R_OPS[(2, 0)], 3: _R_OPS[(3, 0)], 4: _R_OPS[(4, 0)],
          6: _R_OPS[(6, 0)], 7: _R_OPS[(7, 0)]}
# Branch funct3 -> (comparison, bits flipped in both operands first): flipping bit 31 orders
# unsigned 32-bit values as their signed readings.
_BRANCH = {
    0: (operator.eq, 0),
    1: (operator.ne, 0),
    4: (operator.lt, 0x8000_0000),
    5: (operator.ge, 0x8000_0000),
    6: (operator.lt, 0),
    7: (operator.ge, 0),
}
_LOAD = {0: (1, True), 1: (2, True), 2: (4, False), 4: (1, False), 5: (2, False)}
_LOAD_FMT = {(1, True): "<b", (2, True): "<h", (4, False): "<I", (1, False): "<B", (2, False): "<H"}
_STORE = {0: 1, 1: 2, 2: 4}
_STORE_FMT = {1: "<B", 2: "<H", 4: "<I"}


class _CSRView:
    """``iss.csr[addr_or_name]`` reads/writes a CSR with the architectural masks, outside any
    instruction (no legality checks; read-only CSRs ignore writes, unknown addresses raise)."""

    def __init__(self, iss):
        self._iss = iss

    @staticmethod
    def _addr(key):
        return CSR_NAMES[key.lower()] if isinstance(key, str) else key

    def __getitem__(self, key):
        try:
            return self._iss._csr_read(self._addr(key), 0, current=False)
        except _Trap:
            raise KeyError(f"no CSR {key!r}") from None

    def __setitem__(self, key, value):
        a = self._addr(key)
        if a not in _CSR_SET:
            raise KeyError(f"no CSR {key!r}")
        if a not in READ_ONLY_CSRS:
            self._iss._csr_write(a, value & M32)

    def __contains__(self, key):
        return self._addr(key) in CSR_NAMES.values()

    def as_dict(self):
        return {name: self[addr] for name, addr in CSR_NAMES.items()}

    def __repr__(self):
        return "CSRs(" + ", ".join(f"{k}={v:#x}" for k, v in self.as_dict().items()) + ")"


class RV32ISS:
    """RV32IM machine-mode ISS. See the module docstring for every timing/trap choice."""

    def __init__(self, imem=b"", *, dmem_size=16384, mmio=None):
        self._imem = bytearray(IMEM_SIZE)
        self._dmem = bytearray(dmem_size)
        self.dmem_size = dmem_size
        self.mmio = mmio if mmio is not None else MMIOLog()
        self._regs = [0] * 32
        self._cache: dict[int, Callable] = {}     # pc -> handler, for IMEM as it is now
        self._meta: dict[int, tuple] = {}         # pc -> (insn, rd of its commit record)
        self.reset()
        self.load_imem(imem)

    # ------------------------------------------------------------------------------ state
    def reset(self):
        """Reset vector 0, registers/CSRs/counters 0, not sleeping (memories are kept)."""
        self._regs[:] = [0] * 32
        self.pc = 0
        self._mstatus = 0
        self._mie = 0
        self._mtvec = 0
        self._mscratch = 0
        self._mepc = 0
        self._mcause = 0
        self._mtval = 0
        self._cyc = 0
        self._ret = 0
        self._irq = False
        self.sleeping = False
        self._slow = False
        self._trap_cause = None     # cause of the last instruction that trapped (for step())

    def load_imem(self, image, offset=0):
        """Write ``image`` (bytes, or a list of 32-bit words) into IMEM at ``offset``."""
        if isinstance(image, (list, tuple)):
            image = b"".join(struct.pack("<I", w & M32) for w in image)
        image = bytes(image)
        if offset < 0 or offset + len(image) > IMEM_SIZE:
            raise ValueError(f"IMEM image of {len(image)} bytes at {offset:#x} exceeds the "
                             f"{IMEM_SIZE}-byte IMEM")
        self._imem[offset:offset + len(image)] = image
        self._cache.clear()     # IMEM is written only here: the decoded handlers are stale
        self._meta.clear()

    @property
    def imem(self) -> bytes:
        return bytes(self._imem)

    @property
    def dmem(self) -> bytearray:
        return self._dmem

    @dmem.setter
    def dmem(self, value):
        if len(value) != len(self._dmem):
            raise ValueError(f"dmem must be {len(self._dmem)} bytes, got {len(value)}")
        self._dmem[:] = value

    @property
    def regs(self) -> list[int]:
        return self._regs

    @regs.setter
    def regs(self, values):
        values = [v & M32 for v in values]
        if len(values) != 32:
            raise ValueError(f"regs needs 32 values, got {len(values)}")
        values[0] = 0
        self._regs[:] = values

    @property
    def csr(self) -> _CSRView:
        return _CSRView(self)

    @property
    def cycle(self) -> int:
        """Steps taken (one per :meth:`step`), i.e. ``mcycle`` unless firmware wrote it."""
        return self._cyc & M64

    @property
    def instret(self) -> int:
        return self._ret & M64

    @property
    def irq(self) -> bool:
        return self._irq

    def set_irq(self, level: bool):
        """Drive the external interrupt input (mirrored in ``mip.MEIP``)."""
        self._irq = bool(level)
        self._upd()

    def _upd(self):
        self._slow = self.sleeping or bool(
            self._irq and (self._mie & MIE_MEIE) and (self._mstatus & MSTATUS_MIE))

    # -------------------------------------------------------------------------------- CSRs
    def _csr_read(self, a, insn, current=True):
        # current: called from an executing instruction whose counter increments already happened
        if a == 0x300:
            return self._mstatus | MSTATUS_MPP
        if a == 0x341:
            return self._mepc
        if a == 0x342:
            return self._mcause
        if a == 0x343:
            return self._mtval
        if a == 0x340:
            return self._mscratch
        if a == 0x304:
            return self._mie
        if a == 0x305:
            return self._mtvec
        if a == 0x344:
            return MIE_MEIE if self._irq else 0
        if a == 0x301:
            return MISA_VALUE
        if a == 0xF14:
            return 0
        if a in (0xB00, 0xC00, 0xB80, 0xC80):
            v = (self._cyc - current) & M64
            return v >> 32 if a & 0x080 else v & M32
        if a in (0xB02, 0xC02, 0xB82, 0xC82):
            v = (self._ret - current) & M64
            return v >> 32 if a & 0x080 else v & M32
        raise _Trap(CAUSE_ILLEGAL, insn)

    def _csr_write(self, a, v, insn=0):
        if a == 0x300:
            self._mstatus = v & (MSTATUS_MIE | MSTATUS_MPIE)
            self._upd()
        elif a == 0x304:
            self._mie = v & (MIE_MEIE | MIE_MTIE)
            self._upd()
        elif a == 0x305:
            self._mtvec = v & ~3 & M32
        elif a == 0x340:
            self._mscratch = v
        elif a == 0x341:
            self._mepc = v & ~3 & M32
        elif a == 0x342:
            self._mcause = v
        elif a == 0x343:
            self._mtval = v
        elif a in (0x301, 0x344):
            pass  # writes ignored
        elif a in (0xB00, 0xB80):
            c = self._cyc & M64
            self._cyc = (c & M32) | v << 32 if a == 0xB80 else (c & ~M32) | v
        elif a in (0xB02, 0xB82):
            c = self._ret & M64
            self._ret = (c & M32) | v << 32 if a == 0xB82 else (c & ~M32) | v
        else:
            raise _Trap(CAUSE_ILLEGAL, insn)

    # ------------------------------------------------------------------------------ memory
    def _insn_at(self, pc):
        if pc & 3 or not pc < IMEM_SIZE:
            return 0
        return struct.unpack_from("<I", self._imem, pc)[0]

    def load(self, addr, size, signed=False):
        """Architectural load (``size`` 1/2/4) at ``addr``; raises ValueError on a fault
        (used by tests and tools; instructions use the trapping path)."""
        try:
            return self._load(addr & M32, size, signed)
        except _Trap as t:
            raise ValueError(f"load of {size} bytes at {addr:#010x}: cause {t.cause}") from None

    def _load(self, a, size, signed):
        if a & (size - 1):
            raise _Trap(CAUSE_LOAD_MISALIGNED, a)
        off = a - DMEM_BASE
        if 0 <= off <= self.dmem_size - size:
            v = struct.unpack_from(_LOAD_FMT[(size, signed)], self._dmem, off)[0]
        elif a <= IMEM_SIZE - size:
            v = struct.unpack_from(_LOAD_FMT[(size, signed)], self._imem, a)[0]
        elif MMIO_BASE <= a < MMIO_BASE + MMIO_SIZE and size == 4:
            v = self.mmio.read(a) & M32
        else:
            raise _Trap(CAUSE_LOAD_FAULT, a)
        return v & M32

    def _store(self, a, size, v):
        if a & (size - 1):
            raise _Trap(CAUSE_STORE_MISALIGNED, a)
        off = a - DMEM_BASE
        if 0 <= off <= self.dmem_size - size:
            struct.pack_into(_STORE_FMT[size], self._dmem, off, v & ((1 << 8 * size) - 1))
        elif MMIO_BASE <= a < MMIO_BASE + MMIO_SIZE and size == 4:
            self.mmio.write(a, v, 0xF)
        else:
            raise _Trap(CAUSE_STORE_FAULT, a)

    # ------------------------------------------------------------------------------ execution
    def _enter_trap(self, cause, tval, pc):
        self._mepc = pc & ~3 & M32
        self._mcause = cause
        self._mtval = tval & M32
        ms = self._mstatus
        self._mstatus = MSTATUS_MPIE if ms & MSTATUS_MIE else 0
        self.pc = self._mtvec
        self._upd()

    def step(self) -> CommitRecord | None:
        """Execute one instruction or take one interrupt; ``None`` while asleep (no commit)."""
        if self._slow:
            if self.sleeping:
                if not (self._irq and self._mie & MIE_MEIE):
                    self._cyc += 1
                    return None
                self.sleeping = False
                self._upd()
            if self._slow:  # interrupt enabled and pending
                self._cyc += 1
                pc = self.pc
                self._enter_trap(CAUSE_EXT_IRQ, 0, pc)
                return _rec(CommitRecord, (pc, self._insn_at(pc), 0, 0, True, CAUSE_EXT_IRQ))
        pc = self.pc
        self._trap_cause = None
        self.burst(1, _UNCLOCKED, None)
        if self._trap_cause is None:
            insn, rd = self._meta[pc]
            return _rec(CommitRecord, (pc, insn, rd, self._regs[rd], False, 0))
        return _rec(CommitRecord, (pc, self._insn_at(pc), 0, 0, True, self._trap_cause))

    def burst(self, n, clock, tick):
        """Up to ``n`` steps as :meth:`step` takes them, without building commit records. After
        each step the rest of the system takes its share of it: ``tick()``, or only
        ``clock.now += 1`` while ``clock.now < clock.deadline`` (the system's promise that until
        then a step changes nothing else; ``clock.now`` is also the time its MMIO device sees).
        Stops after a step that called ``tick()`` or left the core asleep or with an interrupt to
        take; returns the steps taken."""
        get = self._cache.get
        pc = self.pc
        k = 0
        try:
            while k < n:
                if self._slow:       # asleep, waking or taking an interrupt: the general path
                    self.pc = pc
                    self.step()
                    pc = self.pc
                else:
                    fn = get(pc)
                    if fn is None:
                        fn = self._decode(pc)
                    self._cyc += 1
                    self._ret += 1
                    try:
                        pc = fn()
                    except _Trap as t:
                        self._ret -= 1
                        self._trap_cause = t.cause
                        self._enter_trap(t.cause, t.tval, pc)
                        pc = self.pc
                k += 1
                if clock.now >= clock.deadline:
                    self.pc = pc
                    tick()
                    break
                clock.now += 1
                if self._slow:
                    break
        finally:
            self.pc = pc     # also when an MMIO device raised: the pc of that instruction
        return k

    @property
    def idle(self) -> bool:
        """Asleep with nothing to wake it: a step would only count a cycle."""
        return self.sleeping and not (self._irq and self._mie & MIE_MEIE)

    def skip(self, n):
        """``n`` steps at once while :attr:`idle` (as many asleep steps would do)."""
        assert self.idle, "skip() is only for a core asleep with nothing to wake it"
        self._cyc += n

    def run(self, max_steps, until=None, *, trace=None) -> int:
        """Step up to ``max_steps`` times; stop early after a record for which ``until(record)``
        is true, or when asleep with nothing that could wake the core (no step can change
        ``irq``). Records (``None`` for asleep steps excluded) are appended to ``trace`` if given.
        Returns the number of steps taken."""
        step = self.step
        n = 0
        append = trace.append if trace is not None else None
        while n < max_steps:
            rec = step()
            n += 1
            if rec is None:
                if self.sleeping and not (self._irq and self._mie & MIE_MEIE):
                    break
                continue
            if append is not None:
                append(rec)
            if until is not None and until(rec):
                break
        return n

    # ------------------------------------------------------------------------------ decode
    def _decode(self, pc):
        if pc & 3 or not pc < IMEM_SIZE:  # fetch faults are not cached (unbounded pc set)
            cause = CAUSE_FETCH_MISALIGNED if pc & 3 else CAUSE_FETCH_FAULT

            def fetch_fault():
                raise _Trap(cause, pc)
            return fetch_fault
        insn = struct.unpack_from("<I", self._imem, pc)[0]
        self._meta[pc] = (insn, (insn >> 7) & 31 if insn & 0x7F in _WRITES_RD else 0)
        fn = self._cache[pc] = self._build(pc, insn)
        return fn

    def _build(self, pc, insn):
        if insn & 3 != 3:
            return _illegal(insn)
        b = _BUILDERS.get(insn & 0x7F)
        return _illegal(insn) if b is None else b(self, pc, insn)


# ------------------------------------------------------------------------------ decoders
# One builder per major opcode: each returns a handler that executes the instruction and returns
# the next pc (or raises _Trap). Handlers build no commit record: :meth:`RV32ISS.step` makes it
# from the decoded (insn, rd) and the register file afterwards.
def _illegal(insn):
    def illegal():
        raise _Trap(CAUSE_ILLEGAL, insn)
    return illegal


def _b_opimm(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    rd = (insn >> 7) & 31
    f3 = (insn >> 12) & 7
    rs1 = (insn >> 15) & 31
    f7 = insn >> 25
    if f3 in (1, 5):
        if f3 == 1 and f7 != 0 or f3 == 5 and f7 not in (0, 0x20):
            return _illegal(insn)
        fop = _R_OPS[(f3, f7)]
        b = (insn >> 20) & 31  # shamt
    else:
        fop = _I_OPS[f3]
        b = _sext(insn >> 20, 12) & M32
    if rd == 0:
        def f():
            return nxt
    elif f3 == 0:
        def f():
            R[rd] = (R[rs1] + b) & M32
            return nxt
    else:
        def f():
            R[rd] = fop(R[rs1], b)
            return nxt
    return f


def _b_op(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    rd = (insn >> 7) & 31
    rs1 = (insn >> 15) & 31
    rs2 = (insn >> 20) & 31
    fop = _R_OPS.get(((insn >> 12) & 7, insn >> 25))
    if fop is None:
        return _illegal(insn)
    if rd == 0:
        def f():
            return nxt
    else:
        def f():
            R[rd] = fop(R[rs1], R[rs2])
            return nxt
    return f


def _b_upper(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    rd = (insn >> 7) & 31
    v = insn & 0xFFFF_F000
    if insn & 0x7F == 0x17:
        v = (v + pc) & M32
    if rd == 0:
        def f():
            return nxt
    else:
        def f():
            R[rd] = v
            return nxt
    return f


def _b_jal(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    rd = (insn >> 7) & 31
    off = (_sext(insn >> 31, 1) << 20 | ((insn >> 12) & 0xFF) << 12
           | ((insn >> 20) & 1) << 11 | ((insn >> 21) & 0x3FF) << 1)
    tgt = (pc + off) & M32
    if rd == 0:
        def f():
            return tgt
    else:
        def f():
            R[rd] = nxt
            return tgt
    return f


def _b_jalr(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    rd = (insn >> 7) & 31
    rs1 = (insn >> 15) & 31
    imm_i = _sext(insn >> 20, 12)
    if (insn >> 12) & 7 != 0:
        return _illegal(insn)

    def f():
        t = (R[rs1] + imm_i) & 0xFFFF_FFFE   # before the link write: rd may be rs1
        if rd:
            R[rd] = nxt
        return t
    return f


def _b_branch(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    rs1 = (insn >> 15) & 31
    rs2 = (insn >> 20) & 31
    if (insn >> 12) & 7 not in _BRANCH:
        return _illegal(insn)
    cond, flip = _BRANCH[(insn >> 12) & 7]
    off = (_sext(insn >> 31, 1) << 12 | ((insn >> 7) & 1) << 11
           | ((insn >> 25) & 0x3F) << 5 | ((insn >> 8) & 0xF) << 1)
    tgt = (pc + off) & M32

    def f():
        return tgt if cond(R[rs1] ^ flip, R[rs2] ^ flip) else nxt
    return f


def _b_load(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    rd = (insn >> 7) & 31
    f3 = (insn >> 12) & 7
    rs1 = (insn >> 15) & 31
    imm_i = _sext(insn >> 20, 12)
    if f3 not in _LOAD:
        return _illegal(insn)
    size, signed = _LOAD[f3]
    unpack = struct.Struct(_LOAD_FMT[(size, signed)]).unpack_from
    dm = S._dmem
    dlim = S.dmem_size - size
    amask = size - 1
    slow = S._load

    def f():
        a = (R[rs1] + imm_i) & M32
        off = a - DMEM_BASE
        if 0 <= off <= dlim and not a & amask:
            v = unpack(dm, off)[0] & M32
        else:
            v = slow(a, size, signed)
        if rd:
            R[rd] = v
        return nxt
    return f


def _b_store(S, pc, insn):
    R = S._regs
    nxt = (pc + 4) & M32
    f3 = (insn >> 12) & 7
    rs1 = (insn >> 15) & 31
    rs2 = (insn >> 20) & 31
    if f3 not in _STORE:
        return _illegal(insn)
    size = _STORE[f3]
    imm_s = _sext((insn >> 25) << 5 | (insn >> 7) & 31, 12)
    pack = struct.Struct(_STORE_FMT[size]).pack_into
    vmask = (1 << 8 * size) - 1
    dm = S._dmem
    dlim = S.dmem_size - size
    amask = size - 1
    slow = S._store

    def f():
        a = (R[rs1] + imm_s) & M32
        off = a - DMEM_BASE
        if 0 <= off <= dlim and not a & amask:
            pack(dm, off, R[rs2] & vmask)
        else:
            slow(a, size, R[rs2])
        return nxt
    return f


def _b_miscmem(S, pc, insn):
    nxt = (pc + 4) & M32
    if (insn >> 12) & 7 not in (0, 1):
        return _illegal(insn)

    def f():
        return nxt
    return f


def _b_system(S, pc, insn):  # noqa: C901
    R = S._regs
    nxt = (pc + 4) & M32
    rd = (insn >> 7) & 31
    f3 = (insn >> 12) & 7
    rs1 = (insn >> 15) & 31
    if f3 == 0:
        if insn == 0x0000_0073:
            def f():
                raise _Trap(CAUSE_ECALL_M, 0)
        elif insn == 0x0010_0073:
            def f():
                raise _Trap(CAUSE_BREAKPOINT, 0)
        elif insn == 0x3020_0073:
            def f():
                ms = S._mstatus
                S._mstatus = MSTATUS_MPIE | (MSTATUS_MIE if ms & MSTATUS_MPIE else 0)
                S._upd()
                return S._mepc
        elif insn == 0x1050_0073:
            def f():
                S.sleeping = True
                S._slow = True
                return nxt
        else:
            return _illegal(insn)
        return f
    if f3 == 4:
        return _illegal(insn)
    csr = insn >> 20
    kind = f3 & 3  # 1 write, 2 set, 3 clear
    uimm = rs1
    imm_form = bool(f3 & 4)
    writes = kind == 1 or rs1 != 0  # rs1 field is the register number or zimm
    if csr not in _CSR_SET or (writes and csr in READ_ONLY_CSRS):
        return _illegal(insn)

    def f():
        old = S._csr_read(csr, insn)
        if writes:
            src = uimm if imm_form else R[rs1]
            new = src if kind == 1 else (old | src if kind == 2 else old & ~src & M32)
            S._csr_write(csr, new, insn)
        if rd:
            R[rd] = old
        return nxt
    return f


_BUILDERS = {
    0x13: _b_opimm,
    0x33: _b_op,
    0x37: _b_upper,
    0x17: _b_upper,
    0x6F: _b_jal,
    0x67: _b_jalr,
    0x63: _b_branch,
    0x03: _b_load,
    0x23: _b_store,
    0x0F: _b_miscmem,
    0x73: _b_system,
}

_CSR_SET = frozenset(CSR_NAMES.values())
# Major opcodes whose commit record carries rd (the others record rd = 0).
_WRITES_RD = frozenset((0x13, 0x33, 0x37, 0x17, 0x6F, 0x67, 0x03, 0x73))


# ------------------------------------------------------------------------------------- ELF
class ElfImage(NamedTuple):
    imem: bytes  # IMEM_SIZE bytes
    dmem: bytes  # dmem_size bytes
    entry: int


def load_elf(path_or_bytes, *, dmem_size=16384) -> ElfImage:
    """Place the PT_LOAD segments of an RV32 little-endian ELF (by physical address ``p_paddr``;
    ``p_filesz`` bytes copied, the rest of ``p_memsz`` zero) into IMEM images (0x0...) and DMEM
    (0x1000_0000...). Raises ValueError naming any segment that falls outside both."""
    from elftools.elf.elffile import ELFFile

    data = path_or_bytes
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    elf = ELFFile(io.BytesIO(bytes(data)))
    if elf.elfclass != 32 or not elf.little_endian or elf["e_machine"] != "EM_RISCV":
        raise ValueError(f"not an RV32 little-endian RISC-V ELF (class {elf.elfclass}, "
                         f"machine {elf['e_machine']})")
    imem = bytearray(IMEM_SIZE)
    dmem = bytearray(dmem_size)
    for i, seg in enumerate(elf.iter_segments()):
        if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
            continue
        addr, memsz, filesz = seg["p_paddr"], seg["p_memsz"], seg["p_filesz"]
        body = seg.data()[:filesz].ljust(memsz, b"\0")
        if IMEM_BASE <= addr and addr + memsz <= IMEM_BASE + IMEM_SIZE:
            imem[addr - IMEM_BASE:addr - IMEM_BASE + memsz] = body
        elif DMEM_BASE <= addr and addr + memsz <= DMEM_BASE + dmem_size:
            dmem[addr - DMEM_BASE:addr - DMEM_BASE + memsz] = body
        else:
            raise ValueError(f"PT_LOAD segment {i} at {addr:#010x}..{addr + memsz:#010x} "
                             f"({memsz} bytes) is outside IMEM [0x0, {IMEM_SIZE:#x}) and DMEM "
                             f"[{DMEM_BASE:#x}, {DMEM_BASE + dmem_size:#x})")
    return ElfImage(bytes(imem), bytes(dmem), elf["e_entry"])


def _iss_load_elf(self, path_or_bytes) -> int:
    """Load an ELF into this ISS's IMEM/DMEM (see :func:`load_elf`); returns the entry point.
    The pc is left at the reset vector."""
    img = load_elf(path_or_bytes, dmem_size=self.dmem_size)
    self.load_imem(img.imem)
    self._dmem[:] = img.dmem
    return img.entry


def _from_elf(cls, path_or_bytes, **kwargs) -> "RV32ISS":
    """A fresh ISS with an ELF loaded."""
    iss = cls(**kwargs)
    iss.load_elf(path_or_bytes)
    return iss


RV32ISS.load_elf = _iss_load_elf
RV32ISS.from_elf = classmethod(_from_elf)


def trace_key(rec):
    """The comparable part of a commit record, as a plain tuple: the value of a read of
    ``mcycle*``/``cycle*`` (excluded from comparison by the contract) is replaced by 0."""
    if rec is None:
        return None
    pc, insn, rd, value, trap, cause = rec
    if not trap and (insn & 0x7F) == 0x73 and (insn >> 12) & 3 and (insn >> 20) in CYCLE_CSRS:
        value = 0
    return (pc, insn, rd, value, bool(trap), cause)
