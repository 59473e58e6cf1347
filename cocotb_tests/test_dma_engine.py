"""DMA engine block tests: elaboration/lint checks plus cocotb tests under Verilator.

The simulated harness (:class:`DmaHarness`) is the DMA engine with

* a scratchpad and an accumulator :class:`BankedMemory` (``n_read=2``, ``n_write=2``): port 1 is the
  DMA, port 0 is a backdoor for the test (preload / read back rows) and, while the DMA runs, a
  random *blocker* that steals the DMA's grants (it writes inverted data to the row the DMA is
  writing, and reads a neighbouring row of the bank the DMA reads, so a DMA that ignored ``gnt``
  would be caught);
* the AXI port wired either to the HDL host memory model ``kaki_host_mem`` (fast path, backdoor by
  ``$readmemh``/``$writememh``) or, with ``use_ext`` = 1, to the ``ext__*`` ports where a
  cocotbext-axi ``AxiRam`` with pause generators answers (protocol path);
* the packed monitor copies ``mon_hm_*`` of the bus between the DMA and the host memory model, as
  the chip's testbench top has them (verif/soc_target.py), for the fast path's AXI checker;
* the DMA's ``load_reset``/``store_reset`` (ENGINE_RESET of one channel) and ``bus_timeout``
  (BUS_TIMEOUT.CYCLES, 0 in every test but the bus-timeout one) as inputs.

Two builds: dim 8 (64-bit AXI, bursts of at most 4 beats, 4 reads outstanding) and dim 16 (64-byte
accumulator rows, 16-beat bursts, 2 outstanding). The cocotb side is ``cocotb_dma_engine.py``.
"""
import gc
import json
import subprocess
import warnings

import pytest
from amaranth import Cat, ClockSignal, Instance, Module, Mux, ResetSignal, Signal
from amaranth.hdl import UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl_gen.axi import Axi4Signature
from hdl_gen.banked_memory import chip_memory
from hdl_gen.config import KakiConfig
from hdl_gen.descriptor import DmaCmd
from hdl_gen.dma_engine import DmaEngine, DmaWindow
from hdl_gen.emit import to_verilog
from hdl_gen.engine import EngineSignature
from tools import simbuild

from verif.soc_target import HOST_MEM_V, MONITOR_FIELDS, monitor_ports, monitor_values

MODULE = "cocotb_tests.cocotb_dma_engine"
HOST_MEM_MODULE = "cocotb_tests.cocotb_host_mem"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: simbuild.ALL, HOST_MEM_MODULE: simbuild.ALL}
HM_WORDS = 131072          # 1 MiB host memory model
FNAME_BITS = 1024

CONFIGS = {
    "d8": dict(dim=8, spad_banks=4, spad_bank_rows=64, acc_banks=2, acc_bank_rows=64,
               max_burst_beats=4, dma_outstanding=4),
    "d16": dict(dim=16, spad_banks=2, spad_bank_rows=32, acc_banks=2, acc_bank_rows=32,
                max_burst_beats=16, dma_outstanding=2),
}


class DmaHarness(wiring.Component):
    """Test top: DmaEngine + local memories + blocker + host memory model / external AXI port."""

    def __init__(self, cfg, hm_words=HM_WORDS):
        self.cfg = cfg
        self.hm_words = hm_words
        aab, adb, aib = cfg.axi_addr_bits, cfg.axi_data_bits, cfg.axi_id_bits
        mon = monitor_ports("hm", Axi4Signature(aab, adb, aib), MONITOR_FIELDS["mem"])
        super().__init__({**{n: Out(w) for n, w in mon.items()},
            "load": Out(EngineSignature(DmaCmd)),
            "store": Out(EngineSignature(DmaCmd)),
            "load_bytes": Out(8),
            "store_bytes": Out(8),
            "use_ext": In(1),
            "ext": Out(Axi4Signature(aab, adb, aib)),
            "hm_cfg_latency": In(8), "hm_cfg_stall": In(8), "hm_cfg_seed": In(32),
            "hm_cfg_err_base": In(aab), "hm_cfg_err_limit": In(aab), "hm_cfg_err_resp": In(2),
            "hm_cfg_max_len": In(8),
            "hm_cfg_bh_base": In(aab), "hm_cfg_bh_limit": In(aab), "hm_cfg_bh_mode": In(2),
            "hm_bd_load": In(1), "hm_bd_dump": In(1), "hm_bd_fname": In(FNAME_BITS),
            "hm_bd_lo": In(32), "hm_bd_hi": In(32),
            "hm_st_prot_err": Out(8), "hm_st_ar_count": Out(32), "hm_st_aw_count": Out(32),
            "hm_st_rd_max_out": Out(8),
            "hm_st_bh_count": Out(32), "hm_st_bh_time": Out(32), "hm_st_bh_parked": Out(8),
            "blk_prob": In(8),
            "spad_bd_we": In(1), "spad_bd_re": In(1), "spad_bd_addr": In(cfg.spad_addr_bits),
            "spad_bd_wdata": In(cfg.dim * 8), "spad_bd_rdata": Out(cfg.dim * 8),
            "acc_bd_we": In(1), "acc_bd_re": In(1), "acc_bd_addr": In(cfg.acc_addr_bits),
            "acc_bd_wdata": In(cfg.dim * 32), "acc_bd_rdata": Out(cfg.dim * 32),
            "cycles": Out(32), "load_busy_cycles": Out(32), "store_busy_cycles": Out(32),
            "load_window": In(DmaWindow), "store_window": In(DmaWindow),
            "load_reset": In(1), "store_reset": In(1), "bus_timeout": In(32),
            # local-memory traffic per channel: granted requests (load: row writes, store: row
            # reads), and a sticky flag for a request while the channel is not busy
            "load_local": Out(32), "store_local": Out(32),
            "load_idle_access": Out(1), "store_idle_access": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.dma = dma = DmaEngine(cfg)
        m.submodules.spad = spad = chip_memory(cfg, banks=cfg.spad_banks, bank_rows=cfg.spad_bank_rows,
                                               width=cfg.dim * 8, n_read=2, n_write=2)
        m.submodules.acc = acc = chip_memory(cfg, banks=cfg.acc_banks, bank_rows=cfg.acc_bank_rows,
                                             width=cfg.dim * 32, n_read=2, n_write=2)
        wiring.connect(m, wiring.flipped(self.load), dma.load)
        wiring.connect(m, wiring.flipped(self.store), dma.store)
        m.d.comb += [self.load_bytes.eq(dma.load_bytes), self.store_bytes.eq(dma.store_bytes),
                     dma.load_window.eq(self.load_window), dma.store_window.eq(self.store_window),
                     dma.load_reset.eq(self.load_reset), dma.store_reset.eq(self.store_reset),
                     dma.bus_timeout.eq(self.bus_timeout)]
        m.d.sync += [self.cycles.eq(self.cycles + 1),
                     self.load_busy_cycles.eq(self.load_busy_cycles + dma.load.busy),
                     self.store_busy_cycles.eq(self.store_busy_cycles + dma.store.busy)]
        for ch, ports in (("load", (dma.spad_wr, dma.acc_wr)), ("store", (dma.spad_rd, dma.acc_rd))):
            count, idle = getattr(self, f"{ch}_local"), getattr(self, f"{ch}_idle_access")
            m.d.sync += count.eq(count + sum(p.en & p.gnt for p in ports))
            with m.If(Cat(p.en for p in ports).any() & ~getattr(dma, ch).busy):
                m.d.sync += idle.eq(1)

        # Blocker randomness: a 32-bit Galois LFSR.
        lfsr = Signal(32, init=0xACE1_2468)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0x8020_0003, lfsr >> 1))
        steal = [Signal(name=f"steal{i}") for i in range(4)]
        for i, s in enumerate(steal):
            m.d.comb += s.eq(lfsr[8 * i:8 * i + 8] < self.blk_prob)

        for k, (mem, wr, rd) in enumerate(((spad, dma.spad_wr, dma.spad_rd),
                                           (acc, dma.acc_wr, dma.acc_rd))):
            pre = ("spad", "acc")[k]
            we, re = getattr(self, f"{pre}_bd_we"), getattr(self, f"{pre}_bd_re")
            addr = getattr(self, f"{pre}_bd_addr")
            wiring.connect(m, mem.wr[1], wr)
            wiring.connect(m, mem.rd[1], rd)
            m.d.comb += [
                mem.wr[0].en.eq(we | (steal[2 * k] & wr.en)),
                mem.wr[0].addr.eq(Mux(we, addr, wr.addr)),
                mem.wr[0].data.eq(Mux(we, getattr(self, f"{pre}_bd_wdata"), ~wr.data)),
                mem.rd[0].en.eq(re | (steal[2 * k + 1] & rd.en)),
                mem.rd[0].addr.eq(Mux(re, addr, rd.addr ^ 1)),
                getattr(self, f"{pre}_bd_rdata").eq(mem.rd[0].data),
            ]

        # AXI: host memory model or the external port.
        hm_ports = {}
        for name, member in dma.axi.signature.members.items():
            dsig, esig = getattr(dma.axi, name), getattr(self.ext, name)
            if member.flow == Out:       # manager -> subordinate
                hsig = Signal(member.shape, name=f"hm_s_{name}")
                if name in ("arvalid", "awvalid", "wvalid", "rready", "bready"):
                    m.d.comb += [esig.eq(dsig & self.use_ext), hsig.eq(dsig & ~self.use_ext)]
                else:
                    m.d.comb += [esig.eq(dsig), hsig.eq(dsig)]
                hm_ports[f"i_s__{name}"] = hsig
            else:
                hsig = Signal(member.shape, name=f"hm_s_{name}")
                m.d.comb += dsig.eq(Mux(self.use_ext, esig, hsig))
                hm_ports[f"o_s__{name}"] = hsig
        hm_bus = {n[5:]: s for n, s in hm_ports.items()}       # i_s__/o_s__<name> -> signal
        m.d.comb += [getattr(self, n).eq(v)
                     for n, v in monitor_values("hm", hm_bus, MONITOR_FIELDS["mem"]).items()]
        ctrl = {f"i_{n}": getattr(self, f"hm_{n}") for n in (
            "cfg_latency", "cfg_stall", "cfg_seed", "cfg_err_base", "cfg_err_limit", "cfg_err_resp",
            "cfg_max_len", "cfg_bh_base", "cfg_bh_limit", "cfg_bh_mode", "bd_load", "bd_dump",
            "bd_fname", "bd_lo", "bd_hi")}
        ctrl.update({f"o_{n}": getattr(self, f"hm_{n}") for n in (
            "st_prot_err", "st_ar_count", "st_aw_count", "st_rd_max_out", "st_bh_count",
            "st_bh_time", "st_bh_parked")})
        m.submodules.host_mem = Instance(
            "kaki_host_mem",
            p_DATA_W=cfg.axi_data_bits, p_ADDR_W=cfg.axi_addr_bits, p_ID_W=cfg.axi_id_bits,
            p_WORDS=self.hm_words, p_FNAME_W=FNAME_BITS,
            i_clk=ClockSignal(), i_rst=ResetSignal(), **hm_ports, **ctrl)
        return m


def _target(key):
    """Simulator target for CONFIGS[key] (rebuilt when this file or hdl_gen/ changes)."""
    return simbuild.amaranth_target(f"kaki_tb_dma_{key}",
                                    lambda: DmaHarness(KakiConfig(**CONFIGS[key])),
                                    extra_sources=[HOST_MEM_V])


# ------------------------------------------------------------------------------------------------
# Fast checks (no simulation)

LINT_CONFIGS = [
    dict(dim=4, axi_data_bits=32, max_burst_beats=1, dma_outstanding=1),
    dict(dim=8),
    dict(dim=16, axi_data_bits=128, max_burst_beats=256, dma_outstanding=8),
    dict(dim=32, axi_addr_bits=48, max_burst_beats=2),
]


@pytest.mark.parametrize("params", LINT_CONFIGS, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_dma_engine_lints(params, tmp_path):
    """DmaEngine converts and is clean under verilator --lint-only -Wall (with the generated-RTL waivers)."""
    cfg = KakiConfig(**params)
    dma = DmaEngine(cfg)
    assert len(dma.axi.wdata) == cfg.axi_data_bits
    assert len(dma.acc_wr.data) == cfg.dim * 32
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    src = rtl / "kaki_dma_lint.v"
    src.write_text(to_verilog(dma, "kaki_dma_lint"))
    r = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", str(simbuild.WAIVERS),
                        str(src), "--top-module", "kaki_dma_lint"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


def test_dma_engine_rejects_bad_config():
    with warnings.catch_warnings():
        # the half-built components are garbage; collect them here, not in a later test
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError):
            DmaEngine({"dim": 8})
        with pytest.raises(ValueError):
            DmaEngine(KakiConfig(dma_outstanding=0))
        gc.collect()


def test_host_mem_model_lints():
    """kaki_host_mem.v is clean under verilator --lint-only -Wall at several parameter sets."""
    for params in ([], ["-GDATA_W=128", "-GWORDS=1024"], ["-GDATA_W=32", "-GADDR_W=48", "-GAR_DEPTH=2"]):
        r = subprocess.run([simbuild.verilator_bin(), "--lint-only", "-Wall", *params, str(HOST_MEM_V)],
                           capture_output=True, text=True)
        assert r.returncode == 0, (params, r.stderr[-3000:])


# ------------------------------------------------------------------------------------------------
# Simulation

# Every test at d8; the data-path ones again at d16.
D16_TESTS = ("t_align_sweep", "t_random_fast", "t_random_axiram", "t_axi_errors", "t_perf")
SIM_TESTS = [("d8", t) for t in simbuild.cocotb_tests(MODULE)] + [("d16", t) for t in D16_TESTS]
#: The d16 runs (a build of their own, ~110 s of CPU with the runs): make regress only; make test
#: runs every test at d8, and the 16x16 chip's tests run its DMA at 16 bytes a row.
SLOW = {("d16", t) for t in D16_TESTS}


@pytest.mark.sim
@pytest.mark.parametrize("key,test", [pytest.param(*kt, marks=pytest.mark.slow) if kt in SLOW else kt
                                      for kt in SIM_TESTS], ids=[f"{k}-{t}" for k, t in SIM_TESTS])
def test_dma_sim(key, test):
    env = {"KAKI_DMA_CFG": json.dumps(CONFIGS[key]), "KAKI_HM_WORDS": str(HM_WORDS)}
    simbuild.run(_target(key), MODULE, testcase=test, extra_env=env,
                 tag=f"{key}-{test}")


@pytest.mark.sim
def test_host_mem_model_sim():
    """The host memory model alone (top = kaki_host_mem) against cocotbext-axi AxiMaster."""
    target = simbuild.SimTarget(name="kaki_tb_host_mem", toplevel="kaki_host_mem",
                                sources=[HOST_MEM_V])
    simbuild.run(target, HOST_MEM_MODULE, extra_env={"KAKI_HM_WORDS": str(HM_WORDS)})
