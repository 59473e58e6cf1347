"""cocotb side of test_waves_window: clock the tiny counter for CYCLES cycles with a cocotb clock."""
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles

CLK_NS = 10


@cocotb.test()
async def count(dut):
    """Reset, then count; the counter must have advanced by the cycles run."""
    Clock(dut.clk, CLK_NS, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    cycles = int(os.environ["KAKI_WAVES_TEST_CYCLES"])
    await ClockCycles(dut.clk, cycles)
    assert int(dut.count.value) >= cycles - 2
