"""Demo models for ``make sim``: a small int8 MLP and a conv layer, with seeded random weights,
quantization parameters chosen so the outputs are neither saturated nor all zero.

``build(name, seed) -> (Graph, feeds)``; ``MODELS`` lists the names. ``TORCH_MODELS`` are written
in PyTorch and imported (compiler/torch_models.py); they need the ``torch`` extra, which this module
imports only when one of them is built.

**Your own model**: ``build("path/to/file.py:function", seed)`` (:func:`load_user_model`) imports
the file and calls ``function(seed=seed)`` (or ``function()`` when it takes no ``seed``); it must
return ``(Graph, feeds)`` or ``(torch.nn.Module, example inputs)`` (a tensor or a tuple of tensors:
exported with ``torch.export``, calibrated on the inputs plus random batches of their shapes,
imported by :mod:`compiler.torch_import`). Every problem is a :class:`UserModelError` naming the
spec. docs/examples/my_model.py is an example.
"""
import importlib.util
import inspect
import sys
from pathlib import Path

import numpy as np

from .graph import Graph, check_feeds, im2col, interpret

__all__ = ["MODELS", "TORCH_MODELS", "build", "mlp", "decode_stack", "conv", "attention_block", "degenerate",
           "is_user_spec",
           "load_user_model", "display_name", "UserModelError"]

MODELS = ("mlp", "conv", "attention", "attention_causal")
TORCH_MODELS = ("torch_mlp", "torch_conv", "encoder", "decoder_block", "encoder_d64_s128",
                "encoder_d128_s64", "encoder_d128_s128", "decoder_block_d64_s128",
                "decoder_block_d128_s64", "decoder_block_d128_s128")


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


def decode_stack(seed=0, batch=1, width=256, layers=10):
    """A decode step's shape: ``batch`` x ``width`` int8 rows through ``layers`` width x width
    linear+ReLU layers. The layers share one weight matrix and bias (a 512-wide stack then fits
    a 1 MiB host memory); each layer still streams the weights, and calibrates its own scale."""
    rng = np.random.default_rng(seed)
    g = Graph("decode")
    x = g.input("x", (batch, width), scale=0.05, zero_point=int(rng.integers(-8, 8)))
    feeds = {"x": rng.integers(-128, 128, (batch, width), dtype=np.int8)}
    w = g.const("w", rng.integers(-128, 128, (width, width), dtype=np.int8), scale=0.01)
    b = g.const("b", rng.integers(-4000, 4000, width, dtype=np.int32))
    h = x
    for i in range(layers):
        scale = _calibrated_scale(g, feeds, h, w, b, codes=30)
        h = g.linear(h, w, b, scale=scale, zero_point=-20, relu=True, name=f"fc{i}")
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


def _values(g, feeds, *tensors):
    outs = g.outputs
    g.outputs = list(tensors)
    vals = interpret(g, feeds)
    g.outputs = outs
    return [vals[t.name] for t in tensors]


def attention_block(seed=0, d_model=64, seq=64, heads=4, causal=False, batch=1):
    """The attention half of a pre-norm transformer block: ``x + Wo · attention(LayerNorm(x))``
    with 4 heads, Q/K/V projections symmetric (zero point 0), every scale calibrated on the
    input: ``[batch, seq, d_model]`` int8 -> same. ``make bench`` measures it per size."""
    rng = np.random.default_rng(seed + 2)
    g = Graph("attention_causal" if causal else "attention")
    x = g.input("x", (batch, seq, d_model), scale=0.05)
    feeds = {"x": rng.integers(-128, 128, (batch, seq, d_model), dtype=np.int8)}
    h = g.layer_norm(x, rng.uniform(0.5, 1.5, d_model), rng.normal(0, 0.2, d_model), scale=0.03,
                     name="ln")

    def linear(src, name, scale=None):
        # weights of standard deviation ~1/sqrt(d_model), as a trained layer's (attention scores
        # of order one, not a one-hot softmax)
        w = g.const(f"{name}.w", rng.integers(-128, 128, (d_model, d_model), dtype=np.int8),
                    scale=1.35 / (128 * np.sqrt(d_model)))
        b = g.const(f"{name}.b", rng.integers(-3000, 3000, d_model, dtype=np.int32))
        return g.linear(src, w, b, scale=scale or _calibrated_scale(g, feeds, src, w, b, 30),
                        name=name)

    q, k, v = (linear(h, n) for n in ("q", "k", "v"))
    qv, kv, vv = _values(g, feeds, q, k, v)
    dh = d_model // heads
    scores, outs = [], []
    for i in range(heads):
        c = slice(i * dh, (i + 1) * dh)
        s = np.einsum("bqd,bkd->bqk", qv[..., c] * q.scale, kv[..., c] * k.scale) / np.sqrt(dh)
        p = np.exp(s - s.max(-1, keepdims=True))
        scores.append(np.abs(s).max())
        outs.append(np.abs((p / p.sum(-1, keepdims=True)) @ (vv[..., c] * v.scale)).max())
    a = g.attention(q, k, v, heads=heads, causal=causal, score_scale=max(scores) / 127,
                    scale=max(outs) / 127, name="attn")
    # the projection at the input's scale: the residual add fuses into its epilogue
    g.output(g.add(x, linear(a, "o", scale=float(x.scale)), name="residual"))
    return g, feeds


class UserModelError(ValueError):
    """``path/to/file.py:function`` does not name a usable model (the message says why)."""


def is_user_spec(name):
    """True for ``path/to/file.py:function`` (a model of your own), False for a built-in name."""
    return ".py:" in str(name)


def display_name(spec, root=None):
    """``spec`` with its path relative to ``root`` (the repository) when inside it."""
    if not is_user_spec(spec):
        return spec
    path, fn = str(spec).rsplit(":", 1)
    root = Path(root or Path(__file__).resolve().parent.parent)
    try:
        path = str(Path(path).resolve().relative_to(root))
    except ValueError:
        pass
    return f"{path}:{fn}"


def _user_function(spec):
    path, _, fname = str(spec).rpartition(":")
    if not path.endswith(".py") or not fname:
        raise UserModelError(f"model {spec!r}: expected path/to/file.py:function")
    file = Path(path)
    if not file.is_file():
        raise UserModelError(f"model {spec!r}: file {str(file)!r} does not exist "
                             f"(relative to {Path.cwd()})")
    mod_name = f"kaki_user_model_{abs(hash(str(file.resolve())))}"
    if mod_name in sys.modules:
        module = sys.modules[mod_name]
    else:
        loader = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception as e:
            raise UserModelError(f"model {spec!r}: importing {str(file)!r} raised "
                                 f"{type(e).__name__}: {e}") from e
        sys.modules[mod_name] = module
    fn = getattr(module, fname, None)
    if fn is None:
        found = sorted(k for k, v in vars(module).items()
                       if inspect.isfunction(v) and v.__module__ == mod_name and not k.startswith("_"))
        raise UserModelError(f"model {spec!r}: {str(file)!r} has no function {fname!r} "
                             f"(functions defined there: {', '.join(found) or 'none'})")
    if not callable(fn):
        raise UserModelError(f"model {spec!r}: {fname!r} is a {type(fn).__name__}, not a function")
    return fn


def _torch_module(obj):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _import_torch(spec, module, inputs, seed, calibration_batches=8):
    import torch
    from .torch_import import import_exported

    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs) \
        if isinstance(inputs, (tuple, list)) else None
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise UserModelError(f"model {spec!r}: a torch.nn.Module must come with its example "
                             f"inputs: a tensor or a tuple of tensors")
    module = module.eval()
    try:
        ep = torch.export.export(module, inputs)
    except Exception as e:
        raise UserModelError(f"model {spec!r}: torch.export.export failed: {type(e).__name__}: "
                             f"{e}") from e
    gen = torch.Generator().manual_seed(seed)
    calibration = [tuple(torch.randn(*x.shape, generator=gen) for x in inputs)
                   for _ in range(calibration_batches)] + [inputs]
    name = str(spec).rpartition(":")[2]
    imported = import_exported(ep, calibration, name=name)
    return imported.graph, imported.quantize_inputs(*[np.asarray(x.detach()) for x in inputs])


def load_user_model(spec, seed=0):
    """``path/to/file.py:function`` -> ``(Graph, feeds)`` (see the module docstring); raises
    :class:`UserModelError` for a missing file or function or a wrong return value, and the
    feed / compile errors (``FeedError``, ``CompileError``) of a malformed model."""
    fn = _user_function(spec)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_seed = "seed" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    try:
        result = fn(seed=seed) if takes_seed else fn()
    except Exception as e:
        raise UserModelError(f"model {spec!r}: calling it raised {type(e).__name__}: {e}") from e
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise UserModelError(f"model {spec!r} returned {type(result).__name__} {result!r:.80}; "
                             f"expected (Graph, feeds) or (torch.nn.Module, example inputs)")
    first, second = result
    if isinstance(first, Graph):
        if not isinstance(second, dict):
            raise UserModelError(f"model {spec!r} returned (Graph, {type(second).__name__}); the "
                                 f"feeds must be a dict {{input name: int8 array}}")
        check_feeds(first, second)
        return first, second
    if _torch_module(first):
        return _import_torch(spec, first, second, seed)
    raise UserModelError(f"model {spec!r} returned ({type(first).__name__}, "
                         f"{type(second).__name__}); expected (Graph, feeds) or "
                         f"(torch.nn.Module, example inputs)")


def build(name, seed=0):
    if is_user_spec(name):
        return load_user_model(name, seed)
    if name in TORCH_MODELS:
        from . import torch_models
        imported, inputs, _ = torch_models.build(name, seed)
        return imported.graph, imported.quantize_inputs(*inputs)
    if name in ("attention", "attention_causal"):
        return attention_block(seed, causal=name == "attention_causal")
    if name not in MODELS:
        raise UserModelError(f"unknown model {name!r}: one of {', '.join(MODELS + TORCH_MODELS)}, "
                             f"or path/to/file.py:function")
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
