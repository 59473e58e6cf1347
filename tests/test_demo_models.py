"""The `make sim` demo models (compiler/models.py): they compile for every array size, their
outputs (and hidden layers) are non-degenerate on the NumPy interpreter, and the demo's driver
path (tools/demo_run.py) runs them bit-exactly on the golden chip model with the real
firmware and produces a consistent report and trace.
"""
import numpy as np
import pytest

from tools import demo_run as D
from compiler import models
from compiler.compile import compile_graph
from compiler.graph import interpret
from spec.capabilities import Capabilities
from golden.backend import GoldenBackend
from golden.chip_model import ChipModel
from hdl_gen.config import KakiConfig


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    from firmware import build as fw_build
    return fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf")


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("seed", [1, 2])
def test_outputs_not_degenerate(name, seed):
    g, feeds = models.build(name, seed)
    layers = [n.output for n in g.nodes if n.op in ("linear", "conv2d")]
    assert len(layers) >= (3 if name == "mlp" else 1)
    g.outputs = layers                      # check hidden layers too
    out = interpret(g, feeds)
    for t in layers:
        why = models.degenerate(out[t.name], t.zero_point)
        assert why is None, f"{name} seed {seed}: layer {t.name} is degenerate: {why}"


@pytest.mark.parametrize("dim", [4, 8, 16])
@pytest.mark.parametrize("name", models.MODELS)
def test_models_compile(name, dim):
    g, _ = models.build(name, 1)
    cm = compile_graph(g, Capabilities.from_config(KakiConfig(dim=dim)))
    assert len(cm.cycles) == len(cm.program.commands) > 0
    assert all(":" in c.note for c in cm.program.commands), "the report groups commands by note"
    layers = {D.layer_of(c) for c in cm.program.commands}
    assert layers == {fg.name for fg in cm.fused}


@pytest.mark.parametrize("name", models.MODELS)
def test_demo_path_on_golden(name, elf):
    """run_model / analyse / trace_events as the RTL demo uses them, on the golden chip model."""
    import asyncio
    from driver.device import Device

    g, feeds = models.build(name, 3)
    caps = Capabilities.from_config(KakiConfig(dim=8))
    cm = compile_graph(g, caps)

    async def go():
        chip = ChipModel(caps, host_bytes=D.HOST_BASE + D.HOST_BYTES, seed=3, engine_delay=(1, 40))
        dev = await Device.open(GoldenBackend(chip), host_base=D.HOST_BASE, host_bytes=D.HOST_BYTES,
                                firmware=elf)
        return await D.run_model(dev, cm, feeds)
    outs, meas = asyncio.run(go())
    ref = interpret(g, feeds)
    for k in ref:
        assert np.array_equal(outs[k], ref[k]), k
    r = D.analyse(cm, meas, caps.dim)
    assert [L["layer"] for L in r["layers"]] == [fg.name for fg in cm.fused]
    assert sum(L["measured"] for L in r["layers"]) == r["last_record"] > 0
    assert r["macs"] == sum(fg.a.rows * fg.a.cols * fg.w.cols for fg in cm.fused)
    assert sum(L["dma_in"] for L in r["layers"]) == r["dma_in_expected"] == r["dma_in"]
    assert sum(L["dma_out"] for L in r["layers"]) == r["dma_out_expected"] == r["dma_out"]
    ev = D.trace_events(cm, meas, name, 1) + D.layer_events(r["layers"], 1)
    spans = [e for e in ev if e["ph"] == "X"]
    assert len(spans) == r["engine_commands"] + len(r["layers"])
    assert all(e["dur"] > 0 and e["ts"] >= 0 for e in spans)
