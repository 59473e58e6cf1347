"""`make bench`, pure-Python parts (no cocotb, no simulator): the GEMM workload, the CSR /
host-memory trace that the bare Verilator C++ harness replays, and the report (table, plot).

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
import json
from dataclasses import dataclass, field

import numpy as np

__all__ = ["gemm_graph", "Trace", "format_table", "goal_rows", "plot", "parse_trace"]


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
GOALS = [  # key, text, goal, unit
    ("sim_speed_ratio", "cocotb cycles/s vs bare Verilator C++ (same RTL, same stream)", 0.7, "x"),
    ("pe_util_256", "PE utilization, {size}^3 GEMM on {dim}x{dim}, whole run incl. DMA", 0.90, "%"),
    ("golden_speedup", "golden model speed vs RTL (wall, same program)", 100.0, "x"),
]


def goal_rows(data):
    """(description, measured, goal, measured / goal, met) per goal; measured None = not measured."""
    rows = []
    for key, text, goal, unit in GOALS:
        v = data.get("goals", {}).get(key)
        text = text.format(size=data.get("goal_size", 256), dim=data.get("dim", 8))
        rows.append((text, v, goal, None if v is None else v / goal, v is not None and v >= goal, unit))
    return rows


def _fmt(v, unit):
    if v is None:
        return "n/a"
    return f"{v:.1%}" if unit == "%" else f"{v:.3g}x" if unit == "x" else f"{v:.3g}"


def format_table(data):
    """The printed report of ``make bench`` from the bench.json dict."""
    out = [f"Kaki {data['dim']}x{data['dim']} benchmark (seed {data['seed']})", ""]
    out.append(f"  {'goal':<62}{'measured':>10}{'goal':>8}{'ratio':>8}  met")
    for text, v, goal, ratio, met, unit in goal_rows(data):
        out.append(f"  {text:<62}{_fmt(v, unit):>10}{_fmt(goal, unit):>8}"
                   f"{'n/a' if ratio is None else f'{ratio:.2f}':>8}  {'yes' if met else 'NO'}")
    out.append("")
    out.append(f"  {'GEMM':>6}{'cmds':>6}{'run cycles':>12}{'GEMM busy':>11}{'util run':>10}"
               f"{'util GEMM':>11}{'RTL wall s':>12}{'cycles/s':>10}{'golden s':>10}  bit-exact")
    for r in data.get("sizes", []):
        out.append(f"  {r['size']:>6}{r['commands']:>6}{r['run_cycles']:>12}{r['gemm_busy']:>11}"
                   f"{r['pe_util_run']:>10.1%}{r['pe_util_gemm']:>11.1%}{r['rtl_wall_s']:>12.2f}"
                   f"{r['rtl_cycles_per_s']:>10.0f}{r.get('golden_wall_s', float('nan')):>10.3f}"
                   f"  {'yes' if r.get('exact') else 'NO'}")
    h = data.get("harness")
    if h:
        out.append("")
        out.append(f"  sim speed, same {h['window_cycles']}-cycle window (Device.run of the "
                   f"{data.get('goal_size', 256)}^3 program): cocotb {h['cocotb_cycles_per_s']:.0f} "
                   f"cycles/s, bare C++ {h['cpp_cycles_per_s']:.0f} cycles/s (median of "
                   f"{len(h.get('cpp_wall_runs_s', [0]))} replays)")
        idle = data.get("cocotb_idle_clock")
        if idle:
            out.append(f"  cocotb ceiling (clock only, no Python wake-up, {idle['cycles']} cycles): "
                       f"{idle['cycles_per_s']:.0f} cycles/s = "
                       f"{idle['cycles_per_s'] / h['cpp_cycles_per_s']:.2f} of bare C++")
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
    ct = data.get("compile_s")
    if ct:
        out.append("")
        out.append("  compile time (median of 3): "
                   + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in ct.items()))
    return "\n".join(out)


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
    ``(outputs, meas)`` with ``t0``/``t1`` (TIMESTAMP around the run), ``perf``, ``wall``."""
    import time

    from spec import registers as R

    from .demo_run import read_outputs, upload_buffers

    clock = clock or time.perf_counter
    prog = cm.program
    bufs = await upload_buffers(dev, cm, feeds)
    b = dev.backend
    await b.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1))
    t0 = await b.read(R.TIMESTAMP)
    if before:
        await before()
    w0 = clock()
    await dev.run(prog, bufs)
    wall = clock() - w0
    if on_end:
        await on_end()
    t1 = await b.read(R.TIMESTAMP)
    if after:
        await after(bufs)
    perf = {n: await b.read(R.REGISTERS[n]) for n in ("PERF_GEMM_BUSY", "PERF_DMA_LOAD_BUSY",
                                                       "PERF_DMA_STORE_BUSY", "PERF_VEC_BUSY")}
    outs = await read_outputs(cm, bufs)
    addr = {t.name: bufs[t.name].addr for t in cm.graph.outputs}
    for buf in bufs.values():
        buf.free()
    return outs, dict(t0=t0, t1=t1, perf=perf, wall=wall, out_addr=addr)
