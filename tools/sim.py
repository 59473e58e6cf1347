"""`make sim`: compile int8 models, run them driver -> firmware -> RTL under Verilator, check them
bit-exactly against the golden device model and the NumPy reference, print a report.

    python -m tools.sim [--dim 8] [--model mlp|conv|all|torch_mlp|torch_conv|path/to/file.py:function]
                        [--seed N] [--waves 0|1] [--trace build/trace.json]

One module, three roles:

* :func:`main` is the CLI: it validates every option (argparse ``type=`` validators; a bad value
  is one line on stderr and exit status 2, before any simulator starts; a model of your own is
  imported, built and compiled first), builds the simulator and runs this same module inside it
  as the cocotb test module, then prints the report the test wrote.
* :func:`sim_models` is the ``@cocotb.test()`` that runs inside the simulator: for each model
  (KAKI_DEMO_MODELS, compiler/models.py names or ``file.py:function`` specs) it compiles it for
  the capabilities the chip reports, runs the program with ``Device.run`` on the RTL chip (ChipTB
  backend, the firmware on the RV32 control core serving the command queues), reads the outputs
  and compares them bit for bit with the same program run through the driver on the golden chip
  model and with the graph's NumPy interpreter; ``report.json`` (and with KAKI_DEMO_TRACE a
  Chrome/Perfetto trace) goes in the run directory.
* :func:`analyse`, :func:`format_report`, :func:`trace_events`: the report, a pure function of the
  completion records, PERF counters and the cost model (tests/test_demo_models.py runs it on the
  golden backend via verif/model_run.py).

Report columns (per layer = the commands whose note starts with the layer's name):
  predicted  cost model (compiler/cost.py): the simulated pipelined run of the layer's commands
  measured   completion-record TIMESTAMPs: last record of the layer minus last record of the
             previous layer (the run start for the first)
  PE util    the model's MACs / (dim^2 * measured cycles); "identity" for a GEMM the compiler
             inserted (W = I, carrying an add / ReLU / requantize / max-reduce epilogue): its
             MACs are not the model's and count in no utilization figure
  DMA in/out KiB the layer's DMA descriptors (program); the total line is the PERF counters
"predicted serial" = every command one after the other: engine cycles plus, per engine command,
the issue and the start / completion-request latencies (so it is never below the prediction).
Engine busy cycles and DMA bytes are the PERF_* counters, cleared just before Device.run.
Dispatch overhead = run cycles (last completion record) minus the busiest engine's busy cycles,
i.e. the time no engine work explains (issue, event round trips, record writes).
"""
import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import cocotb

from spec.descriptors import COMMANDS, ENGINE_OPCODES, Engine, Opcode

DIMS = (4, 8, 16)
M32 = 0xFFFF_FFFF
#: The engine (name) serving each engine opcode, from the command table.
ENGINE = {op: COMMANDS[op].engine.name for op in ENGINE_OPCODES}
#: Perfetto thread of the layer spans: after the issue unit's (1) and one per engine.
LAYER_TID = 2 + len(Engine)


# ============================================================================ the report

def layer_of(cmd):
    """The layer (fused GEMM name) a command belongs to, from its note ``"<layer>: ..."``."""
    return cmd.note.split(":", 1)[0] if ":" in cmd.note else "?"


def attended(g):
    """(query, key) pairs of one batch item and head an attention computes: all ``Sq * Sk``, or
    with a causal mask the unmasked ones (the MACs counted are the model's, not the masked)."""
    if not g.attrs["causal"]:
        return g.sq * g.sk
    return sum(min(g.sk, i + g.attrs["mask_offset"] + 1) for i in range(g.sq))


def layer_shapes(cm):
    """layer name -> (op, shape, MACs, inserted identity GEMM?): a fused GEMM's ``gemm`` and
    (M, K, N); a special-function layer's graph op and (rows, channels), no MACs; an attention's
    ``attention`` and (batch, heads, Sq, Sk, head dim) with the MACs of Q·Kᵀ and P·V (causal:
    of the unmasked pairs)."""
    out = {}
    for g in (tg.gemm for tg in cm.tiled.gemms):      # the layers as scheduled
        if g.kind == "gemm":
            out[g.name] = ("gemm", (g.a.rows, g.a.cols, g.w.cols), g.a.rows * g.a.cols * g.w.cols,
                           bool(getattr(g.w, "identity", False)))
        elif g.kind == "sfu":
            out[g.name] = (g.op, (g.m, g.k), 0, False)
        else:       # attention, or its scores / P·V part when the keys do not fit on chip
            out[g.name] = (g.kind, (g.batches, g.heads, g.sq, g.sk, g.dh),
                           (2 if g.kind == "attention" else 1) * g.batches * g.heads * g.dh
                           * attended(g), False)
    return out


def _dma_bytes(commands):
    """(bytes loaded, bytes stored) by the DMA descriptors among ``commands``."""
    size = lambda c: c.fields["rows"] * c.fields["planes"] * c.fields["row_bytes"]   # noqa: E731
    return tuple(sum(size(c) for c in commands if ENGINE.get(c.opcode) == e.name)
                 for e in (Engine.DMA_LOAD, Engine.DMA_STORE))


def serial_cycles(commands, cycles):
    """Predicted cycles of ``commands`` run one at a time: engine cycles (``cycles``; an event
    command's are its issue cycles) plus, per engine command, the issue and the issue -> start
    and done -> completion request latencies; each command's completion record then goes
    through the completion writer (``cost.CPL_WRITE`` cycles each, in order), whose last record
    ends the run. Never below ``cost.simulate``'s overlapped run."""
    from compiler import cost
    lat = cost.DISPATCH + cost.START_LAT + cost.RETIRE_LAT
    t = end = 0
    for c, n in zip(commands, cycles):
        t += n + (lat if c.opcode in ENGINE else 0)
        end = max(end, t) + cost.CPL_WRITE
    return end


def analyse(cm, meas, dim):
    """Per-layer and total numbers for the report (see the module docstring for meanings)."""
    from compiler import cost
    prog, recs, t0 = cm.program, meas["records"], meas["t0"]
    rel = [(r["timestamp"] - t0) & M32 for r in recs]
    layers = []
    for c in prog.commands:
        name = layer_of(c)
        if name not in layers:
            layers.append(name)
    shapes = layer_shapes(cm)
    rows, prev_end = [], 0
    for name in layers:
        idx = [i for i, c in enumerate(prog.commands) if layer_of(c) == name]
        sub = type("P", (), {"commands": [prog.commands[i] for i in idx]})
        cyc = [cm.cycles[i] for i in idx]
        summ = cost.summary(sub, cyc)
        end = max(rel[i] for i in idx)
        op, shape, gemm_macs, identity = shapes.get(name, ("?", (0, 0, 0), 0, False))
        macs = 0 if identity else gemm_macs
        measured = end - prev_end
        dma_in, dma_out = _dma_bytes(sub.commands)
        eng = summ["engines"]
        rows.append(dict(layer=name, op=op, shape=list(shape), macs=macs, identity=identity,
                         gemm_macs=gemm_macs, commands=len(idx), dma_in=dma_in, dma_out=dma_out,
                         predicted_gemm=eng.get("gemm", 0), predicted_vec=eng.get("vec", 0),
                         predicted_sfu=eng.get("sfu", 0),
                         predicted=summ["bound"], predicted_serial=serial_cycles(sub.commands, cyc),
                         predicted_engines=summ["engines"], predicted_control=summ["control"],
                         start=prev_end, end=end, measured=measured,
                         pe_util=macs / (dim * dim * measured) if measured else 0.0))
        prev_end = end
    perf = meas["perf"]
    macs = sum(r["macs"] for r in rows)
    total = (meas["t1"] - t0) & M32
    summ = cm.report()
    exp_in, exp_out = _dma_bytes(prog.commands)
    n_engine = sum(1 for c in prog.commands if c.opcode in ENGINE)
    busiest = max(perf[f"PERF_{e.name}_BUSY"] for e in Engine)
    last = max(rel)
    return dict(
        layers=rows, macs=macs, identity_macs=sum(r["gemm_macs"] for r in rows if r["identity"]),
        commands=len(prog.commands), engine_commands=n_engine, queues=prog.queues,
        predicted=summ["bound"], predicted_serial=serial_cycles(prog.commands, cm.cycles),
        predicted_control=summ["control"], predicted_engines=summ["engines"],
        last_record=last, total=total, perf=perf,
        pe_util_run=macs / (dim * dim * last) if last else 0.0,
        pe_util_gemm=macs / (dim * dim * perf["PERF_GEMM_BUSY"]) if perf["PERF_GEMM_BUSY"] else 0.0,
        dma_in=perf["PERF_DMA_LOAD_BYTES"], dma_out=perf["PERF_DMA_STORE_BYTES"],
        dma_in_expected=exp_in, dma_out_expected=exp_out,
        # cycles of the run not covered by the busiest engine, spread over the descriptors
        overhead=last - busiest, overhead_per_desc=(last - busiest) / len(prog.commands),
        cycles_per_desc=last / len(prog.commands))


def trace_events(cm, meas, model, pid):
    """Chrome trace events (Perfetto) of one model run. Start times are not observable from the
    records (they carry only the completion time): an engine command's span runs from the later
    of the previous completion on the same engine and the completion of the last event command
    before it on its queue, to its own completion record's TIMESTAMP (so it includes the ~250
    cycles from engine done to record write and any idle time: an upper bound)."""
    prog, recs, t0 = cm.program, meas["records"], meas["t0"]
    rel = [(r["timestamp"] - t0) & M32 for r in recs]
    tids = {"issue unit (event commands)": 1, **{e.name: 2 + i for i, e in enumerate(Engine)},
            "layers": LAYER_TID}
    ev = [dict(ph="M", pid=pid, name="process_name", args=dict(name=f"{model} (RTL)"))]
    ev += [dict(ph="M", pid=pid, tid=t, name="thread_name", args=dict(name=n)) for n, t in tids.items()]
    eng_end, q_gate = {}, {}
    for i, c in enumerate(prog.commands):
        op = Opcode(c.opcode)
        args = dict(command=i, queue=c.queue, predicted=cm.cycles[i], completion=rel[i])
        if op in ENGINE:
            eng = ENGINE[op]
            start = max(eng_end.get(eng, 0), q_gate.get(c.queue, 0))
            ev.append(dict(ph="X", pid=pid, tid=tids[eng], name=c.note, ts=start,
                           dur=max(rel[i] - start, 1), args=args))
            eng_end[eng] = rel[i]
        else:
            ev.append(dict(ph="i", s="t", pid=pid, tid=1, name=f"q{c.queue} {op.name}: {c.note}",
                           ts=rel[i], args=args))
            q_gate[c.queue] = rel[i]
    return ev


def layer_events(rows, pid):
    return [dict(ph="X", pid=pid, tid=LAYER_TID, name=r["layer"], ts=r["start"], dur=max(r["measured"], 1),
                 args=dict(predicted=r["predicted"], measured=r["measured"], macs=r["macs"]))
            for r in rows]


def _pct(x):
    return f"{x:.1%}"


def layer_table(m):
    """The per-layer table of one model's report entry: lines of equal length, the columns as
    wide as their widest cell (any layer name length)."""
    head = ["layer", "op", "shape", "cmds", "predicted", "measured", "meas/pred", "PE util",
            "GEMM/VEC/SFU busy (pred)", "DMA in", "out KiB"]
    body = []
    for L in m["layers"]:
        util = "identity" if L.get("identity") else (_pct(L["pe_util"]) if L["pe_util"] <= 1
                                                     else "overlap")
        busy = "/".join(str(L.get(f"predicted_{e}", 0)) for e in ("gemm", "vec", "sfu"))
        body.append([L["layer"], L.get("op", "gemm"), "x".join(str(v) for v in L["shape"]),
                     str(L["commands"]), str(L["predicted"]), str(L["measured"]),
                     f"{L['measured'] / max(L['predicted'], 1):.2f}", util, busy,
                     f"{L['dma_in'] / 1024:.1f}", f"{L['dma_out'] / 1024:.1f}"])
    pe = m.get("predicted_engines", {})
    body.append(["total", "", "", str(m["commands"]), str(m["predicted"]), str(m["last_record"]),
                 f"{m['last_record'] / max(m['predicted'], 1):.2f}", _pct(m["pe_util_run"]),
                 "/".join(str(pe.get(e, 0)) for e in ("gemm", "vec", "sfu")),
                 f"{m['dma_in'] / 1024:.1f}", f"{m['dma_out'] / 1024:.1f}"])
    width = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    fmt = lambda r: "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)   # noqa: E731
                                     for i, (c, w) in enumerate(zip(r, width)))
    return [fmt(head)] + [fmt(r) for r in body]


def format_report(r, wall):
    """The report (lines) of a ``report.json`` dict and whether everything passed."""
    ok = bool(r.get("models")) and r.get("pass_", False)
    out = [f"\nKaki {r['dim']}x{r['dim']}: compiled int8 models, driver -> firmware -> RTL "
           f"(seed {r['seed']})"]
    for m in r.get("models", []):
        p = m["perf"]
        ident = (f" (+{m['identity_macs']:,} in identity GEMMs the compiler inserted, not counted)"
                 if m.get("identity_macs") else "")
        out.append(f"\n  model {m['model']}: {m['commands']} descriptors ({m['engine_commands']} "
                   f"engine commands) on queues {m['queues']}; {m['macs']:,} MACs{ident}")
        out += layer_table(m)
        out.append("  (a layer's measured span runs from the previous layer's last completion "
                   "record to its own; layers overlap, so compare the totals)")
        out.append(f"  predicted serial (one command at a time, with issue and latencies): "
                   f"{m['predicted_serial']} cycles; host-observed run (TIMESTAMP around "
                   f"Device.run): {m['total']} cycles")
        pe = m["predicted_engines"]
        out.append("  engine busy cycles, measured (PERF) / predicted: " + ", ".join(
            f"{e.name} {p[f'PERF_{e.name}_BUSY']} / {pe.get(e.name.lower(), 0)}" for e in Engine))
        out.append(f"  PE utilization (the model's MACs): {m['pe_util_gemm']:.1%} of GEMM busy "
                   f"cycles, {m['pe_util_run']:.1%} of the run")
        out.append(f"  DMA bytes (PERF): in {m['dma_in']:,}, out {m['dma_out']:,} "
                   f"(program: {m['dma_in_expected']:,} / {m['dma_out_expected']:,})")
        out.append(f"  dispatch overhead: {m['overhead']} cycles not covered by the busiest engine "
                   f"= {m['overhead_per_desc']:.0f} per descriptor; {m['cycles_per_desc']:.0f} "
                   f"cycles per descriptor overall (cost model charges {m['predicted_control']} "
                   f"issue cycles)")
        out.append("  queue event-wait cycles (PERF_Q_EVENT_STALL): " + ", ".join(
            f"q{q} " + str(p[f"PERF_Q_EVENT_STALL{q}"]) for q in m["queues"]))
        res = lambda d: "PASS" if not d else f"FAIL ({d})"          # noqa: E731
        out.append(f"  bit-exact vs golden device model: {res(m['vs_golden'])}; vs NumPy: "
                   f"{res(m['vs_numpy'])}; golden vs NumPy: {res(m['golden_vs_numpy'])}")
        if m.get("vs_torch"):
            out.append("  vs PyTorch float (same input): " + ", ".join(
                f"{k} max {v['max']:.2f} / mean {v['mean']:.3f} output steps"
                for k, v in m["vs_torch"].items()))
        bad = {k: v for k, v in m["degenerate"].items() if v}
        if bad:
            out.append(f"  warning: degenerate outputs {bad}")
    out.append(f"\n  overall: {'PASS' if ok else 'FAIL'}   ({wall:.1f} s wall)")
    return out, ok


def print_report(r, wall):
    lines, ok = format_report(r, wall)
    print("\n".join(lines))
    return ok


def prepare_models(names, seed, directory):
    """Build the torch models among ``names`` here, outside the simulator (the first
    ``torch.export`` in the simulator's process takes ~25 s, ~5 s here): per model index ``i`` the
    file ``directory/i.pkl`` holds the graph, its int8 feeds and PyTorch's float outputs with the
    outputs' quantization. Returns the environment that points ``sim_models`` at them."""
    from compiler import models
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        if name not in models.TORCH_MODELS:
            continue
        import torch

        from compiler import torch_models
        imported, inputs, module = torch_models.build(name, seed)
        with torch.no_grad():
            ref = module(*(torch.as_tensor(x) for x in inputs))
        ref = ref if isinstance(ref, (tuple, list)) else (ref,)
        torch_ref = {t.name: (r.numpy(), qp.scale, qp.zero_point, nchw)
                     for (t, qp, nchw), r in zip(imported.outputs, ref)}
        with open(directory / f"{i}.pkl", "wb") as f:
            pickle.dump(dict(name=name, seed=seed, graph=imported.graph,
                             feeds=imported.quantize_inputs(*inputs), torch_ref=torch_ref), f)
    return {"KAKI_DEMO_PREBUILT": str(directory)}


def _model(i, name, seed):
    """(graph, feeds, PyTorch reference or None) of model ``name``: prebuilt by
    :func:`prepare_models` for this seed, else built here."""
    from compiler import models
    pre = Path(os.environ.get("KAKI_DEMO_PREBUILT", "/nonexistent")) / f"{i}.pkl"
    if pre.exists():
        with open(pre, "rb") as f:
            m = pickle.load(f)
        if (m["name"], m["seed"]) == (name, seed):
            return m["graph"], m["feeds"], m["torch_ref"]
    g, feeds = models.build(name, seed)
    return g, feeds, None


def torch_agreement(torch_ref, got):
    """A torch model's chip outputs against PyTorch's float outputs of the same input: per output
    the max and mean absolute error in output quantization steps."""
    import numpy as np
    out = {}
    for name, (ref, scale, zero_point, nchw) in torch_ref.items():
        q = got[name].astype(np.float64)
        q = q.transpose(0, 3, 1, 2) if nchw else q
        err = np.abs((q - zero_point) - ref / scale)
        out[name] = dict(max=float(err.max()), mean=float(err.mean()))
    return out


# ============================================================================ inside the simulator

@cocotb.test()
async def sim_models(dut):
    """Every model of KAKI_DEMO_MODELS on the RTL chip, checked against golden and NumPy."""
    from compiler import models
    from compiler.compile import compile_graph
    from compiler.graph import interpret
    from driver.device import Device
    from verif import model_run as MR
    from verif.chip_tb import ChipTB
    from verif.functional_coverage import async_probe

    tb = ChipTB(dut)
    await tb.reset()
    elf = os.environ["KAKI_FW_ELF"]
    dev = await Device.open(async_probe(tb, tb.caps.dim), host_base=MR.HOST_BASE,
                            host_bytes=MR.HOST_BYTES, firmware=elf)
    caps = dev.caps
    names = os.environ.get("KAKI_DEMO_MODELS", "mlp,conv").split(",")
    report = dict(dim=caps.dim, seed=tb.seed, models=[], pass_=False)
    trace = []
    try:
        for pid, name in enumerate(names, 1):
            shown = models.display_name(name)
            g, feeds, torch_ref = _model(pid - 1, name, tb.seed)
            cm = compile_graph(g, caps)
            tb.log.info(f"{shown}: {len(cm.program.commands)} commands on queues {cm.program.queues}")
            w0 = time.monotonic()
            got, meas = await MR.run_model(dev, cm, feeds)
            wall = time.monotonic() - w0
            ref = interpret(g, feeds)
            golden = MR.run_golden(cm, feeds, elf, seed=tb.seed)
            entry = dict(model=shown, wall=wall, **analyse(cm, meas, caps.dim),
                         vs_golden=MR.compare(got, golden), vs_numpy=MR.compare(got, ref),
                         golden_vs_numpy=MR.compare(golden, ref),
                         degenerate={k: models.degenerate(v) for k, v in ref.items()})
            entry["pass"] = not (entry["vs_golden"] or entry["vs_numpy"] or entry["golden_vs_numpy"])
            if torch_ref is not None:
                entry["vs_torch"] = torch_agreement(torch_ref, got)
            report["models"].append(entry)
            tb.log.info(f"{shown}: {'PASS' if entry['pass'] else 'FAIL'} in {wall:.1f} s wall, "
                        f"{entry['last_record']} cycles")
            if os.environ.get("KAKI_DEMO_TRACE"):
                trace += trace_events(cm, meas, shown, pid) + layer_events(entry["layers"], pid)
        report["pass_"] = all(m["pass"] for m in report["models"])
    finally:
        with open("report.json", "w") as f:
            json.dump(report, f, indent=1)
        if os.environ.get("KAKI_DEMO_TRACE"):
            with open(os.environ["KAKI_DEMO_TRACE"], "w") as f:
                json.dump(dict(traceEvents=trace, otherData=dict(
                    clock="1 trace microsecond = 1 chip cycle (timestamps relative to each "
                          "model's run start, TIMESTAMP read before Device.run)",
                    measured="completion-record timestamps (instant events and span ends)",
                    derived="span starts: the later of the previous completion on the same engine "
                            "and the last event command's completion on the same queue; spans "
                            "include the ~250-cycle engine-done-to-record latency",
                    dim=caps.dim, seed=tb.seed)), f)
    assert report["pass_"], "outputs differ: " + "; ".join(
        f"{m['model']}: {m['vs_golden'] or m['vs_numpy'] or m['golden_vs_numpy']}"
        for m in report["models"] if not m["pass"])


# ============================================================================ the CLI

class _Parser(argparse.ArgumentParser):
    """Errors are one line (``sim: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def dim_arg(text):
    """DIM: the array size, 4, 8 or 16."""
    if text.strip() not in {str(d) for d in DIMS}:
        raise argparse.ArgumentTypeError(f"DIM={text!r}: the array size must be 4, 8 or 16")
    return int(text)


def seed_arg(text):
    """SEED: a non-negative integer below 2**31."""
    t = text.strip()
    if not t.isdigit() or int(t) >= 2**31:
        raise argparse.ArgumentTypeError(f"SEED={text!r}: must be a non-negative integer below 2**31")
    return int(t)


def waves_arg(text):
    """WAVES: 0 or 1."""
    if text.strip() not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"WAVES={text!r}: must be 0 or 1")
    return text.strip() == "1"


def trace_arg(text):
    """TRACE: a file path whose directory exists or can be created (not a directory itself)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("TRACE='': give a file path, e.g. build/trace.json")
    p = Path(text).expanduser()
    if p.is_dir() or text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"TRACE={text!r} is a directory: give a file path, e.g. "
                                         f"{text.rstrip('/')}/trace.json")
    parent = p.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"TRACE={text!r}: cannot create it under {parent}")
    return text


def model_arg(text):
    """MODEL: all, a built-in model name or path/to/file.py:function (file and function exist;
    what the function returns is checked once the arguments are parsed)."""
    from compiler import models
    known = models.MODELS + models.TORCH_MODELS + ("all", "llm")
    if text in known:
        return text
    if not models.is_user_spec(text):
        raise argparse.ArgumentTypeError(f"MODEL={text!r}: one of {', '.join(known)}, or "
                                         f"path/to/file.py:function (a model of your own)")
    if "," in text:
        raise argparse.ArgumentTypeError(f"MODEL={text!r}: the path must not contain a comma")
    try:
        models._user_function(text)
    except models.UserModelError as e:
        raise argparse.ArgumentTypeError(str(e))
    path, fn = text.rsplit(":", 1)
    return f"{Path(path).resolve()}:{fn}"


def parse_args(argv=None):
    ap = _Parser(prog="sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=dim_arg, default=8, help="array size: 4, 8 or 16 (DIM)")
    ap.add_argument("--model", type=model_arg, default="all",
                    help="all = mlp, conv; torch_mlp / torch_conv (the torch extra); llm (the "
                         "character LM served to 4 concurrent requests, tools/sim_llm.py); or "
                         "path/to/file.py:function returning (Graph, feeds) or "
                         "(torch.nn.Module, example inputs) (MODEL)")
    ap.add_argument("--seed", type=seed_arg, default=None, help="weights and inputs (SEED)")
    ap.add_argument("--waves", type=waves_arg, default=False, nargs="?", const=True,
                    help="1: debug build with a VCD in the run dir (WAVES)")
    ap.add_argument("--trace", type=trace_arg, default=None,
                    help="write a Chrome/Perfetto trace JSON here (TRACE)")
    return ap, ap.parse_args(argv)


def check_user_model(spec, dim, seed):
    """Build and compile a model of your own for a ``dim`` chip (before any simulator starts);
    returns an error line or None."""
    from compiler import models
    from compiler.compile import compile_graph
    from compiler.errors import CompileError
    from hdl_gen.config import KakiConfig
    from spec.capabilities import Capabilities

    try:
        g, _ = models.load_user_model(spec, seed)
        compile_graph(g, Capabilities.from_config(KakiConfig(dim=dim)))
    except (models.UserModelError, CompileError) as e:
        return f"MODEL={models.display_name(spec)}: {e}"
    return None


def main(argv=None):
    ap, args = parse_args(argv)
    from compiler import models
    from firmware.build import shared_elf as firmware_elf
    from tools.simbuild import soc_target

    from . import simbuild

    seed = simbuild.test_seed() if args.seed is None else args.seed
    if args.model == "llm":               # the LM served to concurrent requests (tools/sim_llm.py)
        from tools import sim_llm
        return sim_llm.run(args.dim, seed, args.waves, args.trace)
    if models.is_user_spec(args.model):
        why = check_user_model(args.model, args.dim, seed)
        if why:
            ap.error(why)
    if args.waves:
        os.environ["KAKI_WAVES"] = "1"
    t0 = time.monotonic()
    names = list(models.MODELS) if args.model == "all" else [args.model]
    env = {"KAKI_FW_ELF": str(firmware_elf()), "KAKI_DEMO_MODELS": ",".join(names),
           **prepare_models(names, seed, simbuild.BUILD / "sim" / f"models-{os.getpid()}")}
    trace = Path(args.trace).resolve() if args.trace else None
    if trace:
        trace.parent.mkdir(parents=True, exist_ok=True)
        env["KAKI_DEMO_TRACE"] = str(trace)
    extra = f" TRACE={args.trace}" if args.trace else ""
    shown = models.display_name(args.model)
    try:
        simbuild.run(soc_target(args.dim), "tools.sim", testcase="sim_models", seed=seed,
                     extra_env=env, tag="sim",
                     repro=lambda seed: f"make sim DIM={args.dim} MODEL={shown} SEED={seed} "
                                        f"WAVES=1{extra}")
        failed = None
    except AssertionError as e:
        failed = e
    report_file = simbuild.last_run_dir() / "report.json"
    ok = False
    if report_file.exists():
        ok = print_report(json.loads(report_file.read_text()), time.monotonic() - t0)
        print(f"  report: {report_file.relative_to(simbuild.REPO)}")
        if trace and trace.exists():
            print(f"  trace: {trace} (open in https://ui.perfetto.dev)")
    if failed or not ok:
        print(f"FAILED: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
