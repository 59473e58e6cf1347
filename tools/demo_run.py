"""The `make sim` demo's backend-independent part: run a compiled model through the driver API
(``Device.run``) on any backend, and turn the completion records, PERF counters and the cost
model into the report and a Chrome/Perfetto trace.

Used by ``cocotb_sim_demo.py`` (RTL backend, ChipTB) and, for the bit-exact reference, with the
golden backend (:func:`run_golden`); ``tests/test_demo_models.py`` runs it on golden only.
"""
import asyncio

import numpy as np

from compiler import cost
from spec import registers as R
from spec.descriptors import Opcode
from driver.device import Device

from verif.functional_coverage import async_probe

HOST_BASE = 0x1000
HOST_BYTES = 0xF0000          # inside the RTL testbench's 1 MiB host memory
M32 = 0xFFFF_FFFF

PERF = ["PERF_CYCLES", "PERF_GEMM_BUSY", "PERF_GEMM_ACTIVE", "PERF_GEMM_STALL", "PERF_VEC_BUSY",
        "PERF_DMA_LOAD_BUSY", "PERF_DMA_STORE_BUSY", "PERF_DMA_LOAD_BYTES", "PERF_DMA_STORE_BYTES",
        "PERF_DMA_LOAD_STALL", "PERF_DMA_STORE_STALL", "PERF_VEC_STALL"] + \
    [n for n in R.REGISTERS if n.startswith(("PERF_Q_RETIRED", "PERF_Q_EVENT_STALL"))]
ENGINE = {Opcode.DMA_LOAD: "DMA load", Opcode.DMA_STORE: "DMA store", Opcode.GEMM: "GEMM",
          Opcode.VECTOR: "vector unit"}


def layer_of(cmd):
    """The layer (fused GEMM name) a command belongs to, from its note ``"<layer>: ..."``."""
    return cmd.note.split(":", 1)[0] if ":" in cmd.note else "?"


async def upload_buffers(dev, cm, feeds):
    """Device buffers for every buffer of ``cm.program``: inputs (packed from ``feeds``) and
    initialized constants uploaded, the rest allocated. Returns name -> Buffer."""
    packed = cm.pack_inputs(feeds)
    bufs = {}
    for name, spec in cm.program.buffers.items():
        if spec.role == "input":
            bufs[name] = await dev.upload(np.frombuffer(packed[name], np.uint8), spec.align)
        elif spec.role == "const" and spec.init is not None:
            bufs[name] = await dev.upload(np.frombuffer(spec.init, np.uint8), spec.align)
        else:
            bufs[name] = dev.alloc(spec.nbytes, spec.align)
    return bufs


async def read_outputs(cm, bufs):
    """The graph outputs (name -> array) read back from the program's buffers."""
    raw = {t.name: (await bufs[t.name].read(np.uint8, t.nbytes)).tobytes() for t in cm.graph.outputs}
    return cm.unpack_outputs(lambda name, nb: raw[name][:nb])


async def run_model(dev, cm, feeds):
    """Upload inputs and constants, clear PERF, ``dev.run`` the program, read outputs and records.

    Returns ``(outputs, meas)``: ``outputs`` graph output name -> array; ``meas`` with ``t0``,
    ``t1`` (TIMESTAMP around ``dev.run``), ``perf`` (PERF_* read after the run), ``records``
    (per program command, in program order: its completion record)."""
    prog = cm.program
    bufs = await upload_buffers(dev, cm, feeds)
    b = dev.backend
    await b.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1))
    t0 = await b.read(R.TIMESTAMP)
    recs = await dev.run(prog, bufs)
    t1 = await b.read(R.TIMESTAMP)
    perf = {n: await b.read(R.REGISTERS[n]) for n in PERF}
    per_cmd = [None] * len(prog.commands)
    for pq, rs in recs.items():
        idx = [i for i, c in enumerate(prog.commands) if c.queue == pq]
        assert len(idx) == len(rs), f"queue {pq}: {len(rs)} records for {len(idx)} commands"
        for i, r in zip(idx, rs):
            assert r["tag"] == prog.commands[i].tag & 0xFFFF, f"record tag {r['tag']} for command {i}"
            per_cmd[i] = r
    outs = await read_outputs(cm, bufs)
    for buf in bufs.values():
        buf.free()
    return outs, dict(t0=t0, t1=t1, perf=perf, records=per_cmd)


def run_golden(cm, feeds, firmware, seed=0):
    """The same compiled program through the driver on the golden chip model (firmware on the
    RV32 ISS, the capabilities the program was compiled for); returns the outputs."""
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel

    async def go():
        chip = ChipModel(cm.caps, host_bytes=HOST_BASE + HOST_BYTES, seed=seed, engine_delay=(1, 40))
        dev = await Device.open(async_probe(GoldenBackend(chip), cm.caps.dim), host_base=HOST_BASE,
                                host_bytes=HOST_BYTES, firmware=firmware)
        outs, _ = await run_model(dev, cm, feeds)
        return outs
    return asyncio.run(go())


def _gemm_macs(cm):
    """layer name -> (M, K, N) of its GEMM (from the tiled IR's GEMMs)."""
    out = {}
    for g in cm.fused:
        out[g.name] = (g.a.rows, g.a.cols, g.w.cols)
    return out


def _dma_bytes(commands):
    """(bytes loaded, bytes stored) by the DMA descriptors among ``commands``."""
    size = lambda c: c.fields["rows"] * c.fields["planes"] * c.fields["row_bytes"]   # noqa: E731
    return (sum(size(c) for c in commands if c.opcode == Opcode.DMA_LOAD),
            sum(size(c) for c in commands if c.opcode == Opcode.DMA_STORE))


def analyse(cm, meas, dim):
    """Per-layer and total numbers for the report (see the module doc of sim_demo for meanings)."""
    prog, recs, t0 = cm.program, meas["records"], meas["t0"]
    rel = [(r["timestamp"] - t0) & M32 for r in recs]
    layers = []
    for c in prog.commands:
        name = layer_of(c)
        if name not in layers:
            layers.append(name)
    shapes = _gemm_macs(cm)
    rows, prev_end = [], 0
    for name in layers:
        idx = [i for i, c in enumerate(prog.commands) if layer_of(c) == name]
        sub = type("P", (), {"commands": [prog.commands[i] for i in idx]})
        summ = cost.summary(sub, [cm.cycles[i] for i in idx])
        end = max(rel[i] for i in idx)
        m, k, n = shapes.get(name, (0, 0, 0))
        measured = end - prev_end
        dma_in, dma_out = _dma_bytes(sub.commands)
        rows.append(dict(layer=name, shape=[m, k, n], macs=m * k * n, commands=len(idx),
                         dma_in=dma_in, dma_out=dma_out,
                         predicted=summ["bound"], predicted_serial=summ["serial"],
                         predicted_engines=summ["engines"], predicted_firmware=summ["firmware"],
                         start=prev_end, end=end, measured=measured,
                         pe_util=m * k * n / (dim * dim * measured) if measured else 0.0))
        prev_end = end
    perf = meas["perf"]
    macs = sum(r["macs"] for r in rows)
    total = (meas["t1"] - t0) & M32
    summ = cm.report()
    exp_in, exp_out = _dma_bytes(prog.commands)
    n_engine = sum(1 for c in prog.commands if c.opcode in ENGINE)
    busiest = max(perf["PERF_GEMM_BUSY"], perf["PERF_DMA_LOAD_BUSY"], perf["PERF_DMA_STORE_BUSY"],
                  perf["PERF_VEC_BUSY"])
    last = max(rel)
    return dict(
        layers=rows, macs=macs, commands=len(prog.commands), engine_commands=n_engine,
        queues=prog.queues,
        predicted=summ["bound"], predicted_serial=summ["serial"], predicted_firmware=summ["firmware"],
        predicted_engines=summ["engines"],
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
    tids = {"firmware (event commands)": 1, "DMA load": 2, "GEMM": 3, "vector unit": 4,
            "DMA store": 5, "layers": 6}
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
    return [dict(ph="X", pid=pid, tid=6, name=r["layer"], ts=r["start"], dur=max(r["measured"], 1),
                 args=dict(predicted=r["predicted"], measured=r["measured"], macs=r["macs"]))
            for r in rows]
