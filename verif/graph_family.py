"""A seeded family of random compiler graphs: the models the cost model (compiler/cost.py) was
not tuned on, for ``make bench``'s cost-model validation (tools/bench.py ``costmodel``,
docs/bench.md "Cost model validation").

:func:`family` ``(seed, count)`` -> ``[Member]``, deterministic from ``seed``: member ``i`` is
built from ``numpy.random.default_rng([seed, i])`` by template ``TEMPLATES[i % len(TEMPLATES)]``,
so every template appears and a member does not change when ``count`` does. The templates:

* ``mlp``: 2-4 linear layers (ReLU on some), odd widths, M from 1 to a few hundred rows;
* ``residual``: linear + ReLU, a linear back to the input width at its scale, a residual add,
  sometimes a ReLU (an identity GEMM) or a further layer;
* ``matmul``: a chain of ``matmul`` + ``requantize`` (int32 accumulators requantized on chip),
  some with a per-channel weight scale;
* ``conv``: NHWC conv2d (kernel 1/3/5, stride 1/2, padding), ReLU, then a pointwise head or a
  global max-pool (``maxred``) and a linear;
* ``norm_ffn``: LayerNorm or RMSNorm, linear, GELU or SiLU, linear back, residual add;
* ``swiglu``: RMSNorm, SiLU(gate) * up (``mul``), down projection;
* ``softmax``: a standalone (sometimes causal) softmax over ``[B, Sq, Sk]`` scores and a
  linear on the probabilities;
* ``attention``: LayerNorm, Q/K/V projections, multi-head attention (sometimes causal), output
  projection + residual;
* ``heads``: attention spelled as ``heads_matmul`` (Q·Kᵀ per head) -> softmax -> ``heads_matmul``
  (P·V, heads merged) on graph inputs.

Shapes are drawn mostly off multiples of 8; every member compiles for the 8×8 chip and its
buffers fit the testbench's host memory (``verif.model_run.HOST_BYTES``; checked by
``tests/test_graph_family.py``). Output scales are calibrated on the member's own feeds (one
standard deviation of the real result ~30 codes) so outputs are neither saturated nor constant.

``python -m verif.graph_family [--seed N] [--count N]`` (``SEED=`` honoured) prints the family
with the cost model's predictions.
"""
import math
import os
from dataclasses import dataclass

import numpy as np

from compiler import special_params
from compiler.graph import Graph, im2col, interpret

__all__ = ["Member", "TEMPLATES", "VALIDATION_SEED", "FIT_SEED", "COUNT", "family", "member",
           "family_seed", "host_bytes"]

#: the seed ``make bench`` validates on, and the other one the cost constants were fitted on
VALIDATION_SEED = 1
FIT_SEED = 1000
#: members per family
COUNT = 24


@dataclass
class Member:
    name: str                    #: ``<index>_<template>``
    template: str
    graph: Graph
    feeds: dict
    shape: str                   #: the drawn parameters, in words


def family_seed(default=VALIDATION_SEED):
    """``SEED=`` from the environment, else ``default``."""
    env = os.environ.get("SEED", "").strip()
    if env and not env.isdigit():
        raise SystemExit(f"SEED={env!r}: must be a non-negative integer")
    return int(env) if env else default


# ------------------------------------------------------------------------------ helpers
def _odd(rng, lo, hi):
    """An integer in [lo, hi], redrawn (a few times) while it is a multiple of 8."""
    for _ in range(8):
        v = int(rng.integers(lo, hi + 1))
        if v % 8:
            return v
    return v


def _values(g, feeds, *tensors):
    outs = g.outputs
    g.outputs = list(tensors)
    vals = interpret(g, feeds)
    g.outputs = outs
    return [vals[t.name] for t in tensors]


def _real(t, q):
    return (q.astype(np.float64) - t.zero_point) * np.asarray(t.scale, np.float64)


def _scale_for(real, codes=30.0):
    s = float(np.std(real))
    return (s if s > 0 else float(np.max(np.abs(real))) or 1.0) / codes


class _Builder:
    """A graph under construction with its feeds, calibrating each layer on them."""

    def __init__(self, rng, name):
        self.rng, self.g, self.feeds = rng, Graph(name), {}

    def input(self, name, shape, scale=0.05, zero_point=None, spread=None):
        """An int8 input: uniform codes, or (``spread``) normal ones of that standard deviation
        (room for a residual add without saturating)."""
        zp = int(self.rng.integers(-8, 8)) if zero_point is None else zero_point
        if spread is None:
            self.feeds[name] = self.rng.integers(-128, 128, shape, dtype=np.int8)
        else:
            self.feeds[name] = np.clip(np.rint(self.rng.normal(zp, spread, shape)), -128,
                                       127).astype(np.int8)
        return self.g.input(name, shape, scale=scale, zero_point=zp)

    def weight(self, name, k, n, per_channel=False):
        rng = self.rng
        w = rng.integers(-128, 128, (k, n), dtype=np.int8)
        scale = rng.uniform(0.005, 0.02, n) if per_channel else 1.35 / (128 * math.sqrt(k))
        return self.g.const(name, w, scale=scale)

    def bias(self, name, n):
        return self.g.const(name, self.rng.integers(-3000, 3000, n, dtype=np.int32))

    def linear(self, x, n, name, relu=False, zero_point=None, scale=None, bias=True,
               per_channel=False, codes=30.0):
        """A linear layer calibrated on the feeds: its output ``scale`` so that one standard
        deviation is ``codes`` codes, or, with ``scale`` given (e.g. a residual branch at its
        input's scale), the weight's scale chosen so."""
        rng = self.rng
        wq = rng.integers(-128, 128, (x.cols, n), dtype=np.int8)
        b = self.bias(f"{name}.b", n) if bias else None
        (xv,) = _values(self.g, self.feeds, x)
        acc = (xv.reshape(-1, x.cols).astype(np.int64) - x.zero_point) @ wq.astype(np.int64)
        if b is not None:
            acc = acc + b.data
        if scale is None:
            wscale = rng.uniform(0.005, 0.02, n) if per_channel else 1.35 / (128 * math.sqrt(x.cols))
            scale = _scale_for(acc * float(x.scale) * np.asarray(wscale, np.float64), codes)
        else:
            wscale = scale * codes / (float(x.scale) * (float(np.std(acc)) or 1.0))
        w = self.g.const(f"{name}.w", wq, scale=wscale)
        zp = (-20 if relu else 0) if zero_point is None else zero_point
        return self.g.linear(x, w, b, scale=scale, zero_point=zp, relu=relu, name=name)

    def requantize(self, x, name, zero_point=0):
        (xv,) = _values(self.g, self.feeds, x)
        return self.g.requantize(x, scale=_scale_for(_real(x, xv)), zero_point=zero_point,
                                 name=name)

    def matmul(self, x, n, name, per_channel=False):
        w = self.weight(f"{name}.w", x.cols, n, per_channel)
        return self.requantize(self.g.matmul(x, w, name=name), f"{name}.rq",
                               zero_point=int(self.rng.integers(-10, 10)))

    def lut(self, fn, x, name):
        (xv,) = _values(self.g, self.feeds, x)
        real = getattr(special_params, fn)(_real(x, xv))
        return getattr(self.g, fn)(x, scale=_scale_for(real, 40), zero_point=-60, name=name)

    def norm(self, kind, x, name):
        d, rng = x.cols, self.rng
        gamma = rng.uniform(0.5, 1.5, d)
        if kind == "layer_norm":
            return self.g.layer_norm(x, gamma, rng.normal(0, 0.2, d), scale=0.03, name=name)
        return self.g.rms_norm(x, gamma, scale=0.03, name=name)

    def mul(self, a, b, name):
        av, bv = _values(self.g, self.feeds, a, b)
        return self.g.mul(a, b, scale=_scale_for(_real(a, av) * _real(b, bv)), name=name)

    def attention_scales(self, q, k, v, heads, causal):
        """(score_scale, scale) calibrated on the feeds, as compiler/models.py attention_block."""
        qv, kv, vv = (_real(t, x) for t, x in zip((q, k, v), _values(self.g, self.feeds, q, k, v)))
        dh = q.cols // heads
        smax, omax = 0.0, 0.0
        for h in range(heads):
            c = slice(h * dh, (h + 1) * dh)
            s = np.einsum("...qd,...kd->...qk", qv[..., c], kv[..., c]) / math.sqrt(dh)
            if causal:
                sq, sk = s.shape[-2:]
                s = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None] + sk - sq, s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            smax = max(smax, float(np.abs(s[np.isfinite(s)]).max()))
            omax = max(omax, float(np.abs((p / p.sum(-1, keepdims=True)) @ vv[..., c]).max()))
        return smax / 127, (omax or 1.0) / 127


# ------------------------------------------------------------------------------ templates
def _mlp(b):
    rng = b.rng
    m = int(rng.choice([1, 2, 3, _odd(rng, 4, 40), _odd(rng, 40, 300)]))
    layers = int(rng.integers(2, 5))
    dims = [_odd(rng, 9, 260) for _ in range(layers + 1)]
    h = b.input("x", (m, dims[0]))
    relus = []
    for i in range(layers):
        relu = i < layers - 1 and bool(rng.random() < 0.7)
        relus.append(relu)
        h = b.linear(h, dims[i + 1], f"fc{i}", relu=relu)
    b.g.output(h)
    return f"M={m} widths {'-'.join(map(str, dims))} relu {''.join('1' if r else '0' for r in relus)}"


def _residual(b):
    rng = b.rng
    m, d, hid = _odd(rng, 1, 260), _odd(rng, 9, 200), _odd(rng, 9, 260)
    x = b.input("x", (m, d), spread=30)
    h = b.linear(x, hid, "up", relu=True)
    y = b.linear(h, d, "down", scale=float(x.scale), zero_point=int(rng.integers(-4, 4)),
                 codes=20)
    r = b.g.add(x, y, name="residual")
    tail = str(rng.choice(["none", "relu", "linear"]))
    if tail == "relu":
        r = b.g.relu(r, name="relu")
    elif tail == "linear":
        r = b.linear(r, _odd(rng, 5, 120), "head")
    b.g.output(r)
    return f"M={m} D={d} H={hid} tail {tail}"


def _matmul(b):
    rng = b.rng
    m = int(rng.choice([_odd(rng, 1, 16), _odd(rng, 17, 300)]))
    links = int(rng.integers(1, 4))
    dims = [_odd(rng, 9, 260) for _ in range(links + 1)]
    h = b.input("x", (m, dims[0]), zero_point=0)
    for i in range(links):
        h = b.matmul(h, dims[i + 1], f"mm{i}", per_channel=bool(rng.random() < 0.5))
    b.g.output(h)
    return f"M={m} chain {'-'.join(map(str, dims))}"


def _conv(b):
    rng = b.rng
    k = int(rng.choice([1, 3, 3, 5]))
    stride = int(rng.choice([1, 1, 2]))
    pad = int(rng.choice([0, k // 2]))
    n, hw = int(rng.integers(1, 3)), _odd(rng, max(k, 5), 20)
    c, oc = _odd(rng, 3, 24), _odd(rng, 5, 48)
    x = b.input("img", (n, hw, hw, c), scale=0.02)
    w = b.g.const("cw", rng.integers(-128, 128, (k, k, c, oc), dtype=np.int8), scale=0.01)
    bias = b.bias("cb", oc)
    xv = b.feeds["img"]
    acc = ((im2col(xv, k, k, stride, pad, x.zero_point).reshape(-1, k * k * c).astype(np.int64)
            - x.zero_point) @ w.data.reshape(-1, oc).astype(np.int64) + bias.data)
    y = b.g.conv2d(x, w, bias, scale=_scale_for(acc * 0.02 * 0.01), zero_point=-10, stride=stride,
                   padding=pad, relu=True, name="conv")
    head = str(rng.choice(["pointwise", "maxpool"]))
    if head == "pointwise":
        y = b.linear(y, _odd(rng, 5, 40), "head")
    elif y.rows <= 256:
        y = b.linear(b.g.maxred(y, name="pool"), _odd(rng, 5, 40), "head")
    else:
        head = "pointwise"
        y = b.linear(y, _odd(rng, 5, 40), "head")
    b.g.output(y)
    return f"{n}x{hw}x{hw}x{c} conv {k}x{k}/{stride} pad {pad} -> {oc}, {head} head"


def _norm_ffn(b):
    rng = b.rng
    m, d, hid = _odd(rng, 1, 200), _odd(rng, 9, 160), _odd(rng, 9, 260)
    kind = str(rng.choice(["layer_norm", "rms_norm"]))
    act = str(rng.choice(["gelu", "silu"]))
    x = b.input("x", (m, d), spread=30)
    h = b.norm(kind, x, "norm")
    h = b.lut(act, b.linear(h, hid, "up", zero_point=-10), act)
    y = b.linear(h, d, "down", scale=float(x.scale), codes=20)
    b.g.output(b.g.add(x, y, name="residual"))
    return f"M={m} D={d} H={hid} {kind} {act}"


def _swiglu(b):
    rng = b.rng
    m, d, hid = _odd(rng, 1, 160), _odd(rng, 9, 128), _odd(rng, 9, 200)
    x = b.input("x", (m, d))
    h = b.norm("rms_norm", x, "rms")
    gate = b.lut("silu", b.linear(h, hid, "gate"), "silu")
    up = b.linear(h, hid, "upp")
    f = b.mul(gate, up, "swiglu")
    b.g.output(b.linear(f, d, "down"))
    return f"M={m} D={d} H={hid}"


def _softmax(b):
    rng = b.rng
    bt, sq = int(rng.integers(1, 4)), _odd(rng, 3, 48)
    sk = sq + int(rng.integers(0, 30))
    causal = bool(rng.random() < 0.5)
    s = b.input("scores", (bt, sq, sk), scale=0.04, zero_point=0)
    p = b.g.softmax(s, causal=causal, name="softmax")
    b.g.output(b.linear(p, _odd(rng, 5, 64), "proj"))
    return f"{bt}x{sq}x{sk}{' causal' if causal else ''}"


def _attention(b):
    rng = b.rng
    heads = int(rng.choice([1, 2, 3, 4]))
    d = heads * int(rng.integers(3, 13))
    seq, bt = _odd(rng, 3, 48), int(rng.integers(1, 3))
    causal = bool(rng.random() < 0.5)
    x = b.input("x", (bt, seq, d), zero_point=0, spread=30)
    h = b.norm("layer_norm", x, "ln")
    q, k, v = (b.linear(h, d, n, zero_point=0) for n in ("q", "k", "v"))
    score_scale, scale = b.attention_scales(q, k, v, heads, causal)
    a = b.g.attention(q, k, v, heads=heads, causal=causal, score_scale=score_scale, scale=scale,
                      name="attn")
    b.g.output(b.g.add(x, b.linear(a, d, "o", scale=float(x.scale), codes=20), name="residual"))
    return f"{bt}x{seq}x{d} heads {heads}{' causal' if causal else ''}"


def _heads(b):
    rng = b.rng
    heads = int(rng.choice([1, 2, 3, 4]))
    d = heads * int(rng.integers(3, 11))
    sq, bt = _odd(rng, 3, 40), int(rng.integers(1, 3))
    sk = sq + int(rng.integers(0, 20))
    q = b.input("q", (bt, sq, d), zero_point=0)
    k = b.input("k", (bt, sk, d), zero_point=0)
    v = b.input("v", (bt, sk, d), zero_point=0)
    score_scale, scale = b.attention_scales(q, k, v, heads, False)
    s = b.g.heads_matmul(q, k, heads=heads, transpose_b=True, scale=score_scale,
                         alpha=1 / math.sqrt(d // heads), name="qk")
    p = b.g.softmax(s, name="softmax")
    b.g.output(b.g.heads_matmul(p, v, heads=heads, transpose_b=False, scale=scale, name="pv"))
    return f"{bt}x{sq}x{sk} D={d} heads {heads}"


TEMPLATES = {"mlp": _mlp, "residual": _residual, "matmul": _matmul, "conv": _conv,
             "norm_ffn": _norm_ffn, "swiglu": _swiglu, "softmax": _softmax,
             "attention": _attention, "heads": _heads}


def member(seed, index):
    """Member ``index`` of the family of ``seed``."""
    name = list(TEMPLATES)[index % len(TEMPLATES)]
    b = _Builder(np.random.default_rng([seed, index]), f"g{index}_{name}")
    shape = TEMPLATES[name](b)
    return Member(f"{index}_{name}", name, b.g, b.feeds, shape)


def family(seed, count=COUNT):
    """The first ``count`` members of the family of ``seed``."""
    return [member(seed, i) for i in range(count)]


def host_bytes(program):
    """Bytes of host memory ``program``'s buffers take (each rounded up to its alignment)."""
    return sum(-(-s.nbytes // s.align) * s.align for s in program.buffers.values())


def main(argv=None):
    import argparse

    from compiler.compile import compile_graph
    from hdl_gen.config import KakiConfig
    from spec.capabilities import Capabilities

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None, help=f"default SEED= or {VALIDATION_SEED}")
    ap.add_argument("--count", type=int, default=COUNT)
    ap.add_argument("--dim", type=int, default=8)
    args = ap.parse_args(argv)
    seed = family_seed() if args.seed is None else args.seed
    caps = Capabilities.from_config(KakiConfig(dim=args.dim))
    print(f"[graph family] seed {seed} ({args.count} members, {args.dim}x{args.dim})")
    for m in family(seed, args.count):
        cm = compile_graph(m.graph, caps)
        print(f"  {m.name:<14} {len(cm.program.commands):>5} cmds {cm.report()['bound']:>9} "
              f"predicted  {host_bytes(cm.program) / 1024:7.1f} KiB  {m.shape}")


if __name__ == "__main__":
    main()
