"""`make bench`'s pure-Python parts (tools/bench.py) without a simulator:
the GEMM workload, the CSR/backdoor trace the C++ harness replays (format round trip), the
driver run on the golden backend with its timing hooks, the report table and the plot."""
import asyncio

import numpy as np
import pytest

from tools import bench
from compiler import models
from compiler.compile import compile_graph
from compiler.graph import interpret
from spec.capabilities import Capabilities
from hdl_gen.config import KakiConfig


def test_trace_round_trip():
    t = bench.Trace()
    t.configure(5, 2, 0, 7, 255)
    t.read(6, 0x0, 0x4B414B49)
    t.write(20, 0x80, 0xFFFF_FFFF)
    t.load(31, 0x200, [0, 0x0123456789ABCDEF, 1])
    t.mark("S", 40)
    t.write(41, 0x104, 3)
    t.load(45, 0x300, [0xAB], kind="P")
    t.mark("E", 90)
    t.dump(93, 0x200, 0x1E1FF)
    text = t.dumps()
    assert text.splitlines() == [
        "K 5 2 0 7 255", "R 6 0 4b414b49", "W 20 80 ffffffff", "L 31 200 0 123456789abcdef 1",
        "S 40", "W 41 104 3", "P 45 300 ab", "E 90", "D 93 200 1e1ff"]
    back = bench.parse_trace(text)
    assert back.header == t.header and back.events == t.events
    assert t.counts() == {"R": 1, "W": 2, "L": 1, "P": 1, "S": 1, "E": 1, "D": 1}
    with pytest.raises(ValueError):
        bench.parse_trace("Q 1 2\n")


def test_read_hex_words(tmp_path):
    f = tmp_path / "m.hex"
    f.write_text("0123456789abcdef\nff\n")
    got = bench.read_hex_words(f)
    assert got.tolist() == [0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01, 0xFF] + [0] * 7


@pytest.mark.parametrize("size", [32, 256])
def test_gemm_workload_compiles_and_is_not_degenerate(size):
    g, feeds = bench.gemm_graph(size, seed=1)
    out = next(iter(interpret(g, feeds).values()))
    assert out.shape == (size, size) and models.degenerate(out) is None
    cm = compile_graph(g, Capabilities.from_config(KakiConfig(dim=8)))
    assert len(cm.program.commands) > 0


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    from firmware import build as fw_build
    return fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf")


def test_run_golden_matches_interpreter(elf):
    caps = Capabilities.from_config(KakiConfig(dim=8))
    out, meas = bench.run_golden(32, 1, caps, elf)
    g, feeds = bench.gemm_graph(32, seed=1)
    assert np.array_equal(out, next(iter(interpret(g, feeds).values())))
    assert meas["wall"] > 0 and meas["cpu"] > 0 and ((meas["t1"] - meas["t0"]) & 0xFFFF_FFFF) > 0
    assert meas["perf"]["PERF_GEMM_BUSY"] > 0


def test_run_program_hooks_order(elf):
    from verif.model_run import HOST_BASE, HOST_BYTES
    from driver.device import Device
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel

    caps = Capabilities.from_config(KakiConfig(dim=8))
    g, feeds = bench.gemm_graph(32, seed=2)
    cm = compile_graph(g, caps)
    seen = []

    async def go():
        chip = ChipModel(caps, host_bytes=HOST_BASE + HOST_BYTES, seed=2, engine_delay=(1, 40))
        dev = await Device.open(GoldenBackend(chip), host_base=HOST_BASE, host_bytes=HOST_BYTES,
                                firmware=elf)

        async def before():
            seen.append("before")

        async def on_end():
            seen.append("on_end")

        async def after(bufs):
            seen.append(sorted(bufs))
        return await bench.run_program(dev, cm, feeds, before=before, on_end=on_end, after=after)
    outs, meas = asyncio.run(go())
    assert seen[:2] == ["before", "on_end"] and set(seen[2]) == set(cm.program.buffers)
    assert set(meas["out_addr"]) == set(outs)


def _data():
    sizes = [dict(size=s, commands=10, run_cycles=1000 * s, gemm_busy=900 * s, pe_util_run=u,
                  pe_util_gemm=u + 0.1, rtl_wall_s=1.0, rtl_cycles_per_s=1000.0 * s,
                  golden_wall_s=0.1, exact=True)
             for s, u in ((256, 0.858), (32, 0.11), (64, 0.43))]
    return dict(dim=8, seed=1, goal_size=256, sizes=sizes, compile_s={"mlp": 0.16, "conv": 0.05},
                goals=dict(pe_util_256=0.858, golden_speedup=250.0),
                harness=dict(window_cycles=300000, cocotb_cycles_per_s=7e4, cpp_cycles_per_s=2e5,
                             cpp_wall_runs_s=[1.5, 1.4, 1.6], csr_writes=10, csr_reads=5,
                             read_mismatches=0, loads=3, pokes=2, output_equal=True, region_equal=True,
                             cocotb_backend_calls={"host_read": [3, 0.5], "wait": [0, 0.0]}),
                cocotb_idle_clock=dict(cycles=1000, wall_s=0.01, cycles_per_s=1e5))


def test_report_table():
    data = _data()
    data["goals"].update(doorbell_start=20, signal_start=41)
    data["why"] = {"pe_util_256": "GEMM busy but loads", "signal_start": "too slow"}
    rows = {r[0]: r for r in bench.goal_rows(data)}
    assert [(k, r[1], r[4]) for k, r in rows.items() if r[1] is not None] == [
        ("doorbell -> engine start (cycles, median)", 20, True),
        ("SIGNAL -> WAIT released on another queue -> engine start", 41, False),
        ("PE utilization, 256^3 GEMM on 8x8, whole run incl. DMA", 0.858, False),
        ("golden model speed vs RTL (CPU time, 256^3 program)", 250.0, True)]
    # a missed goal shows its reason; one not measured says so; a met one shows none
    assert rows["SIGNAL -> WAIT released on another queue -> engine start"][6] == "too slow"
    assert rows["PE utilization, 32^3 GEMM on 8x8, whole run incl. DMA"][6] == "not measured"
    assert rows["doorbell -> engine start (cycles, median)"][6] == ""
    text = bench.format_table(data)
    assert "PE utilization, 256^3 GEMM on 8x8" in text and "(GEMM busy but loads)" in text
    assert "85.8%" in text and "95.0%" in text and "0.90" in text and "250x" in text
    assert "cycle-exact" in text and "host_read 3x 0.50 s" in text and "wait 0x" not in text
    assert "mlp 160 ms, conv 50 ms" in text
    assert "100000 cycles/s = 0.50 of bare C++" in text


def test_why_names_the_idle_gemm_engine():
    idle = bench.why_pe_util(dict(gemm_busy=500, run_cycles=1000, pe_util_gemm=0.8))
    busy = bench.why_pe_util(dict(gemm_busy=950, run_cycles=1000, pe_util_gemm=0.8))
    assert "busy only 500 of 1000" in idle and "m / max(m, dim)" in busy


def test_plot_writes_png(tmp_path):
    p = tmp_path / "b.png"
    bench.plot(_data(), p)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decode_bounds_and_report():
    """The decode bound is the larger of the weight stream and the array's tile passes; the
    report names the worst case and its bound."""
    assert bench.decode_bounds(256, 1, 8, 8) == dict(weights=8192.0, array=32 * 32 * 9)
    assert bench.decode_bounds(512, 16, 8, 8) == dict(weights=32768.0, array=64 * 64 * 24)
    assert bench.decode_bounds(20, 4, 8, 8)["array"] == 3 * 3 * 12      # partial tiles count
    fast = bench.decode_row(256, 16, 8, 8, cycles=10 * 24576)
    slow = bench.decode_row(256, 1, 8, 8, cycles=10 * 9216 * 1.3)
    assert fast["ratio"] == 1.0 and fast["bound_by"] == "array"
    # today's engine: the first tile's load, then max(dim, M) a tile (or the weight stream)
    assert fast["engine_bound"] == 8 + 32 * 32 * 16 and slow["engine_bound"] == 8 + 32 * 32 * 8
    assert bench.engine_bound(512, 1, 8, 8) == 8 + 64 * 64 * 8 and bench.engine_bound(512, 1, 8, 4) == 65536.0
    assert abs(slow["ratio"] - 1.3) < 1e-9
    assert bench.why_decode([fast, slow]).startswith("M=1 K=256: 11981 cycles per layer")
    data = _data()
    for r in (fast, slow):
        r.update(commands=60, predicted=r["run_cycles"], exact=True)
    data["decode"] = [fast, slow]
    data["goals"]["decode_ratio"] = slow["ratio"]
    row = [r for r in bench.goal_rows(data) if r[0].startswith("decode steps")][0]
    assert row[1] == slow["ratio"] and not row[4]
    text = bench.format_table(data)
    assert "M=1 K=256" in text and "1.300" in text and "goal <= 1.15" in text


def _costmodel_rows():
    """Five runs: two small (below 10k cycles, not judged), three judged, one of them 12 % low."""
    spec = [("0_mlp", 2_000, 2_600), ("1_conv", 9_999, 8_000), ("2_matmul", 10_000, 10_500),
            ("3_attention", 50_000, 44_000), ("4_heads", 20_000, 19_800)]
    return [bench.costmodel_row(n, n.split("_")[1], "shape", c, p, commands=5, exact=True)
            for n, c, p in spec]


def test_costmodel_error_distribution():
    rows = _costmodel_rows()
    assert [round(r["error"], 4) for r in rows] == [0.3, -0.1999, 0.05, -0.12, -0.01]
    d = bench.error_distribution(rows)
    assert d["big"]["n"] == 3 and d["all"]["n"] == 5
    assert d["big"]["min"] == pytest.approx(0.01) and d["big"]["max"] == pytest.approx(0.12)
    assert d["big"]["median"] == pytest.approx(0.05)
    assert d["big"]["p90"] == pytest.approx(0.05 + 0.8 * 0.07)      # interpolated like numpy
    assert d["big"]["low"] == pytest.approx(-0.12) and d["big"]["high"] == pytest.approx(0.05)
    assert d["all"]["max"] == pytest.approx(0.3)
    assert d["within"] == 2 and d["worst"]["name"] == "3_attention"
    assert bench.error_distribution([])["big"] == dict(n=0)
    why = bench.why_costmodel(rows)
    assert why == ("1 of 3 outside 10%; worst 3_attention (shape): 50000 cycles measured, 44000 "
                   "predicted (-12.0%)")
    assert bench.why_costmodel(rows[:2]) == "no run of at least 10000 cycles"


def test_costmodel_goal_row_and_table():
    rows = _costmodel_rows()
    data = _data()
    data["costmodel"] = dict(seed=1, rows=rows)
    data["goals"]["costmodel_worst"] = bench.error_distribution(rows)["big"]["max"]
    data["why"] = {"costmodel_worst": bench.why_costmodel(rows)}
    (row,) = [r for r in bench.goal_rows(data) if r[0].startswith("cost model")]
    assert row[0] == "cost model: every model >= 10k cycles within 10 % (worst |error|)"
    assert row[1] == pytest.approx(0.12) and not row[4] and row[6].startswith("1 of 3 outside")
    text = bench.format_table(data)
    assert "3_attention" in text and "-12.0%" in text and "; worst 3_attention (shape)" in text
    assert "|error| over >= 10k cycles (3): min 1.0%, median 5.0%, p90 10.6%, max 12.0%" in text
    assert "2 of 3 runs of >= 10000 cycles within 10% (family seed 1, 5 graphs" in text
    # met: every judged run within 10 %
    ok = [r for r in rows if r["name"] != "3_attention"]
    data["goals"]["costmodel_worst"] = bench.error_distribution(ok)["big"]["max"]
    (row,) = [r for r in bench.goal_rows(data) if r[0].startswith("cost model")]
    assert row[4] and row[6] == ""


def test_speed_ratios_wall_and_cpu():
    """Both sides' speed on the same window: medians of the C++ replays, ratios by wall and CPU;
    the goal row takes the CPU ratio and, when missed, says both."""
    runs = [dict(window_wall_s=w, window_cpu_s=c) for w, c in ((2.0, 1.9), (3.0, 2.0), (2.5, 2.1))]
    s = bench.speed_ratios(300_000, cocotb_wall=4.0, cocotb_cpu=2.5, cpp_runs=runs)
    assert s["cpp_wall_s"] == 2.5 and s["cpp_cpu_s"] == 2.0
    assert s["ratio_wall"] == pytest.approx(2.5 / 4.0) and s["ratio_cpu"] == pytest.approx(0.8)
    assert s["cocotb_cycles_per_s"] == 75_000 and s["cpp_cycles_per_cpu_s"] == 150_000
    assert s["cpp_cpu_runs_s"] == [1.9, 2.0, 2.1]
    old = bench.speed_ratios(300_000, 4.0, None, runs)            # a run without CPU times
    assert old["ratio_cpu"] is None and old["ratio_wall"] == s["ratio_wall"]
    assert bench.why_sim_speed(old) == "no CPU times; wall ratio 0.625"
    assert bench.why_sim_speed(dict(s, ratio_cpu=0.7)) == ("CPU: cocotb 2.50 s vs bare C++ 2.00 s; "
                                                           "wall ratio 0.625")
    data = _data()
    data["harness"].update(s)
    data["cocotb_idle_clock"]["cpu_s"] = 0.005
    data["goals"]["sim_speed_ratio"] = s["ratio_cpu"]
    (row,) = [r for r in bench.goal_rows(data) if r[0].startswith("cocotb cycles/s")]
    assert row[0].endswith("CPU s)") and row[1] == pytest.approx(0.8) and row[4]
    text = bench.format_table(data)
    assert "wall: cocotb 75000 cycles/s, bare C++ 120000 cycles/s: ratio 0.625" in text
    assert "CPU:  cocotb 120000 cycles/CPU s (2.50 s), bare C++ 150000 cycles/CPU s (2.00 s): " \
           "ratio 0.800 (the goal's figure)" in text
    assert "0.83 of bare C++ (wall), 1.33 (CPU)" in text
