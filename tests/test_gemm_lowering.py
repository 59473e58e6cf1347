"""GEMM + epilogue lowering, executed on the golden device model, against the NumPy reference."""
import numpy as np
import pytest

from compiler.errors import CompileError
from compiler.lower_gemm import encode_phases, host_layout, lower_gemm_epilogue, plan_gemm
from driver.capabilities import Capabilities
from driver.descriptors import ErrorCode
from golden import ops
from golden.device_model import DeviceModel
from hdl_gen.config import KakiConfig


def _case(rng, m, k, n):
    return dict(a=rng.integers(-128, 128, (m, k), dtype=np.int8),
                b=rng.integers(-128, 128, (k, n), dtype=np.int8),
                bias=rng.integers(-2**20, 2**20, n, dtype=np.int32),
                mult=rng.integers(2**29, 2**30, n, dtype=np.int32),
                shift=rng.integers(36, 42, n, dtype=np.int32),
                zp=int(rng.integers(-20, 20)))


def run_on_model(caps, m, k, n, case, relu=True):
    layout, end = host_layout(m, k, n)
    dev = DeviceModel(caps, host_bytes=end + 4096)
    for addr, arr in ((layout.a, case["a"]), (layout.b, case["b"]), (layout.bias, case["bias"]),
                      (layout.mult, case["mult"]), (layout.shift, case["shift"])):
        raw = arr.tobytes()
        dev.host[addr:addr + len(raw)] = np.frombuffer(raw, np.uint8)
    plan = plan_gemm(m, k, n, caps, layout)
    for phase in encode_phases(lower_gemm_epilogue(plan, zero_point=case["zp"], relu=relu)):
        assert all(code == ErrorCode.OK for code in dev.run(phase))
    return dev.host[layout.out:layout.out + m * n].view(np.int8).reshape(m, n)


def reference(case, relu=True):
    acc = ops.gemm(case["a"], case["b"])
    return ops.vector_epilogue(acc, bias=case["bias"], mult=case["mult"], shift=case["shift"],
                               zero_point=case["zp"], relu=relu)


@pytest.mark.parametrize("dim", [4, 8, 16])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (8, 8, 8), (13, 27, 9), (64, 40, 33), (5, 128, 17)])
def test_lowered_gemm_matches_reference(dim, m, k, n):
    caps = Capabilities.from_config(KakiConfig(dim=dim))
    case = _case(np.random.default_rng(m * 1000 + k * 10 + n), m, k, n)
    got = run_on_model(caps, m, k, n, case)
    np.testing.assert_array_equal(got, reference(case))


def test_too_big_gemm_is_a_compile_error():
    caps = Capabilities.from_config(KakiConfig(dim=8, spad_bank_rows=64))
    with pytest.raises(CompileError, match="scratchpad rows"):
        plan_gemm(256, 256, 256, caps, host_layout(256, 256, 256)[0])
    with pytest.raises(CompileError, match="K=0"):
        plan_gemm(4, 0, 4, caps, host_layout(4, 1, 4)[0])
