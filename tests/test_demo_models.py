"""The `make sim` demo models (compiler/models.py): they compile for every array size, their
outputs (and hidden layers) are non-degenerate on the NumPy interpreter, and the demo's driver
path (verif/model_run.py, the report of tools/sim.py) runs them bit-exactly on the golden chip model with the real
firmware and produces a consistent report and trace.
"""
import numpy as np
import pytest

from tools import sim as S
from verif import model_run as D
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
    layers = {S.layer_of(c) for c in cm.program.commands}
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
    r = S.analyse(cm, meas, caps.dim)
    assert [L["layer"] for L in r["layers"]] == [fg.name for fg in cm.fused]
    assert sum(L["measured"] for L in r["layers"]) == r["last_record"] > 0
    def macs(fg):                               # the model's MACs: no special functions, no identity
        if fg.kind == "attention":              # Q·Kᵀ and P·V of every batch item and head
            sk, off = fg.k.shape[-2], fg.attrs["mask_offset"]
            keys = np.minimum(sk, np.arange(fg.q.rows) % fg.sq + off + 1) if fg.attrs["causal"] \
                else np.full(fg.q.rows, sk)
            return 2 * int(keys.sum()) * fg.q.cols
        if fg.kind == "sfu" or getattr(fg.w, "identity", False):
            return 0
        return fg.a.rows * fg.a.cols * fg.w.cols
    assert r["macs"] == sum(macs(fg) for fg in cm.fused)
    assert sum(L["dma_in"] for L in r["layers"]) == r["dma_in_expected"] == r["dma_in"]
    assert sum(L["dma_out"] for L in r["layers"]) == r["dma_out_expected"] == r["dma_out"]
    ev = S.trace_events(cm, meas, name, 1) + S.layer_events(r["layers"], 1)
    spans = [e for e in ev if e["ph"] == "X"]
    assert len(spans) == r["engine_commands"] + len(r["layers"])
    assert all(e["dur"] > 0 and e["ts"] >= 0 for e in spans)


# ---------------------------------------------------------------------------- the report (tools/sim.py)

EXAMPLE = "docs/examples/my_model.py:tiny_cnn"      # conv -> maxred (an identity GEMM) -> linear


@pytest.fixture(scope="module")
def golden_runs(elf):
    """name -> (cm, meas) of the demo models and the example model, run on the golden chip model."""
    caps = Capabilities.from_config(KakiConfig(dim=8))
    out = {}
    for name in models.MODELS + (EXAMPLE,):
        g, feeds = models.build(name, 5)
        cm = compile_graph(g, caps)
        outs, meas = D.run_golden(cm, feeds, elf, seed=5, measure=True)
        ref = interpret(g, feeds)
        assert D.compare(outs, ref) is None
        out[name] = (cm, meas)
    return out


def test_report_counts_only_the_models_macs(golden_runs):
    cm, meas = golden_runs[EXAMPLE]
    r = S.analyse(cm, meas, 8)
    by = {L["layer"]: L for L in r["layers"]}
    assert by["pool"]["identity"] and by["pool"]["macs"] == 0 and by["pool"]["pe_util"] == 0
    assert by["pool"]["gemm_macs"] == 144 * 16 * 16 == r["identity_macs"]
    assert r["macs"] == 144 * 72 * 16 + 16 * 10 == by["conv"]["macs"] + by["head"]["macs"]
    assert r["pe_util_run"] == r["macs"] / (64 * r["last_record"])
    for name in models.MODELS:                  # no identity GEMMs: every MAC is the model's
        r = S.analyse(*golden_runs[name], 8)
        assert r["identity_macs"] == 0 and not any(L["identity"] for L in r["layers"])
    r = S.analyse(cm, meas, 8)
    r.update(model=EXAMPLE, vs_golden=None, vs_numpy=None, golden_vs_numpy=None, degenerate={})
    lines, ok = S.format_report(dict(dim=8, seed=5, models=[r], pass_=True), 1.0)
    text = "\n".join(lines)
    assert ok and "identity" in text and f"+{r['identity_macs']:,} in identity GEMMs" in text


def test_predicted_serial_includes_dispatch(golden_runs):
    from compiler import cost
    for name, (cm, meas) in golden_runs.items():
        r = S.analyse(cm, meas, 8)
        n_engine = r["engine_commands"]
        run = sum(cm.cycles) + n_engine * (cost.DISPATCH + cost.START_LAT + cost.RETIRE_LAT)
        assert run + cost.CPL_WRITE <= r["predicted_serial"] <= run + len(cm.cycles) * cost.CPL_WRITE
        assert r["predicted_serial"] >= r["predicted"], name
        for L in r["layers"]:
            assert L["predicted_serial"] >= L["predicted"], (name, L["layer"])


def test_report_columns_fit_any_layer_name(golden_runs):
    cm, meas = golden_runs["mlp"]
    r = S.analyse(cm, meas, 8)
    r["layers"][0]["layer"] = "a_really_long_layer_name_from_an_importer.block3.fc_out"
    r["layers"][1]["shape"] = [123456, 654321, 100000]
    r.update(model="mlp", vs_golden=None, vs_numpy=None, golden_vs_numpy=None, degenerate={})
    table = S.layer_table(r)
    assert len(table) == len(r["layers"]) + 2
    assert len({len(t) for t in table}) == 1, "\n".join(table)
    head = table[0]
    for row in table[1:]:                       # every right-aligned column ends where its header does
        for title in ("shape", "cmds", "predicted", "measured", "meas/pred", "PE util", "DMA in"):
            end = head.index(title) + len(title)
            if title == "shape" and row.lstrip().startswith("total"):
                continue                        # the total line has no shape
            assert row[end - 1] != " " and (end == len(row) or row[end] == " "), (title, row)
    lines, _ = S.format_report(dict(dim=8, seed=5, models=[r], pass_=True), 1.0)
    assert all(t in lines for t in table)
