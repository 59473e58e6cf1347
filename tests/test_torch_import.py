"""compiler.torch_import: torch.export-ed float models -> int8 graph -> compiled program, bit-exact
against the graph interpreter (reference scheduler and the golden chip with the real firmware),
close to torch's float result; unsupported input is a CompileError naming the exported node."""
import os
import secrets
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from compiler import torch_models
from compiler.compile import compile_graph
from compiler.errors import CompileError
from compiler.graph import interpret
from compiler.refexec import execute
from compiler.torch_import import import_exported
from spec.capabilities import Capabilities
from hdl_gen.config import KakiConfig

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))
CAPS = Capabilities.from_config(KakiConfig(dim=8))


@pytest.fixture
def seed():
    print(f"[torch import] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_torch_import.py)")
    return SEED


def run_reference(cm, feeds):
    model, addrs = execute(cm.program, cm.caps, cm.pack_inputs(feeds), seed=SEED, check=True)
    return cm.unpack_outputs(lambda name, nb: model.host[addrs[name]:addrs[name] + nb].tobytes())


def assert_bit_exact(got, ref):
    for k in ref:
        wrong = np.argwhere(got[k] != ref[k])
        assert wrong.size == 0, f"{k}: {len(wrong)} outputs differ from the interpreter, first at " \
                                f"{tuple(wrong[0])}"


def test_core_never_imports_torch():
    code = ("import sys, compiler, compiler.compile, compiler.models, compiler.passes, driver.device, "
            "golden.backend, golden.chip_model\n"
            "compiler.models.build('mlp')\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))


@pytest.mark.parametrize("name", torch_models.TORCH_MODELS)
def test_imported_model_is_bit_exact_and_close_to_torch(name, seed):
    imported, inputs, model = torch_models.build(name, seed)
    feeds = imported.quantize_inputs(*inputs)
    cm = compile_graph(imported.graph, CAPS)
    ref = interpret(imported.graph, feeds)
    assert_bit_exact(run_reference(cm, feeds), ref)
    (got,) = imported.dequantize_outputs(ref)
    want = model(torch.as_tensor(inputs[0])).detach().numpy()
    assert got.shape == want.shape
    # Per-tensor int8 activations: the error is a few output steps, far below the signal.
    (_, out_qp, _), = imported.outputs
    err = np.abs(got - want).max()
    assert err <= 6 * out_qp.scale, f"max error {err:.4g} = {err / out_qp.scale:.1f} output steps"
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


def test_imported_mlp_runs_on_the_golden_chip_with_the_firmware(tmp_path, seed):
    from verif.model_run import run_golden
    from firmware import build as fw_build

    imported, inputs, _ = torch_models.build("torch_mlp", seed)
    feeds = imported.quantize_inputs(*inputs)
    cm = compile_graph(imported.graph, CAPS)
    got = run_golden(cm, feeds, fw_build.build(tmp_path / "kaki_fw.elf"), seed=seed)
    assert_bit_exact(got, interpret(imported.graph, feeds))


def test_relu_fuses_and_residual_add_shares_one_scale(seed):
    imported, _, _ = torch_models.build("torch_mlp", seed)
    ops = {n.name: n for n in imported.graph.nodes}
    assert ops["linear"].attrs["relu"] and ops["linear_1"].attrs["relu"]
    assert "relu" not in ops and "relu_1" not in ops, "ReLUs fused into the linears"
    a, b = ops["add"].inputs
    assert float(a.scale) == float(b.scale) and a.zero_point == b.zero_point == 0
    assert not any(n.op == "requantize" for n in imported.graph.nodes), \
        "the add's operands are produced at its scale, no standalone requantize"


class _SharedOperand(nn.Module):
    """``u`` feeds two adds of different ranges (one residual group: one scale for all)."""

    def __init__(self):
        super().__init__()
        self.fu, self.fv = nn.Linear(16, 16), nn.Linear(16, 16)
        with torch.no_grad():
            self.fv.weight.mul_(4)          # a wider range than u + x

    def forward(self, x):
        u = self.fu(x)
        return u + x, u + self.fv(x)


def test_operand_shared_by_two_adds_takes_one_scale(seed):
    """Adds that share an operand (a residual stream) share one scale: no requantize (an identity
    GEMM on the device) anywhere, and still close to PyTorch."""
    torch.manual_seed(seed)
    model, x = _SharedOperand().eval(), torch.randn(8, 16)
    imported = import_exported(_export(model, x), [(torch.randn(8, 16),) for _ in range(4)] + [(x,)])
    assert "requantize" not in [n.op for n in imported.graph.nodes], imported.notes
    feeds = imported.quantize_inputs(x)
    cm = compile_graph(imported.graph, CAPS)
    ref = interpret(imported.graph, feeds)
    assert_bit_exact(run_reference(cm, feeds), ref)
    for (t, qp, _), got, want in zip(imported.outputs, imported.dequantize_outputs(ref), model(x)):
        err = np.abs(got - want.detach().numpy()).max()
        assert err <= 4 * qp.scale, f"{t.name}: max error {err / qp.scale:.1f} output steps"


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


class _Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.conv(x)


class _TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x))


class _Bmm(nn.Module):
    def forward(self, a, b):
        return torch.mm(a, b)


class _IntInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x.float())


class _Transpose(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv(x).permute(0, 3, 2, 1)


def _export(model, *args):
    return torch.export.export(model.eval(), args)


@pytest.mark.parametrize("model, args, node, reason", [
    (_Sigmoid(), (torch.randn(4, 8),), "sigmoid", "unsupported op"),
    (_Grouped(), (torch.randn(1, 4, 6, 6),), "conv2d", "groups=2"),
    (_Bmm(), (torch.randn(4, 8), torch.randn(8, 4)), "mm", "must be a parameter"),
    (_IntInput(), (torch.randint(0, 5, (4, 8)),), "x", "input dtype torch.int64"),
    (_Transpose(), (torch.randn(1, 4, 6, 6),), "permute", "permute [0, 3, 2, 1] is unsupported"),
])
def test_unsupported_input_names_the_exported_node(model, args, node, reason):
    with pytest.raises(CompileError) as e:
        import_exported(_export(model, *args), [args])
    assert f"exported node {node!r}" in str(e.value) and reason in str(e.value), str(e.value)


def test_conv_after_conv_is_a_compile_error_naming_the_second_conv():
    args = (torch.randn(1, 4, 6, 6),)
    imported = import_exported(_export(_TwoConvs(), *args), [args])
    with pytest.raises(CompileError, match="conv2d_1"):
        compile_graph(imported.graph, CAPS)


def test_misuse_is_reported():
    with pytest.raises(CompileError, match="expected a torch.export.ExportedProgram, got _Sigmoid"):
        import_exported(_Sigmoid(), [(torch.randn(4, 8),)])
    ep = _export(_Sigmoid(), torch.randn(4, 8))
    with pytest.raises(CompileError, match="a batch has 2 inputs, the model takes 1"):
        import_exported(ep, [(torch.randn(4, 8), torch.randn(4, 8))])
    imported, _, _ = torch_models.build("torch_mlp", 0)
    with pytest.raises(ValueError, match="2 inputs given, the model takes 1"):
        imported.quantize_inputs(np.zeros((16, 128)), np.zeros((16, 128)))
