"""GEMM + epilogue lowering, executed on the golden device model, against the NumPy reference."""
import numpy as np
import pytest

from compiler.errors import CompileError
from compiler.lower_gemm import encode_phases, host_layout, lower_gemm_epilogue, plan_gemm
from spec.capabilities import Capabilities
from verif.workloads import gemm_epilogue_reference, host_tensors, random_gemm_case, run_on_model
from hdl_gen.config import KakiConfig


@pytest.mark.parametrize("dim", [4, 8, 16])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (8, 8, 8), (13, 27, 9), (64, 40, 33), (5, 128, 17)])
def test_lowered_gemm_matches_reference(dim, m, k, n):
    caps = Capabilities.from_config(KakiConfig(dim=dim))
    case = random_gemm_case(np.random.default_rng(m * 1000 + k * 10 + n), m, k, n)
    layout, end = host_layout(m, k, n)
    phases = encode_phases(lower_gemm_epilogue(plan_gemm(m, k, n, caps, layout),
                                               zero_point=case["zp"]))
    model = run_on_model(caps, phases, host_tensors(case, layout), end)
    got = model.host[layout.out:layout.out + m * n].view(np.int8).reshape(m, n)
    np.testing.assert_array_equal(got, gemm_epilogue_reference(case))


def test_too_big_gemm_is_a_compile_error():
    caps = Capabilities.from_config(KakiConfig(dim=8, spad_bank_rows=64))
    with pytest.raises(CompileError, match="scratchpad rows"):
        plan_gemm(256, 256, 256, caps, host_layout(256, 256, 256)[0])
    with pytest.raises(CompileError, match="K=0"):
        plan_gemm(4, 0, 4, caps, host_layout(4, 1, 4)[0])
