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

from compiler.lower_gemm import encode_phases, host_layout, lower_gemm_epilogue, plan_gemm
from golden import ops
from golden.device_model import DeviceModel

from .chip_tb import ChipTB

PHASES = ("load", "gemm", "epilogue", "store")


def make_case(rng, m, k, n):
    return dict(a=rng.integers(-128, 128, (m, k), dtype=np.int8),
                b=rng.integers(-128, 128, (k, n), dtype=np.int8),
                bias=rng.integers(-2**16, 2**16, n, dtype=np.int32),
                mult=rng.integers(2**29, 2**30, n, dtype=np.int32),
                shift=rng.integers(38, 42, n, dtype=np.int32),
                zp=int(rng.integers(-16, 16)))


@cocotb.test()
async def gemm_requant_relu(dut):
    m, k, n = (int(os.environ.get(f"KAKI_DEMO_{x}", d)) for x, d in (("M", 64), ("K", 64), ("N", 64)))
    tb = ChipTB(dut)
    caps = await tb.reset()
    await tb.enable_irqs()
    rng = np.random.default_rng(tb.seed)
    case = make_case(rng, m, k, n)
    layout, end = host_layout(m, k, n)
    tensors = [(layout.a, case["a"]), (layout.b, case["b"]), (layout.bias, case["bias"]),
               (layout.mult, case["mult"]), (layout.shift, case["shift"])]
    for addr, arr in tensors:
        await tb.host.load(addr, arr.tobytes())
    plan = plan_gemm(m, k, n, caps, layout)
    phases = encode_phases(lower_gemm_epilogue(plan, zero_point=case["zp"]))
    tb.log.info(f"GEMM {m}x{k}x{n} on a {caps.dim}x{caps.dim} array, seed {tb.seed}: "
                f"{sum(map(len, phases))} commands")

    report = {"m": m, "k": k, "n": n, "dim": caps.dim, "seed": tb.seed, "phases": {}}
    for name, phase in zip(PHASES, phases):
        await tb.clear_perf()
        await tb.run_phases([phase])
        report["phases"][name] = await tb.perf()

    got = np.frombuffer(await tb.host.read(layout.out, m * n), dtype=np.int8).reshape(m, n)

    # Golden device model: the same descriptors on the functional model.
    model = DeviceModel(caps, host_bytes=end)
    for addr, arr in tensors:
        raw = np.frombuffer(arr.tobytes(), np.uint8)
        model.host[addr:addr + raw.size] = raw
    for phase in phases:
        model.run(phase)
    expect_model = model.host[layout.out:layout.out + m * n].view(np.int8).reshape(m, n)
    expect_ref = ops.vector_epilogue(ops.gemm(case["a"], case["b"]), bias=case["bias"],
                                     mult=case["mult"], shift=case["shift"],
                                     zero_point=case["zp"], relu=True)
    report["match_model"] = bool(np.array_equal(got, expect_model))
    report["match_numpy"] = bool(np.array_equal(got, expect_ref))
    report["mismatches"] = int((got != expect_ref).sum())
    with open("report.json", "w") as f:
        json.dump(report, f, indent=1)
    assert report["match_model"] and report["match_numpy"], \
        f"{report['mismatches']} of {m * n} outputs differ from the reference"
