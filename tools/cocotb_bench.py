"""`make bench`, cocotb side: compiled S³ int8 GEMMs (+ requantize) through driver -> firmware -> RTL.

For each size in KAKI_BENCH_SIZES (the first one is the traced program, 256 by default): compile
the graph for the capabilities the chip reports, run it with ``Device.run`` (ChipTB backend, the
firmware ELF on the control core), check the output bit-exactly against the graph's NumPy
interpreter, and record TIMESTAMP around the run, PERF busy counters and the wall time of
``Device.run``.

From reset to the end of the first program's run, every CSR access the driver makes and every
host-memory backdoor write ($readmemh file load or VPI write) is recorded with its cycle (``bench_lib.Trace``), ending with a dump of
the driver's host-memory region; ``trace.txt`` and ``region.hex`` (that dump) let the bare
Verilator C++ harness replay the same stream on the same RTL. Results go to ``bench_rtl.json`` and
``out_<size>.npy`` in the run directory.
"""
import json
import os
import shutil
import time

import cocotb
import numpy as np
from cocotb.triggers import Timer
from cocotb.utils import get_sim_time

from compiler.compile import compile_graph
from compiler.graph import interpret
from driver.device import Device

from . import bench_lib as B
from . import demo_run as D
from verif.chip_tb import ChipTB
from verif.soc_target import CLOCK_NS, FIRST_EDGE_NS


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
        self.trace = B.Trace()
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
        g, feeds = B.gemm_graph(size, seed=tb.seed)
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

        outs, meas = await B.run_program(dev, cm, feeds, before=before, on_end=on_end, after=after)
        ref = interpret(g, feeds)
        (name,) = ref
        exact = bool(np.array_equal(outs[name], ref[name]))
        np.save(f"out_{size}.npy", outs[name])
        cycles = (meas["t1"] - meas["t0"]) & D.M32
        macs = size ** 3
        busy = meas["perf"]["PERF_GEMM_BUSY"]
        results.append(dict(
            size=size, commands=len(cm.program.commands), macs=macs, run_cycles=cycles,
            gemm_busy=busy, perf=meas["perf"], rtl_wall_s=meas["wall"],
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
    # The ceiling of this simulator under cocotb: the clock alone, no Python wake-up at all.
    idle_cycles = 100_000
    w = time.perf_counter()
    await Timer(idle_cycles * CLOCK_NS, "ns")
    idle = dict(cycles=idle_cycles, wall_s=time.perf_counter() - w)
    idle["cycles_per_s"] = idle_cycles / idle["wall_s"]
    with open("bench_rtl.json", "w") as f:
        json.dump(dict(dim=caps.dim, seed=tb.seed, sizes=results, idle_clock=idle,
                       trust_inertial_writes=bool(getattr(cocotb.handle, "_trust_inertial", False))),
                  f, indent=1)
    assert all(r["exact"] for r in results), "RTL output differs from the NumPy interpreter"
