"""Demo models for ``make sim``: a small int8 MLP and a conv layer, with seeded random weights,
quantization parameters chosen so the outputs are neither saturated nor all zero.

``build(name, seed) -> (Graph, feeds)``; ``MODELS`` lists the names. ``TORCH_MODELS`` are written
in PyTorch and imported (compiler/torch_models.py); they need the ``torch`` extra, which this module
imports only when one of them is built.
"""
import numpy as np

from .graph import Graph, im2col, interpret

__all__ = ["MODELS", "TORCH_MODELS", "build", "mlp", "conv", "degenerate"]

MODELS = ("mlp", "conv")
TORCH_MODELS = ("torch_mlp", "torch_conv")


def _calibrated_scale(g, feeds, x, w, b, codes):
    """Output scale that maps one standard deviation of the layer's real-valued result on the
    calibration ``feeds`` to ``codes`` int8 codes (post-training calibration, in miniature)."""
    outs = g.outputs
    g.outputs = [x]
    xv = interpret(g, feeds)[x.name]
    g.outputs = outs
    wv = w.data.reshape(-1, w.data.shape[-1]).astype(np.int64)
    if len(w.data.shape) == 4:                                 # conv: HWIO weight, im2col input
        kh, kw = w.data.shape[:2]
        xv = im2col(xv, kh, kw, 1, kh // 2, x.zero_point)
    acc = (xv.reshape(-1, wv.shape[0]).astype(np.int64) - x.zero_point) @ wv + b.data
    return float(np.std(acc)) * float(x.scale) * float(w.scale) / codes


def mlp(seed=0, batch=16, dims=(256, 512, 512, 10)):
    """``batch`` x dims[0] int8 input -> linear+ReLU layers -> dims[-1] logits (no ReLU)."""
    rng = np.random.default_rng(seed)
    g = Graph("mlp")
    x = g.input("x", (batch, dims[0]), scale=0.05, zero_point=int(rng.integers(-8, 8)))
    feeds = {"x": rng.integers(-128, 128, (batch, dims[0]), dtype=np.int8)}
    h = x
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        w = g.const(f"w{i}", rng.integers(-128, 128, (dims[i], dims[i + 1]), dtype=np.int8), scale=0.01)
        b = g.const(f"b{i}", rng.integers(-4000, 4000, dims[i + 1], dtype=np.int32))
        scale = _calibrated_scale(g, feeds, h, w, b, codes=30)
        h = g.linear(h, w, b, scale=scale, zero_point=0 if last else -20, relu=not last, name=f"fc{i}")
    g.output(h)
    return g, feeds


def conv(seed=0, n=1, hw=16, c=16, oc=32, k=3, head=16):
    """NHWC ``n x hw x hw x c`` -> conv2d kxk pad k//2 + ReLU -> ``oc`` channels -> a pointwise
    (per-pixel linear, i.e. 1x1 conv) head to ``head`` channels."""
    rng = np.random.default_rng(seed + 1)
    g = Graph("conv")
    x = g.input("img", (n, hw, hw, c), scale=0.02, zero_point=int(rng.integers(-8, 8)))
    feeds = {"img": rng.integers(-128, 128, (n, hw, hw, c), dtype=np.int8)}
    w = g.const("cw", rng.integers(-128, 128, (k, k, c, oc), dtype=np.int8), scale=0.01)
    b = g.const("cb", rng.integers(-3000, 3000, oc, dtype=np.int32))
    y = g.conv2d(x, w, b, scale=_calibrated_scale(g, feeds, x, w, b, codes=30), zero_point=-10,
                 stride=1, padding=k // 2, relu=True, name="conv")
    w2 = g.const("hw", rng.integers(-128, 128, (oc, head), dtype=np.int8), scale=0.01)
    b2 = g.const("hb", rng.integers(-3000, 3000, head, dtype=np.int32))
    y = g.linear(y, w2, b2, scale=_calibrated_scale(g, feeds, y, w2, b2, codes=30), zero_point=0,
                 name="head")
    g.output(y)
    return g, feeds


def build(name, seed=0):
    if name in TORCH_MODELS:
        from . import torch_models
        imported, inputs, _ = torch_models.build(name, seed)
        return imported.graph, imported.quantize_inputs(*inputs)
    return {"mlp": mlp, "conv": conv}[name](seed)


def degenerate(out, zero_point=None):
    """Why ``out`` (int8 array) is degenerate, or None: all one value, mostly saturated, or (with
    ``zero_point``) mostly at the zero point (ReLU killed it)."""
    out = np.asarray(out)
    if len(np.unique(out)) < 4:
        return f"only {len(np.unique(out))} distinct values"
    sat = np.mean((out == 127) | (out == -128))
    if sat > 0.05:
        return f"{sat:.0%} saturated"
    if zero_point is not None and np.mean(out == zero_point) > 0.8:
        return f"{np.mean(out == zero_point):.0%} at the zero point"
    return None
