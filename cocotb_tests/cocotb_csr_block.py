"""cocotb side of test_csr_block: every field kind, byte strobes, unmapped addresses, backpressure.

``reset_values`` and ``bit_bash`` are the UVM register sequences (uvm_reg_hw_reset_seq,
uvm_reg_bit_bash_seq) generated from the register model: they walk ``regmap.load()`` and predict
every read from the RDL field kinds (:class:`RegMirror`), so a register added to kaki_regs.rdl is
tested without touching this file. Random choices come from ``KAKI_SEED`` (logged; ``SEED=``).
"""
import functools
import itertools
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster
from cocotbext.axi.constants import AxiResp

from hdl_gen import regmap
from spec import registers as R

#: Field kinds software can change (regmap.KINDS); "const" and "ro" ignore writes.
WRITABLE = ("rw", "wstrobe", "pulse", "w1c")
#: Cycles one AXI4-Lite access may take, with the random pauses on every channel, before the
#: block counts as hung (a write answers in one cycle once AW and W are both there, a read in three).
ACCESS_CYCLES = 100
CLK_NS = 10


def field_value(word, f):
    return (word >> f.lsb) & ((1 << f.width) - 1)


def bits_of(x, offset=0):
    """Indices of the set bits of ``x`` (plus ``offset``)."""
    return [offset + i for i in range(x.bit_length()) if x >> i & 1]


def bytemask(strb):
    return sum(0xFF << (8 * i) for i in range(4) if strb >> i & 1)


@functools.cache
def resets_undefined():
    """{(register address, field name)} of the fields the RDL gives no reset value.

    regmap.Field.reset reads such a field as 0; the RDL itself is asked here, so a field whose
    reset the model leaves open is reported as unchecked instead of being checked against 0.
    """
    from systemrdl import RDLCompiler
    from systemrdl.node import FieldNode

    rdlc = RDLCompiler()
    rdlc.compile_file(str(regmap.RDL))
    return frozenset((n.parent.absolute_address, n.inst_name)
                     for n in rdlc.elaborate().top.descendants(unroll=True)
                     if isinstance(n, FieldNode) and n.get_property("reset") is None)


class RegMirror:
    """What every field should read, predicted from its kind (UVM's register mirror).

    ``const`` reads its reset; ``ro`` reads what the harness drives on its input port; ``rw`` and
    ``wstrobe`` hold the written bytes; ``w1c`` is set by hardware and cleared by writing 1;
    ``pulse`` (singlepulse) reads 0 and pulses the bits written 1 for one cycle.
    """

    def __init__(self, regs):
        self.regs = regs
        self.value = {(r.ident, f.name): 0 for r in regs.values() for f in r.fields}
        self.reset()

    def reset(self):
        """The values after reset (``ro`` fields keep the value the harness drives)."""
        for reg in self.regs.values():
            for f in reg.fields:
                if f.kind != "ro":
                    self.value[reg.ident, f.name] = 0 if f.kind == "pulse" else f.reset

    def word(self, reg):
        return sum(self.value[reg.ident, f.name] << f.lsb for f in reg.fields)

    def write(self, reg, data, mask):
        """Predict a software write of ``data`` with byte mask ``mask``; return the one-cycle side
        effects it must cause, sorted: (``REG.FIELD``, bits) per pulse field written 1s and
        (``REG.FIELD.swmod``, 1) per wstrobe field (the CSR block strobes on every write)."""
        effects = []
        for f in reg.fields:
            key, d, m = (reg.ident, f.name), field_value(data & mask, f), field_value(mask, f)
            if f.kind in ("rw", "wstrobe"):
                self.value[key] = (self.value[key] & ~m) | d
            elif f.kind == "w1c":
                self.value[key] &= ~d
            if f.kind == "pulse" and d:
                effects.append((f"{reg.ident}.{f.name}", d))
            if f.kind == "wstrobe":
                effects.append((f"{reg.ident}.{f.name}.swmod", 1))
        return sorted(effects)


class SideEffects:
    """Samples every pulse field and swmod strobe of the block at each clock edge and logs the
    non-zero ones as (``REG.FIELD`` or ``REG.FIELD.swmod``, value), in the order seen."""

    def __init__(self, tb):
        self.ports = []
        for reg in tb.regs.values():
            for f in reg.fields:
                name, label = regmap.port_name(reg, f), f"{reg.ident}.{f.name}"
                if f.kind == "pulse":
                    self.ports.append((label, getattr(tb.dut, name)))
                elif f.kind == "wstrobe":
                    self.ports.append((label + ".swmod", getattr(tb.dut, name + "_swmod")))
        self.seen = []
        self.task = cocotb.start_soon(self._watch(tb.dut.clk))

    async def _watch(self, clk):
        while True:
            await RisingEdge(clk)
            for label, handle in self.ports:
                v = int(handle.value)
                if v:
                    self.seen.append((label, v))

    def take(self):
        seen, self.seen = self.seen, []
        return seen

    def stop(self):
        self.task.cancel()


class TB:
    """Owns the clock, reset and the AXI4-Lite master."""

    def __init__(self, dut):
        self.dut = dut
        self.seed = int(os.environ["KAKI_SEED"])
        dut._log.info(f"KAKI_SEED={self.seed} (rerun with SEED={self.seed})")
        self.rng = random.Random(self.seed)
        Clock(dut.clk, CLK_NS, unit="ns").start()
        self.axi = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "bus", bus_separator="__"),
                                 dut.clk, dut.rst)
        self.regs = regmap.by_ident()
        self.mirror = RegMirror(self.regs)

    def port(self, reg, field):
        return getattr(self.dut, regmap.port_name(self.regs[reg], self.regs[reg].field(field)))

    async def reset(self):
        """Pulse reset; ``ro`` inputs hold the mirror's values (0 unless :meth:`drive` set them)."""
        for reg in self.regs.values():
            for f in reg.fields:
                name = regmap.port_name(reg, f)
                if f.kind == "ro":
                    getattr(self.dut, name).value = self.mirror.value[reg.ident, f.name]
                elif f.kind == "w1c":
                    getattr(self.dut, name + "_set").value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def random_pauses(self):
        pause = lambda: itertools.cycle(self.rng.choice([0, 0, 1]) for _ in range(97))
        self.axi.write_if.aw_channel.set_pause_generator(pause())
        self.axi.write_if.w_channel.set_pause_generator(pause())
        self.axi.write_if.b_channel.set_pause_generator(pause())
        self.axi.read_if.ar_channel.set_pause_generator(pause())
        self.axi.read_if.r_channel.set_pause_generator(pause())

    async def answered(self, access, what):
        """The response of the AXI4-Lite ``access`` (a coroutine of the master), which must come
        within ACCESS_CYCLES cycles."""
        try:
            return await with_timeout(access, ACCESS_CYCLES * CLK_NS, "ns")
        except SimTimeoutError:
            raise AssertionError(f"{what}: no response within {ACCESS_CYCLES} cycles") from None

    async def read(self, reg):
        """Read a mapped register: answered OKAY."""
        r = await self.answered(self.axi.read(self.regs[reg].addr, 4), f"read of {reg}")
        assert r.resp == AxiResp.OKAY, f"read of {reg} answered {r.resp}"
        return int.from_bytes(r.data, "little")

    async def write(self, reg, value, strb=None):
        """Write a mapped register (the byte lanes of ``strb``, default all): answered OKAY."""
        data, addr = value.to_bytes(4, "little"), self.regs[reg].addr
        if strb is not None:    # cocotbext-axi derives strobes from a byte-aligned sub-word write
            lo = (strb & -strb).bit_length() - 1
            data, addr = data[lo:strb.bit_length()], addr + lo
        w = await self.answered(self.axi.write(addr, data), f"write of {reg}")
        assert w.resp == AxiResp.OKAY, f"write of {reg} answered {w.resp}"

    def drive(self, reg, f, value):
        """Drive the hardware input of ``ro`` field ``f`` (the value software must then read)."""
        getattr(self.dut, regmap.port_name(reg, f)).value = value
        self.mirror.value[reg.ident, f.name] = value

    async def hw_set(self, reg, sets):
        """Hardware-set the ``w1c`` bits ``sets`` (register-aligned) through the ``_set`` inputs,
        for one cycle."""
        ports = []
        for f in reg.fields:
            if f.kind == "w1c" and field_value(sets, f):
                ports.append(getattr(self.dut, regmap.port_name(reg, f) + "_set"))
                ports[-1].value = field_value(sets, f)
                self.mirror.value[reg.ident, f.name] |= field_value(sets, f)
        if ports:
            await RisingEdge(self.dut.clk)
            for p in ports:
                p.value = 0

    async def check(self, reg, context, skip=()):
        """Read ``reg`` and compare every field with the mirror, reserved bits with 0, and the
        hardware-side outputs (stored fields' ports, idle pulse and swmod ports) with the model.
        Fields named in ``skip`` are left out. The failure names register, field, bits, what was
        written (``context``), expected and actual."""
        actual = await self.read(reg.ident)
        problems = []

        def mismatch(what, exp, act, lsb):
            bad = bits_of(exp ^ act, lsb)
            problems.append(f"{reg.ident}.{what} bit{'s' if len(bad) > 1 else ''} "
                            f"{','.join(map(str, bad))}: expected {exp:#x}, actual {act:#x}")

        for f in reg.fields:
            if f.name in skip:
                continue
            exp, act = self.mirror.value[reg.ident, f.name], field_value(actual, f)
            if exp != act:
                mismatch(f"{f.name} ({f.kind}) read", exp, act, f.lsb)
            name = regmap.port_name(reg, f)
            if f.kind in ("rw", "wstrobe", "w1c"):
                hw = int(getattr(self.dut, name).value)
                if hw != exp:
                    mismatch(f"{f.name} ({f.kind}) output port {name}", exp, hw, f.lsb)
            if f.kind == "pulse" and int(getattr(self.dut, name).value):
                problems.append(f"{reg.ident}.{f.name} (pulse) port {name} high while idle")
            if f.kind == "wstrobe" and int(getattr(self.dut, name + "_swmod").value):
                problems.append(f"{reg.ident}.{f.name} (wstrobe) port {name}_swmod high while idle")
        reserved = actual & ~sum(f.mask for f in reg.fields) & 0xFFFFFFFF
        if reserved:
            mismatch("reserved", 0, reserved, 0)
        assert not problems, (f"{context}: " + "; ".join(problems) +
                              f" (register expected {self.mirror.word(reg):#010x}, read "
                              f"{actual:#010x}; KAKI_SEED={self.seed})")

    async def write_check(self, reg, data, context, fx, strb=None):
        """Write ``data`` (byte strobes ``strb``, default all), then :meth:`check` the register
        and that the write caused exactly the pulses/strobes the model predicts."""
        expected = self.mirror.write(reg, data, bytemask(0xF if strb is None else strb))
        context = (f"{context}: wrote {data:#010x} to {reg.ident} @ {reg.addr:#05x}"
                   + ("" if strb is None else f" with wstrb {strb:#06b}"))
        await self.write(reg.ident, data, strb)
        await self.check(reg, context)
        seen = sorted(fx.take())
        assert seen == expected, (f"{context}: one-cycle side effects expected {expected}, "
                                  f"actual {seen} (KAKI_SEED={self.seed})")


@cocotb.test()
async def constants_and_read_only(dut):
    """Constants read their RDL reset value; RO fields read what the hardware drives."""
    tb = TB(dut)
    await tb.reset()
    tb.random_pauses()
    assert await tb.read("ID") == 0x4B414B49
    assert await tb.read("VERSION") == tb.regs["VERSION"].field("MINOR").reset
    for value in (0xA5, 0x00, 0xFF):
        tb.port("CAP_ARRAY", "ROWS").value = value
        tb.port("CAP_ARRAY", "COLS").value = value ^ 0xFF
        assert await tb.read("CAP_ARRAY") == value | ((value ^ 0xFF) << 8)
    await tb.write("ID", 0)     # writes to read-only registers are ignored
    assert await tb.read("ID") == 0x4B414B49


@cocotb.test()
async def read_write_and_strobes(dut):
    """RW registers hold writes; byte strobes touch only their bytes; every CMD word is distinct."""
    tb = TB(dut)
    await tb.reset()
    tb.random_pauses()
    values = [tb.rng.getrandbits(32) for _ in range(8)]
    for i, v in enumerate(values):
        await tb.write(f"CMD{i}", v)
    for i, v in enumerate(values):
        assert await tb.read(f"CMD{i}") == v
        assert int(tb.port(f"CMD{i}", "WORD").value) == v
    await tb.write("CMD0", 0x11223344, strb=0b0100)
    assert await tb.read("CMD0") == (values[0] & ~0x00FF0000) | 0x00220000
    await tb.write("IRQ_ENABLE", 0xFFFFFFFF)
    defined = sum(f.mask for f in tb.regs["IRQ_ENABLE"].fields)
    assert defined != 0xFFFFFFFF
    assert await tb.read("IRQ_ENABLE") == defined   # only the defined bits exist


@cocotb.test()
async def write_one_to_clear(dut):
    """W1C: hardware sets, software clears only the bits it writes 1 to; set beats clear."""
    tb = TB(dut)
    await tb.reset()
    getattr(dut, "irq_status_gemm_done_set").value = 1
    getattr(dut, "irq_status_error_set").value = 1
    await RisingEdge(dut.clk)
    getattr(dut, "irq_status_gemm_done_set").value = 0
    getattr(dut, "irq_status_error_set").value = 0
    gemm, error = (1 << R.IRQ_STATUS.GEMM_DONE.lsb), (1 << R.IRQ_STATUS.ERROR.lsb)
    assert await tb.read("IRQ_STATUS") == gemm | error
    await tb.write("IRQ_STATUS", gemm)
    assert await tb.read("IRQ_STATUS") == error
    # A set in the very cycle of the clearing write wins: hold the set across the write.
    getattr(dut, "irq_status_error_set").value = 1
    await tb.write("IRQ_STATUS", error)
    getattr(dut, "irq_status_error_set").value = 0
    assert await tb.read("IRQ_STATUS") == error
    await tb.write("IRQ_STATUS", error)
    assert await tb.read("IRQ_STATUS") == 0


@cocotb.test()
async def doorbell_pulses_once(dut):
    """A singlepulse field is high for exactly one cycle per write of 1, never for a write of 0."""
    tb = TB(dut)
    await tb.reset()
    fx = SideEffects(tb)
    for _ in range(5):
        await tb.write("CMD_SUBMIT", 1)
    await tb.write("CMD_SUBMIT", 0)
    await ClockCycles(dut.clk, 3)
    fx.stop()
    assert fx.take() == [("CMD_SUBMIT.GO", 1)] * 5
    assert await tb.read("CMD_SUBMIT") == 0


@cocotb.test()
async def unmapped_addresses_answer_slverr(dut):
    """Holes in the map answer SLVERR on reads and writes, reads return 0 (not the data of the
    read before), and writes change nothing."""
    tb = TB(dut)
    await tb.reset()
    mapped = {r.addr for r in tb.regs.values()}
    holes = [a for a in range(0, 0x100, 4) if a not in mapped][:6] + [0xFFC]
    await tb.write("CMD1", 0xA5C3_0F69)
    for addr in holes:
        w = await tb.answered(tb.axi.write(addr, b"\xff\xff\xff\xff"), f"write to hole {addr:#x}")
        assert w.resp == AxiResp.SLVERR, f"write to hole {addr:#x} answered {w.resp}"
        assert await tb.read("CMD1") == 0xA5C3_0F69, f"write to hole {addr:#x} changed CMD1"
        r = await tb.answered(tb.axi.read(addr, 4), f"read of hole {addr:#x}")
        assert r.resp == AxiResp.SLVERR, f"read of hole {addr:#x} answered {r.resp}"
        assert r.data == bytes(4), f"read of hole {addr:#x} returned {r.data.hex()}, not 0"


@cocotb.test()
async def write_strobe_fields(dut):
    """A swmod field keeps its value and strobes for exactly one cycle on every write (even of 0)."""
    tb = TB(dut)
    await tb.reset()
    fx = SideEffects(tb)
    for v in (0x12345678, 0, 0xFFFFFFFF):
        await tb.write("CORE_MEM_DATA", v)
        assert await tb.read("CORE_MEM_DATA") == v
    await ClockCycles(dut.clk, 2)
    fx.stop()
    strobes = fx.take()
    assert strobes == [("CORE_MEM_DATA.DATA.swmod", 1)] * 3, strobes


def _masks(reg):
    """(bits software can change, w1c bits) of ``reg``."""
    return (sum(f.mask for f in reg.fields if f.kind in WRITABLE),
            sum(f.mask for f in reg.fields if f.kind == "w1c"))


@cocotb.test()
async def reset_values(dut):
    """uvm_reg_hw_reset_seq: after reset every register reads its RDL reset value, and ``ro``
    fields (no RDL reset: hardware-driven) read what the harness drives; the stored fields' output
    ports hold their reset too. Checked after power-up and again after a reset that follows writes
    of the complement of every reset value and hardware sets of every w1c bit."""
    tb = TB(dut)
    undefined = resets_undefined()
    skip = {}
    for reg in tb.regs.values():
        for f in reg.fields:
            if f.kind != "ro" and (reg.addr, f.name) in undefined:
                skip.setdefault(reg.ident, set()).add(f.name)
                dut._log.warning(f"reset check SKIPS {reg.ident}.{f.name} ({f.kind}): the RDL "
                                 f"gives it no reset value and no hardware input drives it")
    ro = [(reg, f) for reg in tb.regs.values() for f in reg.fields if f.kind == "ro"]
    dut._log.info(f"{len(ro)} ro fields have no RDL reset (hardware-driven): each is checked "
                  f"against the seeded random value the harness drives on its input port")
    for reg, f in ro:
        tb.drive(reg, f, tb.rng.getrandbits(f.width))
    await tb.reset()
    tb.random_pauses()
    for reg in tb.regs.values():
        await tb.check(reg, "reset values after power-up reset", skip.get(reg.ident, ()))

    for reg in tb.regs.values():
        writable, w1c = _masks(reg)
        if writable:
            await tb.write(reg.ident, ~tb.mirror.word(reg) & 0xFFFFFFFF)
        await tb.hw_set(reg, w1c)
    for reg, f in ro:
        tb.drive(reg, f, ~tb.mirror.value[reg.ident, f.name] & ((1 << f.width) - 1))
    await tb.reset()
    tb.mirror.reset()
    for reg in tb.regs.values():
        await tb.check(reg, "reset values after writing the complement of every reset value, "
                            "hardware-setting every w1c bit and resetting",
                       skip.get(reg.ident, ()))


async def _hardware_step(tb, reg, sets, ro_value=None):
    """Drive new values on ``reg``'s ro inputs (``ro_value(f)``, default random) and hardware-set
    the w1c bits ``sets``, as the hardware side would between two software accesses."""
    for f in reg.fields:
        if f.kind == "ro":
            tb.drive(reg, f, ro_value(f) if ro_value else tb.rng.getrandbits(f.width))
    await tb.hw_set(reg, sets)


@cocotb.test()
async def bit_bash(dut):
    """uvm_reg_bit_bash_seq over the whole model, plus byte strobes and ignored writes.

    For every bit software can change (rw, wstrobe, pulse, w1c): write it 1 then 0 with the other
    bits at a seeded random background, read back after each write and check every field by kind
    (RegMirror), reserved bits 0, the output ports, and that each write caused exactly the pulses
    and swmod strobes predicted. w1c bits are hardware-set (random, plus the walked bit) before
    each write, so a walking 1 must clear them and a walking 0 must not. Then two writes per byte
    lane (data d, then ~d) and one multi-byte strobe per writable register: only the enabled
    bytes change (w1c: only their 1s clear; pulse: only their 1s pulse).
    Registers without writable bits (const, ro) take three writes, ignored, while the harness
    drives random / complemented / random values on their inputs. A last sweep reads every
    register again (no write changed another register)."""
    tb = TB(dut)
    await tb.reset()
    fx = SideEffects(tb)
    writes = bits = 0
    for reg in tb.regs.values():
        writable, w1c = _masks(reg)
        for bit in bits_of(writable):
            f = next(f for f in reg.fields if f.mask >> bit & 1)
            background = tb.rng.getrandbits(32)
            for level in (1, 0):
                await _hardware_step(tb, reg, (tb.rng.getrandbits(32) | 1 << bit) & w1c)
                data = (background & ~(1 << bit)) | level << bit
                await tb.write_check(reg, data, f"bit bash {reg.ident}.{f.name} ({f.kind}) bit "
                                                f"{bit} walking {'ones' if level else 'zeros'}", fx)
                writes += 1
            bits += 1
        if writable:
            # Each lane alone with data d, then each with ~d, so every stored bit is seen both 0
            # and 1 while its lane is disabled; then one multi-byte strobe.
            d = tb.rng.getrandbits(32)
            multi = tb.rng.choice([0b0011, 0b0110, 0b1100, 0b0111, 0b1110])
            for data, strb in [*((d ^ flip, 1 << lane) for flip in (0, 0xFFFFFFFF)
                                 for lane in range(4)), (tb.rng.getrandbits(32), multi)]:
                await _hardware_step(tb, reg, w1c)
                await tb.write_check(reg, data, "byte strobes", fx, strb=strb)
                writes += 1
        else:
            data, hw = tb.rng.getrandbits(32), {f.name: tb.rng.getrandbits(f.width)
                                                for f in reg.fields}
            for step in range(3):
                flip = (1 << 32) - 1 if step == 1 else 0
                await _hardware_step(tb, reg, 0, lambda f: hw[f.name] ^ (flip & ((1 << f.width) - 1)))
                await tb.write_check(reg, data ^ flip, f"write to read-only register (step {step})", fx)
                writes += 1
    for reg in tb.regs.values():
        await tb.check(reg, "bit bash: final read of every register")
    assert fx.take() == [], "reads caused pulses or swmod strobes"
    fx.stop()
    dut._log.info(f"bit bash: {bits} writable bits of {len(tb.regs)} registers, {writes} checked "
                  f"writes (KAKI_SEED={tb.seed})")
