"""`make bench`: end-to-end benchmark of compiled int8 GEMMs through driver -> firmware -> RTL.

    python -m tools.bench [--dim 8] [--sizes 256,32,64,128] [--seed 1] [--no-cpp]

Steps (one invocation, every number from this run):

1. compile time of each demo model (compiler/models.py): ``compile_graph`` wall, median of 3;
2. cocotb + Verilator: S³ int8 matmul + requantize (batch M = S) compiled by ``compile_graph``,
   run with ``Device.run`` (ChipTB backend, firmware on the control core), checked bit-exactly
   against the graph's NumPy interpreter. PE utilization = S³ / (dim² × cycles) with cycles =
   TIMESTAMP after minus before ``Device.run`` (whole run: DMA, firmware dispatch, epilogue,
   store), and over PERF_GEMM_BUSY only. The first size (256) is traced: every CSR access and
   backdoor load from reset on, with cycles (tools/bench_lib.py);
3. the bare Verilator C++ harness (tools/harness/replay.cpp, same sources and Verilator
   options, no VPI) replays that trace, checks every CSR read returns the recorded data and
   dumps the driver's host-memory region at the recorded end edge, compared with the cocotb run's;
   simulation speed = cycles of the ``Device.run`` window / wall seconds of that window, both
   sides (cocotb: wall of ``Device.run`` itself; C++: wall between the same two cycles);
4. golden device model: the same compiled program, same inputs, through the driver on
   ``GoldenBackend`` (firmware on the RV32 ISS), three runs; speed-up = RTL wall / median golden
   wall of ``Device.run``, outputs compared with the RTL's.

Writes build/bench.json and build/bench.png (utilization against GEMM size) and prints a table.
"""
import argparse
import asyncio
import json
import statistics
import sys
import time

import numpy as np

from . import bench_lib as B
from . import simbuild

SIM_ENV = {"PYTHONHASHSEED": "0"}        # the driver's set/dict orders: same run every time


def compile_times(dim, repeat=3):
    from compiler import models
    from compiler.compile import compile_graph
    from spec.capabilities import Capabilities
    from hdl_gen.config import KakiConfig

    caps = Capabilities.from_config(KakiConfig(dim=dim))
    out = {}
    for name in models.MODELS:
        g, _ = models.build(name, 1)
        ts = []
        for _ in range(repeat):
            t = time.perf_counter()
            compile_graph(g, caps)
            ts.append(time.perf_counter() - t)
        out[name] = statistics.median(ts)
    return out


def run_golden(size, seed, caps, firmware):
    """(outputs, meas) of the size³ program through the driver on the golden chip model."""
    from compiler.compile import compile_graph
    from driver.device import Device
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel

    from .demo_run import HOST_BASE, HOST_BYTES

    g, feeds = B.gemm_graph(size, seed=seed)
    cm = compile_graph(g, caps)

    async def go():
        chip = ChipModel(caps, host_bytes=HOST_BASE + HOST_BYTES, seed=seed, engine_delay=(1, 40))
        dev = await Device.open(GoldenBackend(chip), host_base=HOST_BASE, host_bytes=HOST_BYTES,
                                firmware=firmware)
        return await B.run_program(dev, cm, feeds)
    outs, meas = asyncio.run(go())
    return next(iter(outs.values())), meas


def read_hex_words(path):
    """A $writememh file (no address records) -> uint8 array, little-endian words."""
    lines = [ln.strip() for ln in open(path) if ln.strip() and not ln.startswith(("@", "//"))]
    be = np.frombuffer(bytes.fromhex("".join(ln.rjust(16, "0") for ln in lines)), np.uint8)
    return be.reshape(-1, 8)[:, ::-1].reshape(-1)


def harness(target, run_dir, traced, cocotb_wall, repeat=3):
    from . import cpp_harness

    t = time.monotonic()
    binary = cpp_harness.build(target)
    build_s = time.monotonic() - t
    work = run_dir / "cpp"
    runs = [cpp_harness.replay(binary, run_dir / "trace.txt", work) for _ in range(repeat)]
    r = sorted(runs, key=lambda x: x["window_wall_s"])[len(runs) // 2]    # the median
    mine, theirs = read_hex_words(work / "replay_region.hex"), read_hex_words(run_dir / "region.hex")
    from .demo_run import HOST_BASE
    off = traced["out_addr"] - HOST_BASE
    n = traced["out_bytes"]
    window = traced["window"][1] - traced["window"][0]
    assert r["window_cycles"] == window, (r["window_cycles"], window)
    return dict(
        build_s=build_s, window_cycles=window, cocotb_wall_s=cocotb_wall,
        cpp_wall_s=r["window_wall_s"], cpp_wall_runs_s=[x["window_wall_s"] for x in runs],
        cocotb_backend_calls=traced.get("backend_calls"), cpp_total_wall_s=r["total_wall_s"],
        cpp_total_cycles=r["cycles"],
        cocotb_cycles_per_s=window / cocotb_wall, cpp_cycles_per_s=window / r["window_wall_s"],
        csr_writes=r["csr_writes"], csr_reads=r["csr_reads"], read_mismatches=r["read_mismatches"],
        loads=r["loads"], pokes=r["pokes"], output_equal=bool(np.array_equal(mine[off:off + n], theirs[off:off + n])),
        region_equal=bool(np.array_equal(mine, theirs)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=8, choices=(4, 8, 16))
    ap.add_argument("--sizes", default="256,32,64,128", help="GEMM sizes; the first is traced and "
                    "used for the goals")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-cpp", action="store_true", help="skip the bare C++ harness")
    args = ap.parse_args(argv)
    t_all = time.monotonic()
    from verif.soc_target import soc_target
    from firmware.build import shared_elf as firmware_elf

    elf = firmware_elf()
    data = dict(dim=args.dim, seed=args.seed, config=dict(
        sizes=[int(s) for s in args.sizes.split(",")], workload="S x S int8 matmul + requantize "
        "(compiler graph API), batch M = S, compile_graph for the chip's capabilities",
        host_memory="kaki_host_mem latency 2, no stalls", firmware=str(elf.relative_to(simbuild.REPO)),
        python_hash_seed=SIM_ENV["PYTHONHASHSEED"]))
    print("[bench] compile times of the demo models")
    data["compile_s"] = compile_times(args.dim)
    target = soc_target(args.dim)
    print("[bench] RTL runs (cocotb + Verilator)")
    failed = None
    try:
        simbuild.run(target, "tools.cocotb_bench", seed=args.seed, tag="bench",
                     extra_env={"KAKI_FW_ELF": str(elf), "KAKI_BENCH_SIZES": args.sizes, **SIM_ENV},
                     repro=lambda seed: "make bench")
    except AssertionError as e:
        failed = e
    run_dir = simbuild.last_run_dir()
    if not (run_dir / "bench_rtl.json").exists():
        print(f"FAILED: the RTL run produced no results: {failed}; log dir {run_dir}", file=sys.stderr)
        return 1
    rtl = json.loads((run_dir / "bench_rtl.json").read_text())
    data["run_dir"] = str(run_dir.relative_to(simbuild.REPO))
    data["sizes"] = rtl["sizes"]
    data["cocotb_idle_clock"] = rtl.get("idle_clock")
    from spec.capabilities import Capabilities
    from hdl_gen.config import KakiConfig
    caps = Capabilities.from_config(KakiConfig(dim=args.dim))
    print("[bench] golden device model runs")
    for r in data["sizes"]:
        # Median of 3: a golden run takes tens of ms, where the load of a shared machine shows.
        runs = [run_golden(r["size"], args.seed, caps, elf) for _ in range(3)]
        out, meas = sorted(runs, key=lambda x: x[1]["wall"])[1]
        rtl_out = np.load(run_dir / f"out_{r['size']}.npy")
        r["golden_wall_s"] = meas["wall"]
        r["golden_wall_runs_s"] = [m["wall"] for _, m in runs]
        r["golden_cycles"] = (meas["t1"] - meas["t0"]) & 0xFFFF_FFFF
        r["golden_equal_rtl"] = bool(np.array_equal(out, rtl_out))
        r["exact"] = r["exact"] and r["golden_equal_rtl"]
        r["golden_speedup"] = r["rtl_wall_s"] / meas["wall"]
    traced = data["sizes"][0]
    goals = dict(pe_util_256=traced["pe_util_run"], golden_speedup=traced["golden_speedup"])
    if not args.no_cpp and (run_dir / "trace.txt").exists():
        print("[bench] bare Verilator C++ harness replay")
        h = harness(target, run_dir, traced, traced["rtl_wall_s"])
        data["harness"] = h
        goals["sim_speed_ratio"] = h["cocotb_cycles_per_s"] / h["cpp_cycles_per_s"]
    data["goals"] = goals
    data["goal_size"] = traced["size"]
    data["wall_s"] = time.monotonic() - t_all
    out = simbuild.BUILD / "bench.json"
    out.write_text(B.dumps_json(data))
    png = simbuild.BUILD / "bench.png"
    B.plot(data, png)
    print()
    print(B.format_table(data))
    print(f"\n  written: {out.relative_to(simbuild.REPO)}, {png.relative_to(simbuild.REPO)}; "
          f"{data['wall_s']:.0f} s wall")
    ok = failed is None and all(r["exact"] for r in data["sizes"])
    if "harness" in data:
        ok = ok and data["harness"]["output_equal"] and not data["harness"]["read_mismatches"]
    if not ok:
        print(f"FAILED: {failed or 'outputs differ'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
