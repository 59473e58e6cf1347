"""Bring your own model (``make sim MODEL=path/to/file.py:function``, compiler.models.load_user_model)
and the graph's ``maxred`` op (the vector unit's row max-reduce): compiled programs run through the
driver on the golden chip model (real firmware on the ISS) equal the graph interpreter, bit for bit.
"""
import numpy as np
import pytest

from compiler import models
from compiler.compile import compile_graph
from compiler.graph import Graph, interpret
from compiler.refexec import execute
from spec.capabilities import Capabilities
from golden import ops
from hdl_gen.config import KakiConfig
from verif import model_run as MR

EXAMPLES = "docs/examples/my_model.py"


@pytest.fixture(scope="module")
def elf(tmp_path_factory):
    from firmware import build as fw_build
    return fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf")


def _pool_graph(m, k, n, zp, seed):
    rng = np.random.default_rng(seed)
    g = Graph("pool")
    x = g.input("x", (m, k), scale=0.05, zero_point=zp)
    w = g.const("w", rng.integers(-128, 128, (k, n), dtype=np.int8), scale=0.01)
    y = g.linear(x, w, None, scale=0.3, zero_point=-3, relu=True, name="fc")
    p = g.maxred(y, name="pool")
    w2 = g.const("w2", rng.integers(-128, 128, (n, 10), dtype=np.int8), scale=0.01)
    g.output(p, g.linear(p, w2, None, scale=0.2, zero_point=0, name="head"))
    return g, {"x": rng.integers(-128, 128, (m, k), dtype=np.int8)}


def test_maxred_interpreter_is_golden_max_reduce():
    g = Graph("m")
    x = g.input("x", (2, 3, 5, 7), zero_point=4)
    t = g.maxred(x, name="mx")
    assert (t.shape, t.zero_point, t.scale) == ((1, 7), 4, x.scale)
    g.output(g.relu(t))
    xv = np.random.default_rng(1).integers(-128, 128, (2, 3, 5, 7), dtype=np.int8)
    g.outputs = [t]
    assert np.array_equal(interpret(g, {"x": xv})["mx"], ops.max_reduce(xv.reshape(-1, 7)))


@pytest.mark.parametrize("dim", [4, 8, 16])
@pytest.mark.parametrize("m, k, n, zp", [(16, 24, 20, 3), (37, 8, 13, -5), (1, 8, 8, 0)])
def test_maxred_compiled_matches_interpreter_on_reference_executor(dim, m, k, n, zp):
    """Every legal interleaving (refexec seeds) with the hazard checker on."""
    g, feeds = _pool_graph(m, k, n, zp, seed=m + dim)
    cm = compile_graph(g, Capabilities.from_config(KakiConfig(dim=dim)))
    assert any(c.fields.get("ops.maxred") for c in cm.program.commands)
    ref = interpret(g, feeds)
    for s in range(2):
        model, addrs = execute(cm.program, cm.caps, cm.pack_inputs(feeds), seed=s, check=True)
        got = cm.unpack_outputs(lambda name, nb: model.host[addrs[name]:addrs[name] + nb].tobytes())
        assert MR.compare(got, ref) is None


def test_maxred_compiled_on_golden_backend(elf):
    """Through the driver and the firmware on the golden chip model, with a ReLU folded into the
    identity GEMM and the input straight from a graph input."""
    caps = Capabilities.from_config(KakiConfig(dim=8))
    g, feeds = _pool_graph(40, 16, 24, 2, seed=7)
    x2 = g.input("x2", (9, 24), scale=g.inputs[0].scale, zero_point=-7)
    g.output(g.maxred(g.relu(x2, name="r2"), name="pool2"))
    feeds["x2"] = np.random.default_rng(2).integers(-128, 128, (9, 24), dtype=np.int8)
    cm = compile_graph(g, caps)
    got = MR.run_golden(cm, feeds, elf, seed=2)
    assert MR.compare(got, interpret(g, feeds)) is None


@pytest.mark.parametrize("fn", ["tiny_cnn", "torch_mlp"])
def test_example_models_on_golden_backend(fn, elf):
    spec = f"{EXAMPLES}:{fn}"
    if fn.startswith("torch"):
        pytest.importorskip("torch")
    g, feeds = models.build(spec, 4)
    cm = compile_graph(g, Capabilities.from_config(KakiConfig(dim=8)))
    ref = interpret(g, feeds)
    assert not any(models.degenerate(v) for v in ref.values() if v.size >= 64)
    assert MR.compare(MR.run_golden(cm, feeds, elf, seed=4), ref) is None
    assert models.display_name(spec) == spec


def test_user_model_seed_and_no_seed(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import numpy as np\nfrom compiler.graph import Graph\n"
                 "def _g(v):\n    g = Graph('g'); x = g.input('x', (2, 8)); g.output(g.relu(x, name='r'))\n"
                 "    return g, {'x': np.full((2, 8), v, np.int8)}\n"
                 "def seeded(seed):\n    return _g(seed)\n"
                 "def fixed():\n    return _g(-1)\n")
    assert models.load_user_model(f"{f}:seeded", 9)[1]["x"][0, 0] == 9
    assert models.load_user_model(f"{f}:fixed", 9)[1]["x"][0, 0] == -1
