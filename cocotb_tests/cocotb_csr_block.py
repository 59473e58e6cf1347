"""cocotb side of test_csr_block: every field kind, byte strobes, unmapped addresses, backpressure."""
import itertools
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster
from cocotbext.axi.constants import AxiResp

from hdl_gen import regmap


class TB:
    """Owns the clock, reset and the AXI4-Lite master."""

    def __init__(self, dut):
        self.dut = dut
        self.rng = random.Random(int(os.environ["KAKI_SEED"]))
        Clock(dut.clk, 10, unit="ns").start()
        self.axi = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "bus", bus_separator="__"),
                                 dut.clk, dut.rst)
        self.regs = regmap.by_ident()

    def port(self, reg, field):
        return getattr(self.dut, regmap.port_name(self.regs[reg], self.regs[reg].field(field)))

    async def reset(self):
        for reg in self.regs.values():
            for f in reg.fields:
                name = regmap.port_name(reg, f)
                if f.kind == "ro":
                    getattr(self.dut, name).value = 0
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

    async def read(self, reg):
        return int.from_bytes((await self.axi.read(self.regs[reg].addr, 4)).data, "little")

    async def write(self, reg, value, strb=None):
        data = value.to_bytes(4, "little")
        if strb is None:
            await self.axi.write(self.regs[reg].addr, data)
        else:   # cocotbext-axi derives strobes from a byte-aligned sub-word write
            lo = (strb & -strb).bit_length() - 1
            hi = strb.bit_length()
            await self.axi.write(self.regs[reg].addr + lo, data[lo:hi])


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
    assert await tb.read("IRQ_STATUS") == 0b10100
    await tb.write("IRQ_STATUS", 0b00100)
    assert await tb.read("IRQ_STATUS") == 0b10000
    # A set in the very cycle of the clearing write wins: hold the set across the write.
    getattr(dut, "irq_status_error_set").value = 1
    await tb.write("IRQ_STATUS", 0b10000)
    getattr(dut, "irq_status_error_set").value = 0
    assert await tb.read("IRQ_STATUS") == 0b10000
    await tb.write("IRQ_STATUS", 0b10000)
    assert await tb.read("IRQ_STATUS") == 0


@cocotb.test()
async def doorbell_pulses_once(dut):
    """A singlepulse field is high for exactly one cycle per write of 1, never for a write of 0."""
    tb = TB(dut)
    await tb.reset()
    pulses = 0

    async def count():
        nonlocal pulses
        while True:
            await RisingEdge(dut.clk)
            pulses += int(dut.cmd_submit_go.value)

    task = cocotb.start_soon(count())
    for _ in range(5):
        await tb.write("CMD_SUBMIT", 1)
    await tb.write("CMD_SUBMIT", 0)
    await ClockCycles(dut.clk, 3)
    task.cancel()
    assert pulses == 5
    assert await tb.read("CMD_SUBMIT") == 0


@cocotb.test()
async def unmapped_addresses_answer_slverr(dut):
    """Holes in the map answer SLVERR on reads and writes and change nothing."""
    tb = TB(dut)
    await tb.reset()
    mapped = {r.addr for r in tb.regs.values()}
    holes = [a for a in range(0, 0x100, 4) if a not in mapped][:6] + [0xFFC]
    before = await tb.read("CMD1")
    for addr in holes:
        w = await tb.axi.write(addr, b"\xff\xff\xff\xff")
        assert w.resp == AxiResp.SLVERR, f"write to hole {addr:#x} answered {w.resp}"
        r = await tb.axi.read(addr, 4)
        assert r.resp == AxiResp.SLVERR, f"read of hole {addr:#x} answered {r.resp}"
    assert await tb.read("CMD1") == before


@cocotb.test()
async def write_strobe_fields(dut):
    """A swmod field keeps its value and strobes for exactly one cycle on every write (even of 0)."""
    tb = TB(dut)
    await tb.reset()
    strobes = []

    async def watch():
        while True:
            await RisingEdge(dut.clk)
            if int(dut.core_mem_data_data_swmod.value):
                strobes.append(int(dut.core_mem_data_data.value))

    task = cocotb.start_soon(watch())
    for v in (0x12345678, 0, 0xFFFFFFFF):
        await tb.write("CORE_MEM_DATA", v)
        assert await tb.read("CORE_MEM_DATA") == v
    await ClockCycles(dut.clk, 2)
    task.cancel()
    # The strobe is sampled the edge the register loads, so the value seen is the previous one.
    assert len(strobes) == 3, strobes
