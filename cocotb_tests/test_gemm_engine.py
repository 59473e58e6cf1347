"""GEMM engine + PE array: bit-exact against a NumPy matmul at dims 4, 8 and 16, errors, utilization.

The harness is the engine between a banked scratchpad and a banked accumulator, as in the SoC
(engine on ports 0 and 1 of the scratchpad, port 0 of the accumulator), with a test backdoor on
the next port of each. Test-only extras:
``deny_mode`` makes an LFSR deny the engine's scratchpad reads on both ports, independently
(exercises its retry/bubble paths);
hardware counters of busy/active/stall cycles and of the engine's memory accesses; and sticky
monitors for weight-bank hazards and memory accesses while the engine is idle.
"""
import subprocess

import pytest
from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl_gen.banked_memory import chip_memory
from hdl_gen.config import ARRAY_SIZES, KakiConfig
from hdl_gen.descriptor import GemmCmd
from hdl_gen.emit import to_verilog
from hdl_gen.engine import EngineSignature
from hdl_gen.gemm_engine import GemmEngine
from hdl_gen.mem_port import ReadPortSignature, WritePortSignature
from hdl_gen.pe_array import PEArray
from tools import simbuild

# Small memories keep the build fast; 4 scratchpad banks and 2 accumulator banks as in the chip.
SPAD_BANK_ROWS = 1024
ACC_BANK_ROWS = 1024

# Constructor and signature checks build objects they never elaborate.
pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")


def harness_config(dim):
    return KakiConfig(dim=dim, spad_bank_rows=SPAD_BANK_ROWS, acc_bank_rows=ACC_BANK_ROWS)


class GemmHarness(wiring.Component):
    """GemmEngine + scratchpad (2R1W) + accumulator (2R2W) with backdoors, counters and monitors."""

    def __init__(self, config):
        self.config = config
        d, sa, ca = config.dim, config.spad_addr_bits, config.acc_addr_bits
        super().__init__({
            "ctl": Out(EngineSignature(GemmCmd)),
            "active": Out(1),
            "stall": Out(1),
            "spad_bd_rd": In(ReadPortSignature(sa, d * 8)),
            "spad_bd_wr": In(WritePortSignature(sa, d * 8)),
            "acc_bd_rd": In(ReadPortSignature(ca, d * 32)),
            "acc_bd_wr": In(WritePortSignature(ca, d * 32)),
            "deny_mode": In(2),          # 0: never, 1: ~1/4, 2: ~1/2, 3: ~3/4 of engine spad reads denied
            "perf_clear": In(1),
            "perf_busy": Out(32),
            "perf_active": Out(32),
            "perf_stall": Out(32),
            "perf_spad_rd": Out(32),     # granted engine scratchpad reads (both ports)
            "perf_acc_rd": Out(32),
            "perf_acc_wr": Out(32),
            "hazard_seen": Out(1),       # sticky: PEArray.w_conflict
            "idle_access_seen": Out(1),  # sticky: engine touched a memory while not busy
        })

    def elaborate(self, platform):
        cfg = self.config
        m = Module()
        m.submodules.gemm = eng = GemmEngine(cfg)
        m.submodules.spad = spad = chip_memory(cfg, banks=cfg.spad_banks, bank_rows=cfg.spad_bank_rows,
                                               width=cfg.dim * 8, n_read=3, n_write=1)
        m.submodules.acc = acc = chip_memory(cfg, banks=cfg.acc_banks, bank_rows=cfg.acc_bank_rows,
                                             width=cfg.dim * 32, n_read=2, n_write=2)
        wiring.connect(m, wiring.flipped(self.ctl), eng.ctl)
        wiring.connect(m, eng.acc_rd, acc.rd[0])
        wiring.connect(m, eng.acc_wr, acc.wr[0])
        wiring.connect(m, wiring.flipped(self.spad_bd_rd), spad.rd[2])
        wiring.connect(m, wiring.flipped(self.spad_bd_wr), spad.wr[0])
        wiring.connect(m, wiring.flipped(self.acc_bd_rd), acc.rd[1])
        wiring.connect(m, wiring.flipped(self.acc_bd_wr), acc.wr[1])
        m.d.comb += [self.active.eq(eng.active), self.stall.eq(eng.stall)]

        # Engine scratchpad ports through grant-denial injectors (independent LFSR bits).
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(Cat(lfsr[1:], lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]))
        for port, eng_port, (x, y) in ((spad.rd[0], eng.spad_rd, (0, 7)),
                                       (spad.rd[1], eng.spad_rd_b, (3, 11))):
            deny = Signal()
            with m.Switch(self.deny_mode):
                with m.Case(1):
                    m.d.comb += deny.eq(lfsr[x] & lfsr[y])
                with m.Case(2):
                    m.d.comb += deny.eq(lfsr[x])
                with m.Case(3):
                    m.d.comb += deny.eq(lfsr[x] | lfsr[y])
            m.d.comb += [
                port.en.eq(eng_port.en & ~deny),
                port.addr.eq(eng_port.addr),
                eng_port.gnt.eq(port.gnt & ~deny),
                eng_port.data.eq(port.data),
            ]

        counters = [
            (self.perf_busy, eng.ctl.busy),
            (self.perf_active, eng.active),
            (self.perf_stall, eng.stall),
            (self.perf_spad_rd, (eng.spad_rd.en & eng.spad_rd.gnt)
             + (eng.spad_rd_b.en & eng.spad_rd_b.gnt)),
            (self.perf_acc_rd, eng.acc_rd.en),
            (self.perf_acc_wr, eng.acc_wr.en),
        ]
        for cnt, inc in counters:
            with m.If(self.perf_clear):
                m.d.sync += cnt.eq(0)
            with m.Else():
                m.d.sync += cnt.eq(cnt + inc)
        with m.If(eng.array.w_conflict):
            m.d.sync += self.hazard_seen.eq(1)
        with m.If(~eng.ctl.busy & (eng.spad_rd.en | eng.spad_rd_b.en | eng.acc_rd.en
                                   | eng.acc_wr.en)):
            m.d.sync += self.idle_access_seen.eq(1)
        return m


# The C++ of a 16x16 array takes ~5x longer to compile at -Os (Verilator's default) than at -O0,
# while these tests simulate only ~0.5M cycles: -O0 is the faster build + run (measured: dim 16,
# 47 s vs 118 s CPU to build, 4.8 s vs 1.2 s to run).
BUILD_ARGS = ["-CFLAGS", "-O0"]
MODULE = "cocotb_tests.cocotb_gemm_engine"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL}


def _target(dim):
    return simbuild.amaranth_target(f"kaki_tb_gemm_engine_{dim}",
                                    lambda: GemmHarness(harness_config(dim)), build_args=BUILD_ARGS)


@pytest.mark.sim
# 4x4 and 16x16: make regress (make test lints them)
@pytest.mark.parametrize("dim", [pytest.param(d, marks=pytest.mark.slow) if d != 8 else d
                                 for d in ARRAY_SIZES])
def test_gemm_engine(dim):
    results = simbuild.run(_target(dim), MODULE, extra_env={"KAKI_DIM": str(dim)}, tag=f"gemm_dim{dim}")
    assert [name for name, _ in results] == simbuild.cocotb_tests(MODULE), results


# ---- fast (no simulator) checks --------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, 1, 65, -4, 2.0, "8", True, None])
def test_pe_array_rejects_bad_dim(bad):
    with pytest.raises(ValueError, match="dim"):
        PEArray(bad)


def test_gemm_engine_rejects_non_config():
    with pytest.raises(ValueError, match="KakiConfig"):
        GemmEngine(8)


def test_gemm_engine_signature():
    cfg = KakiConfig()
    eng = GemmEngine(cfg)
    assert set(eng.signature.members.keys()) == {"ctl", "spad_rd", "spad_rd_b", "acc_rd", "acc_wr",
                                                  "active", "stall"}
    assert eng.spad_rd.addr.shape().width == cfg.spad_addr_bits
    assert eng.spad_rd.data.shape().width == cfg.dim * 8
    assert eng.acc_wr.data.shape().width == cfg.dim * 32
    assert eng.array.latency == 2 * cfg.dim - 1


# 4x4 and 16x16: make regress (tests/test_lint.py lints every chip, this engine inside it)
@pytest.mark.parametrize("dim", [pytest.param(d, marks=pytest.mark.slow) if d != 8 else d
                                 for d in ARRAY_SIZES])
def test_gemm_engine_lint(tmp_path, dim):
    """The engine with full-size memories converts and is clean under verilator -Wall + the waivers."""
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    src = rtl / "kaki_gemm_engine.v"
    src.write_text(to_verilog(GemmEngine(KakiConfig(dim=dim)), "kaki_gemm_engine"))
    res = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", str(simbuild.WAIVERS),
                          str(src), "--top-module", "kaki_gemm_engine"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "%Warning" not in res.stderr and "%Error" not in res.stderr, res.stderr
