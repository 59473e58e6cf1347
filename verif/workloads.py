"""Quantized GEMM workloads shared by the chip tests and benchmarks: inputs and expected outputs."""
import numpy as np

from spec.descriptors import ErrorCode

from golden import ops
from golden.device_model import DeviceModel


def random_gemm_case(rng, m, k, n):
    """Random int8 A[m,k], B[k,n] and per-channel epilogue parameters that keep outputs unsaturated."""
    return dict(a=rng.integers(-128, 128, (m, k), dtype=np.int8),
                b=rng.integers(-128, 128, (k, n), dtype=np.int8),
                bias=rng.integers(-2**16, 2**16, n, dtype=np.int32),
                mult=rng.integers(2**29, 2**30, n, dtype=np.int32),
                shift=rng.integers(37, 42, n, dtype=np.int32),
                zp=int(rng.integers(-16, 16)))


def gemm_epilogue_reference(case, relu=True):
    """NumPy reference of requant(A @ B + bias) (+ ReLU)."""
    return ops.vector_epilogue(ops.gemm(case["a"], case["b"]), bias=case["bias"],
                               mult=case["mult"], shift=case["shift"], zero_point=case["zp"],
                               relu=relu)


def host_tensors(case, layout):
    """[(host byte address, array)] of a case's inputs under a compiler HostLayout."""
    return [(layout.a, case["a"]), (layout.b, case["b"]), (layout.bias, case["bias"]),
            (layout.mult, case["mult"]), (layout.shift, case["shift"])]


def run_on_model(caps, phases, tensors, host_bytes):
    """Execute encoded phases on the golden device model after loading ``tensors``; return it."""
    model = DeviceModel(caps, host_bytes=host_bytes)
    for addr, arr in tensors:
        raw = np.frombuffer(arr.tobytes(), np.uint8)
        model.host[addr:addr + raw.size] = raw
    for phase in phases:
        codes = model.run(phase)
        if any(c != ErrorCode.OK for c in codes):
            raise AssertionError(f"the golden model rejected a command: {codes}")
    return model
