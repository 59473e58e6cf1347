"""`make sim` stays working: the demo's compiled models (driver -> firmware -> RTL, 8x8) bit-exact
against the golden chip model and NumPy, with their report and trace written."""
import json

import pytest

from tools import simbuild
from tools.simbuild import soc_target
from firmware.build import shared_elf as firmware_elf

MODULE = "tools.sim"
#: the cocotb tests this file runs (tests/test_cocotb_inventory.py: every @cocotb.test() must be run)
COCOTB_RUNS = {MODULE: ("sim_models",)}


@pytest.mark.sim
def test_sim_demo_conv(tmp_path):
    trace = tmp_path / "trace.json"
    simbuild.run(soc_target(8), MODULE, testcase="sim_models",
                 tag="sim_demo_conv",
                 extra_env={"KAKI_FW_ELF": str(firmware_elf()), "KAKI_DEMO_MODELS": "conv",
                            "KAKI_DEMO_TRACE": str(trace)})
    report = json.loads((simbuild.last_run_dir() / "report.json").read_text())
    (m,) = report["models"]
    assert m["pass"] and m["dma_in"] == m["dma_in_expected"] and m["dma_out"] == m["dma_out_expected"]
    assert [L["layer"] for L in m["layers"]] == ["conv", "head"]
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" for e in events) == m["engine_commands"] + len(m["layers"])


@pytest.mark.sim
def test_sim_demo_mlp():
    simbuild.run(soc_target(8), MODULE, testcase="sim_models",
                 tag="sim_demo_mlp",
                 extra_env={"KAKI_FW_ELF": str(firmware_elf()), "KAKI_DEMO_MODELS": "mlp"})
    report = json.loads((simbuild.last_run_dir() / "report.json").read_text())
    (m,) = report["models"]
    assert m["pass"] and m["dma_in"] == m["dma_in_expected"] and m["dma_out"] == m["dma_out_expected"]
    assert len(m["layers"]) >= 3


@pytest.mark.sim
def test_sim_demo_torch_models(tmp_path):
    """Both torch.export-ed demo models (compiler/torch_models.py) through the importer, compiled and
    run on RTL, bit-exact against the golden chip model and the graph interpreter."""
    from tools.sim import prepare_models
    seed = simbuild.test_seed()
    simbuild.run(soc_target(8), MODULE, testcase="sim_models",
                 tag="sim_demo_torch", seed=seed,
                 extra_env={"KAKI_FW_ELF": str(firmware_elf()),
                            "KAKI_DEMO_MODELS": "torch_mlp,torch_conv",
                            **prepare_models(["torch_mlp", "torch_conv"], seed, tmp_path)})
    report = json.loads((simbuild.last_run_dir() / "report.json").read_text())
    assert [m["model"] for m in report["models"]] == ["torch_mlp", "torch_conv"]
    for m in report["models"]:
        assert m["pass"] and m["dma_in"] == m["dma_in_expected"] and m["dma_out"] == m["dma_out_expected"]
        assert not any(m["degenerate"].values()), m["degenerate"]


@pytest.mark.sim
def test_sim_transformer_blocks(tmp_path):
    """The PyTorch encoder block (LayerNorm, 4-head attention, GELU FFN) and decoder block
    (RMSNorm, causal 4-head attention, SwiGLU FFN), d_model 64, sequence 64, imported, compiled and
    run on RTL with every op on the chip: bit-exact against the golden chip model and the graph
    interpreter, close to PyTorch's float output."""
    import pickle

    from tools.sim import prepare_models
    names = ["encoder", "decoder_block"]
    seed = simbuild.test_seed()
    simbuild.run(soc_target(8), MODULE, testcase="sim_models", tag="sim_demo_transformer",
                 seed=seed, extra_env={"KAKI_FW_ELF": str(firmware_elf()),
                                       "KAKI_DEMO_MODELS": ",".join(names),
                                       **prepare_models(names, seed, tmp_path)})
    report = json.loads((simbuild.last_run_dir() / "report.json").read_text())
    assert [m["model"] for m in report["models"]] == names
    for i, (m, norm) in enumerate(zip(report["models"], ("layer_norm", "rms_norm"))):
        assert m["pass"] and m["dma_in"] == m["dma_in_expected"] and m["dma_out"] == m["dma_out_expected"]
        g = pickle.loads((tmp_path / f"{i}.pkl").read_bytes())["graph"]
        # no host fallback: every op of the graph is a layer the chip ran (one report row per
        # fused layer, each with device commands)
        ops = {L["op"] for L in m["layers"]}
        assert {"attention", norm, "gemm"} <= ops, ops
        assert all(L["commands"] > 0 for L in m["layers"])
        assert {n.op for n in g.nodes} <= {"input", "const", "linear", "add", "requantize",
                                           "attention", "layer_norm", "rms_norm", "lut", "mul"}
        for v in m["vs_torch"].values():
            assert v["max"] <= 4 and v["mean"] <= 0.75, m["vs_torch"]
