"""Run a compiled model (``compiler.compile.CompiledModel``) through the driver API on any backend:
upload its inputs and constants, clear the PERF counters, ``Device.run`` the program, read the
outputs, the completion records and the counters back.

Testbench-library material shared by ``make sim`` (tools/sim.py, RTL backend), ``make bench``,
the pyuvm model sequence (verif/uvm_env.py) and the fast tests (golden backend, :func:`run_golden`).
"""
import asyncio

import numpy as np

from spec import registers as R
from spec.descriptors import Engine
from driver.device import Device

from verif.functional_coverage import async_probe

__all__ = ["HOST_BASE", "HOST_BYTES", "M32", "PERF", "upload_buffers", "read_outputs", "run_model",
           "run_golden", "compare"]

HOST_BASE = 0x1000
HOST_BYTES = 0xF0000          # inside the RTL testbench's 1 MiB host memory
M32 = 0xFFFF_FFFF

PERF = ["PERF_CYCLES", "PERF_GEMM_ACTIVE", "PERF_GEMM_STALL", "PERF_DMA_LOAD_BYTES",
        "PERF_DMA_STORE_BYTES", "PERF_DMA_LOAD_STALL", "PERF_DMA_STORE_STALL", "PERF_VEC_STALL",
        "PERF_SFU_ACTIVE"] + [f"PERF_{e.name}_BUSY" for e in Engine] + \
    [n for n in R.REGISTERS if n.startswith(("PERF_Q_RETIRED", "PERF_Q_EVENT_STALL"))]


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


def run_golden(cm, feeds, firmware, seed=0, measure=False):
    """The same compiled program through the driver on the golden chip model (firmware on the
    RV32 ISS, the capabilities the program was compiled for); returns the outputs (with
    ``measure``: ``(outputs, meas)`` as :func:`run_model`)."""
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel

    async def go():
        chip = ChipModel(cm.caps, host_bytes=HOST_BASE + HOST_BYTES, seed=seed, engine_delay=(1, 40))
        dev = await Device.open(async_probe(GoldenBackend(chip), cm.caps.dim), host_base=HOST_BASE,
                                host_bytes=HOST_BYTES, firmware=firmware)
        return await run_model(dev, cm, feeds)
    outs, meas = asyncio.run(go())
    return (outs, meas) if measure else outs


def compare(got, ref):
    """None if every output of ``ref`` equals ``got``'s, else a description of the first difference."""
    for k in ref:
        if got[k].shape != ref[k].shape:
            return f"{k}: shape {got[k].shape} vs {ref[k].shape}"
        wrong = np.argwhere(got[k] != ref[k])
        if wrong.size:
            w = tuple(wrong[0])
            return f"{k}: {len(wrong)} of {ref[k].size} differ, first at {w}: {got[k][w]} vs {ref[k][w]}"
    return None
