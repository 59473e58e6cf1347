"""`make sim MODEL=llm`: the character LM (docs/llm.md) served to concurrent requests on the RTL
chip, streamed, checked and measured (docs/serving.md "make sim MODEL=llm").

:func:`run` builds the simulator and runs ``cocotb_tests/cocotb_llm.py`` in it: the serving
engine over the chip executor, four prompts of different lengths submitted together, chunked
prefill and batched decode steps over the paged KV cache, each step a command-list launch. The
test prints every token as it streams, checks every request's tokens against the NumPy
reference of the integer model (the request run alone) and every step's logits against the
golden chip model, and writes ``report.json``; :func:`format_report` turns that into the report
below and :func:`trace` into a Perfetto trace with one track per request.

Report figures (per launch: ``PERF`` counters and TIMESTAMPs around the launch; a step runs one
launch for its decodes and one per prefill chunk):

* prefill / decode cycles per token: launch cycles / new tokens of that kind;
* tokens per second at the clock: the last routed 8x8 Fmax of ``make synth``, else 500 MHz;
* **MBU** (model bandwidth utilization) of a decode launch: (weight bytes + the KV bytes its
  tokens attend to) / (cycles x 8 bytes per cycle), the weight bytes being the bytes the launch
  loads from the program's constant buffers (weights, requantization parameters, tables), the
  KV bytes ``2 x layers x d_model`` per key a token attends to (its position + 1 keys);
* PE utilization: the model's MACs of the real tokens (linear layers, and Q·Kᵀ and P·V over
  the attended keys) / (dim² x cycles);
* dispatch share: the launch's cycles not covered by its busiest engine, over its cycles;
* batch occupancy: items per decode launch / the executor's batch limit.
"""
import json
import os
import sys
import time
from pathlib import Path

from spec.descriptors import Engine

__all__ = ["mbu", "launch_metrics", "format_report", "trace", "clock_hz", "run"]

BYTES_PER_CYCLE = 8
DEFAULT_CLOCK_HZ = 500e6


def mbu(const_bytes, work, cycles, layout):
    """Model bandwidth utilization of a launch: (``const_bytes`` loaded + the K and V bytes its
    ``work`` items ((seq, start, new tokens)) attend to) / (``cycles`` x 8 bytes per cycle), with
    ``layout`` {layers, d_model}; also returns the KV bytes."""
    kv = sum(2 * layout["layers"] * layout["d_model"] * (start + n) for _, start, n in work)
    return (const_bytes + kv) / (max(cycles, 1) * BYTES_PER_CYCLE), kv


def launch_metrics(launch, stats, layout, dim):
    """The figures of one launch (a ``report.json`` launch entry; ``stats``: its shape's
    :func:`shape_stats`; ``layout``: layers, d_model)."""
    d, layers = layout["d_model"], layout["layers"]
    cycles = max(launch["perf"].get("cycles", 0), 1)
    keys = sum(start + i + 1 for _, start, n in launch["work"] for i in range(n))
    util, kv_bytes = mbu(stats["const_load_bytes"], launch["work"], cycles, layout)
    macs = launch["new_tokens"] * stats["macs_per_row"] + 2 * layers * d * keys
    busiest = max(launch["perf"].get(f"PERF_{e.name}_BUSY", 0) for e in Engine)
    return dict(cycles=cycles, kv_bytes=kv_bytes, mbu=util,
                pe_util=macs / (dim * dim * cycles), dispatch_share=(cycles - busiest) / cycles)


def clock_hz():
    """(Hz, where it comes from): the last ``make synth`` routed 8x8 Fmax, else 500 MHz."""
    from tools.synth import load_report
    rep = load_report() or {}
    for r in rep.get("results", []):
        if r.get("config") == "8x8" and not r.get("variant") and r.get("timing") == "routed" \
                and r.get("fmax_mhz"):
            return r["fmax_mhz"] * 1e6, f"make synth's routed 8x8 Fmax ({rep.get('commit')})"
    return DEFAULT_CLOCK_HZ, "no routed 8x8 figure from make synth yet: the issue's default"


def _per_token(launches, kind):
    sel = [x for x in launches if x["kind"] == kind]
    n = sum(x["new_tokens"] for x in sel)
    return (sum(x["perf"].get("cycles", 0) for x in sel) / n if n else 0.0), n


def format_report(r, wall, dim=8):
    """Lines of the report of a ``report.json`` dict, and whether it passed."""
    ok = not r["problems"] and r["streamed_in_order"]
    hz, source = clock_hz()
    out = [f"\nKaki {dim}x{dim}: the character LM served on RTL, {len(r['prompts'])} concurrent "
           f"requests x {r['config']['max_tokens']} tokens (driver -> command lists -> firmware "
           f"-> RTL; seed {r.get('seed', '?')})\n"]
    for p, text in zip(r["prompts"], r["text"]):
        out.append(f"  {p!r} -> {text!r}")
    pre, npre = _per_token(r["launches"], "prefill")
    dec, ndec = _per_token(r["launches"], "decode")
    stats = {tuple(s["key"]): s for s in r["shapes"]}
    rows = []
    for x in r["launches"]:
        m = launch_metrics(x, stats[(x["items"], x["tokens"], x["pages"])], r["layout"], dim)
        rows.append((x, m))
    decode = [(x, m) for x, m in rows if x["kind"] == "decode"]
    mean = lambda v: sum(v) / len(v) if v else 0.0            # noqa: E731
    out.append(f"\n  {len(r['launches'])} launches in {len(r['steps'])} steps; prefill "
               f"{npre} tokens, {pre:,.0f} cycles per token; decode {ndec} tokens, {dec:,.0f} "
               f"cycles per token")
    out.append(f"  at {hz / 1e6:.0f} MHz ({source}): prefill {hz / pre if pre else 0:,.0f} "
               f"tokens/s, decode {hz / dec if dec else 0:,.0f} tokens/s")
    for b in sorted({x["items"] for x, _ in decode}):
        sel = [m for x, m in decode if x["items"] == b]
        out.append(f"  decode batch {b}: {len(sel)} launches, {mean([m['cycles'] for m in sel]):,.0f}"
                   f" cycles, MBU {mean([m['mbu'] for m in sel]):.1%}, PE util "
                   f"{mean([m['pe_util'] for m in sel]):.1%}, dispatch share "
                   f"{mean([m['dispatch_share'] for m in sel]):.1%}")
    occ = [x["items"] / r["config"]["max_batch"] for x, _ in decode]
    out.append(f"  batch occupancy of decode launches: {mean(occ):.1%} (of "
               f"{r['config']['max_batch']}); prefill launches: PE util "
               f"{mean([m['pe_util'] for x, m in rows if x['kind'] == 'prefill']):.1%}, dispatch "
               f"share {mean([m['dispatch_share'] for x, m in rows if x['kind'] == 'prefill']):.1%}")
    out.append(f"  weights read per launch: {r['shapes'][0]['const_load_bytes']:,} bytes")
    out.append(f"  streamed in order, exactly once: {'yes' if r['streamed_in_order'] else 'NO'}")
    out.append("  tokens vs NumPy reference (each request alone) and logits vs golden chip model "
               "(every step): " + ("PASS" if not r["problems"] else "FAIL: " + "; ".join(r["problems"])))
    out.append(f"\n  overall: {'PASS' if ok else 'FAIL'}   ({wall:.1f} s wall, "
               f"{r['wall']:.1f} s serving on RTL)")
    return out, ok


def trace(r):
    """Chrome/Perfetto trace: one track per request (its prefill chunks and decode tokens as
    spans of the launches that ran them), one for the launches; 1 µs = 1 cycle."""
    events = [dict(ph="M", name="process_name", pid=1, args=dict(name="Kaki LLM serving"))]
    for i, p in enumerate(r["prompts"]):
        events.append(dict(ph="M", name="thread_name", pid=1, tid=10 + i,
                           args=dict(name=f"request {i}: {p[:24]!r}")))
    events.append(dict(ph="M", name="thread_name", pid=1, tid=1, args=dict(name="launches")))
    t_first = min((x["perf"]["t0"] for x in r["launches"]), default=0)
    for x in r["launches"]:
        t0, dur = x["perf"]["t0"] - t_first, x["perf"]["cycles"]
        events.append(dict(ph="X", pid=1, tid=1, ts=t0, dur=dur,
                           name=f"{x['kind']} {x['items']}x{x['tokens']} ({x['pages']} pages)"))
        for seq, start, n in x["work"]:
            what = f"decode position {start}" if x["kind"] == "decode" else \
                f"prefill {start}..{start + n - 1}"
            events.append(dict(ph="X", pid=1, tid=10 + seq, ts=t0, dur=dur, name=what))
    return dict(traceEvents=events, otherData=dict(clock="1 trace microsecond = 1 chip cycle"))


def run(dim, seed, waves, trace_path, prompts=4, tokens=32):
    """Build, run the cocotb test, print the report; returns the exit status."""
    from firmware.build import shared_elf as firmware_elf
    from tools import simbuild
    from tools.simbuild import soc_target

    if dim != 8:
        print(f"MODEL=llm runs on the 8x8 chip (the model's compiled programs), not DIM={dim}",
              file=sys.stderr)
        return 2
    if waves:
        os.environ["KAKI_WAVES"] = "1"
    t0 = time.monotonic()
    env = {"KAKI_FW_ELF": str(firmware_elf()), "KAKI_LLM_PROMPTS": str(prompts),
           "KAKI_LLM_TOKENS": str(tokens)}
    extra = f" TRACE={trace_path}" if trace_path else ""
    failed = None
    try:
        simbuild.run(soc_target(dim), "cocotb_tests.cocotb_llm", testcase="llm_serving",
                     seed=seed, extra_env=env, tag="sim_llm",
                     repro=lambda s: f"make sim MODEL=llm SEED={s} WAVES=1{extra}")
    except AssertionError as e:
        failed = e
    report_file = simbuild.last_run_dir() / "report.json"
    ok = False
    if report_file.exists():
        r = json.loads(report_file.read_text())
        r.setdefault("seed", seed)
        lines, ok = format_report(r, time.monotonic() - t0, dim)
        print("\n".join(lines))
        print(f"  report: {report_file.relative_to(simbuild.REPO)}")
        if trace_path:
            Path(trace_path).write_text(json.dumps(trace(r)))
            print(f"  trace: {trace_path} (open in https://ui.perfetto.dev)")
    if failed or not ok:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0
