"""Vector unit block test: bit-exact against golden.ops.vector_epilogue at dim 4, 8 and 16.

The harness puts the VectorUnit between two BankedMemory instances wired as in the SoC (the vector
unit is read priority 1, so a higher-priority "blocker" requester can steal its grants; its
scratchpad write is priority 0). Everything else is backdoor ports and a few counters, so the cocotb
side loads data, submits a command, awaits ``ctl__done`` and checks with NumPy: no per-cycle Python.

Harness ports (top module ``kaki_tb_vector_unit_<dim>``):
  ctl__*                          the vector unit's command link (EngineSignature(VecCmd)).
  acc_bd_rd__*, acc_bd_wr__*      backdoor accumulator read (rd[2]) / write (wr[0]) ports.
  spad_bd_rd__*, spad_bd_wr__*    backdoor scratchpad read (rd[2]) / write (wr[1]) ports.
  blk_seed, blk_load              load the blocker LFSR state (32 bits) while blk_load is high.
  blk_acc_rate, blk_spad_rate     0..256: the blocker requests the vector unit's own bank (same
                                  address) in a cycle with probability rate/256; rd[0] outranks it.
  cnt_clear                       zero the counters below.
  cnt_writes                      vector unit scratchpad writes (en).
  cnt_wr_denied                   vector unit writes not granted (must stay 0).
  cnt_active                      cycles with ``active`` high (rows that entered the pipeline).
  cnt_acc_denied, cnt_spad_denied vector unit reads that were requested but not granted.
  first_fire, first_write         cycle stamps (since cnt_clear) of the first ``active`` and the
                                  first write: their difference is the pipeline latency.
"""
import os
import subprocess

import pytest
from amaranth import Fragment, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl_gen.banked_memory import chip_memory
from hdl_gen.config import KakiConfig
from hdl_gen.descriptor import VecCmd
from hdl_gen.engine import EngineSignature
from hdl_gen.emit import to_verilog
from hdl_gen.mem_port import ReadPortSignature, WritePortSignature
from hdl_gen.vector_unit import VectorUnit
from tools import simbuild

DIMS = (4, 8, 16)
MODULE = "cocotb_tests.cocotb_vector_unit"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}


def small_config(dim):
    """Small memories keep the simulator quick: 512 accumulator rows, 1024 scratchpad rows."""
    return KakiConfig(dim=dim, spad_banks=4, spad_bank_rows=256, acc_banks=2, acc_bank_rows=256)


class VectorHarness(wiring.Component):
    """VectorUnit + accumulator and scratchpad BankedMemory, blocker, backdoors, counters."""

    def __init__(self, config):
        self.config = config
        c = config
        super().__init__({
            "ctl": Out(EngineSignature(VecCmd)),
            "active": Out(1),
            "acc_bd_rd": In(ReadPortSignature(c.acc_addr_bits, c.dim * 32)),
            "acc_bd_wr": In(WritePortSignature(c.acc_addr_bits, c.dim * 32)),
            "spad_bd_rd": In(ReadPortSignature(c.spad_addr_bits, c.dim * 8)),
            "spad_bd_wr": In(WritePortSignature(c.spad_addr_bits, c.dim * 8)),
            "blk_seed": In(32), "blk_load": In(1),
            "blk_acc_rate": In(9), "blk_spad_rate": In(9),
            "cnt_clear": In(1),
            "cnt_writes": Out(32), "cnt_wr_denied": Out(32), "cnt_active": Out(32),
            "cnt_acc_denied": Out(32), "cnt_spad_denied": Out(32),
            "first_fire": Out(32), "first_write": Out(32),
        })

    def elaborate(self, platform):
        c = self.config
        m = Module()
        m.submodules.vu = vu = VectorUnit(c)
        m.submodules.acc = acc = chip_memory(c, banks=c.acc_banks, bank_rows=c.acc_bank_rows,
                                             width=c.dim * 32, n_read=3, n_write=1)
        m.submodules.spad = spad = chip_memory(c, banks=c.spad_banks, bank_rows=c.spad_bank_rows,
                                               width=c.dim * 8, n_read=3, n_write=2)
        wiring.connect(m, wiring.flipped(self.ctl), vu.ctl)
        wiring.connect(m, vu.acc_rd, acc.rd[1])
        wiring.connect(m, vu.spad_rd, spad.rd[1])
        wiring.connect(m, vu.spad_wr, spad.wr[0])
        wiring.connect(m, wiring.flipped(self.acc_bd_rd), acc.rd[2])
        wiring.connect(m, wiring.flipped(self.acc_bd_wr), acc.wr[0])
        wiring.connect(m, wiring.flipped(self.spad_bd_rd), spad.rd[2])
        wiring.connect(m, wiring.flipped(self.spad_bd_wr), spad.wr[1])
        m.d.comb += self.active.eq(vu.active)

        # Blocker: a 32-bit Galois LFSR; each byte lane decides one blocker's request this cycle.
        lfsr = Signal(32, init=1)
        with m.If(self.blk_load):
            m.d.sync += lfsr.eq(self.blk_seed | 1)
        with m.Else():
            m.d.sync += lfsr.eq((lfsr >> 1) ^ (lfsr[0].replicate(32) & 0x80200003))
        m.d.comb += [
            acc.rd[0].en.eq(lfsr[0:8] < self.blk_acc_rate),
            acc.rd[0].addr.eq(vu.acc_rd.addr),
            spad.rd[0].en.eq(lfsr[8:16] < self.blk_spad_rate),
            spad.rd[0].addr.eq(vu.spad_rd.addr),
        ]

        cycle = Signal(32)
        seen_fire = Signal()
        seen_write = Signal()
        m.d.sync += cycle.eq(cycle + 1)
        with m.If(vu.spad_wr.en):
            m.d.sync += self.cnt_writes.eq(self.cnt_writes + 1)
            with m.If(~spad.wr[0].gnt):
                m.d.sync += self.cnt_wr_denied.eq(self.cnt_wr_denied + 1)
            with m.If(~seen_write):
                m.d.sync += [seen_write.eq(1), self.first_write.eq(cycle)]
        with m.If(vu.active):
            m.d.sync += self.cnt_active.eq(self.cnt_active + 1)
            with m.If(~seen_fire):
                m.d.sync += [seen_fire.eq(1), self.first_fire.eq(cycle)]
        with m.If(vu.acc_rd.en & ~vu.acc_rd.gnt):
            m.d.sync += self.cnt_acc_denied.eq(self.cnt_acc_denied + 1)
        with m.If(vu.spad_rd.en & ~vu.spad_rd.gnt):
            m.d.sync += self.cnt_spad_denied.eq(self.cnt_spad_denied + 1)
        with m.If(self.cnt_clear):
            m.d.sync += [s.eq(0) for s in (
                cycle, seen_fire, seen_write, self.cnt_writes, self.cnt_wr_denied,
                self.cnt_active, self.cnt_acc_denied, self.cnt_spad_denied,
                self.first_fire, self.first_write)]
        return m


def _target(dim):
    """Simulator target at ``dim`` (rebuilt when this file or hdl_gen/ changes)."""
    return simbuild.amaranth_target(f"kaki_tb_vector_unit_{dim}",
                                    lambda: VectorHarness(small_config(dim)))


@pytest.mark.sim
# 4x4 and 16x16: make regress (make test lints them)
@pytest.mark.parametrize("dim", [pytest.param(d, marks=pytest.mark.slow) if d in (4, 16) else d
                                 for d in DIMS])
def test_vector_unit(dim):
    cfg = small_config(dim)
    results = simbuild.run(_target(dim), MODULE, tag=f"vector_unit_{dim}",
                           extra_env={"KAKI_VU_DIM": str(dim),
                                      "KAKI_VU_ACC_ROWS": str(cfg.acc_rows),
                                      "KAKI_VU_SPAD_ROWS": str(cfg.spad_rows),
                                      "KAKI_REGRESS": os.environ.get("KAKI_REGRESS", "0")})
    assert [name for name, _ in results] == simbuild.cocotb_tests(MODULE), results


@pytest.mark.parametrize("dim", DIMS)
def test_vector_unit_lint(dim, tmp_path):
    """The generated Verilog passes ``verilator --lint-only -Wall`` with only the shared waivers."""
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    name = f"kaki_vector_unit_{dim}"
    src = rtl / f"{name}.v"   # the waiver patterns match ``*rtl/kaki_*.v``
    src.write_text(to_verilog(VectorUnit(KakiConfig(dim=dim)), name))
    proc = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", "--top-module", name,
                           str(simbuild.WAIVERS), str(src)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr, proc.stderr


def test_vector_unit_checks_config():
    with pytest.raises(TypeError, match="KakiConfig"):
        VectorUnit({"dim": 8})
    with pytest.raises(ValueError, match="acc_rows"):
        VectorUnit(KakiConfig(acc_banks=512, acc_bank_rows=4096))
    vu = VectorUnit(small_config(4))
    assert vu.acc_rd.data.shape().width == 4 * 32
    assert vu.spad_wr.data.shape().width == 4 * 8
    assert vu.acc_rd.addr.shape().width == 9 and vu.spad_rd.addr.shape().width == 10
    Fragment.get(vu, None)    # elaborates
