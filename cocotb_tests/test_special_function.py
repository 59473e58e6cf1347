"""Special-function unit block test: bit-exact against golden.special_functions at dim 4, 8, 16.

The harness puts the SpecialFunctionUnit between an accumulator and a scratchpad BankedMemory
(the chip's memories, small), with a higher-priority "blocker" on each port the unit uses, so
its reads and its writes are denied at random: reads retry, writes wait in the unit's output
FIFO. The write blocker writes only the last row of the bank the unit writes (tests keep data
out of those rows). Everything else is backdoors and counters; the cocotb side loads data,
submits, awaits ``ctl__done`` and checks with NumPy.

Harness ports (top module ``kaki_tb_sfu_<dim>``):
  ctl__*                        the unit's command link (EngineSignature(SfuCommand)).
  acc_bd_wr__*                  backdoor accumulator write (gamma, beta rows).
  spad_bd_rd__*, spad_bd_wr__*  backdoor scratchpad read / write.
  blk_seed, blk_load            the blockers' LFSR state (32 bits), loaded while blk_load is high.
  blk_rate                      0..256: each blocker requests the unit's bank in a cycle with
                                probability rate/256.
  cnt_clear                     zero the counters below.
  cnt_writes, cnt_wr_denied     the unit's scratchpad writes, and those denied.
  cnt_rd_denied                 the unit's reads (both memories) denied.
  cnt_active                    segments that entered the compute pipeline.
"""
import subprocess

import pytest
from amaranth import Cat, Const, Fragment, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl_gen.banked_memory import chip_memory
from hdl_gen.config import KakiConfig
from hdl_gen.emit import to_verilog
from hdl_gen.engine import EngineSignature
from hdl_gen.mem_port import ReadPortSignature, WritePortSignature
from hdl_gen.special_function import SfuCommand, SpecialFunctionUnit
from tools import simbuild

DIMS = (4, 8, 16)
#: (dim, SFU lanes) of the benches: the chip's default lane count at every size, and more lanes
#: (a segment in fewer cycles, all of them at once with 4 of 4)
CONFIGS = tuple((d, KakiConfig().sfu_lanes) for d in DIMS) + ((4, 4), (8, 2))
MODULE = "cocotb_tests.cocotb_special_function"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}


def small_config(dim, lanes=None):
    """Small memories keep the simulator quick: 2048 accumulator rows, 8192 scratchpad rows (a
    bank holds a 4096-channel row's segments, or its gamma, at dim 4)."""
    return KakiConfig(dim=dim, spad_banks=4, spad_bank_rows=2048, acc_banks=2, acc_bank_rows=1024,
                      sfu_lanes=lanes or KakiConfig().sfu_lanes)


class SfuHarness(wiring.Component):
    """SpecialFunctionUnit + accumulator and scratchpad BankedMemory, blockers, backdoors."""

    def __init__(self, config):
        self.config = config
        c = config
        super().__init__({
            "ctl": Out(EngineSignature(SfuCommand)),
            "acc_bd_wr": In(WritePortSignature(c.acc_addr_bits, c.dim * 32)),
            "spad_bd_rd": In(ReadPortSignature(c.spad_addr_bits, c.dim * 8)),
            "spad_bd_wr": In(WritePortSignature(c.spad_addr_bits, c.dim * 8)),
            "blk_seed": In(32), "blk_load": In(1), "blk_rate": In(9),
            "cnt_clear": In(1),
            "cnt_writes": Out(32), "cnt_wr_denied": Out(32), "cnt_rd_denied": Out(32),
            "cnt_active": Out(32),
        })

    def elaborate(self, platform):
        c = self.config
        m = Module()
        m.submodules.sfu = sfu = SpecialFunctionUnit(c)
        m.submodules.acc = acc = chip_memory(c, banks=c.acc_banks, bank_rows=c.acc_bank_rows,
                                             width=c.dim * 32, n_read=2, n_write=1)
        m.submodules.spad = spad = chip_memory(c, banks=c.spad_banks, bank_rows=c.spad_bank_rows,
                                               width=c.dim * 8, n_read=3, n_write=3)
        wiring.connect(m, wiring.flipped(self.ctl), sfu.ctl)
        wiring.connect(m, sfu.acc_rd, acc.rd[1])
        wiring.connect(m, sfu.spad_rd, spad.rd[1])
        wiring.connect(m, sfu.spad_wr, spad.wr[1])
        wiring.connect(m, wiring.flipped(self.acc_bd_wr), acc.wr[0])
        wiring.connect(m, wiring.flipped(self.spad_bd_rd), spad.rd[2])
        wiring.connect(m, wiring.flipped(self.spad_bd_wr), spad.wr[2])

        # Blockers: a 32-bit Galois LFSR; each byte decides one blocker's request this cycle.
        lfsr = Signal(32, init=1)
        with m.If(self.blk_load):
            m.d.sync += lfsr.eq(self.blk_seed | 1)
        with m.Else():
            m.d.sync += lfsr.eq((lfsr >> 1) ^ (lfsr[0].replicate(32) & 0x80200003))
        row_bits = (c.spad_bank_rows - 1).bit_length()
        junk = Cat(Const(c.spad_bank_rows - 1, row_bits), sfu.spad_wr.addr[row_bits:])
        m.d.comb += [
            acc.rd[0].en.eq(lfsr[0:8] < self.blk_rate), acc.rd[0].addr.eq(sfu.acc_rd.addr),
            spad.rd[0].en.eq(lfsr[8:16] < self.blk_rate), spad.rd[0].addr.eq(sfu.spad_rd.addr),
            spad.wr[0].en.eq(lfsr[16:24] < self.blk_rate), spad.wr[0].addr.eq(junk),
            spad.wr[0].data.eq(0),
        ]

        with m.If(sfu.spad_wr.en):
            m.d.sync += self.cnt_writes.eq(self.cnt_writes + 1)
            with m.If(~spad.wr[1].gnt):
                m.d.sync += self.cnt_wr_denied.eq(self.cnt_wr_denied + 1)
        with m.If((sfu.acc_rd.en & ~sfu.acc_rd.gnt) | (sfu.spad_rd.en & ~sfu.spad_rd.gnt)):
            m.d.sync += self.cnt_rd_denied.eq(self.cnt_rd_denied + 1)
        with m.If(sfu.active):
            m.d.sync += self.cnt_active.eq(self.cnt_active + 1)
        with m.If(self.cnt_clear):
            m.d.sync += [s.eq(0) for s in (self.cnt_writes, self.cnt_wr_denied,
                                           self.cnt_rd_denied, self.cnt_active)]
        return m


def _target(dim, lanes):
    return simbuild.amaranth_target(f"kaki_tb_sfu_{dim}_l{lanes}",
                                    lambda: SfuHarness(small_config(dim, lanes)))


@pytest.mark.sim
# the lane counts the chip is not built with, and 4x4 and 16x16, run in make regress
@pytest.mark.parametrize("dim,lanes", [pytest.param(d, n, marks=pytest.mark.slow)
                                       if n != KakiConfig().sfu_lanes or d != 8 else (d, n)
                                       for d, n in CONFIGS], ids=[f"{d}-lanes{n}" for d, n in CONFIGS])
def test_special_function_unit(dim, lanes):
    cfg = small_config(dim, lanes)
    results = simbuild.run(_target(dim, lanes), MODULE, tag=f"sfu_{dim}_l{lanes}",
                           extra_env={"KAKI_SFU_DIM": str(dim), "KAKI_SFU_LANES": str(lanes),
                                      "KAKI_SFU_ACC_ROWS": str(cfg.acc_rows),
                                      "KAKI_SFU_SPAD_ROWS": str(cfg.spad_rows),
                                      "KAKI_SFU_BANK_ROWS": str(cfg.spad_bank_rows)})
    assert [name for name, _ in results] == simbuild.cocotb_tests(MODULE), results


@pytest.mark.parametrize("dim", DIMS)
def test_special_function_unit_lint(dim, tmp_path):
    """The generated Verilog passes ``verilator --lint-only -Wall`` with only the shared waivers."""
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    name = f"kaki_sfu_{dim}"
    src = rtl / f"{name}.v"
    src.write_text(to_verilog(SpecialFunctionUnit(KakiConfig(dim=dim)), name))
    proc = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", "--top-module", name,
                           str(simbuild.WAIVERS), str(src)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "%Warning" not in proc.stderr and "%Error" not in proc.stderr, proc.stderr


def test_special_function_unit_checks_config():
    with pytest.raises(TypeError, match="KakiConfig"):
        SpecialFunctionUnit({"dim": 8})
    sfu = SpecialFunctionUnit(small_config(4))
    assert sfu.acc_rd.data.shape().width == 4 * 32 and sfu.spad_wr.data.shape().width == 4 * 8
    Fragment.get(sfu, None)    # elaborates
