"""The compiler's special-function graph ops (softmax, layer_norm, rms_norm, gelu, silu, lut, mul):
their integer parameters, the interpreter against the golden references and float64, and the
errors that name the node. Seeded by ``SEED`` like the other tests (printed on failure)."""
import os
import random

import numpy as np
import pytest

from compiler.errors import CompileError
from compiler.graph import Graph, interpret
from golden import special_functions as sf
from verif import special_accuracy as acc

SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))


@pytest.fixture(autouse=True)
def _print_seed():
    print(f"[special graph] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_special_graph.py)")


def test_causal_softmax_masks_per_query_block():
    """[heads, Sq, Sk] scores: every head's rows restart the mask; Sk > Sq shifts it (a decoder
    with earlier keys)."""
    rng = np.random.default_rng(SEED)
    g = Graph("attn")
    x = g.input("s", (3, 4, 6), scale=0.07)
    g.output(g.softmax(x, causal=True))
    s = rng.integers(-128, 128, (3, 4, 6)).astype(np.int8)
    y = interpret(g, {"s": s})[g.outputs[0].name]
    mult = g.outputs[0].producer.attrs["mult"]
    for h in range(3):
        assert np.array_equal(y[h], sf.softmax(s[h], mult=mult, causal=True, mask_offset=2))
    assert (y[:, 0, 3:] == 0).all() and (y[:, 3, :] > 0).any()
    with pytest.raises(CompileError, match="Sk >= Sq"):
        g.softmax(g.input("t", (5, 4), scale=0.1), causal=True)


def test_norms_lut_mul_match_golden_and_float():
    rng = np.random.default_rng(SEED)
    g = Graph("block")
    h = g.input("h", (5, 48), scale=0.04, zero_point=-3)
    gamma, beta = rng.uniform(0.5, 1.5, 48), rng.normal(0, 0.3, 48)
    ln = g.layer_norm(h, gamma, beta, eps=1e-5, scale=0.035, zero_point=1)
    rn = g.rms_norm(h, gamma, eps=1e-6, scale=0.035)
    gate = g.silu(ln, scale=0.03)
    up = g.gelu(rn, scale=0.03)
    m = g.mul(gate, up, scale=0.004)
    g.output(ln, rn, m)
    x = rng.integers(-128, 128, (5, 48)).astype(np.int8)
    out = interpret(g, {"h": x})
    ref_ln = acc.norm_float(x, 0.04, -3, gamma, beta, 1e-5, rms=False) / 0.035 + 1
    ref_rn = acc.norm_float(x, 0.04, -3, gamma, None, 1e-6, rms=True) / 0.035
    assert np.abs(out[ln.name] - np.clip(ref_ln, -128, 127)).max() <= 1.0
    assert np.abs(out[rn.name] - np.clip(ref_rn, -128, 127)).max() <= 1.0
    # the multiply of the two activations, from their int8 results
    a = sf.lookup(out[ln.name], gate.producer.attrs["table"])
    assert np.array_equal(out[m.name], sf.emul(
        a, sf.lookup(out[rn.name], up.producer.attrs["table"]), mult=m.producer.attrs["mult"],
        shift=m.producer.attrs["shift"]))


@pytest.mark.parametrize("build, match", [
    (lambda g, x: g.softmax(g.input("i32", (2, 4), "int32")), "dtype int32"),
    (lambda g, x: g.layer_norm(x, np.ones(7), np.zeros(8), scale=0.1), r"gamma must have shape \(8,\)"),
    (lambda g, x: g.rms_norm(g.input("wide", (1, 4097), scale=0.1), np.ones(4097), scale=0.1),
     "at most 4096"),
    (lambda g, x: g.mul(x, g.input("y", (2, 4), scale=0.1), scale=0.1), "shapes differ"),
    (lambda g, x: g.softmax(g.input("big", (2, 8), scale=2.0)), "too large"),
    (lambda g, x: g.gelu(x, scale=-1.0), "output scale"),
])
def test_bad_graph_ops_name_the_node(build, match):
    g = Graph("bad")
    x = g.input("x", (2, 8), scale=0.1)
    with pytest.raises(CompileError, match=match):
        build(g, x)

