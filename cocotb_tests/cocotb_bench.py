"""`make bench`, cocotb side: GEMM datapath utilization against size on the RTL chip.

For each size S the DMA loads A[S, S] and B[S, S], then one GEMM command runs alone (the number
reported), then the int32 result is stored and checked bit-exactly so the figure is trustworthy.
"""
import json
import os
import time

import cocotb
import numpy as np

from compiler.lower_gemm import gemm_command, store_accumulator
from golden import ops

from .chip_tb import ChipTB


@cocotb.test()
async def gemm_utilization(dut):
    sizes = [int(s) for s in os.environ.get("KAKI_BENCH_SIZES", "32,64,128,256").split(",")]
    tb = ChipTB(dut)
    caps = await tb.reset()
    await tb.enable_irqs()
    rng = np.random.default_rng(tb.seed)
    results = []
    for s in sizes:
        a = rng.integers(-128, 128, (s, s), dtype=np.int8)
        b = rng.integers(-128, 128, (s, s), dtype=np.int8)
        plan, end = await tb.load_gemm_operands(a, b)
        await tb.clear_perf()
        wall = time.perf_counter()
        await tb.run_commands([gemm_command(plan)])
        wall = time.perf_counter() - wall
        perf = await tb.perf()
        await tb.run_commands(store_accumulator(plan, end))
        c = np.frombuffer(await tb.host.read(end, 4 * s * s), dtype=np.int32).reshape(s, s)
        assert np.array_equal(c, ops.gemm(a, b)), f"GEMM {s}^3 result differs from the reference"
        busy = perf["PERF_GEMM_BUSY"]
        util = s ** 3 / (caps.dim ** 2 * busy)
        results.append({"size": s, "gemm_busy_cycles": busy, "active_cycles": perf["PERF_GEMM_ACTIVE"],
                        "pe_utilization": util, "sim_cycles_per_s": perf["PERF_CYCLES"] / wall})
        tb.log.info(f"GEMM {s}^3: {busy} cycles, PE utilization {util:.1%}")
    with open("bench.json", "w") as f:
        json.dump({"dim": caps.dim, "seed": tb.seed, "results": results}, f, indent=1)
