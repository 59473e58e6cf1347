"""make bench's golden-model speed figures (tools/bench.py ``golden_attention``, the goal rows)."""
import numpy as np
import pytest

from hdl_gen.config import KakiConfig
from spec.capabilities import Capabilities
from tools import bench


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    from firmware import build as fw_build
    return fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf")


def test_golden_attention_speed_rows(elf, monkeypatch):
    """Each attention row gets the median golden wall and CPU time of its runs, the speed-ups
    against its RTL wall and CPU time and the bit-exact check; the worst row by the CPU speed-up
    is returned and judged (a fake run keeps this test fast)."""
    from compiler.graph import interpret
    walls = iter([0.3, 0.1, 0.2, 0.05, 0.5, 0.4])
    cpus = iter([0.25, 0.1, 0.2, 0.04, 0.4, 0.2])

    def fake(g, feeds, seed, caps, firmware):
        return interpret(g, feeds), dict(wall=next(walls), cpu=next(cpus))
    monkeypatch.setattr(bench, "run_golden_graph", fake)
    rows = [dict(d_model=16, seq=8, causal=c, rtl_wall_s=w, rtl_cpu_s=cpu, exact=True)
            for c, w, cpu in ((False, 2.0, 1.0), (True, 8.0, 8.0))]
    caps = Capabilities.from_config(KakiConfig(dim=8))
    worst = bench.golden_attention(rows, 1, caps, elf)
    assert [r["golden_wall_s"] for r in rows] == [0.2, 0.4]
    assert [r["golden_cpu_s"] for r in rows] == [0.2, 0.2]
    assert [r["golden_speedup"] for r in rows] == [10.0, 20.0]
    assert [r["golden_speedup_cpu"] for r in rows] == [5.0, 40.0] and worst is rows[0]
    assert all(r["golden_equal"] and r["exact"] for r in rows)
    data = dict(dim=8, seed=1, goals=dict(golden_speedup_attention=5.0), attention=[
        dict(rows[0], commands=5, run_cycles=100, predicted=90, pe_util_run=0.5,
             busy=dict(GEMM=1, VEC=2, SFU=3))], loadavg_rtl=(1.0, 2.0, 3.0),
        loadavg_golden=(1.5, 2.0, 3.0), golden_speedup_wall={"attention worst": 10.0})
    (row,) = [r for r in bench.goal_rows(data)
              if r[0].startswith("golden model speed vs RTL (CPU time, attention")]
    assert row[1] == 5.0 and not row[4]
    text = bench.format_table(data)
    assert "2.00     0.200     10x     1.00     0.200     5x" in text
    assert "before the golden runs 1.5, 2.0, 3.0" in text
    assert "judged on CPU seconds" in text and "attention worst 10x" in text


def test_golden_attention_block_runs_bit_exact(elf):
    """A small attention block through the driver on the golden model equals the interpreter."""
    from compiler.graph import interpret
    from compiler.models import attention_block
    caps = Capabilities.from_config(KakiConfig(dim=8))
    g, feeds = attention_block(1, d_model=32, seq=16, causal=True)
    outs, meas = bench.run_golden_graph(g, feeds, 1, caps, elf)
    ref = interpret(g, feeds)
    assert all(np.array_equal(outs[k], ref[k]) for k in ref) and meas["wall"] > 0


@pytest.mark.parametrize("what", ["gemm", "attention"])
def test_golden_run_equals_stepping_reference(elf, what):
    """A compiled program through ``Device.run`` on the model as the bench runs it (idle steps
    skipped, the issue unit's stages passed over while they cannot act) and on the reference
    that takes every step in full and scans every stage in every tick: the same outputs,
    TIMESTAMP and performance counters, the same firmware MMIO accesses at the same steps and
    the same completion records."""
    import asyncio

    from compiler.compile import compile_graph
    from compiler.models import attention_block
    from driver.device import Device
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel
    from verif.model_run import HOST_BASE, HOST_BYTES
    from verif.model_time import log_mmio, stepped

    caps = Capabilities.from_config(KakiConfig(dim=8))
    g, feeds = (bench.gemm_graph(32, seed=3) if what == "gemm" else
                attention_block(1, d_model=32, seq=16, causal=True))
    cm = compile_graph(g, caps)

    def run(reference):
        async def go():
            chip = ChipModel(caps, host_bytes=HOST_BASE + HOST_BYTES, seed=3, engine_delay=(1, 40))
            if reference:
                stepped(chip)
                chip._skip_idle = False
            dev = await Device.open(GoldenBackend(chip), host_base=HOST_BASE,
                                    host_bytes=HOST_BYTES, firmware=elf)
            log = log_mmio(chip)
            outs, meas = await bench.run_program(dev, cm, feeds)
            return outs, (meas["t0"], meas["t1"], meas["perf"]), log, bytes(chip.host), chip.now
        return asyncio.run(go())
    fast, ref = run(False), run(True)
    assert all(np.array_equal(fast[0][k], ref[0][k]) for k in ref[0])
    assert fast[1:] == ref[1:]
