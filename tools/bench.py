"""`make bench`: end-to-end benchmark of compiled int8 GEMMs through driver -> firmware -> RTL.

    python -m tools.bench [--dim 8] [--sizes 256,32,64,128] [--attention 64x64,...] [--seed 1]
                          [--no-cpp] [--no-decode] [--no-costmodel] [--costmodel-seed N]

One module, three roles: :func:`main` is the CLI; the same module is the cocotb test module the
simulator runs (:func:`bench`, a ``@cocotb.test()``; cocotb's simulator-only parts are imported
inside it); the rest is pure Python (workload, trace, report; tests/test_bench.py). docs/bench.md.

Steps (one invocation, every number from this run):

1. compile time of each demo model (compiler/models.py): ``compile_graph`` wall, median of 3;
   the control path's latencies and rates (:func:`control`, verif/control_path.py) on the RTL;
2. cocotb + Verilator (:func:`bench`): S³ int8 matmul + requantize (batch M = S) compiled by
   ``compile_graph`` for the capabilities the chip reports, run with ``Device.run`` (ChipTB backend,
   firmware on the control core), checked bit-exactly against the graph's NumPy interpreter. PE
   utilization = S³ / (dim² × cycles) with cycles = TIMESTAMP after minus before ``Device.run``
   (whole run: DMA, firmware dispatch, epilogue, store), and over PERF_GEMM_BUSY only. The first
   size (256) is traced: from reset to the end of its run, every CSR access and backdoor load
   (``$readmemh`` file load or VPI write) with its cycle (:class:`Trace`), ending with a dump of
   the driver's host-memory region: ``trace.txt`` and ``region.hex`` in the run directory, with
   ``bench_rtl.json`` and ``out_<size>.npy``;
3. the bare Verilator C++ harness (tools/harness/replay.cpp, ``simbuild.cpp_build``: same sources
   and Verilator options, no VPI) replays that trace, checks every CSR read returns the recorded
   data and dumps the driver's host-memory region at the recorded end edge, compared with the
   cocotb run's; simulation speed = cycles of the ``Device.run`` window / wall and CPU seconds
   of that window, both sides (cocotb: ``Device.run`` itself, ``time.process_time`` of the
   simulator process; C++: between the same two cycles, medians of 5 replays); the goal is the
   CPU ratio (:func:`speed_ratios`);
   Then the demo MLP at batch 16 (:func:`mlp_run`) and the attention half of a transformer block (:func:`attention_runs`) at each ``--attention``
   size (d_model x sequence), plain and causal: whole-run cycles and PE utilization, engine busy
   cycles, bit-exact against the interpreter;
4. golden device model: the same compiled program, same inputs, through the driver on
   ``GoldenBackend`` (firmware on the RV32 ISS), three runs; speed-up = RTL / median golden time
   of ``Device.run`` on CPU seconds (``time.process_time``: the cocotb process with Verilator
   against this process; the goals') and on wall seconds (:func:`golden_speed`), outputs
   compared with the RTL's; the same for each attention block (:func:`golden_attention`; its
   goal is the worst block's CPU speed-up);
5. the decode-shaped command lists (:func:`decode`, ``--no-decode`` skips them) and the cost
   model's validation (:func:`costmodel`, ``--no-costmodel`` skips it): the random graph family
   of verif/graph_family.py (``--costmodel-seed``, default ``SEED=`` or its validation seed)
   through ``Device.run`` on the RTL, measured cycles against ``cost.summary``'s prediction, the
   distribution of the error (:func:`error_distribution`) and its goal row.

Writes build/bench.json and build/bench.png (utilization against GEMM size) and prints a table.

Trace format (text, one event per line, numbers in decimal unless noted; read by
``tools/harness/replay.cpp``)::

    K <rst_cycles> <latency> <stall> <seed> <max_len>   reset and host-memory model configuration
    W <cycle> <addr hex> <data hex>                    AXI4-Lite CSR write, called at <cycle>
    R <cycle> <addr hex> <data hex>                    CSR read, called at <cycle>; data = what it returned
    L <edge> <word index hex> <word hex> ...           backdoor $readmemh taking effect at clock edge <edge>
    P <cycle> <word index hex> <word hex> ...          backdoor VPI write after edge <cycle>, before the next
    S <cycle>                                          start of the timed window (before Device.run)
    E <cycle>                                          end of the timed window (after Device.run)
    D <edge> <lo word hex> <hi word hex>               dump words lo..hi at edge <edge>, then stop

A cycle is the index of the last rising clock edge (the first edge is edge 0).
"""
import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field

import cocotb                            # cocotb and cocotb.utils import outside a simulator too
import numpy as np
from cocotb.utils import get_sim_time

from verif.soc_target import CLOCK_NS, FIRST_EDGE_NS

from . import bench_llm, simbuild

__all__ = ["gemm_graph", "Trace", "parse_trace", "format_table", "goal_rows", "plot",
           "run_program", "bench", "main"]

#: ``make bench`` runs this module's one cocotb test, :func:`bench` (tests/test_cocotb_inventory.py).
COCOTB_RUNS = {"tools.bench": simbuild.ALL, "tools.bench_llm": ("llm_bench",)}
SIM_ENV = {"PYTHONHASHSEED": "0"}        # the driver's set/dict orders: same run every time

# ------------------------------------------------------------------------------ workload
def gemm_graph(size, seed=1):
    """A ``size``³ int8 matmul + requantize (batch M = size) and its feeds, with the output scale
    calibrated so one standard deviation of the accumulator is ~30 codes (not saturated)."""
    from compiler.graph import Graph

    rng = np.random.default_rng(seed)
    g = Graph(f"gemm{size}")
    x = g.input("x", (size, size), scale=0.05, zero_point=0)
    wv = rng.integers(-128, 128, (size, size), dtype=np.int8)
    w = g.const("w", wv, scale=0.01)
    feeds = {"x": rng.integers(-128, 128, (size, size), dtype=np.int8)}
    acc = feeds["x"].astype(np.int64) @ wv.astype(np.int64)
    y = g.matmul(x, w, name="mm")
    y = g.requantize(y, scale=float(np.std(acc)) * 0.05 * 0.01 / 30, zero_point=0, name="rq")
    g.output(y)
    return g, feeds


# ------------------------------------------------------------------------------ trace
@dataclass
class Trace:
    """Events the C++ harness replays: CSR accesses and backdoor writes with their cycles."""
    events: list = field(default_factory=list)
    header: tuple = ()

    def configure(self, rst_cycles, latency, stall, seed, max_len):
        self.header = (rst_cycles, latency, stall, seed, max_len)

    def write(self, cycle, addr, data):
        self.events.append(("W", int(cycle), int(addr), int(data) & 0xFFFF_FFFF))

    def read(self, cycle, addr, data):
        self.events.append(("R", int(cycle), int(addr), int(data) & 0xFFFF_FFFF))

    def load(self, edge, word0, words, kind="L"):
        """``words``: ints (host-memory words) written from word index ``word0``; ``kind`` "L"
        ($readmemh at clock edge ``edge``) or "P" (VPI write after edge ``edge``)."""
        assert kind in ("L", "P")
        self.events.append((kind, int(edge), int(word0), [int(w) for w in words]))

    def mark(self, kind, cycle):
        assert kind in ("S", "E")
        self.events.append((kind, int(cycle)))

    def dump(self, edge, lo, hi):
        self.events.append(("D", int(edge), int(lo), int(hi)))

    def counts(self):
        out = {}
        for e in self.events:
            out[e[0]] = out.get(e[0], 0) + 1
        return out

    def dumps(self):
        lines = ["K " + " ".join(str(v) for v in self.header)]
        for e in self.events:
            k = e[0]
            if k in ("W", "R"):
                lines.append(f"{k} {e[1]} {e[2]:x} {e[3]:x}")
            elif k in ("L", "P"):
                lines.append(f"{k} {e[1]} {e[2]:x} " + " ".join(f"{w:x}" for w in e[3]))
            elif k in ("S", "E"):
                lines.append(f"{k} {e[1]}")
            else:
                lines.append(f"D {e[1]} {e[2]:x} {e[3]:x}")
        return "\n".join(lines) + "\n"


def parse_trace(text):
    """Inverse of :meth:`Trace.dumps` (for tests and tools)."""
    t = Trace()
    for line in text.splitlines():
        f = line.split()
        if not f:
            continue
        k = f[0]
        if k == "K":
            t.configure(*(int(v) for v in f[1:]))
        elif k in ("W", "R"):
            t.events.append((k, int(f[1]), int(f[2], 16), int(f[3], 16)))
        elif k in ("L", "P"):
            t.events.append((k, int(f[1]), int(f[2], 16), [int(w, 16) for w in f[3:]]))
        elif k in ("S", "E"):
            t.events.append((k, int(f[1])))
        elif k == "D":
            t.events.append(("D", int(f[1]), int(f[2], 16), int(f[3], 16)))
        else:
            raise ValueError(f"unknown trace record {line!r}")
    return t


# ------------------------------------------------------------------------------ report
#: key, text, goal, unit, "min" (the measured value must reach the goal) or "max" (stay below it)
GOALS = [
    ("doorbell_start", "doorbell -> engine start (cycles, median)", 40, "cyc", "max"),
    ("signal_start", "SIGNAL -> WAIT released on another queue -> engine start", 30, "cyc", "max"),
    ("cycles_per_command", "cycles per independent engine command, one queue", 16, "cyc", "max"),
    *[(f"pe_util_{s}", f"PE utilization, {s}^3 GEMM on {{dim}}x{{dim}}, whole run incl. DMA", g, "%",
       "min") for s, g in ((32, 0.45), (64, 0.75), (128, 0.88), (256, 0.95))],
    ("pe_util_mlp16", "PE utilization, MLP batch 16 (compiler/models.py mlp), whole run", 0.63,
     "%", "min"),
    ("sim_speed_ratio", "cocotb cycles/s vs bare Verilator C++ (same RTL, same stream, CPU s)", 0.8,
     "x", "min"),
    ("golden_speedup", "golden model speed vs RTL (CPU time, {size}^3 program)", 100.0, "x", "min"),
    ("golden_speedup_attention", "golden model speed vs RTL (CPU time, attention block, worst)",
     100.0, "x", "min"),
    ("decode_ratio", "decode steps (M=1,4,16 x 256^2/512^2, 10 layers, command list): worst "
     "cycles/layer / bound", 1.15, "x", "max"),
    ("costmodel_worst", "cost model: every model >= 10k cycles within 10 % (worst |error|)", 0.10,
     "%", "max"),
    *bench_llm.GOALS,
]

#: decode-shaped sequences (``decode``): rows M against square K x K weights, DECODE_LAYERS
#: layers back to back (compiler/models.py ``decode_stack``), recorded once and launched as
#: command lists
DECODE_ROWS = (1, 4, 16)
DECODE_WIDTHS = (256, 512)
DECODE_LAYERS = 10


def decode_bounds(k, m, dim, bus_bytes):
    """Cycles per layer of an M x K by K x K int8 layer that no schedule beats: the weight
    stream (K² bytes at ``bus_bytes`` per cycle) and the array (ceil(K/dim)² weight tiles, each
    ``dim`` cycles to load and ``m`` to stream the rows through)."""
    tiles = -(-k // dim)
    return dict(weights=k * k / bus_bytes, array=tiles * tiles * (dim + m))


def engine_bound(k, m, dim, bus_bytes):
    """The same layer's bound on today's GEMM engine, whose B stream loads a tile's weights
    while the tile before streams (docs/architecture.md): the weight stream, or the first
    tile's load and ``max(dim, m)`` cycles a tile. Tighter than the issue's array bound
    (:func:`decode_bounds`, ``dim + m`` a tile), which the goal keeps."""
    tiles = -(-k // dim)
    return max(k * k / bus_bytes, dim + tiles * tiles * max(dim, m))


def decode_row(k, m, dim, bus_bytes, cycles, layers=DECODE_LAYERS):
    """One decode measurement: cycles per layer against the larger bound (and the engine's)."""
    b = decode_bounds(k, m, dim, bus_bytes)
    bound = max(b.values())
    per_layer = cycles / layers
    engine = engine_bound(k, m, dim, bus_bytes)
    return dict(k=k, m=m, layers=layers, run_cycles=cycles, per_layer=per_layer,
                bound=bound, bound_by=max(b, key=b.get), bounds=b, ratio=per_layer / bound,
                engine_bound=engine, engine_ratio=per_layer / engine)


def why_decode(rows):
    """The worst decode row, said in words."""
    r = max(rows, key=lambda r: r["ratio"])
    return (f"M={r['m']} K={r['k']}: {r['per_layer']:.0f} cycles per layer, the {r['bound_by']} "
            f"bound is {r['bound']:.0f}")


#: the cost-model validation (``costmodel``): a run of at least COSTMODEL_MIN_CYCLES must be
#: predicted within COSTMODEL_TOL (relative to the measured cycles)
COSTMODEL_MIN_CYCLES = 10_000
COSTMODEL_TOL = 0.10


def costmodel_row(name, template, shape, run_cycles, predicted, **extra):
    """One cost-model measurement: ``error`` = (predicted - measured) / measured (negative: the
    model is optimistic)."""
    return dict(name=name, template=template, shape=shape, run_cycles=run_cycles,
                predicted=predicted, error=(predicted - run_cycles) / run_cycles, **extra)


def _quantile(sorted_values, q):
    """The ``q`` quantile of ``sorted_values`` by linear interpolation (numpy's default)."""
    return float(np.quantile(np.asarray(sorted_values, np.float64), q))


def error_distribution(rows, min_cycles=COSTMODEL_MIN_CYCLES, tol=COSTMODEL_TOL):
    """The distribution of the relative error of the cost-model rows: over every row and over
    the rows of at least ``min_cycles`` measured cycles (``big``), min / median / p90 / max of
    |error|, the signed extremes, how many big rows are within ``tol`` and the worst big row."""
    def dist(rs):
        a = sorted(abs(r["error"]) for r in rs)
        if not a:
            return dict(n=0)
        e = [r["error"] for r in rs]
        return dict(n=len(a), min=a[0], median=_quantile(a, 0.5), p90=_quantile(a, 0.9),
                    max=a[-1], mean_signed=float(np.mean(e)), low=min(e), high=max(e))
    big = [r for r in rows if r["run_cycles"] >= min_cycles]
    worst = max(big, key=lambda r: abs(r["error"])) if big else None
    return dict(all=dist(rows), big=dist(big), min_cycles=min_cycles, tol=tol,
                within=sum(abs(r["error"]) <= tol for r in big), worst=worst)


def why_costmodel(rows, min_cycles=COSTMODEL_MIN_CYCLES, tol=COSTMODEL_TOL):
    """The cost model's worst miss among the runs of at least ``min_cycles``, said in words."""
    d = error_distribution(rows, min_cycles, tol)
    w = d["worst"]
    if w is None:
        return f"no run of at least {min_cycles} cycles"
    return (f"{d['big']['n'] - d['within']} of {d['big']['n']} outside {tol:.0%}; worst "
            f"{w['name']} ({w['shape']}): {w['run_cycles']} cycles measured, {w['predicted']} "
            f"predicted ({w['error']:+.1%})")


def goal_rows(data):
    """(description, measured, goal, measured / goal, met, unit, why) per goal; measured None =
    not measured; ``why``: the reason a goal is missed (``data["why"]``), or "not measured"."""
    rows = []
    for key, text, goal, unit, kind in GOALS:
        v = data.get("goals", {}).get(key)
        text = text.format(size=data.get("goal_size", 256), dim=data.get("dim", 8))
        met = v is not None and (v >= goal if kind == "min" else v <= goal)
        why = "" if met else data.get("why", {}).get(key, "not measured" if v is None else "")
        rows.append((text, v, goal, None if v is None else v / goal, met, unit, why))
    return rows


def why_sim_speed(h):
    """Why the testbench-speed goal is missed (``h``: the ``harness`` dict of :func:`harness`)."""
    cpu = (f"CPU: cocotb {h['cocotb_cpu_s']:.2f} s vs bare C++ {h['cpp_cpu_s']:.2f} s"
           if h.get("ratio_cpu") is not None else "no CPU times")
    return f"{cpu}; wall ratio {h['ratio_wall']:.3f}"


def why_pe_util(r):
    """What bounds a GEMM run's whole-run PE utilization (a results row of :func:`bench`)."""
    busy = r["gemm_busy"] / r["run_cycles"]
    if busy < 0.9:
        return (f"GEMM engine busy only {r['gemm_busy']} of {r['run_cycles']} cycles: loads, "
                f"stores and the pipeline fill leave it idle")
    return (f"GEMM busy {busy:.0%} of the run but at {r['pe_util_gemm']:.0%} of peak while busy: "
            f"a tile costs max(m, dim) cycles (its weights load while the tile before "
            f"streams): utilization m / max(m, dim), less the first tile's weight load")


def _fmt(v, unit):
    if v is None:
        return "n/a"
    return (f"{v:.1%}" if unit == "%" else f"{v:.3g}x" if unit == "x" else f"{v:.1f}" if unit == "cyc"
            else f"{v:.3g}")


def format_table(data):
    """The printed report of ``make bench`` from the bench.json dict."""
    out = [f"Kaki {data['dim']}x{data['dim']} benchmark (seed {data['seed']})", ""]
    out.append(f"  {'goal':<66}{'measured':>10}{'goal':>8}{'ratio':>8}  met")
    for text, v, goal, ratio, met, unit, why in goal_rows(data):
        out.append(f"  {text:<66}{_fmt(v, unit):>10}{_fmt(goal, unit):>8}"
                   f"{'n/a' if ratio is None else f'{ratio:.2f}':>8}  {'yes' if met else 'NO'}"
                   + (f"  ({why})" if why else ""))
    ctl = data.get("control")
    if ctl:
        out.append("")
        out.extend("  " + line for line in ctl["lines"])
    out.append("")
    out.append(f"  {'GEMM':>6}{'cmds':>6}{'run cycles':>12}{'GEMM busy':>11}{'util run':>10}"
               f"{'util GEMM':>11}{'RTL wall s':>12}{'cycles/s':>10}{'golden s':>10}"
               f"{'RTL cpu s':>11}{'golden cpu s':>14}  bit-exact")
    for r in data.get("sizes", []):
        out.append(f"  {r['size']:>6}{r['commands']:>6}{r['run_cycles']:>12}{r['gemm_busy']:>11}"
                   f"{r['pe_util_run']:>10.1%}{r['pe_util_gemm']:>11.1%}{r['rtl_wall_s']:>12.2f}"
                   f"{r['rtl_cycles_per_s']:>10.0f}{r.get('golden_wall_s', float('nan')):>10.3f}"
                   f"{r.get('rtl_cpu_s', float('nan')):>11.2f}"
                   f"{r.get('golden_cpu_s', float('nan')):>14.3f}"
                   f"  {'yes' if r.get('exact') else 'NO'}")
    h = data.get("harness")
    if h:
        out.append("")
        replays = len(h.get("cpp_wall_runs_s", [0]))
        out.append(f"  sim speed, same {h['window_cycles']}-cycle window (Device.run of the "
                   f"{data.get('goal_size', 256)}^3 program), cocotb vs bare C++ (median of "
                   f"{replays} replays):")
        out.append(f"    wall: cocotb {h['cocotb_cycles_per_s']:.0f} cycles/s, bare C++ "
                   f"{h['cpp_cycles_per_s']:.0f} cycles/s: ratio {h.get('ratio_wall', h['cocotb_cycles_per_s'] / h['cpp_cycles_per_s']):.3f}")
        if h.get("ratio_cpu") is not None:
            out.append(f"    CPU:  cocotb {h['cocotb_cycles_per_cpu_s']:.0f} cycles/CPU s "
                       f"({h['cocotb_cpu_s']:.2f} s), bare C++ {h['cpp_cycles_per_cpu_s']:.0f} "
                       f"cycles/CPU s ({h['cpp_cpu_s']:.2f} s): ratio {h['ratio_cpu']:.3f} "
                       f"(the goal's figure)")
        idle = data.get("cocotb_idle_clock")
        if idle:
            line = (f"  cocotb ceiling (clock only, no Python wake-up, {idle['cycles']} cycles): "
                    f"{idle['cycles_per_s']:.0f} cycles/s = "
                    f"{idle['cycles_per_s'] / h['cpp_cycles_per_s']:.2f} of bare C++ (wall)")
            if idle.get("cpu_s") and h.get("cpp_cycles_per_cpu_s"):
                line += f", {idle['cycles'] / idle['cpu_s'] / h['cpp_cycles_per_cpu_s']:.2f} (CPU)"
            out.append(line)
        calls = h.get("cocotb_backend_calls")
        if calls:
            out.append("  cocotb wall in the window by backend call: " + ", ".join(
                f"{k} {v[0]}x {v[1]:.2f} s" for k, v in sorted(calls.items(), key=lambda kv: -kv[1][1])
                if v[0]))
        out.append(f"  C++ replay: {h['csr_writes']} CSR writes, {h['csr_reads']} reads "
                   f"({h['read_mismatches']} returned other data), {h['loads']} backdoor file loads, "
                   f"{h['pokes']} backdoor word writes; "
                   f"output {'identical' if h['output_equal'] else 'DIFFERS'}, driver region "
                   f"{'identical (cycle-exact)' if h['region_equal'] else 'differs'}")
    att = data.get("attention")
    if att:
        out.append("")
        out.append(f"  {'attention block':<22}{'cmds':>6}{'run cycles':>12}{'predicted':>11}"
                   f"{'PE util':>9}{'GEMM busy':>11}{'VEC busy':>10}{'SFU busy':>10}"
                   f"{'RTL s':>8}{'golden s':>10}{'speed':>8}{'RTL cpu':>9}{'gold cpu':>10}"
                   f"{'speed':>7}  bit-exact")
        for r in att:
            what = f"d{r['d_model']} s{r['seq']}{' causal' if r['causal'] else ''}"
            b = r["busy"]
            out.append(f"  {what:<22}{r['commands']:>6}{r['run_cycles']:>12}{r['predicted']:>11}"
                       f"{r['pe_util_run']:>9.1%}{b['GEMM']:>11}{b['VEC']:>10}{b['SFU']:>10}"
                       f"{r.get('rtl_wall_s', float('nan')):>8.2f}"
                       f"{r.get('golden_wall_s', float('nan')):>10.3f}"
                       f"{r.get('golden_speedup', float('nan')):>7.0f}x"
                       f"{r.get('rtl_cpu_s', float('nan')):>9.2f}"
                       f"{r.get('golden_cpu_s', float('nan')):>10.3f}"
                       f"{r.get('golden_speedup_cpu', float('nan')):>6.0f}x"
                       f"  {'yes' if r['exact'] else 'NO'}")
        out.append("  (LayerNorm, Q/K/V projections, 4-head attention, output projection + "
                   "residual; PE utilization of its MACs over the whole run, a causal mask's "
                   "masked pairs not counted; RTL s / golden s / speed: wall, then the same on "
                   "CPU seconds)")
    dec = data.get("decode")
    if dec:
        out.append("")
        out.append(f"  {'decode step':<16}{'cmds':>6}{'cycles/layer':>14}{'weights':>9}{'array':>8}"
                   f"{'ratio':>8}{'engine':>8}{'ratio':>7}{'predicted':>11}{'folded: listed':>16}"
                   f"{'cycles/layer':>14}  bit-exact")
        for r in dec:
            what = f"M={r['m']} K={r['k']}"
            eng = r.get("engine_bound")
            eng_cols = f"{eng:>8.0f}{r['per_layer'] / eng:>7.3f}" if eng else f"{'n/a':>8}{'':>7}"
            out.append(f"  {what:<16}{r['commands']:>6}"
                       f"{r['per_layer']:>14.0f}{r['bounds']['weights']:>9.0f}"
                       f"{r['bounds']['array']:>8.0f}{r['ratio']:>8.3f}{eng_cols}"
                       f"{r['predicted'] / r['layers']:>11.0f}{r.get('entries', r['commands']):>16}"
                       f"{r.get('folded_per_layer', float('nan')):>14.0f}  {'yes' if r['exact'] else 'NO'}")
        out.append(f"  ({dec[0]['layers']} layers each, one command-list launch per queue; ratio = "
                   f"cycles per layer / the larger bound (array: the issue's dim + M cycles a "
                   f"tile); goal <= 1.15; engine: the bound of today's GEMM engine, max(dim, M) "
                   f"a tile, and the ratio to it. folded: the same program "
                   f"recorded with its loops folded (Device.record(fold=True)): entries listed, "
                   f"a looped list's pass counted once, and its cycles per layer)")
    cmv = data.get("costmodel")
    if cmv:
        out.extend(format_costmodel(cmv))
    if data.get("loadavg_golden"):
        out.append("")
        out.append("  golden model: median of 3 runs of Device.run on GoldenBackend(ChipModel), "
                   "same program and inputs as the RTL's; load average (1, 5, 15 min) before the "
                   "RTL runs " + ", ".join(f"{v:.1f}" for v in data.get("loadavg_rtl", ())) +
                   ", before the golden runs " + ", ".join(f"{v:.1f}" for v in data["loadavg_golden"]))
        out.append("  golden speed-up = RTL / golden time of Device.run; the goals are judged on "
                   "CPU seconds (time.process_time: the cocotb process, Verilator and Python, "
                   "against the bench process); on wall seconds: " + ", ".join(
                       f"{k} {v:.0f}x" for k, v in data.get("golden_speedup_wall", {}).items()))
    ct = data.get("compile_s")
    if ct:
        out.append("")
        out.append("  compile time (median of 3): "
                   + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in ct.items()))
    return "\n".join(out)


def format_costmodel(cmv):
    """The cost-model validation's lines of the report: per graph of the family measured and
    predicted cycles, then the distribution of the error."""
    rows = cmv["rows"]
    out = ["", f"  {'cost model, graph':<18}{'cmds':>6}{'run cycles':>12}{'predicted':>11}"
               f"{'error':>8}  bit-exact  shape"]
    for r in rows:
        out.append(f"  {r['name']:<18}{r['commands']:>6}{r['run_cycles']:>12}{r['predicted']:>11}"
                   f"{r['error']:>+8.1%}  {'yes' if r['exact'] else 'NO':<9}  {r['shape']}")
    d = error_distribution(rows)
    for key, what in (("all", "all runs"), ("big", f">= {d['min_cycles'] // 1000}k cycles")):
        x = d[key]
        if x["n"]:
            out.append(f"  |error| over {what} ({x['n']}): min {x['min']:.1%}, median "
                       f"{x['median']:.1%}, p90 {x['p90']:.1%}, max {x['max']:.1%} (signed "
                       f"{x['low']:+.1%} .. {x['high']:+.1%}, mean {x['mean_signed']:+.1%})")
    out.append(f"  {d['within']} of {d['big']['n']} runs of >= {d['min_cycles']} cycles within "
               f"{d['tol']:.0%} (family seed {cmv['seed']}, {len(rows)} graphs, verif/"
               f"graph_family.py; error = predicted / measured - 1)")
    return out


def plot(data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(data["sizes"], key=lambda r: r["size"])
    s = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(s, [100 * r["pe_util_run"] for r in rows], "o-", label="whole run (DMA, dispatch incl.)")
    ax.plot(s, [100 * r["pe_util_gemm"] for r in rows], "s--", label="GEMM busy cycles only")
    ax.axhline(90, color="grey", lw=0.8, ls=":", label="goal 90%")
    ax.set_xscale("log", base=2)
    ax.set_xticks(s, [str(v) for v in s])
    ax.set_ylim(0, 100)
    ax.set_xlabel("GEMM size S (S x S x S int8, + requantize)")
    ax.set_ylabel("PE utilization (% of peak MAC/cycle)")
    ax.set_title(f"Kaki {data['dim']}x{data['dim']}: compiled GEMM through driver/firmware on RTL")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def dumps_json(data):
    return json.dumps(data, indent=1)


async def run_program(dev, cm, feeds, *, before=None, on_end=None, after=None, clock=None):
    """Upload inputs/constants, clear PERF, run ``cm.program`` with ``Device.run`` on any backend.

    ``before()`` / ``on_end()`` (coroutines) run just before / just after ``Device.run``: the wall
    time of ``Device.run`` alone (``clock``, default ``time.perf_counter``) is the timed window;
    ``after(buffers)`` runs after the closing TIMESTAMP read. Returns
    ``(outputs, meas)`` with ``t0``/``t1`` (TIMESTAMP around the run), ``perf``, ``wall`` and
    ``cpu`` (``time.process_time`` of this process around ``Device.run``: in a cocotb test the
    simulator's C++ and the Python testbench together, less sensitive than the wall to other
    processes on a shared machine)."""
    from spec import registers as R

    from verif.model_run import read_outputs, upload_buffers

    clock = clock or time.perf_counter
    prog = cm.program
    bufs = await upload_buffers(dev, cm, feeds)
    b = dev.backend
    await b.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1))
    t0 = await b.read(R.TIMESTAMP)
    if before:
        await before()
    w0, c0 = clock(), time.process_time()
    await dev.run(prog, bufs)
    cpu = time.process_time() - c0
    wall = clock() - w0
    if on_end:
        await on_end()
    t1 = await b.read(R.TIMESTAMP)
    if after:
        await after(bufs)
    perf = {n: await b.read(R.REGISTERS[n]) for n in ("PERF_GEMM_BUSY", "PERF_DMA_LOAD_BUSY",
                                                       "PERF_DMA_STORE_BUSY", "PERF_VEC_BUSY",
                                                       "PERF_SFU_BUSY")}
    outs = await read_outputs(cm, bufs)
    addr = {t.name: bufs[t.name].addr for t in cm.graph.outputs}
    for buf in bufs.values():
        buf.free()
    return outs, dict(t0=t0, t1=t1, perf=perf, wall=wall, cpu=cpu, out_addr=addr)


# ------------------------------------------------------------------------------ cocotb side (in the simulator)
def _cycle(clk):
    """Index of the last rising edge of ``clk`` (the C++ replay's edge count). A coroutine woken by
    a Timer that expires at an edge's time runs before that edge (timed callbacks precede the
    evaluation of the time slot), so the edge counts only once ``clk`` is high."""
    t = int(get_sim_time("ns")) - FIRST_EDGE_NS
    return t // CLOCK_NS - (t % CLOCK_NS == 0 and not int(clk.value))


class Recorder:
    """Records the testbench's CSR accesses and backdoor loads while ``active``; counts the calls
    and wall time of every backend method (``stats``: name -> [calls, wall seconds])."""

    def __init__(self, tb):
        self.trace = Trace()
        self.active = True
        self.stats = {}
        for name in ("host_read", "host_write", "wait", "wait_interrupt"):
            setattr(tb, name, self._timed(name, getattr(tb, name)))
        read = self._timed("read", tb.read)
        write = self._timed("write", tb.write)
        load, poke = tb.host._load_words, tb.host._poke_words

        async def rec_read(reg):
            c = _cycle(tb.dut.clk)
            v = await read(reg)
            if self.active:
                self.trace.read(c, reg.addr, v)
            return v

        async def rec_write(reg, value):
            if self.active:
                self.trace.write(_cycle(tb.dut.clk), reg.addr, value)
            await write(reg, value)

        def record(kind, w0, data):
            if self.active:
                words = np.ascontiguousarray(data).view("<u8")
                self.trace.load(_cycle(tb.dut.clk), w0, words.tolist(), kind)

        async def rec_load(w0, data):
            await load(w0, data)          # returns at the falling edge after the loading edge
            record("L", w0, data)

        def rec_poke(w0, data):
            poke(w0, data)
            record("P", w0, data)

        tb.read, tb.write = rec_read, rec_write
        tb.host._load_words, tb.host._poke_words = rec_load, rec_poke

    def _timed(self, name, fn):
        st = self.stats.setdefault(name, [0, 0.0])

        async def call(*args):
            w = time.perf_counter()
            try:
                return await fn(*args)
            finally:
                st[0] += 1
                st[1] += time.perf_counter() - w
        return call

    def snapshot(self):
        return {k: list(v) for k, v in self.stats.items()}


@cocotb.test()
async def bench(dut):
    """The RTL side of ``make bench`` (step 2 of the module docstring): KAKI_BENCH_SIZES GEMMs
    through ``Device.run`` on ChipTB with the firmware KAKI_FW_ELF; the first one traced."""
    from cocotb.triggers import Timer

    from compiler.compile import compile_graph
    from compiler.graph import interpret
    from driver.device import Device
    from verif.chip_tb import ChipTB

    from verif import model_run as D

    sizes = [int(s) for s in os.environ.get("KAKI_BENCH_SIZES", "256,32,64,128").split(",")]
    elf = os.environ["KAKI_FW_ELF"]
    tb = ChipTB(dut)
    rec = Recorder(tb)
    rec.trace.configure(5, 2, 0, tb.seed, 255)     # ChipTB.reset / HostMemory.configure defaults
    await tb.reset()
    dev = await Device.open(tb, host_base=D.HOST_BASE, host_bytes=D.HOST_BYTES, firmware=elf)
    caps = dev.caps
    results = []
    for i, size in enumerate(sizes):
        g, feeds = gemm_graph(size, seed=tb.seed)
        cm = compile_graph(g, caps)
        traced = i == 0

        snap = {}

        async def before():
            snap.update(rec.snapshot())
            if traced:
                rec.trace.mark("S", _cycle(tb.dut.clk))

        async def on_end():
            snap.update({k: [v[0] - snap.get(k, [0, 0])[0], v[1] - snap.get(k, [0, 0])[1]]
                         for k, v in rec.snapshot().items()})
            if traced:
                rec.trace.mark("E", _cycle(tb.dut.clk))

        async def after(bufs):
            if not traced:
                return
            lo = D.HOST_BASE // 8
            hi = (D.HOST_BASE + D.HOST_BYTES) // 8 - 1
            await tb.host._dump_words(lo, hi)      # returns at the falling edge after the dump edge
            rec.trace.dump(_cycle(tb.dut.clk), lo, hi)
            shutil.copy(tb.host.fname, "region.hex")
            rec.active = False
            with open("trace.txt", "w") as f:
                f.write(rec.trace.dumps())

        outs, meas = await run_program(dev, cm, feeds, before=before, on_end=on_end, after=after)
        ref = interpret(g, feeds)
        (name,) = ref
        exact = bool(np.array_equal(outs[name], ref[name]))
        np.save(f"out_{size}.npy", outs[name])
        cycles = (meas["t1"] - meas["t0"]) & D.M32
        macs = size ** 3
        busy = meas["perf"]["PERF_GEMM_BUSY"]
        results.append(dict(
            size=size, commands=len(cm.program.commands), macs=macs, run_cycles=cycles,
            gemm_busy=busy, perf=meas["perf"], rtl_wall_s=meas["wall"], rtl_cpu_s=meas["cpu"],
            rtl_cycles_per_s=cycles / meas["wall"], traced=traced,
            window=[e[1] for e in rec.trace.events if e[0] in ("S", "E")] if traced else None,
            out_addr=meas["out_addr"][name] if traced else None, out_bytes=int(outs[name].nbytes),
            pe_util_run=macs / (caps.dim ** 2 * cycles), pe_util_gemm=macs / (caps.dim ** 2 * busy),
            predicted=cm.report()["bound"], exact=exact, backend_calls=dict(snap)))
        tb.log.info(f"GEMM {size}^3: {cycles} cycles, {results[-1]['pe_util_run']:.1%} PE "
                    f"utilization, {meas['wall']:.1f} s wall, bit-exact {exact}")
        with open("bench_rtl.json", "w") as f:
            json.dump(dict(dim=caps.dim, seed=tb.seed, sizes=results, trust_inertial_writes=bool(
                getattr(cocotb.handle, "_trust_inertial", False))), f, indent=1)
    mlp16 = await mlp_run(dev, caps, tb)
    attention = await attention_runs(dev, caps, tb, results)
    # The ceiling of this simulator under cocotb: the clock alone, no Python wake-up at all.
    idle_cycles = 100_000
    w, c = time.perf_counter(), time.process_time()
    await Timer(idle_cycles * CLOCK_NS, "ns")
    idle = dict(cycles=idle_cycles, wall_s=time.perf_counter() - w, cpu_s=time.process_time() - c)
    idle["cycles_per_s"] = idle_cycles / idle["wall_s"]
    with open("bench_rtl.json", "w") as f:
        json.dump(dict(dim=caps.dim, seed=tb.seed, sizes=results, idle_clock=idle,
                       attention=attention, mlp=mlp16,
                       trust_inertial_writes=bool(getattr(cocotb.handle, "_trust_inertial", False))),
                  f, indent=1)
    assert all(r["exact"] for r in results + attention + [mlp16]), \
        "RTL output differs from the NumPy interpreter"


async def mlp_run(dev, caps, tb):
    """The demo MLP (compiler/models.py ``mlp``: batch 16, 256 -> 512 -> 512 -> 10) through
    ``Device.run``: whole-run cycles and PE utilization (its GEMMs' MACs), bit-exact check."""
    from compiler.compile import compile_graph
    from compiler.graph import interpret
    from compiler.models import mlp
    from tools.sim import layer_shapes

    g, feeds = mlp(seed=tb.seed)
    cm = compile_graph(g, caps)
    outs, meas = await run_program(dev, cm, feeds)
    ref = interpret(g, feeds)
    exact = all(np.array_equal(outs[k], ref[k]) for k in ref)
    macs = sum(m for _, _, m, identity in layer_shapes(cm).values() if not identity)
    cycles = (meas["t1"] - meas["t0"]) & 0xFFFF_FFFF
    r = dict(commands=len(cm.program.commands), run_cycles=cycles, macs=macs,
             gemm_busy=meas["perf"]["PERF_GEMM_BUSY"], predicted=cm.report()["bound"],
             pe_util_run=macs / (caps.dim ** 2 * cycles), exact=exact)
    tb.log.info(f"MLP batch 16: {cycles} cycles, {r['pe_util_run']:.1%} PE utilization, "
                f"bit-exact {exact}")
    return r


@cocotb.test()
async def decode(dut):
    """Decode-shaped sequences for ``make bench``: per (M, K) of DECODE_ROWS x DECODE_WIDTHS a
    DECODE_LAYERS-layer int8 stack (compiler/models.py ``decode_stack``: M x K rows, K x K
    weights) compiled for the chip, recorded as
    command lists (``Device.record``) and launched once (``Device.launch``), then recorded with
    its loops folded (``fold=True``) and launched again; cycles = TIMESTAMP
    after minus before the launch, outputs bit-exact against the NumPy interpreter:
    ``decode_rtl.json``."""
    from compiler.compile import compile_graph
    from compiler.graph import interpret
    from compiler.models import decode_stack
    from driver.device import Device
    from spec import registers as R
    from verif.chip_tb import ChipTB
    from verif import model_run as D

    tb = ChipTB(dut)
    await tb.reset()
    dev = await Device.open(tb, host_base=D.HOST_BASE, host_bytes=D.HOST_BYTES,
                            firmware=os.environ["KAKI_FW_ELF"])
    rows = []
    for k in DECODE_WIDTHS:
        for m in DECODE_ROWS:
            g, feeds = decode_stack(seed=tb.seed, batch=m, width=k, layers=DECODE_LAYERS)
            cm = compile_graph(g, dev.caps)
            bufs = await D.upload_buffers(dev, cm, feeds)
            ref = interpret(g, feeds)
            runs = {}
            for fold in (False, True):
                cl = await dev.record(cm.program, fold=fold)
                await tb.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1))
                t0 = await tb.read(R.TIMESTAMP)
                await dev.launch(cl, bufs)
                t1 = await tb.read(R.TIMESTAMP)
                busy = {e: await tb.read(R.REGISTERS[f"PERF_{e}_BUSY"]) for e in ("GEMM", "DMA_LOAD")}
                outs = await D.read_outputs(cm, bufs)
                runs[fold] = dict(cycles=(t1 - t0) & D.M32, busy=busy,
                                  entries=sum(rl.entries for segs in cl.lists.values() for rl in segs),
                                  exact=all(np.array_equal(outs[n], ref[n]) for n in ref))
                cl.free()
            r = decode_row(k, m, dev.caps.dim, dev.caps.dma_data_bytes, runs[False]["cycles"])
            r.update(commands=len(cm.program.commands), predicted=cm.report()["bound"],
                     busy=runs[False]["busy"], entries=runs[True]["entries"],
                     folded_per_layer=runs[True]["cycles"] / DECODE_LAYERS,
                     exact=runs[False]["exact"] and runs[True]["exact"])
            rows.append(r)
            tb.log.info(f"decode M={m} K={k}: {r['per_layer']:.0f} cycles/layer, bound "
                        f"{r['bound']:.0f} ({r['bound_by']}), ratio {r['ratio']:.3f}; loops folded "
                        f"({r['entries']} of {r['commands']} entries listed) "
                        f"{r['folded_per_layer']:.0f} cycles/layer; bit-exact {r['exact']}")
            for b in bufs.values():
                b.free()
            with open("decode_rtl.json", "w") as f:
                json.dump(dict(dim=dev.caps.dim, seed=tb.seed, rows=rows), f, indent=1)
    assert all(r["exact"] for r in rows), "RTL output differs from the NumPy interpreter"


@cocotb.test()
async def costmodel(dut):
    """The cost model's validation for ``make bench``: the random graph family of
    verif/graph_family.py (seed KAKI_COSTMODEL_SEED, KAKI_COSTMODEL_COUNT members), each compiled
    for the chip and run with ``Device.run`` (queues opened before, so every run is the program
    alone); cycles = TIMESTAMP after minus before the run, beside ``cost.summary``'s prediction;
    outputs bit-exact against the NumPy interpreter; per-engine busy counters and every
    command's completion-record timestamp (relative to the start) kept for the analysis:
    ``costmodel_rtl.json``."""
    from compiler.compile import compile_graph
    from compiler.graph import interpret
    from driver.device import Device
    from verif.chip_tb import ChipTB
    from verif import graph_family
    from verif import model_run as D

    seed = int(os.environ.get("KAKI_COSTMODEL_SEED", graph_family.VALIDATION_SEED))
    count = int(os.environ.get("KAKI_COSTMODEL_COUNT", graph_family.COUNT))
    tb = ChipTB(dut)
    await tb.reset()
    dev = await Device.open(tb, host_base=D.HOST_BASE, host_bytes=D.HOST_BYTES,
                            firmware=os.environ["KAKI_FW_ELF"])
    for q in range(dev.caps.queues or 4):
        await dev.queue(q)
    tb.log.info(f"cost model validation: graph family seed {seed}, {count} graphs")
    rows = []
    for m in graph_family.family(seed, count):
        cm = compile_graph(m.graph, dev.caps)
        outs, meas = await D.run_model(dev, cm, m.feeds)
        ref = interpret(m.graph, m.feeds)
        cycles = (meas["t1"] - meas["t0"]) & D.M32
        perf = meas["perf"]
        r = costmodel_row(
            m.name, m.template, m.shape, cycles, cm.report()["bound"],
            commands=len(cm.program.commands),
            busy={e: perf[f"PERF_{e}_BUSY"] for e in ("GEMM", "VEC", "SFU", "DMA_LOAD",
                                                      "DMA_STORE")},
            records=[(rec["timestamp"] - meas["t0"]) & D.M32 for rec in meas["records"]],
            exact=all(np.array_equal(outs[k], ref[k]) for k in ref))
        rows.append(r)
        tb.log.info(f"{m.name} ({m.shape}): {cycles} cycles, predicted {r['predicted']} "
                    f"({r['error']:+.1%}), bit-exact {r['exact']}")
        with open("costmodel_rtl.json", "w") as f:
            json.dump(dict(dim=dev.caps.dim, seed=seed, count=count, rows=rows), f, indent=1)
    assert all(r["exact"] for r in rows), "RTL output differs from the NumPy interpreter"


@cocotb.test()
async def control(dut):
    """The control path's figures for ``make bench`` (verif.control_path.measure) on the chip
    with the firmware KAKI_FW_ELF and the bench's host memory: ``control_rtl.json``."""
    from spec.firmware_image import FirmwareImage
    from verif import control_path
    from verif.chip_tb import ChipTB

    tb = ChipTB(dut)
    await tb.reset()
    await tb.load_firmware(FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"]),
                           timeout_cycles=200_000)
    fig = await control_path.measure(tb)
    for line in control_path.describe(fig):
        tb.log.info(line)
    with open("control_rtl.json", "w") as f:
        json.dump(fig, f, indent=1)


#: attention blocks measured by make bench: (d_model, sequence) (KAKI_BENCH_ATTENTION "DxS,...")
ATTENTION_SIZES = "64x64,64x128,128x64,128x128"


async def attention_runs(dev, caps, tb, gemm_results):
    """The attention half of a transformer block (``compiler.models.attention_block``: LayerNorm,
    Q/K/V projections, 4-head attention, output projection + residual), plain and causal, per
    KAKI_BENCH_ATTENTION size: whole-run cycles, PE utilization of the block's MACs (projections
    and Q·Kᵀ, P·V), engine busy cycles, bit-exact against the graph interpreter."""
    from compiler.compile import compile_graph
    from compiler.graph import interpret
    from compiler.models import attention_block
    from tools.sim import layer_shapes

    out = []
    for spec in os.environ.get("KAKI_BENCH_ATTENTION", ATTENTION_SIZES).split(","):
        if not spec:
            continue
        d, s = (int(v) for v in spec.split("x"))
        for causal in (False, True):
            g, feeds = attention_block(tb.seed, d_model=d, seq=s, causal=causal)
            cm = compile_graph(g, caps)
            outs, meas = await run_program(dev, cm, feeds)
            ref = interpret(g, feeds)
            cycles = (meas["t1"] - meas["t0"]) & 0xFFFF_FFFF
            macs = sum(v[2] for v in layer_shapes(cm).values())
            perf = meas["perf"]
            out.append(dict(d_model=d, seq=s, causal=causal, commands=len(cm.program.commands),
                            macs=macs, run_cycles=cycles, predicted=cm.report()["bound"],
                            pe_util_run=macs / (caps.dim ** 2 * cycles),
                            busy={e: perf[f"PERF_{e}_BUSY"] for e in ("GEMM", "VEC", "SFU",
                                                                      "DMA_LOAD", "DMA_STORE")},
                            rtl_wall_s=meas["wall"], rtl_cpu_s=meas["cpu"],
                            exact=all(np.array_equal(outs[k], ref[k]) for k in ref)))
            tb.log.info(f"attention d_model {d} seq {s}{' causal' if causal else ''}: {cycles} "
                        f"cycles, {out[-1]['pe_util_run']:.1%} PE utilization, bit-exact "
                        f"{out[-1]['exact']}")
    return out


# ------------------------------------------------------------------------------ CLI (the host side)
def llm_figures(target, seed, firmware, env):
    """The LLM serving figures (tools/bench_llm.py): the trace on the golden backend here, then
    the RTL test with its sample; ``{"goals", "why", "summary"}`` or ``{"failed": error}``."""
    from tools.sim_llm import clock_hz
    from verif import model_run as D
    print(f"[bench] LLM serving: a trace of {bench_llm.TRACE_REQUESTS} requests on the golden "
          f"backend")
    golden = bench_llm.golden_trace(seed, firmware, D.HOST_BASE, D.HOST_BYTES)
    sample = simbuild.BUILD / "bench_llm_sample.json"
    sample.write_text(json.dumps(golden.pop("sample")))
    print("[bench] LLM serving on the RTL: decode batches, time to first token, the trace sample")
    try:
        simbuild.run(target, "tools.bench_llm", testcase="llm_bench", seed=seed, tag="bench_llm",
                     extra_env={**env, "KAKI_LLM_SAMPLE": str(sample)},
                     repro=lambda s: "make bench")
    except AssertionError as e:
        return dict(failed=str(e), golden=golden)
    rtl = json.loads((simbuild.last_run_dir() / "llm_rtl.json").read_text())
    goals, why, summary = bench_llm.figures(rtl, golden, clock_hz())
    if golden["wrong_requests"]:
        return dict(failed=f"trace requests {golden['wrong_requests']} differ from the NumPy "
                           f"reference", goals=goals, why=why, summary=summary)
    return dict(goals=goals, why=why, summary=summary)


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
    outs, meas = run_golden_graph(*gemm_graph(size, seed=seed), seed, caps, firmware)
    return next(iter(outs.values())), meas


def run_golden_graph(g, feeds, seed, caps, firmware):
    """({output: array}, meas) of graph ``g`` compiled for ``caps`` and run with ``feeds``
    through the driver on the golden chip model (``run_program``: meas["wall"] is the wall time
    of ``Device.run``)."""
    from compiler.compile import compile_graph
    from driver.device import Device
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel

    from verif.model_run import HOST_BASE, HOST_BYTES

    cm = compile_graph(g, caps)

    async def go():
        chip = ChipModel(caps, host_bytes=HOST_BASE + HOST_BYTES, seed=seed, engine_delay=(1, 40))
        dev = await Device.open(GoldenBackend(chip), host_base=HOST_BASE, host_bytes=HOST_BYTES,
                                firmware=firmware)
        return await run_program(dev, cm, feeds)
    return asyncio.run(go())


def golden_speed(r, runs):
    """Row ``r`` (an RTL results row with ``rtl_wall_s`` and ``rtl_cpu_s``) gets the golden
    figures of ``runs`` (``(outputs, meas)`` of repeated golden runs of its program): the median
    wall and CPU seconds of ``Device.run`` (``golden_wall_s``, ``golden_cpu_s``, every run's in
    ``golden_*_runs_s``) and the speed-ups RTL / golden on both (``golden_speedup``: wall,
    ``golden_speedup_cpu``: CPU, the goals'); returns the run with the median CPU time."""
    walls, cpus = [m["wall"] for _, m in runs], [m["cpu"] for _, m in runs]
    r["golden_wall_runs_s"], r["golden_cpu_runs_s"] = walls, cpus
    r["golden_wall_s"], r["golden_cpu_s"] = statistics.median(walls), statistics.median(cpus)
    r["golden_speedup"] = r["rtl_wall_s"] / r["golden_wall_s"]
    r["golden_speedup_cpu"] = r.get("rtl_cpu_s", float("nan")) / r["golden_cpu_s"]
    return sorted(runs, key=lambda x: x[1]["cpu"])[len(runs) // 2]


def golden_attention(rows, seed, caps, firmware, repeat=3):
    """The golden model's speed on the attention blocks the RTL ran (``attention_runs`` rows):
    per row :func:`golden_speed` of ``repeat`` golden runs of the same program and inputs and
    whether its outputs equal the interpreter's (the RTL's equal them when the row is
    ``exact``); returns the worst row (by the CPU speed-up)."""
    from compiler.graph import interpret
    from compiler.models import attention_block

    for r in rows:
        g, feeds = attention_block(seed, d_model=r["d_model"], seq=r["seq"], causal=r["causal"])
        runs = [run_golden_graph(g, feeds, seed, caps, firmware) for _ in range(repeat)]
        golden_speed(r, runs)
        ref = interpret(g, feeds)
        r["golden_equal"] = all(np.array_equal(outs[k], ref[k]) for outs, _ in runs for k in ref)
        r["exact"] = r["exact"] and r["golden_equal"]
    return min(rows, key=lambda r: r["golden_speedup_cpu"]) if rows else None


def read_hex_words(path):
    """A $writememh file (no address records) -> uint8 array, little-endian words."""
    lines = [ln.strip() for ln in open(path) if ln.strip() and not ln.startswith(("@", "//"))]
    be = np.frombuffer(bytes.fromhex("".join(ln.rjust(16, "0") for ln in lines)), np.uint8)
    return be.reshape(-1, 8)[:, ::-1].reshape(-1)


def speed_ratios(window, cocotb_wall, cocotb_cpu, cpp_runs):
    """Simulation speed of the same ``window`` cycles on both sides: the cocotb run's wall and CPU
    seconds of ``Device.run`` against the median wall and median CPU seconds (``window_wall_s``,
    ``window_cpu_s``) of the C++ replays ``cpp_runs``. Ratio = cocotb cycles/s / C++ cycles/s, by
    wall and by CPU; the goal is judged on the CPU ratio (both sides are one single-threaded
    process, so CPU seconds do not count the time other processes on a shared machine held the
    core). ``cocotb_cpu`` None (an older run): the CPU figures are None."""
    cpp_wall = statistics.median(x["window_wall_s"] for x in cpp_runs)
    cpus = [x.get("window_cpu_s") for x in cpp_runs]
    cpp_cpu = statistics.median(cpus) if None not in cpus else None
    out = dict(window_cycles=window, cocotb_wall_s=cocotb_wall, cocotb_cpu_s=cocotb_cpu,
               cpp_wall_s=cpp_wall, cpp_wall_runs_s=[x["window_wall_s"] for x in cpp_runs],
               cpp_cpu_s=cpp_cpu, cpp_cpu_runs_s=cpus,
               cocotb_cycles_per_s=window / cocotb_wall, cpp_cycles_per_s=window / cpp_wall,
               ratio_wall=cpp_wall / cocotb_wall)
    if cocotb_cpu and cpp_cpu:
        out.update(cocotb_cycles_per_cpu_s=window / cocotb_cpu, cpp_cycles_per_cpu_s=window / cpp_cpu,
                   ratio_cpu=cpp_cpu / cocotb_cpu)
    else:
        out.update(cocotb_cycles_per_cpu_s=None, cpp_cycles_per_cpu_s=None, ratio_cpu=None)
    return out


def harness(target, run_dir, traced, repeat=5):
    """Replay the traced run's ``trace.txt`` ``repeat`` times on the bare C++ harness; the speeds
    and ratios (:func:`speed_ratios`) and the replay's checks against the cocotb run."""
    t = time.monotonic()
    binary = simbuild.cpp_build(target)
    build_s = time.monotonic() - t
    work = run_dir / "cpp"
    runs = [simbuild.cpp_replay(binary, run_dir / "trace.txt", work) for _ in range(repeat)]
    r = runs[-1]
    mine, theirs = read_hex_words(work / "replay_region.hex"), read_hex_words(run_dir / "region.hex")
    from verif.model_run import HOST_BASE
    off = traced["out_addr"] - HOST_BASE
    n = traced["out_bytes"]
    window = traced["window"][1] - traced["window"][0]
    assert all(x["window_cycles"] == window for x in runs), ([x["window_cycles"] for x in runs], window)
    return dict(
        speed_ratios(window, traced["rtl_wall_s"], traced.get("rtl_cpu_s"), runs),
        build_s=build_s, cocotb_backend_calls=traced.get("backend_calls"),
        cpp_total_wall_s=statistics.median(x["total_wall_s"] for x in runs), cpp_total_cycles=r["cycles"],
        csr_writes=r["csr_writes"], csr_reads=r["csr_reads"],
        read_mismatches=max(x["read_mismatches"] for x in runs),
        loads=r["loads"], pokes=r["pokes"], output_equal=bool(np.array_equal(mine[off:off + n], theirs[off:off + n])),
        region_equal=bool(np.array_equal(mine, theirs)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=8, choices=(4, 8, 16))
    ap.add_argument("--sizes", default="256,32,64,128", help="GEMM sizes; the first is traced and "
                    "used for the goals")
    ap.add_argument("--attention", default=ATTENTION_SIZES, help="attention block sizes, "
                    "d_model x sequence ('' for none)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-cpp", action="store_true", help="skip the bare C++ harness")
    ap.add_argument("--no-decode", dest="decode", action="store_false",
                    help="skip the decode-shaped command-list sequences")
    ap.add_argument("--no-costmodel", dest="costmodel", action="store_false",
                    help="skip the cost model's validation on the random graph family")
    ap.add_argument("--no-llm", dest="llm", action="store_false",
                    help="skip the LLM serving figures (tools/bench_llm.py)")
    ap.add_argument("--costmodel-seed", type=int, default=None,
                    help="the graph family's seed (default: SEED= or verif.graph_family."
                         "VALIDATION_SEED)")
    ap.add_argument("--costmodel-count", type=int, default=None,
                    help="graphs in the family (default verif.graph_family.COUNT)")
    args = ap.parse_args(argv)
    t_all = time.monotonic()
    from tools.simbuild import soc_target
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
    data["loadavg_rtl"] = os.getloadavg()
    failed = None
    env = {"KAKI_FW_ELF": str(elf), "KAKI_BENCH_SIZES": args.sizes,
           "KAKI_BENCH_ATTENTION": args.attention, **SIM_ENV}
    try:
        simbuild.run(target, "tools.bench", testcase="control", seed=args.seed,
                     tag="bench_control", extra_env=env, repro=lambda seed: "make bench")
    except AssertionError as e:
        failed = e
    control_dir = simbuild.last_run_dir()
    try:
        simbuild.run(target, "tools.bench", testcase="bench", seed=args.seed, tag="bench",
                     extra_env=env, repro=lambda seed: "make bench")
    except AssertionError as e:
        failed = failed or e
    run_dir = simbuild.last_run_dir()
    if args.decode:
        try:
            simbuild.run(target, "tools.bench", testcase="decode", seed=args.seed,
                         tag="bench_decode", extra_env=env, repro=lambda seed: "make bench")
        except AssertionError as e:
            failed = failed or e
        decode_file = simbuild.last_run_dir() / "decode_rtl.json"
        if decode_file.exists():
            data["decode"] = json.loads(decode_file.read_text())["rows"]
    if args.llm:
        data["llm"] = llm_figures(target, args.seed, elf, env)
        if data["llm"].get("failed"):
            failed = failed or AssertionError(data["llm"]["failed"])
    if args.costmodel:
        from verif import graph_family
        cm_seed = (graph_family.family_seed() if args.costmodel_seed is None
                   else args.costmodel_seed)
        cm_count = args.costmodel_count or graph_family.COUNT
        print(f"[bench] cost model validation: graph family seed {cm_seed}, {cm_count} graphs")
        try:
            simbuild.run(target, "tools.bench", testcase="costmodel", seed=args.seed,
                         tag="bench_costmodel", extra_env={
                             **env, "KAKI_COSTMODEL_SEED": str(cm_seed),
                             "KAKI_COSTMODEL_COUNT": str(cm_count)},
                         repro=lambda seed: f"python -m tools.bench --costmodel-seed {cm_seed}")
        except AssertionError as e:
            failed = failed or e
        cm_file = simbuild.last_run_dir() / "costmodel_rtl.json"
        if cm_file.exists():
            data["costmodel"] = json.loads(cm_file.read_text())
    if not (run_dir / "bench_rtl.json").exists():
        print(f"FAILED: the RTL run produced no results: {failed}; log dir {run_dir}", file=sys.stderr)
        return 1
    rtl = json.loads((run_dir / "bench_rtl.json").read_text())
    data["run_dir"] = str(run_dir.relative_to(simbuild.REPO))
    data["sizes"] = rtl["sizes"]
    data["attention"] = rtl.get("attention", [])
    data["cocotb_idle_clock"] = rtl.get("idle_clock")
    from spec.capabilities import Capabilities
    from hdl_gen.config import KakiConfig
    caps = Capabilities.from_config(KakiConfig(dim=args.dim))
    print("[bench] golden device model runs")
    data["loadavg_golden"] = os.getloadavg()
    for r in data["sizes"]:
        # Median of 3: a golden run takes tens of ms, where the load of a shared machine shows.
        runs = [run_golden(r["size"], args.seed, caps, elf) for _ in range(3)]
        out, meas = golden_speed(r, runs)
        rtl_out = np.load(run_dir / f"out_{r['size']}.npy")
        r["golden_cycles"] = (meas["t1"] - meas["t0"]) & 0xFFFF_FFFF
        r["golden_equal_rtl"] = all(bool(np.array_equal(o, rtl_out)) for o, _ in runs)
        r["exact"] = r["exact"] and r["golden_equal_rtl"]
    worst = golden_attention(data["attention"], args.seed, caps, elf)
    traced = data["sizes"][0]
    goals = dict(golden_speedup=traced["golden_speedup_cpu"])
    data["golden_speedup_wall"] = {f"{traced['size']}^3": traced["golden_speedup"]}
    why = dict(golden_speedup=(f"RTL {traced['rtl_cpu_s']:.2f} s CPU ({traced['rtl_wall_s']:.2f} "
                               f"s wall), golden {traced['golden_cpu_s'] * 1000:.0f} ms CPU "
                               f"({traced['golden_wall_s'] * 1000:.0f} ms wall)"))
    if worst is not None:
        goals["golden_speedup_attention"] = worst["golden_speedup_cpu"]
        data["golden_speedup_wall"]["attention worst"] = min(
            r["golden_speedup"] for r in data["attention"])
        why["golden_speedup_attention"] = (
            f"d_model {worst['d_model']} seq {worst['seq']}{' causal' if worst['causal'] else ''}: "
            f"RTL {worst['rtl_cpu_s']:.2f} s CPU ({worst['rtl_wall_s']:.2f} s wall), golden "
            f"{worst['golden_cpu_s'] * 1000:.0f} ms CPU ({worst['golden_wall_s'] * 1000:.0f} ms "
            f"wall)")
    for r in data["sizes"]:
        goals[f"pe_util_{r['size']}"] = r["pe_util_run"]
        why[f"pe_util_{r['size']}"] = why_pe_util(r)
    mlp16 = rtl.get("mlp")
    if mlp16:
        data["mlp"] = mlp16
        goals["pe_util_mlp16"] = mlp16["pe_util_run"]
        why["pe_util_mlp16"] = why_pe_util(dict(mlp16, pe_util_gemm=mlp16["macs"] / (
            args.dim ** 2 * mlp16["gemm_busy"])))
    if (control_dir / "control_rtl.json").exists():
        from verif import control_path
        fig = json.loads((control_dir / "control_rtl.json").read_text())
        data["control"] = dict(figures=fig, lines=control_path.describe(fig))
        goals["doorbell_start"] = control_path.median(fig["doorbell_start"])
        goals["signal_start"] = control_path.median(fig["signal_start"])
        goals["cycles_per_command"] = fig["rates"][control_path.STREAMS[-1]]
    if data.get("decode"):
        goals["decode_ratio"] = max(r["ratio"] for r in data["decode"])
        why["decode_ratio"] = why_decode(data["decode"])
    if data.get("llm", {}).get("goals"):
        goals.update(data["llm"]["goals"])
        why.update(data["llm"]["why"])
    if data.get("costmodel", {}).get("rows"):
        dist = error_distribution(data["costmodel"]["rows"])
        data["costmodel"]["distribution"] = {k: v for k, v in dist.items() if k != "worst"}
        if dist["big"]["n"]:
            goals["costmodel_worst"] = dist["big"]["max"]
        why["costmodel_worst"] = why_costmodel(data["costmodel"]["rows"])
    data["why"] = why
    if not args.no_cpp and (run_dir / "trace.txt").exists():
        print("[bench] bare Verilator C++ harness replay")
        h = harness(target, run_dir, traced)
        data["harness"] = h
        goals["sim_speed_ratio"] = h["ratio_cpu"] if h["ratio_cpu"] is not None else h["ratio_wall"]
        why["sim_speed_ratio"] = why_sim_speed(h)
    data["goals"] = goals
    data["goal_size"] = traced["size"]
    data["wall_s"] = time.monotonic() - t_all
    out = simbuild.BUILD / "bench.json"
    out.write_text(dumps_json(data))
    png = simbuild.BUILD / "bench.png"
    plot(data, png)
    print()
    print(format_table(data))
    if data.get("llm", {}).get("summary"):
        print("\n".join(bench_llm.format_lines(data["llm"]["summary"])))
    from tools.synth import load_report, summary
    print(summary(load_report()))
    print(f"\n  written: {out.relative_to(simbuild.REPO)}, {png.relative_to(simbuild.REPO)}; "
          f"{data['wall_s']:.0f} s wall")
    ok = failed is None and all(r["exact"] for r in data["sizes"] + data["attention"]
                                + ([data["mlp"]] if "mlp" in data else [])
                                + data.get("decode", [])
                                + data.get("costmodel", {}).get("rows", []))
    if "harness" in data:
        ok = ok and data["harness"]["output_equal"] and not data["harness"]["read_mismatches"]
    if not ok:
        print(f"FAILED: {failed or 'outputs differ'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
