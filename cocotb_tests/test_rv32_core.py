"""RV32IM control core: lint/elaboration checks and cocotb tests under Verilator.

The simulated harness (:class:`CoreHarness`) is :class:`~hdl_gen.rv32_core.RV32Core` with

* IMEM: ``Sram1R1W(4096, 32)`` on the core's ``imem`` port; its write port is a backdoor at the top
  (``imem_bd_*``, one word per cycle from cocotb). ``imem.gnt`` is withheld at random (LFSR,
  probability ``imem_stall``/256) so fetch and IMEM-load retries are exercised.
* DMEM: four byte-lane ``Sram1R1W(4096, 8)`` answering ``dbus`` for 0x1000_0000-0x1000_3FFF
  (stores acked in the request cycle, loads one cycle after the SRAM read; both delayed at random
  with probability ``dmem_stall``/256). A backdoor write/read port (``dmem_bd_*``) and a clear
  engine (``dmem_clear`` -> zeroes all 16 KiB in 4096 cycles, ``dmem_busy``) serve the test.
* MMIO: 0x2000_xxxx requests are exposed as ``mmio_*`` and answered by cocotb (``mmio_ack``,
  ``mmio_rdata``), with random delays.
* ``irq``: straight from the ``irq`` input, or (``irq_sched_en`` = 1) bit ``records mod 256`` of
  ``irq_pattern``, where ``records`` counts commit records since reset: the irq level seen at the
  boundary before record *k* is then a pure function of *k*, which the ISS can be told exactly.
* ``hold``: keeps the core (and ``records``/``cycles``) in reset while programs are loaded.
* ``bus_err``: sticky flag for any dbus request outside DMEM/MMIO or with addr[1:0] != 0.
"""
import gc
import os
import subprocess
import warnings

import pytest
from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.hdl import UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl_gen.emit import to_verilog
from hdl_gen.rv32_core import RV32Core
from hdl_gen.sram import Sram1R1W
from tools import simbuild

MODULE = "cocotb_tests.cocotb_rv32_core"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}
IRQ_PATTERN_BITS = 256
REGRESS = os.environ.get("KAKI_REGRESS", "0") not in ("", "0")


class CoreHarness(wiring.Component):
    """Test top: RV32Core + IMEM/DMEM SRAMs + MMIO pins for cocotb (see the module docstring)."""

    def __init__(self):
        super().__init__({
            "hold": In(1),
            "imem_bd_we": In(1), "imem_bd_addr": In(12), "imem_bd_data": In(32),
            "imem_stall": In(8), "dmem_stall": In(8),
            "dmem_bd_we": In(1), "dmem_bd_re": In(1), "dmem_bd_addr": In(12),
            "dmem_bd_data": In(32), "dmem_bd_rdata": Out(32),
            "dmem_clear": In(1), "dmem_busy": Out(1),
            "mmio_req": Out(1), "mmio_addr": Out(32), "mmio_we": Out(1), "mmio_wdata": Out(32),
            "mmio_wstrb": Out(4), "mmio_ack": In(1), "mmio_rdata": In(32),
            "irq": In(1), "irq_sched_en": In(1), "irq_pattern": In(IRQ_PATTERN_BITS),
            "sleeping": Out(1), "bus_err": Out(1),
            "records": Out(32), "cycles": Out(32),
            "trace_valid": Out(1), "trace_pc": Out(32), "trace_insn": Out(32),
            "trace_rd": Out(5), "trace_value": Out(32), "trace_trap": Out(1),
            "trace_cause": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        core = RV32Core()
        m.submodules.core = ResetInserter(self.hold)(core)
        m.submodules.imem = imem = Sram1R1W(4096, 32)
        lanes = []
        for i in range(4):
            lane = Sram1R1W(4096, 8)
            m.submodules[f"dmem{i}"] = lane
            lanes.append(lane)

        # LFSR for stalls
        lfsr = Signal(32, init=0x1D87_2B41)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0x8020_0003, lfsr >> 1))

        # IMEM
        igrant = Signal()
        m.d.comb += [
            igrant.eq(lfsr[0:8] >= self.imem_stall),
            core.imem.gnt.eq(igrant),
            imem.ren.eq(core.imem.en & igrant),
            imem.raddr.eq(core.imem.addr),
            core.imem.data.eq(imem.rdata),
            imem.wen.eq(self.imem_bd_we),
            imem.waddr.eq(self.imem_bd_addr),
            imem.wdata.eq(self.imem_bd_data),
        ]

        # dbus decode
        bus = core.dbus
        in_dmem = bus.addr[14:32] == (0x1000_0000 >> 14)
        in_mmio = bus.addr[16:32] == 0x2000
        sel_dmem = bus.en & in_dmem
        sel_mmio = bus.en & in_mmio
        with m.If(bus.en & ((~in_dmem & ~in_mmio) | (bus.addr[0:2] != 0))):
            m.d.sync += self.bus_err.eq(1)

        # DMEM responder + backdoor + clear engine
        dready = Signal()
        m.d.comb += dready.eq(lfsr[8:16] >= self.dmem_stall)
        pend = Signal()
        clr_busy = Signal()
        clr_addr = Signal(12)
        m.d.comb += self.dmem_busy.eq(clr_busy)
        with m.If(self.dmem_clear & ~clr_busy):
            m.d.sync += [clr_busy.eq(1), clr_addr.eq(0)]
        with m.If(clr_busy):
            m.d.sync += clr_addr.eq(clr_addr + 1)
            with m.If(clr_addr == 4095):
                m.d.sync += clr_busy.eq(0)
        dm_ren = Signal()
        dm_wen = Signal()
        m.d.comb += [
            dm_ren.eq(sel_dmem & ~bus.we & ~pend & dready),
            dm_wen.eq(sel_dmem & bus.we & dready),
        ]
        with m.If(dm_ren):
            m.d.sync += pend.eq(1)
        with m.If(pend):
            m.d.sync += pend.eq(0)
        for i, lane in enumerate(lanes):
            m.d.comb += [
                lane.ren.eq(dm_ren | self.dmem_bd_re),
                lane.raddr.eq(Mux(self.dmem_bd_re, self.dmem_bd_addr, bus.addr[2:14])),
                lane.wen.eq(clr_busy | self.dmem_bd_we | (dm_wen & bus.wstrb[i])),
                lane.waddr.eq(Mux(clr_busy, clr_addr,
                                  Mux(self.dmem_bd_we, self.dmem_bd_addr, bus.addr[2:14]))),
                lane.wdata.eq(Mux(clr_busy, 0, Mux(self.dmem_bd_we,
                                                   self.dmem_bd_data[8 * i:8 * i + 8],
                                                   bus.wdata[8 * i:8 * i + 8]))),
            ]
        dm_rdata = Cat(*[lane.rdata for lane in lanes])
        m.d.comb += self.dmem_bd_rdata.eq(dm_rdata)

        # MMIO pins
        m.d.comb += [
            self.mmio_req.eq(sel_mmio), self.mmio_addr.eq(bus.addr), self.mmio_we.eq(bus.we),
            self.mmio_wdata.eq(bus.wdata), self.mmio_wstrb.eq(bus.wstrb),
            bus.ack.eq(pend | dm_wen | (sel_mmio & self.mmio_ack)),
            bus.rdata.eq(Mux(pend, dm_rdata, self.mmio_rdata)),
        ]

        # irq source, records, cycles
        cnt_rst = ResetInserter(self.hold)
        m.submodules.counters = counters = cnt_rst(_Counters(core))
        m.d.comb += [
            core.irq.eq(Mux(self.irq_sched_en,
                            self.irq_pattern.bit_select(counters.records[0:8], 1), self.irq)),
            self.records.eq(counters.records), self.cycles.eq(counters.cycles),
            self.sleeping.eq(core.sleeping),
        ]
        for name in ("valid", "pc", "insn", "rd", "value", "trap", "cause"):
            m.d.comb += getattr(self, f"trace_{name}").eq(getattr(core, f"trace_{name}"))
        return m


class _Counters(wiring.Component):
    """Commit-record and cycle counters of the harness (reset with the core)."""

    def __init__(self, core):
        self._core = core
        super().__init__({"records": Out(32), "cycles": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self._core.trace_valid):
            m.d.sync += self.records.eq(self.records + 1)
        return m


def _target():
    """Simulator target (rebuilt when this file or hdl_gen/ changes)."""
    name = "kaki_tb_rv32_core"
    return simbuild.amaranth_target(name, CoreHarness)


# ------------------------------------------------------------------------------------------------
# Fast checks (no simulation)

def test_rv32_core_lints(tmp_path):
    """RV32Core converts and is clean under verilator --lint-only -Wall (generated-RTL waivers)."""
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    src = rtl / "kaki_rv32_core_lint.v"
    src.write_text(to_verilog(RV32Core(), "kaki_rv32_core_lint"))
    r = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", str(simbuild.WAIVERS),
                        str(src), "--top-module", "kaki_rv32_core_lint"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


def test_rv32_core_rejects_bad_config():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError):
            RV32Core(reset_vector="0")
        with pytest.raises(ValueError):
            RV32Core(reset_vector=2)
        with pytest.raises(ValueError):
            RV32Core(reset_vector=0x4000)
        assert RV32Core(reset_vector=0x100).reset_vector == 0x100
        gc.collect()


def test_rv32_core_ports():
    core = RV32Core()
    sig = core.signature.members
    assert set(sig.keys()) >= {"imem", "dbus", "irq", "sleeping", "trace_valid", "trace_pc",
                               "trace_insn", "trace_rd", "trace_value", "trace_trap", "trace_cause"}
    assert len(core.imem.addr) == 12 and len(core.imem.data) == 32
    widths = [len(getattr(core.dbus, n)) for n in ("addr", "wdata", "wstrb", "rdata")]
    assert widths == [32, 32, 4, 32]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        del core
        gc.collect()


# ------------------------------------------------------------------------------------------------
# Simulation

SIM_TESTS = simbuild.cocotb_tests(MODULE)
# Tests that run the firmware ELF (built first, as test_chip.py::test_chip_firmware does).
FIRMWARE_TESTS = {"t_firmware_trace"}


def _firmware_elf():
    from firmware import build as fw_build
    return fw_build.shared_elf()


@pytest.mark.sim
@pytest.mark.parametrize("test", SIM_TESTS)
def test_rv32_core_sim(test):
    env = {"KAKI_REGRESS": "1" if REGRESS else "0"}
    if test in FIRMWARE_TESTS:
        env["KAKI_FW_ELF"] = str(_firmware_elf())
    simbuild.run(_target(), MODULE, testcase=test, extra_env=env)
