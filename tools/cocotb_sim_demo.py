"""`make sim`: compiled int8 models through driver -> firmware -> RTL.

For each model in KAKI_DEMO_MODELS (compiler/models.py): compile it for the capabilities the
chip reports, run the program with ``Device.run`` on the RTL chip (ChipTB backend, the firmware
on the RV32 control core serving the command queues), read the outputs, and compare them bit for
bit with the same program run through the driver on the golden chip model and with the graph's
NumPy interpreter. ``report.json`` (and with KAKI_DEMO_TRACE a Chrome/Perfetto trace) is written
in the run directory; ``sim_demo.py`` prints it.
"""
import json
import os
import time

import cocotb
import numpy as np

from compiler import models
from compiler.compile import compile_graph
from compiler.graph import interpret
from driver.device import Device

from . import demo_run as D
from verif.chip_tb import ChipTB
from verif.functional_coverage import async_probe


def _compare(got, ref):
    """None if equal, else a description of the first difference."""
    for k in ref:
        wrong = np.argwhere(got[k] != ref[k])
        if wrong.size:
            w = tuple(wrong[0])
            return f"{k}: {len(wrong)} of {ref[k].size} differ, first at {w}: {got[k][w]} vs {ref[k][w]}"
    return None


@cocotb.test()
async def sim_demo(dut):
    tb = ChipTB(dut)
    await tb.reset()
    elf = os.environ["KAKI_FW_ELF"]
    dev = await Device.open(async_probe(tb, tb.caps.dim), host_base=D.HOST_BASE,
                            host_bytes=D.HOST_BYTES, firmware=elf)
    caps = dev.caps
    names = os.environ.get("KAKI_DEMO_MODELS", "mlp,conv").split(",")
    report = dict(dim=caps.dim, seed=tb.seed, models=[], pass_=False)
    trace = []
    try:
        for pid, name in enumerate(names, 1):
            g, feeds = models.build(name, tb.seed)
            cm = compile_graph(g, caps)
            tb.log.info(f"{name}: {len(cm.program.commands)} commands on queues {cm.program.queues}")
            w0 = time.monotonic()
            got, meas = await D.run_model(dev, cm, feeds)
            wall = time.monotonic() - w0
            ref = interpret(g, feeds)
            golden = D.run_golden(cm, feeds, elf, seed=tb.seed)
            entry = dict(model=name, wall=wall, **D.analyse(cm, meas, caps.dim),
                         vs_golden=_compare(got, golden), vs_numpy=_compare(got, ref),
                         golden_vs_numpy=_compare(golden, ref),
                         degenerate={k: models.degenerate(v) for k, v in ref.items()})
            entry["pass"] = not (entry["vs_golden"] or entry["vs_numpy"] or entry["golden_vs_numpy"])
            report["models"].append(entry)
            tb.log.info(f"{name}: {'PASS' if entry['pass'] else 'FAIL'} in {wall:.1f} s wall, "
                        f"{entry['last_record']} cycles")
            if os.environ.get("KAKI_DEMO_TRACE"):
                trace += D.trace_events(cm, meas, name, pid) + D.layer_events(entry["layers"], pid)
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
