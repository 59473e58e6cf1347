"""The compiler's input: a small graph API over quantized int8 tensors, its NumPy interpreter, its
verifier and its MLIR-generic dump (IR level 1, "graph IR").

Tensors are int8 (with ``scale`` and ``zero_point``: real = scale * (q - zero_point)) or int32
(matmul results: real = scale * q, zero point 0). A tensor of any rank is seen by the ops as a
matrix of ``prod(shape[:-1])`` rows by ``shape[-1]`` channels (row-major host layout), so a conv's
NHWC output feeds a linear layer directly.

Ops (every integer parameter is fixed when the node is built, so the interpreter and the compiled
program compute the same bits; the arithmetic is :mod:`golden.ops`):

* ``linear(x, w, bias, scale, zero_point, relu=False)``: ``w`` int8 ``[K, N]`` (zero point 0, per
  tensor or per-channel scale), ``bias`` int32 ``[N]`` at scale ``x.scale * w.scale`` (or None);
  ``y = requant(x @ w + bias - x.zp * colsum(w))`` with ``mult/shift`` from ``x.scale * w.scale /
  scale`` (then quantized ReLU).
* ``matmul(x, w)`` -> int32 ``x @ w - x.zp * colsum(w)`` at scale ``x.scale * w.scale``; it must
  be requantized before it is stored (an int32 graph output is a compile error).
* ``conv2d(x, w, bias, scale, zero_point, stride, padding, relu)``: NHWC int8 ``x``, ``w`` int8
  ``[KH, KW, C, OC]``: exactly ``linear(im2col(x), w.reshape(KH*KW*C, OC))`` where
  :func:`im2col` pads with ``x.zero_point`` and orders patch columns ``(kh, kw, c)``. The im2col
  is a **host preprocessing step**: the compiled program's input buffer holds the patch matrix
  (``CompiledModel.pack_inputs`` applies :func:`im2col`), so a conv's input must be a graph input.
* ``add(a, b)``: saturating int8 ``clamp(a + b)`` (the vector unit's residual add); ``a`` and
  ``b`` must have the same scale; the result has zero point ``a.zp + b.zp``.
* ``relu(x)``: ``max(x, x.zp)``. ``requantize(x, scale, zero_point, bias=None)``: int32 -> int8
  (``requant(x + bias)``), or int8 -> int8 (``requant(x - x.zp)``).
* ``maxred(x)``: int8 ``[R, C]`` (any rank, seen as rows x channels) -> ``[1, C]``, the elementwise
  max over all rows (:func:`golden.ops.max_reduce`, the vector unit's ``ops.maxred``; e.g. a global
  max-pool of an NHWC feature map); same scale and zero point.
* transformer ops (the special-function unit; docs/compiler.md): ``softmax``, ``layer_norm``,
  ``rms_norm``, ``lut`` / ``gelu`` / ``silu``, ``mul``, ``attention`` (multi-head scaled
  dot-product, optional causal mask) and ``heads_matmul`` (a batched matmul over heads, with B
  transposed or the heads merged).
* collectives over a group of chips (SPMD per-chip graphs, compiler/sharding.py): ``collective(op,
  x, grid=, grid_shape=, grid_axes=, axis=)`` with ``op`` in :data:`GRID_OPS` -- ``all_reduce``
  (int32 wrapping sum), ``reduce_scatter`` (int32, along ``axis``), ``all_gather`` and the local
  ``all_slice`` (along ``axis``). :func:`interpret` runs them over a group of one chip;
  :func:`run_nodes` hands them to a driver that runs the group (``sharding.interpret_spmd``).

Feeds (``interpret`` and ``CompiledModel.pack_inputs``) are checked by :func:`check_feeds`: one
NumPy array per graph input, exactly its shape and dtype, no other names; nothing is converted.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from golden import collectives, ops
from golden import special_functions as ops_sf
from spec import chip

from . import mlir, special_params
from .errors import CompileError

__all__ = ["Tensor", "Node", "Graph", "quantize_multiplier", "im2col", "interpret", "run_nodes",
           "check_feeds", "FeedError", "DTYPES", "GRID_OPS"]

DTYPES = {"int8": np.int8, "int32": np.int32}
#: The special-function unit's ops (docs/numerics.md "Special functions").
SPECIAL_OPS = ("softmax", "layer_norm", "rms_norm", "lut", "mul")
#: Ops the compiler knows (``Graph.custom`` can build others; compiling them is an error).
#: Collectives over a group of chips (MLIR ``shard`` dialect semantics, golden/collectives.py).
GRID_OPS = ("all_reduce", "reduce_scatter", "all_gather", "all_slice")
KNOWN_OPS = ("input", "const", "linear", "matmul", "conv2d", "add", "relu", "requantize",
             "maxred", "attention", "heads_matmul") + SPECIAL_OPS + GRID_OPS


class FeedError(CompileError):
    """A feed does not match the graph's inputs (missing, unknown, wrong type, dtype or shape)."""


def check_feeds(graph, feeds):
    """``feeds`` must map every graph input name, and nothing else, to a NumPy array of exactly
    the input's shape and dtype (nothing is converted: a float, int16 or transposed array is an
    error). Returns ``{input name: array}``; raises :class:`FeedError` naming the input and the
    offending value (and, for a missing or unknown name, the expected names)."""
    inputs = graph.inputs
    expected = [t.name for t in inputs]
    if not isinstance(feeds, dict):
        raise FeedError(f"graph {graph.name!r}", f"feeds must be a dict {{input name: array}}, got "
                                                 f"{type(feeds).__name__}")
    unknown = [k for k in feeds if k not in expected]
    missing = [k for k in expected if k not in feeds]
    if unknown or missing:
        what = "; ".join(([f"unknown feed name(s) {unknown}"] if unknown else []) +
                         ([f"missing feed(s) {missing}"] if missing else []))
        raise FeedError(f"graph {graph.name!r}", f"{what} (the graph's inputs are {expected})")
    out = {}
    for t in inputs:
        v = feeds[t.name]
        where = f"input {t.name!r}"
        if not isinstance(v, np.ndarray):
            raise FeedError(where, f"feed is a {type(v).__name__}, expected a NumPy {t.dtype} array "
                                   f"of shape {t.shape}")
        if v.dtype != DTYPES[t.dtype]:
            raise FeedError(where, f"feed has dtype {v.dtype}, expected {t.dtype} (nothing is "
                                   f"converted: quantize it first)")
        if v.shape != t.shape:
            raise FeedError(where, f"feed has shape {v.shape}, expected {t.shape}")
        out[t.name] = v
    return out


def quantize_multiplier(real, where="requantize"):
    """``real`` (scalar or per-channel array, > 0) -> int32 ``mult`` and ``shift`` arrays with
    ``real ~= mult * 2**-shift``, ``mult`` in [2**30, 2**31), ``shift`` in 0..63. A ratio outside
    [2**-33, 2**31) cannot be represented so: CompileError naming ``where`` and the ratio."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    mult, shift = np.zeros(real.shape, np.int32), np.zeros(real.shape, np.int32)
    per_channel = len(real) > 1 and bool((real != real[0]).any())
    for i, r in enumerate(real):
        if not (np.isfinite(r) and r > 0):
            raise CompileError(where, f"requantization multiplier {r} must be positive and finite")
        mant, exp = math.frexp(float(r))
        m = round(mant * 2**31)
        if m == 2**31:
            m, exp = m // 2, exp + 1
        s = 31 - exp
        chan = f" (channel {i})" if per_channel else ""
        if s > 63:
            raise CompileError(where, f"output-scale ratio{chan} {r:.6g} (input scale x weight scale "
                                      f"/ output scale) is below 2**-33: mult in [2**30, 2**31) "
                                      f"would need a shift above 63; use a smaller output scale")
        if s < 0:
            raise CompileError(where, f"output-scale ratio{chan} {r:.6g} is too large (>= 2**31): "
                                      f"use a larger output scale")
        mult[i], shift[i] = m, s
    return mult, shift


def im2col(x, kh, kw, stride, padding, pad_value):
    """NHWC int8 ``x`` -> patch matrix ``[N*OH*OW, KH*KW*C]`` (columns ordered kh, kw, c)."""
    n, h, w, c = x.shape
    xp = np.full((n, h + 2 * padding, w + 2 * padding, c), pad_value, dtype=x.dtype)
    xp[:, padding:padding + h, padding:padding + w] = x
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = xp[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return cols.reshape(n * oh * ow, kh * kw * c)


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple
    dtype: str
    scale: object = 1.0          #: float, or a per-channel array (int32 matmul results)
    zero_point: int = 0
    producer: "Node" = None
    data: np.ndarray = None      #: constants only

    @property
    def rows(self):
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def cols(self):
        return int(self.shape[-1])

    @property
    def nbytes(self):
        return self.rows * self.cols * np.dtype(DTYPES[self.dtype]).itemsize

    @property
    def is_const(self):
        return self.data is not None

    def mlir_type(self):
        return mlir.tensor_type(self.shape, self.dtype)

    def __repr__(self):
        return f"Tensor({self.name}, {self.shape}, {self.dtype})"


@dataclass(eq=False)
class Node:
    op: str
    name: str
    inputs: list
    attrs: dict
    output: Tensor = None

    def __repr__(self):
        return f"{self.op} node {self.name!r}"

    @property
    def where(self):
        return f"{self.op} {self.name!r}"


@dataclass
class Graph:
    name: str = "graph"
    nodes: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    # ----------------------------------------------------------------------------- building
    def _unique(self, name, prefix):
        taken = {n.name for n in self.nodes}
        if name is None:
            i = len(self.nodes)
            while f"{prefix}{i}" in taken:
                i += 1
            return f"{prefix}{i}"
        if name in taken:
            raise CompileError(f"node {name!r}", "name used twice")
        return name

    def _add(self, op, name, inputs, attrs, shape, dtype, scale=1.0, zero_point=0, data=None):
        node = Node(op, self._unique(name, op), list(inputs), attrs)
        if dtype not in DTYPES:
            raise CompileError(node.where, f"unsupported dtype {dtype!r} (int8 or int32)")
        if not shape or any(not isinstance(d, (int, np.integer)) or d <= 0 for d in shape):
            raise CompileError(node.where, f"unsupported shape {shape!r} (positive dimensions)")
        if dtype == "int8" and not -128 <= int(zero_point) <= 127:
            raise CompileError(node.where, f"zero point {zero_point} is outside -128..127")
        node.output = Tensor(node.name, tuple(int(d) for d in shape), dtype, scale, int(zero_point),
                             node, data)
        self.nodes.append(node)
        return node.output

    def input(self, name, shape, dtype="int8", scale=1.0, zero_point=0):
        return self._add("input", name, [], {}, shape, dtype, scale, zero_point)

    def const(self, name, data, scale=1.0, zero_point=0):
        data = np.asarray(data)
        dtype = {np.dtype(np.int8): "int8", np.dtype(np.int32): "int32"}.get(data.dtype, str(data.dtype))
        return self._add("const", name, [], {}, data.shape, dtype, scale, zero_point, data)

    def output(self, *tensors):
        self.outputs.extend(tensors)
        return tensors[0] if len(tensors) == 1 else tensors

    def _need(self, node_where, t, dtype, what):
        if not isinstance(t, Tensor):
            raise CompileError(node_where, f"{what} is not a Tensor")
        if t.dtype != dtype:
            raise CompileError(node_where, f"{what} {t.name!r} has dtype {t.dtype}, expected {dtype}")

    def _gemm_params(self, where, x, w, bias, out_scale):
        self._need(where, x, "int8", "input")
        self._need(where, w, "int8", "weight")
        if len(w.shape) != 2:
            raise CompileError(where, f"weight shape {w.shape} is not [K, N]")
        if x.cols != w.shape[0]:
            raise CompileError(where, f"input has {x.cols} channels, weight expects K={w.shape[0]}")
        if w.zero_point != 0:
            raise CompileError(where, f"weight zero point {w.zero_point} is unsupported (must be 0)")
        n = w.shape[1]
        wscale = np.broadcast_to(np.asarray(w.scale, np.float64), (n,))
        corr = np.zeros(n, np.int64)
        if x.zero_point:
            if not w.is_const:
                raise CompileError(where, "input zero point must be 0 when the weight is not a constant")
            corr = -x.zero_point * w.data.astype(np.int64).sum(axis=0)
        if bias is not None:
            self._need(where, bias, "int32", "bias")
            if not bias.is_const or bias.shape != (n,):
                raise CompileError(where, f"bias must be a constant int32 [{n}]")
            corr = corr + bias.data.astype(np.int64)
        bias_eff = (((corr + 2**31) & 0xFFFFFFFF) - 2**31).astype(np.int32)
        acc_scale = float(x.scale) * wscale
        attrs = dict(bias=bias_eff)
        if out_scale is not None:
            attrs["mult"], attrs["shift"] = quantize_multiplier(acc_scale / out_scale, where)
            if len(attrs["mult"]) == 1:
                attrs["mult"] = np.repeat(attrs["mult"], n)
                attrs["shift"] = np.repeat(attrs["shift"], n)
        return attrs, acc_scale

    def linear(self, x, w, bias=None, *, scale, zero_point=0, relu=False, name=None):
        name = self._unique(name, "linear")
        attrs, _ = self._gemm_params(f"linear {name!r}", x, w, bias, scale)
        attrs.update(zero_point=int(zero_point), relu=bool(relu))
        ins = [x, w] + ([bias] if bias is not None else [])
        return self._add("linear", name, ins, attrs, x.shape[:-1] + (w.shape[1],), "int8", scale,
                         zero_point)

    def matmul(self, x, w, *, name=None):
        name = self._unique(name, "matmul")
        attrs, acc_scale = self._gemm_params(f"matmul {name!r}", x, w, None, None)
        return self._add("matmul", name, [x, w], attrs, x.shape[:-1] + (w.shape[1],), "int32",
                         acc_scale, 0)

    def conv2d(self, x, w, bias=None, *, scale, zero_point=0, stride=1, padding=0, relu=False,
               name=None):
        name = self._unique(name, "conv2d")
        where = f"conv2d {name!r}"
        self._need(where, x, "int8", "input")
        self._need(where, w, "int8", "weight")
        if len(x.shape) != 4 or len(w.shape) != 4:
            raise CompileError(where, f"conv2d needs NHWC input and [KH, KW, C, OC] weight, got "
                                      f"{x.shape} and {w.shape}")
        if not w.is_const:
            raise CompileError(where, "the weight must be a constant")
        n, h, wd, c = x.shape
        kh, kw, wc, oc = w.shape
        if wc != c:
            raise CompileError(where, f"input has {c} channels, weight expects {wc}")
        if stride < 1 or padding < 0:
            raise CompileError(where, f"unsupported stride {stride} / padding {padding}")
        oh, ow = (h + 2 * padding - kh) // stride + 1, (wd + 2 * padding - kw) // stride + 1
        if oh < 1 or ow < 1:
            raise CompileError(where, f"kernel {kh}x{kw} is larger than the padded input {h}x{wd}")
        w2 = Tensor(f"{w.name}.2d", (kh * kw * c, oc), "int8", w.scale, 0, None,
                    w.data.reshape(kh * kw * c, oc))
        x2 = Tensor(f"{x.name}.im2col", (n * oh * ow, kh * kw * c), "int8", x.scale, x.zero_point)
        attrs, _ = self._gemm_params(where, x2, w2, bias, scale)
        attrs.update(zero_point=int(zero_point), relu=bool(relu), stride=int(stride),
                     padding=int(padding), kernel=(kh, kw), weight2d=w2.data)
        ins = [x, w] + ([bias] if bias is not None else [])
        return self._add("conv2d", name, ins, attrs, (n, oh, ow, oc), "int8", scale, zero_point)

    def add(self, a, b, *, name=None):
        name = self._unique(name, "add")
        where = f"add {name!r}"
        self._need(where, a, "int8", "lhs")
        self._need(where, b, "int8", "rhs")
        if a.shape != b.shape:
            raise CompileError(where, f"shapes differ: {a.shape} and {b.shape}")
        if not np.isclose(float(a.scale), float(b.scale)):
            raise CompileError(where, f"scales differ ({a.scale} and {b.scale}): requantize first")
        zp = a.zero_point + b.zero_point
        if not -128 <= zp <= 127:
            raise CompileError(where, f"result zero point {zp} is outside -128..127")
        return self._add("add", name, [a, b], {}, a.shape, "int8", a.scale, zp)

    def relu(self, x, *, name=None):
        name = self._unique(name, "relu")
        self._need(f"relu {name!r}", x, "int8", "input")
        return self._add("relu", name, [x], {}, x.shape, "int8", x.scale, x.zero_point)

    def requantize(self, x, *, scale, zero_point=0, bias=None, name=None):
        """``x`` int32 -> int8 ``requant(x + bias)`` (``bias`` a constant int32 [C] at ``x``'s
        scale, or None), or int8 -> int8 ``requant(x - x.zp)``. A bias takes an int32 that is not a
        matmul result (e.g. an all_reduce of partial matmuls): a matmul's bias belongs in
        ``linear``, whose epilogue adds it."""
        name = self._unique(name, "requantize")
        where = f"requantize {name!r}"
        if not isinstance(x, Tensor) or x.dtype not in DTYPES:
            raise CompileError(where, "input must be an int8 or int32 tensor")
        sc = np.broadcast_to(np.asarray(x.scale, np.float64), (x.cols,))
        mult, shift = quantize_multiplier(sc / scale, where)
        if len(mult) == 1:
            mult, shift = np.repeat(mult, x.cols), np.repeat(shift, x.cols)
        add = np.full(x.cols, -x.zero_point if x.dtype == "int8" else 0, np.int32)
        ins = [x]
        if bias is not None:
            self._need(where, bias, "int32", "bias")
            if x.dtype != "int32" or (x.producer is not None and x.producer.op == "matmul"):
                raise CompileError(where, "a bias needs an int32 input that is not a matmul result "
                                          "(use linear for a matmul with a bias)")
            if not bias.is_const or bias.shape != (x.cols,):
                raise CompileError(where, f"bias must be a constant int32 [{x.cols}]")
            add, ins = bias.data.astype(np.int32), [x, bias]
        return self._add("requantize", name, ins, dict(mult=mult, shift=shift, bias=add,
                                                       zero_point=int(zero_point)),
                         x.shape, "int8", scale, zero_point)

    def maxred(self, x, *, name=None):
        """Elementwise max over all rows of int8 ``x`` (``prod(shape[:-1])`` rows) -> ``[1, C]``."""
        name = self._unique(name, "maxred")
        self._need(f"maxred {name!r}", x, "int8", "input")
        return self._add("maxred", name, [x], {}, (1, x.cols), "int8", x.scale, x.zero_point)

    # --------------------------------------------------------------- special functions (the SFU)
    def softmax(self, x, *, causal=False, name=None):
        """Softmax over the last axis of int8 ``x`` -> int8 probabilities at scale 1/127, zero
        point 0 (docs/numerics.md). ``causal``: ``x`` is ``[..., Sq, Sk]`` attention scores and
        key ``j`` takes part in query row ``i`` only when ``j <= i + Sk - Sq``."""
        name = self._unique(name, "softmax")
        where = f"softmax {name!r}"
        self._need(where, x, "int8", "input")
        attrs = dict(mult=special_params.softmax_mult(float(x.scale), where), causal=bool(causal))
        if causal:
            if len(x.shape) < 2 or x.shape[-1] < x.shape[-2]:
                raise CompileError(where, f"a causal softmax needs [..., Sq, Sk] scores with "
                                          f"Sk >= Sq, got {x.shape}")
            attrs["mask_offset"] = x.shape[-1] - x.shape[-2]
        return self._add("softmax", name, [x], attrs, x.shape, "int8",
                         1.0 / ops_sf.SOFTMAX_ONE, 0)

    def _norm(self, op, x, gamma, beta, eps, scale, zero_point, name):
        name = self._unique(name, op)
        where = f"{op} {name!r}"
        self._need(where, x, "int8", "input")
        c = x.cols
        for what, v in (("gamma", gamma), ("beta", beta)):
            if v is not None and np.shape(v) != (c,):
                raise CompileError(where, f"{what} must have shape ({c},), got {np.shape(v)}")
        if c > chip.SFU_NORM_MAX_LEN:
            raise CompileError(where, f"{c} channels: at most {chip.SFU_NORM_MAX_LEN}")
        g, b, shift = special_params.norm_params(gamma, beta, scale, where)
        attrs = dict(gamma=g, shift=shift, eps=special_params.norm_eps(eps, float(x.scale), c, where))
        if b is not None:
            attrs["beta"] = b
        return self._add(op, name, [x], attrs, x.shape, "int8", scale, zero_point)

    def layer_norm(self, x, gamma, beta, *, eps=1e-5, scale, zero_point=0, name=None):
        """LayerNorm over the last axis of int8 ``x`` with float ``gamma``, ``beta`` [C]."""
        return self._norm("layer_norm", x, gamma, beta, eps, scale, zero_point, name)

    def rms_norm(self, x, gamma, *, eps=1e-6, scale, zero_point=0, name=None):
        """RMSNorm over the last axis of int8 ``x`` with float ``gamma`` [C]."""
        return self._norm("rms_norm", x, gamma, None, eps, scale, zero_point, name)

    def lut(self, x, fn, *, scale, zero_point=0, fn_name="fn", name=None):
        """``fn`` (float -> float, vectorized) at every int8 code of ``x``: a 256-entry table."""
        name = self._unique(name, "lut")
        where = f"lut {name!r}"
        self._need(where, x, "int8", "input")
        table = special_params.lut_table(fn, float(x.scale), x.zero_point, scale, zero_point, where)
        return self._add("lut", name, [x], dict(table=table, fn=fn_name), x.shape, "int8", scale,
                         zero_point)

    def gelu(self, x, *, scale, zero_point=0, name=None):
        """GELU (erf form) as a lookup table."""
        return self.lut(x, special_params.gelu, scale=scale, zero_point=zero_point, fn_name="gelu",
                        name=self._unique(name, "gelu"))

    def silu(self, x, *, scale, zero_point=0, name=None):
        """SiLU (x * sigmoid(x)) as a lookup table."""
        return self.lut(x, special_params.silu, scale=scale, zero_point=zero_point, fn_name="silu",
                        name=self._unique(name, "silu"))

    def mul(self, a, b, *, scale, zero_point=0, name=None):
        """Elementwise product of int8 ``a`` and ``b`` (same shape), requantized to ``scale``."""
        name = self._unique(name, "mul")
        where = f"mul {name!r}"
        self._need(where, a, "int8", "lhs")
        self._need(where, b, "int8", "rhs")
        if a.shape != b.shape:
            raise CompileError(where, f"shapes differ: {a.shape} and {b.shape}")
        mult, shift = special_params.emul_params(float(a.scale), float(b.scale), scale, where)
        return self._add("mul", name, [a, b], dict(mult=mult, shift=shift), a.shape, "int8",
                         scale, zero_point)

    def attention(self, q, k, v, *, heads, score_scale, scale, zero_point=0, causal=False,
                  sm_scale=None, name=None):
        """Multi-head scaled dot-product attention on int8 ``q`` ``[..., Sq, D]`` and ``k``, ``v``
        ``[..., Sk, D]`` (zero point 0; head ``h`` is columns ``h*D/heads`` .. of each, the layout
        of a linear projection before the head split, and of the output after the merge).

        Per batch item and head: ``s = requant(q_h @ k_h.T)`` to int8 at ``score_scale``
        (``sm_scale``, default ``1/sqrt(D/heads)``, folded into the multiplier), ``p =
        softmax(s)`` (scale 1/127; ``causal``: key ``j`` takes part in query ``i`` only when
        ``j <= i + Sk - Sq``), ``out_h = requant(p @ v_h)`` at ``scale``, ``zero_point``."""
        name = self._unique(name, "attention")
        where = f"attention {name!r}"
        for what, t in (("q", q), ("k", k), ("v", v)):
            self._need(where, t, "int8", what)
            if len(t.shape) < 2:
                raise CompileError(where, f"{what} must be [..., S, D], got {t.shape}")
            if t.zero_point != 0:
                raise CompileError(where, f"{what} zero point {t.zero_point} is unsupported "
                                          f"(attention operands are symmetric: zero point 0)")
        if k.shape != v.shape or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
            raise CompileError(where, f"shapes do not match: q {q.shape}, k {k.shape}, v {v.shape} "
                                      f"(q [..., Sq, D], k and v [..., Sk, D])")
        d = q.shape[-1]
        if not isinstance(heads, (int, np.integer)) or heads < 1 or d % heads:
            raise CompileError(where, f"heads={heads!r} must be a positive divisor of D={d}")
        sq, sk = q.shape[-2], k.shape[-2]
        if causal and sk < sq:
            raise CompileError(where, f"a causal mask needs Sk >= Sq, got Sq={sq}, Sk={sk}")
        dh = d // heads
        sm_scale = 1.0 / math.sqrt(dh) if sm_scale is None else float(sm_scale)
        s_mult, s_shift = quantize_multiplier(float(q.scale) * float(k.scale) * sm_scale
                                              / score_scale, f"{where} (scores)")
        o_mult, o_shift = quantize_multiplier(float(v.scale) / ops_sf.SOFTMAX_ONE / scale,
                                              f"{where} (output)")
        attrs = dict(heads=int(heads), causal=bool(causal), mask_offset=sk - sq,
                     score_scale=float(score_scale), sm_scale=sm_scale,
                     score_mult=int(s_mult[0]), score_shift=int(s_shift[0]),
                     softmax_mult=special_params.softmax_mult(float(score_scale), where),
                     mult=int(o_mult[0]), shift=int(o_shift[0]), zero_point=int(zero_point))
        return self._add("attention", name, [q, k, v], attrs, q.shape, "int8", scale, zero_point)

    def heads_matmul(self, a, b, *, heads, transpose_b, scale, zero_point=0, alpha=1.0,
                     name=None):
        """Batched matmul over heads of int8 operands with zero point 0, requantized to int8 at
        ``scale`` (the parts of an attention, usable alone). ``transpose_b``: ``a`` ``[..., M, D]``
        and ``b`` ``[..., N, D]`` with head ``h`` in columns ``h*D/heads ..`` -> ``[..., heads, M,
        N]`` = ``a_h @ b_h.T`` (Q·Kᵀ, K as stored). Else ``a`` ``[..., heads, M, K]`` and ``b``
        ``[..., K, heads*N]`` -> ``[..., M, heads*N]`` = ``a_h @ b_h``, the heads merged (P·V).
        ``alpha``: a real factor folded into the requantization (e.g. ``1/sqrt(dh)``)."""
        name = self._unique(name, "heads_matmul")
        where = f"heads_matmul {name!r}"
        for what, t in (("a", a), ("b", b)):
            self._need(where, t, "int8", what)
            if t.zero_point != 0:
                raise CompileError(where, f"{what} zero point {t.zero_point} is unsupported (0)")
        if not isinstance(heads, (int, np.integer)) or heads < 1:
            raise CompileError(where, f"heads={heads!r} must be a positive integer")
        if transpose_b:
            ok = (len(a.shape) >= 2 and a.shape[:-2] == b.shape[:-2] and a.cols == b.cols
                  and a.cols % heads == 0)
            shape = a.shape[:-2] + (int(heads), a.shape[-2], b.shape[-2]) if ok else None
        else:
            ok = (len(a.shape) >= 3 and a.shape[-3] == heads and a.shape[:-3] == b.shape[:-2]
                  and a.shape[-1] == b.shape[-2] and b.cols % heads == 0)
            shape = a.shape[:-3] + (a.shape[-2], b.cols) if ok else None
        if not ok:
            want = ("a [..., M, D], b [..., N, D], D divisible by heads" if transpose_b else
                    "a [..., heads, M, K], b [..., K, heads*N]")
            raise CompileError(where, f"shapes {a.shape} and {b.shape} with heads={heads}: "
                                      f"expected {want}")
        mult, shift = quantize_multiplier(float(a.scale) * float(b.scale) * float(alpha) / scale,
                                          where)
        attrs = dict(heads=int(heads), transpose_b=bool(transpose_b), mult=int(mult[0]),
                     shift=int(shift[0]), zero_point=int(zero_point))
        return self._add("heads_matmul", name, [a, b], attrs, shape, "int8", scale, zero_point)

    def collective(self, op, x, *, grid, grid_shape, grid_axes, axis=None, name=None):
        """A collective ``op`` (:data:`GRID_OPS`) of ``x`` over the chips of grid ``grid`` (shape
        ``grid_shape``) that differ only along ``grid_axes``: ``all_reduce`` (int32 sum, same
        shape), ``reduce_scatter`` (int32 sum, this chip's part along ``axis``), ``all_gather``
        (the group's parts concatenated along ``axis``), ``all_slice`` (this chip's part along
        ``axis``, no communication). Parts are equal: ``axis`` must split evenly."""
        name = self._unique(name, op)
        where = f"{op} {name!r}"
        if op not in GRID_OPS:
            raise CompileError(where, f"unknown collective (one of {', '.join(GRID_OPS)})")
        if not isinstance(x, Tensor):
            raise CompileError(where, "input is not a Tensor")
        axes = tuple(int(a) for a in grid_axes)
        if not axes or len(set(axes)) != len(axes) or not all(0 <= a < len(grid_shape) for a in axes):
            raise CompileError(where, f"grid_axes {grid_axes!r} must be distinct axes of the "
                                      f"{len(grid_shape)}-axis grid {grid!r}")
        group = int(np.prod([grid_shape[a] for a in axes]))
        attrs = dict(grid=str(grid), grid_shape=tuple(int(d) for d in grid_shape),
                     grid_axes=axes, group_size=group)
        shape = x.shape
        if op in ("all_reduce", "reduce_scatter"):
            self._need(where, x, "int32", "input")
        if op != "all_reduce":
            if axis is None or not -len(shape) <= axis < len(shape):
                raise CompileError(where, f"axis {axis!r} is not a dimension of {shape}")
            axis = int(axis) % len(shape)
            if axis == len(shape) - 1 and np.ndim(x.scale):
                raise CompileError(where, "a per-channel scale cannot follow a collective along "
                                          "the channel axis")
            if op != "all_gather" and shape[axis] % group:
                raise CompileError(where, f"dimension {axis} of size {shape[axis]} does not split "
                                          f"into {group} equal parts")
            size = shape[axis] * group if op == "all_gather" else shape[axis] // group
            shape = shape[:axis] + (size,) + shape[axis + 1:]
            attrs["axis"] = axis
        return self._add(op, name, [x], attrs, shape, x.dtype, x.scale, x.zero_point)

    def custom(self, op, *inputs, shape, dtype="int8", name=None, **attrs):
        """A node of an op the compiler may not know (an importer's escape hatch)."""
        return self._add(op, name, list(inputs), attrs, shape, dtype)

    # ----------------------------------------------------------------------------- queries
    @property
    def inputs(self):
        return [n.output for n in self.nodes if n.op == "input"]

    def consumers(self, t):
        return [n for n in self.nodes if any(i is t for i in n.inputs)]

    # ----------------------------------------------------------------------------- verify / dump
    def verify(self):
        """Structural checks: ops known, SSA order, dtypes; raises CompileError naming the node."""
        seen = set()
        for n in self.nodes:
            if n.op not in KNOWN_OPS:
                raise CompileError(n.where, f"unsupported op {n.op!r}")
            for t in n.inputs:
                if not isinstance(t, Tensor) or id(t) not in seen:
                    raise CompileError(n.where, f"operand {t!r} is not defined before its use")
            if n.output.dtype not in DTYPES:
                raise CompileError(n.where, f"unsupported dtype {n.output.dtype!r}")
            if n.op in ("input", "const") and n.inputs:
                raise CompileError(n.where, "takes no operands")
            seen.add(id(n.output))
        if not self.outputs:
            raise CompileError(f"graph {self.name!r}", "has no outputs")
        for t in self.outputs:
            if id(t) not in seen:
                raise CompileError(f"graph {self.name!r}", f"output {t!r} is not produced by the graph")
            if t.dtype != "int8":
                raise CompileError(t.producer.where, f"unsupported output dtype {t.dtype}: "
                                                     "int32 results must be requantized to int8")
        return self

    def dump(self):
        return dump_nodes(self.name, self.nodes, self.outputs)


def _attrs_of(node):
    out = {}
    for k, v in node.attrs.items():
        if k == "weight2d":
            continue
        out[k] = v
    if node.op in ("input", "const"):
        out["name"] = node.name
        if node.output.dtype == "int8":
            out["scale"] = float(np.asarray(node.output.scale).ravel()[0])
            out["zero_point"] = node.output.zero_point
    return out


def dump_nodes(name, nodes, outputs, attrs_of=_attrs_of):
    """MLIR generic syntax of a node list: ``%name = "kaki.op"(%a, %b) {attrs} : (types) -> type``."""
    lines = []
    for n in nodes:
        lines.append(mlir.op_line(f"kaki.{n.op}", [n.output.name],
                                  [t.name for t in n.inputs], attrs_of(n),
                                  [t.mlir_type() for t in n.inputs], [n.output.mlir_type()]))
    lines.append(mlir.op_line("kaki.return", [], [t.name for t in outputs], {},
                              [t.mlir_type() for t in outputs], []))
    return mlir.module(name, lines)


# --------------------------------------------------------------------------------- interpreter

def _2d(a, cols):
    return a.reshape(-1, cols)


def interpret(graph, feeds):
    """Run ``graph`` on NumPy: ``feeds`` maps input names to arrays; returns ``{output name: array}``.

    Bit-exact with the device by construction: every op is the :mod:`golden.ops` arithmetic the
    vector unit and the PE array implement, with the integer parameters fixed at graph build time.
    Collectives run over a group of one chip (:mod:`golden.collectives`); a graph whose
    collectives span more chips is one chip's part of an SPMD program: run the group together
    (``compiler.sharding.interpret_spmd``).
    """
    steps = run_nodes(graph, feeds)
    try:
        node, x = next(steps)
        while True:
            node, x = steps.send(_one_chip_collective(node, x))
    except StopIteration as done:
        return done.value


def _one_chip_collective(node, x):
    size = node.attrs["group_size"]
    if size != 1:
        raise CompileError(node.where, f"a collective over {size} chips: this graph is one chip's "
                                       f"part of an SPMD program (run the chips together with "
                                       f"compiler.sharding.interpret_spmd)")
    if node.op == "all_reduce":
        return collectives.all_reduce([x])[0]
    if node.op == "reduce_scatter":
        return collectives.reduce_scatter([x], axis=node.attrs["axis"])[0]
    if node.op == "all_gather":
        return collectives.all_gather([x], axis=node.attrs["axis"])[0]
    return x                                               # all_slice of a group of one


def run_nodes(graph, feeds):
    """:func:`interpret` as a generator for a driver that runs collectives: at every collective
    node (:data:`GRID_OPS`) it yields ``(node, input array)`` and continues with the array sent
    back (this chip's result); it returns ``{output name: array}``."""
    feeds = check_feeds(graph, feeds)
    env = {}
    for n in graph.nodes:
        ins = [env[id(i)] for i in n.inputs]
        if n.op in GRID_OPS:
            y = yield n, ins[0]
        else:
            y = _eval_node(n, ins, feeds)
        env[id(n.output)] = y if n.op in ("input", "const") else y.reshape(n.output.shape)
    return {t.name: env[id(t)] for t in graph.outputs}


def _eval_node(n, ins, feeds):
    """One node's result from its operands' arrays ``ins`` (``feeds`` for graph inputs)."""
    t = n.output
    a = n.attrs
    if n.op == "input":
        return feeds[n.name]
    if n.op == "const":
        return n.output.data
    if n.op in ("linear", "conv2d", "matmul"):
        x = ins[0]
        if n.op == "conv2d":
            kh, kw = a["kernel"]
            x2 = im2col(x, kh, kw, a["stride"], a["padding"], n.inputs[0].zero_point)
            w2 = a["weight2d"]
        else:
            x2, w2 = _2d(x, n.inputs[0].cols), ins[1]
        acc = ops.gemm(np.ascontiguousarray(x2), np.ascontiguousarray(w2))
        if n.op == "matmul":
            return ops.bias_add(acc, a["bias"])
        return ops.vector_epilogue(acc, bias=a["bias"], mult=a["mult"], shift=a["shift"],
                                   zero_point=a["zero_point"], relu=a["relu"])
    if n.op == "requantize":
        x = _2d(ins[0], t.cols).astype(np.int32)
        return ops.requantize(ops.bias_add(x, a["bias"]), a["mult"], a["shift"], a["zero_point"])
    if n.op == "relu":
        return ops.relu_q(ins[0], n.inputs[0].zero_point)
    if n.op == "add":
        return ops.add_sat(ins[0], ins[1])
    if n.op == "maxred":
        return ops.max_reduce(np.ascontiguousarray(_2d(ins[0], n.inputs[0].cols)))
    if n.op in SPECIAL_OPS:
        return _special(n, ins)
    if n.op == "attention":
        return _attention(n, ins)
    if n.op == "heads_matmul":
        return _heads_matmul(n, ins)
    raise CompileError(n.where, f"unsupported op {n.op!r}")


def _special(n, ins):
    """A special-function node on NumPy: the golden references on the node's integer params."""
    a, x, out = n.attrs, ins[0], n.output
    zo = out.zero_point
    if n.op == "softmax":
        if not a["causal"]:
            return ops_sf.softmax(_2d(x, out.cols), mult=a["mult"])
        sq = out.shape[-2]
        rows = x.reshape(-1, sq, out.cols)
        return np.stack([ops_sf.softmax(r, mult=a["mult"], causal=True,
                                        mask_offset=a["mask_offset"]) for r in rows])
    if n.op in ("layer_norm", "rms_norm"):
        kw = dict(eps=a["eps"], shift=a["shift"], in_zero_point=n.inputs[0].zero_point,
                  out_zero_point=zo)
        x2 = _2d(x, out.cols)
        if n.op == "rms_norm":
            return ops_sf.rms_norm(x2, a["gamma"], **kw)
        return ops_sf.layer_norm(x2, a["gamma"], a["beta"], **kw)
    if n.op == "lut":
        return ops_sf.lookup(x, a["table"])
    return ops_sf.emul(x, ins[1], mult=a["mult"], shift=a["shift"],
                       a_zero_point=n.inputs[0].zero_point, b_zero_point=n.inputs[1].zero_point,
                       out_zero_point=zo)


def attention_head(a, q, k, v):
    """One batch item and head of an ``attention`` node with attributes ``a``: int8 ``q``
    ``[Sq, dh]``, ``k``, ``v`` ``[Sk, dh]`` -> int8 ``[Sq, dh]`` (the three device steps: the
    scores GEMM + VECTOR requantization, SOFTMAX, the P @ V GEMM + VECTOR)."""
    sk, dh = k.shape

    def requant(acc, mult, shift, zp, n):
        return ops.requantize(acc, np.full(n, mult, np.int32), np.full(n, shift, np.int32), zp)

    s = requant(ops.gemm(q, np.ascontiguousarray(k.T)), a["score_mult"], a["score_shift"], 0, sk)
    p = ops_sf.softmax(s, mult=a["softmax_mult"], causal=a["causal"],
                       mask_offset=a["mask_offset"])
    return requant(ops.gemm(p, v), a["mult"], a["shift"], a["zero_point"], dh)


def _attention(n, ins):
    a = n.attrs
    q, k, v = ins
    d, h = q.shape[-1], a["heads"]
    dh = d // h
    q3, k3, v3 = (x.reshape(-1, x.shape[-2], d) for x in (q, k, v))
    out = np.empty(q3.shape, np.int8)
    for b in range(q3.shape[0]):
        for i in range(h):
            c = slice(i * dh, (i + 1) * dh)
            out[b, :, c] = attention_head(a, *(np.ascontiguousarray(x[b, :, c]) for x in (q3, k3, v3)))
    return out


def _heads_matmul(n, ins):
    a, h = n.attrs, n.attrs["heads"]
    x, y = ins
    out = n.output
    req = lambda acc: ops.requantize(acc, np.full(acc.shape[1], a["mult"], np.int32),  # noqa: E731
                                     np.full(acc.shape[1], a["shift"], np.int32), a["zero_point"])
    if a["transpose_b"]:
        x3, y3 = x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:])
        dh = x.shape[-1] // h
        res = np.empty((x3.shape[0], h, x3.shape[1], y3.shape[1]), np.int8)
        for b in range(x3.shape[0]):
            for i in range(h):
                c = slice(i * dh, (i + 1) * dh)
                res[b, i] = req(ops.gemm(np.ascontiguousarray(x3[b, :, c]),
                                         np.ascontiguousarray(y3[b, :, c].T)))
        return res.reshape(out.shape)
    x4, y3 = x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-2:])
    dn = y.shape[-1] // h
    res = np.empty((x4.shape[0], x4.shape[2], y.shape[-1]), np.int8)
    for b in range(x4.shape[0]):
        for i in range(h):
            c = slice(i * dn, (i + 1) * dn)
            res[b, :, c] = req(ops.gemm(np.ascontiguousarray(x4[b, i]),
                                        np.ascontiguousarray(y3[b, :, c])))
    return res.reshape(out.shape)
