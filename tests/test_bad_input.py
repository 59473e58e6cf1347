"""Bad inputs are typed errors naming the offending value, never a silent conversion or a bare
KeyError / TypeError / ValueError from deep inside: feeds (``CompiledModel.pack_inputs`` and the
interpreter share :func:`compiler.graph.check_feeds`), graphs the compiler cannot lower (an output
that is the input, an unrepresentable output-scale ratio, a shape too large for the buffers),
driver misuse (``Queue.submit``, ``Buffer.write``, ``Device.run``), ``make sim`` options (argparse
validators of tools/sim.py: one line, exit status 2, before any simulator) and a model of your own
(``MODEL=path/to/file.py:function``). Fast: no simulator."""
import asyncio

import numpy as np
import pytest

from compiler import models
from compiler.compile import compile_graph
from compiler.errors import CompileError
from compiler.graph import FeedError, Graph, interpret
from spec.capabilities import Capabilities
from driver.device import Device
from driver.errors import DriverMisuse
from golden.backend import GoldenBackend, golden_chip
from hdl_gen.config import KakiConfig
from tools import sim

CAPS = Capabilities.from_config(KakiConfig(dim=8))


def _linear_graph(m=16, k=8, n=8):
    rng = np.random.default_rng(0)
    g = Graph("lin")
    x = g.input("x", (m, k), scale=0.05, zero_point=0)
    w = g.const("w", rng.integers(-128, 128, (k, n), dtype=np.int8), scale=0.01)
    g.output(g.linear(x, w, None, scale=0.5, zero_point=0, name="fc"))
    return g


@pytest.fixture(scope="module")
def compiled():
    return compile_graph(_linear_graph(m=16, k=8, n=16), CAPS)


def _both(cm, feeds):
    """The error of pack_inputs and of the interpreter for ``feeds``: the same check, the same text."""
    with pytest.raises(FeedError) as packed:
        cm.pack_inputs(feeds)
    with pytest.raises(FeedError) as interpreted:
        interpret(cm.graph, feeds)
    assert str(packed.value) == str(interpreted.value)
    return str(packed.value)


# ---------------------------------------------------------------------------- feeds

def test_float_feed_is_rejected_not_packed(compiled):
    msg = _both(compiled, {"x": np.full((16, 8), 200.7)})
    assert "input 'x'" in msg and "float64" in msg and "int8" in msg


def test_int16_feed_is_rejected_not_wrapped(compiled):
    msg = _both(compiled, {"x": np.full((16, 8), 300, np.int16)})
    assert "input 'x'" in msg and "int16" in msg


def test_transposed_feed_of_the_same_byte_count_is_rejected(compiled):
    msg = _both(compiled, {"x": np.zeros((8, 16), np.int8)})
    assert "input 'x'" in msg and "(8, 16)" in msg and "(16, 8)" in msg


def test_misspelt_feed_name_names_both(compiled):
    msg = _both(compiled, {"X": np.zeros((16, 8), np.int8)})
    assert "'X'" in msg and "missing" in msg and "['x']" in msg
    assert not isinstance(FeedError("a", "b"), KeyError)


def test_extra_and_non_array_feeds(compiled):
    msg = _both(compiled, {"x": np.zeros((16, 8), np.int8), "y": np.zeros(3, np.int8)})
    assert "unknown" in msg and "'y'" in msg
    msg = _both(compiled, {"x": [[0] * 8] * 16})
    assert "input 'x'" in msg and "list" in msg
    msg = _both(compiled, [np.zeros((16, 8), np.int8)])
    assert "dict" in msg


def test_good_feed_packs_exactly(compiled):
    x = np.arange(128, dtype=np.int8).reshape(16, 8)
    assert compiled.pack_inputs({"x": x})["x"] == x.tobytes()


def test_conv_feed_checked_before_im2col():
    g, feeds = models.conv(1)
    cm = compile_graph(g, CAPS)
    bad = {"img": feeds["img"].transpose(0, 2, 1, 3).copy().reshape(feeds["img"].shape[::-1])}
    with pytest.raises(FeedError, match="input 'img'"):
        cm.pack_inputs(bad)


# ---------------------------------------------------------------------------- graphs

def test_output_that_is_the_input_is_a_compile_error():
    g = Graph("passthrough")
    x = g.input("x", (16, 8))
    g.output(x)
    with pytest.raises(CompileError, match="output 'x' is the graph input itself"):
        compile_graph(g, CAPS)


def test_output_scale_ratio_too_small_names_layer_and_ratio():
    g = Graph("tiny")
    x = g.input("x", (16, 8), scale=1e-6)
    w = g.const("w", np.ones((8, 8), np.int8), scale=1e-6)
    with pytest.raises(CompileError) as e:
        g.linear(x, w, None, scale=1e5, name="fc")      # ratio 1e-17, below 2**-33
    assert "linear 'fc'" in str(e.value) and "1e-17" in str(e.value) and "2**-33" in str(e.value)
    # at 2**-33 it is still representable: mult in [2**30, 2**31), shift 63
    fc = g.linear(x, w, None, scale=1e-12 / 2**-33, name="ok")
    assert (fc.producer.attrs["shift"] == 63).all()
    assert (fc.producer.attrs["mult"] >= 2**30).all() and (fc.producer.attrs["mult"] < 2**31).all()


def test_output_scale_ratio_too_large_names_layer_and_ratio():
    g = Graph("huge")
    x = g.input("x", (16, 8), scale=1.0)
    w = g.const("w", np.ones((8, 8), np.int8), scale=1.0)
    with pytest.raises(CompileError, match=r"linear 'big'.*4\.29497e\+09 is too large"):
        g.linear(x, w, None, scale=2.0**-32, name="big")
    with pytest.raises(CompileError, match=r"requantize 'rq'.*below 2\*\*-33"):
        g.requantize(g.relu(x, name="r"), scale=2.0**40, name="rq")


def test_too_wide_layer_names_the_node_and_sizes():
    g = Graph("wide")
    x = g.input("x", (16, 8))
    w = g.const("w", np.ones((8, 100_000), np.int8))
    g.output(g.linear(x, w, None, scale=1.0, name="fc"))
    with pytest.raises(CompileError) as e:
        compile_graph(g, CAPS)
    msg = str(e.value)
    assert "linear 'fc'" in msg and "N=100000" in msg and "37500" in msg and "4096" in msg


def test_maxred_too_tall_names_the_node():
    caps = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=64, acc_bank_rows=256))
    g = Graph("pool")
    x = g.input("x", (4096, 4))
    g.output(g.maxred(x, name="pool"))
    with pytest.raises(CompileError, match=r"maxred 'pool'.*4096 rows.*one tile"):
        compile_graph(g, caps)


# ---------------------------------------------------------------------------- driver

def _with_queue(check):
    async def go():
        dev = await Device.open(GoldenBackend(golden_chip(8)), host_base=0x1000, host_bytes=0x10000)
        q = await dev.queue(0)
        await check(dev, q)
    asyncio.run(go())


def test_submit_of_a_non_list_is_driver_misuse():
    async def check(dev, q):
        with pytest.raises(DriverMisuse, match=r"descriptors=12345.*got int"):
            await q.submit(12345)
        with pytest.raises(DriverMisuse, match=r"descriptor 0 .*a int"):
            await q.submit([1, 2, 3, 4, 5, 6, 7, 8])          # one descriptor, not a list of them
        with pytest.raises(DriverMisuse, match=r"descriptor 0 .*str"):
            await q.submit(["abcdefgh"])
        with pytest.raises(DriverMisuse, match="8 words"):
            await q.submit([[0] * 7])
    _with_queue(check)


def test_buffer_write_and_run_misuse():
    async def check(dev, q):
        buf = dev.alloc(64)
        with pytest.raises(DriverMisuse, match="Buffer.write: data must be .* not int"):
            await buf.write(5)                   # bytes(5) would be five silent zero bytes
        with pytest.raises(DriverMisuse, match="Device.upload: .* not list"):
            await dev.upload([1, 2, 3])
        with pytest.raises(DriverMisuse, match="alignment"):
            dev.alloc(64, align="64")
        cm = compile_graph(_linear_graph(), CAPS)
        with pytest.raises(DriverMisuse, match="expected a driver.program.Program, got dict"):
            await dev.run({}, {})
        with pytest.raises(DriverMisuse, match=r"'x': ndarray"):
            await dev.run(cm.program, {"x": np.zeros(3)})
    _with_queue(check)


# ---------------------------------------------------------------------------- make sim options

@pytest.mark.parametrize("argv, words", [
    (["--seed=-3"], ["SEED='-3'", "non-negative"]),
    (["--seed=abc"], ["SEED='abc'"]),
    (["--dim=5"], ["DIM='5'", "4, 8 or 16"]),
    (["--dim="], ["DIM=''"]),
    (["--waves=yes"], ["WAVES='yes'", "0 or 1"]),
    (["--model=resnet"], ["MODEL='resnet'", "file.py:function"]),
    (["--trace=build/"], ["TRACE='build/'", "directory"]),
])
def test_sim_options_one_line_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        sim.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sim: error:"), err
    for w in words:
        assert w in err


def test_sim_options_good():
    _, a = sim.parse_args(["--dim=16", "--model=conv", "--seed=0", "--waves=0", "--trace=build/t.json"])
    assert (a.dim, a.model, a.seed, a.waves, a.trace) == (16, "conv", 0, False, "build/t.json")
    _, a = sim.parse_args(["--waves=1"])
    assert a.waves is True and a.seed is None and a.model == "all"


# ---------------------------------------------------------------------------- a model of your own

def _write(tmp_path, text):
    f = tmp_path / "m.py"
    f.write_text(text)
    return f


def test_user_model_spec_errors(tmp_path, capsys):
    f = _write(tmp_path, "import numpy as np\n"
                         "def three():\n    return 1, 2, 3\n"
                         "def bad_pair(seed):\n    return 'graph', {}\n"
                         "def boom():\n    raise RuntimeError('no weights')\n"
                         "def bad_feeds(seed=0):\n"
                         "    from compiler.graph import Graph\n"
                         "    g = Graph('g'); x = g.input('x', (4, 8)); g.output(g.relu(x))\n"
                         "    return g, {'x': np.zeros((4, 8))}\n"
                         "NOT_A_FUNCTION = 3\n")
    for argv, words in [([f"--model={tmp_path}/missing.py:f"], ["does not exist"]),
                        ([f"--model={f}:nope"], ["no function 'nope'", "bad_pair", "three"]),
                        ([f"--model={f}:NOT_A_FUNCTION"], ["not a function"])]:
        with pytest.raises(SystemExit) as e:
            sim.parse_args(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(w in err for w in words), err
    for fn, words in [("three", ["returned tuple", "expected (Graph, feeds)"]),
                      ("bad_pair", ["returned (str, dict)"]),
                      ("boom", ["RuntimeError: no weights"]),
                      ("bad_feeds", ["input 'x'", "float64"])]:
        why = sim.check_user_model(f"{f}:{fn}", 8, 0)
        assert why and all(w in why for w in words), why
    with pytest.raises(models.UserModelError, match="unknown model 'nope'"):
        models.build("nope")


def test_user_model_main_exits_2_before_any_simulator(tmp_path, capsys, monkeypatch):
    """A model that does not compile is reported by main() before simbuild runs anything."""
    from tools import simbuild
    monkeypatch.setattr(simbuild, "run", lambda *a, **k: pytest.fail("a simulator started"))
    f = _write(tmp_path, "import numpy as np\nfrom compiler.graph import Graph\n"
                         "def f(seed=0):\n    g = Graph('io'); x = g.input('x', (4, 8))\n"
                         "    g.output(x)\n    return g, {'x': np.zeros((4, 8), np.int8)}\n")
    with pytest.raises(SystemExit) as e:
        sim.main([f"--model={f}:f", "--seed=1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output 'x' is the graph input itself" in err, err
