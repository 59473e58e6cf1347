"""`make sim`: one int8 GEMM with a fused bias + requantize + ReLU epilogue on the RTL chip.

DMA loads A, B and the epilogue parameters from host memory, the PE array computes into the
accumulator, the vector unit requantizes into the scratchpad and the DMA stores the int8 result.
The result is checked bit-exactly against the golden device model and the NumPy reference, and
the report (cycles per phase, PE utilization, DMA bytes) is written to ``report.json``.
"""
import json
import os

import cocotb
import numpy as np

from golden.workloads import random_gemm_case

from .chip_tb import ChipTB


@cocotb.test()
async def gemm_requant_relu(dut):
    m, k, n = (int(os.environ.get(f"KAKI_DEMO_{x}", 64)) for x in "MKN")
    tb = ChipTB(dut)
    caps = await tb.reset()
    await tb.enable_irqs()
    case = random_gemm_case(np.random.default_rng(tb.seed), m, k, n)
    tb.log.info(f"GEMM {m}x{k}x{n} on a {caps.dim}x{caps.dim} array, seed {tb.seed}")
    report = {"m": m, "k": k, "n": n, "dim": caps.dim, "seed": tb.seed, "match": False}
    try:
        report["phases"] = await tb.gemm_epilogue(case)
        report["match"] = True
    finally:
        with open("report.json", "w") as f:
            json.dump(report, f, indent=1)
