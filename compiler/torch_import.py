"""Importer for ``torch.export``-ed float models: post-training int8 quantization into a
:class:`compiler.graph.Graph` (an optional extra: ``pip install kaki[torch]``; nothing else in
``compiler/``, ``driver/`` or ``golden/`` imports torch).

``import_exported(ep, calibration)`` runs the exported graph on the calibration batches, picks
quantization parameters from the observed ranges and emits graph ops:

=====================================  ==================================================
ATen op                                 graph op
=====================================  ==================================================
``linear``, ``mm``/``matmul`` by a      ``linear`` (per-output-channel symmetric int8 weight,
parameter                               int32 bias at ``x.scale * w.scale``)
``conv2d`` (groups 1, dilation 1,       ``conv2d`` on a graph input (host im2col); a 1×1
square stride/padding)                  stride-1 conv anywhere is a per-pixel ``linear``
``relu``                                fused into the producing linear/conv when it is the
                                        only consumer, else ``relu``
``add.Tensor``                          ``add`` (operands brought to one scale, zero point 0,
                                        by choosing their producers' output scale or by a
                                        ``requantize``)
``mul.Tensor`` of two activations of    ``mul`` (the SFU's elementwise product, requantized
the same shape                          to the product's observed range)
``layer_norm`` over the last dim        ``layer_norm`` (float gamma/beta from the parameters;
                                        none: 1 and 0)
``rms_norm`` over the last dim          ``rms_norm`` (eps None: ``finfo(float32).eps``)
``gelu`` (approximate ``'none'``)       ``gelu`` (a lookup table, erf form)
``gelu`` (approximate ``'tanh'``)       ``lut`` of the tanh formula
``silu``                                ``silu`` (a lookup table)
``softmax``/``_softmax`` over the       ``softmax`` (int8 probabilities at scale 1/127)
last dim
``scaled_dot_product_attention`` with   ``attention`` (one node: heads, causal, ``sm_scale``
the head split/merge around it          = SDPA's ``scale``; the scores' int8 scale from the
                                        calibrated max of ``|q_h k_h^T| * sm_scale``; q, k, v
                                        producers forced symmetric, zero point 0)
``view``/``reshape``/``flatten``/       free: ``[.., S, D] -> [.., S, H, D/H]`` (head split),
``unflatten`` and ``transpose``/        ``transpose`` of dims -3, -2 (or the equivalent
``permute`` around an attention         ``permute``, e.g. ``(0, 2, 1, 3)``) to ``[.., H, S,
                                        D/H]`` and back, then the merge to ``[.., S, D]``: the
                                        graph keeps ``[.., S, D]`` (head ``h`` is columns
                                        ``h*D/H`` ..)
``permute(0, 2, 3, 1)`` of NCHW,        free: the graph already holds 4-D activations as NHWC
``dropout``/``clone``/``contiguous``
=====================================  ==================================================

Anything else is a :class:`~compiler.errors.CompileError` naming the exported node and the reason
(e.g. an attention with ``attn_mask``, ``dropout_p > 0``, grouped-query heads or a transpose the
importer cannot follow; a multiplication by a constant; a reshape other than the head split/merge).
This is what ``torch.export.export`` produces (pre-dispatch ATen: ``rms_norm``, ``layer_norm``,
``scaled_dot_product_attention`` stay whole); a program after ``run_decompositions()`` is not
supported (``addmm``, ``bmm``, ``pow``/``rsqrt`` ... are unsupported ops).

Activations are quantized per tensor, asymmetric, with the observed range widened to include 0
(so zero and ReLU are exact); a ReLU output uses the full 256 codes from 0 up. The exceptions are
symmetric (zero point 0, scale ``absmax / 127``): an add's operands and result, and the producers
of an attention's q, k and v; a softmax's output is fixed at scale 1/127.
:class:`ImportedModel` converts float inputs to the graph's int8 feeds (NCHW → NHWC) and int8
outputs back to float tensors in torch's layout.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx

from .errors import CompileError
from .graph import Graph

__all__ = ["import_exported", "ImportedModel", "QParams"]

aten = torch.ops.aten
_LINEAR, _MATMUL = {aten.linear.default}, {aten.mm.default, aten.matmul.default}
_RELU, _ADD, _CONV = {aten.relu.default}, {aten.add.Tensor}, {aten.conv2d.default}
_PASS = {aten.dropout.default, aten.clone.default, aten.contiguous.default, aten.alias.default}
_NHWC_PERMUTE = [0, 2, 3, 1]
_MUL, _SILU, _GELU = {aten.mul.Tensor}, {aten.silu.default}, {aten.gelu.default}
_SOFTMAX = {aten.softmax.int, aten._softmax.default}
_LAYER_NORM, _RMS_NORM = {aten.layer_norm.default}, {aten.rms_norm.default}
_SDPA = {aten.scaled_dot_product_attention.default}
_VIEW = {aten.view.default, aten.reshape.default, aten._unsafe_view.default,
         aten.flatten.using_ints, aten.unflatten.int}
_TRANSPOSE = {aten.transpose.int}
#: where a view/transpose may leave data that only an attention (or the merge back) can use
_HEAD_VIEWS = _VIEW | _TRANSPOSE | {aten.permute.default}
SUPPORTED = ("linear, mm/matmul by a parameter, conv2d, relu, add, mul of two activations, "
             "layer_norm, rms_norm, gelu, silu, softmax (last dim), scaled_dot_product_attention "
             "(with the head split/merge view/reshape/transpose/permute around it), "
             "permute(0,2,3,1), dropout (eval)")
#: argument names and defaults of the ATen schemas the importer reads
_SDPA_ARGS = (("query", "key", "value", "attn_mask", "dropout_p", "is_causal"),
              dict(attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False))
_LAYER_NORM_ARGS = (("input", "normalized_shape", "weight", "bias", "eps", "cudnn_enable"),
                    dict(weight=None, bias=None, eps=1e-5, cudnn_enable=True))
_RMS_NORM_ARGS = (("input", "normalized_shape", "weight", "eps"), dict(weight=None, eps=None))


def _bind(args, kwargs, schema):
    """Positional ``args`` + ``kwargs`` -> {argument name: value} with the schema's defaults."""
    names, defaults = schema
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def gelu_tanh(v):
    """GELU, tanh approximation (``approximate='tanh'``), on a float array."""
    v = np.asarray(v, np.float64)
    return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))


@dataclass(frozen=True)
class _Heads:
    """An exported tensor that is a head view of a graph tensor ``[.., S, D]``: ``split`` is torch's
    ``[.., S, H, D/H]``, ``bhsd`` is ``[.., H, S, D/H]`` (what scaled_dot_product_attention takes
    and returns). Head ``h`` is the graph tensor's columns ``h*D/H .. (h+1)*D/H``."""
    state: str
    heads: int
    head_dim: int


@dataclass(frozen=True)
class QParams:
    """real = scale * (q - zero_point), q in int8."""
    scale: float
    zero_point: int

    def quantize(self, x):
        return np.clip(np.round(np.asarray(x, np.float64) / self.scale) + self.zero_point,
                       -128, 127).astype(np.int8)

    def dequantize(self, q):
        return (np.asarray(q, np.float64) - self.zero_point) * self.scale


def _range_qparams(lo, hi):
    """Asymmetric int8 parameters covering [min(lo, 0), max(hi, 0)] (0 is exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255 or 1.0
    return QParams(scale, int(np.clip(round(-128 - lo / scale), -128, 127)))


def _symmetric_qparams(absmax):
    return QParams(float(absmax) / 127 or 1.0, 0)


@dataclass
class ImportedModel:
    """The imported graph plus the float ↔ int8 conversions of its inputs and outputs."""
    graph: Graph
    inputs: list            #: [(graph input name, QParams, nchw)] in the exported argument order
    outputs: list           #: [(graph output Tensor, QParams, nchw)] in the exported output order
    notes: list = field(default_factory=list)   #: one line per quantization decision worth knowing

    def quantize_inputs(self, *args):
        """Float arrays/tensors in torch's layout → ``{graph input name: int8 array}``."""
        if len(args) != len(self.inputs):
            raise ValueError(f"{len(args)} inputs given, the model takes {len(self.inputs)}")
        return {name: qp.quantize(_to_graph_layout(_numpy(a), nchw))
                for (name, qp, nchw), a in zip(self.inputs, args)}

    def dequantize_outputs(self, outputs):
        """``{graph output name: int8 array}`` → float arrays in torch's layout (export order)."""
        return [_to_torch_layout(qp.dequantize(outputs[t.name]), nchw)
                for t, qp, nchw in self.outputs]


def _numpy(a):
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _to_graph_layout(x, nchw):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nchw else x


def _to_torch_layout(x, nchw):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if nchw else x


class _RangeObserver(torch.fx.Interpreter):
    """Runs the exported graph and keeps each node's running min/max over all batches."""

    def __init__(self, gm):
        super().__init__(gm)
        self.ranges = {}
        self.scores = {}        #: SDPA node name -> max |q_h k_h^T * sm_scale| (unmasked entries)

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
            lo, hi = float(out.min()), float(out.max())
            old = self.ranges.get(n.name, (lo, hi))
            self.ranges[n.name] = (min(lo, old[0]), max(hi, old[1]))
        if n.op == "call_function" and n.target in _SDPA:
            self.observe_scores(n, _bind(*self.fetch_args_kwargs_from_env(n), _SDPA_ARGS))
        return out

    def observe_scores(self, n, a):
        """The float attention scores of one batch, as the graph's attention quantizes them."""
        q, k = a["query"], a["key"]
        if q.dim() < 2 or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
            return              # not an attention the importer takes (it says why when emitting)
        sm_scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
        s = (q @ k.transpose(-2, -1)) * sm_scale
        if a["is_causal"]:      # torch's mask: key j takes part in query i when j <= i
            keep = torch.ones(s.shape[-2:], dtype=torch.bool).tril()
            s = s.masked_fill(~keep, 0.0)
        self.scores[n.name] = max(self.scores.get(n.name, 0.0), float(s.abs().max()))


def _shape(n):
    return tuple(int(d) for d in n.meta["val"].shape)


def _where(n):
    target = getattr(n.target, "__name__", str(n.target))
    return f"exported node {n.name!r} ({target})"


class _Importer:
    def __init__(self, ep, calibration, name):
        self.ep, self.g = ep, Graph(name)
        sig = ep.graph_signature
        self.params = {k: ep.state_dict[v] if v in ep.state_dict else ep.constants[v]
                       for k, v in {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                                    **sig.inputs_to_lifted_tensor_constants}.items()}
        self.user_inputs = list(sig.user_inputs)
        self.nodes = {n.name: n for n in ep.graph.nodes}
        for name in self.user_inputs:
            self._check_input(self.nodes[name])
        self.ranges, self.scores = self._calibrate(calibration)
        self.values = {}        #: exported node name -> graph Tensor
        self.nchw = {}          #: exported node name -> True when torch holds it as NCHW
        self.heads = {}         #: exported node name -> _Heads when it is a head view
        self.forced = {}        #: exported node name -> QParams an add / attention needs it to have
        self.notes = []

    @staticmethod
    def _check_input(n):
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dtype != torch.float32:
            raise CompileError(_where(n), f"input dtype {getattr(val, 'dtype', type(val))} is "
                                          "unsupported (float32 inputs, quantized by the importer)")

    # ------------------------------------------------------------------ calibration
    def _calibrate(self, calibration):
        batches = calibration if isinstance(calibration, list) else [calibration]
        placeholders = [n for n in self.ep.graph.nodes if n.op == "placeholder"]
        obs = _RangeObserver(self.ep.graph_module)
        with torch.no_grad():
            for args in batches:
                args = args if isinstance(args, tuple) else (args,)
                if len(args) != len(self.user_inputs):
                    raise CompileError("calibration", f"a batch has {len(args)} inputs, the model "
                                                      f"takes {len(self.user_inputs)}")
                feed = dict(zip(self.user_inputs, (torch.as_tensor(a, dtype=torch.float32) for a in args)))
                obs.run(*(self.params.get(p.name, feed.get(p.name)) for p in placeholders))
        return obs.ranges, obs.scores

    def fused_relu(self, n):
        """The ReLU fused into GEMM node ``n`` (its only consumer), or None."""
        users = list(n.users)
        gemm = n.target in _LINEAR or n.target in _MATMUL or n.target in _CONV
        return users[0] if gemm and len(users) == 1 and users[0].target in _RELU else None

    def qparams(self, n):
        n = self.fused_relu(n) or n           # a fused ReLU's output is what gets stored
        return self.forced.get(n.name) or _range_qparams(*self.ranges[n.name])

    # ------------------------------------------------------------------ planning
    def plan_adds(self):
        """Give both operands of every add one symmetric scale covering operands and result, so the
        graph's ``add`` (same scale, zero points summed) needs no requantize: an operand takes the
        add's parameters unless another add claimed it first (a standalone requantize costs a
        whole identity GEMM on the device; a ReLU output at zero point 0 costs one bit)."""
        for n in self.ep.graph.nodes:
            if n.target in _ADD:
                absmax = max(max(abs(v) for v in self.ranges[x.name])
                             for x in (*n.args[:2], n) if isinstance(x, torch.fx.Node))
                qp = _symmetric_qparams(absmax)
                for x in n.args[:2]:
                    src = self._source(x)
                    if src.name not in self.forced:
                        self.forced[src.name] = qp
                self.forced[n.name] = qp

    def plan_attention(self):
        """Graph.attention takes q, k and v at zero point 0: the nodes producing them (through the
        free head split) are quantized symmetrically over their observed range, unless an add
        already gave them symmetric parameters."""
        for n in self.ep.graph.nodes:
            if n.op == "call_function" and n.target in _SDPA:
                self.sdpa_args(n)
                for what, x in zip(("q", "k", "v"), n.args[:3]):
                    if not isinstance(x, torch.fx.Node):
                        continue
                    src = self._source(x)
                    if src.name not in self.ranges or (src.name in self.forced
                                                       and self.forced[src.name].zero_point == 0):
                        continue
                    lo, hi = self.ranges[src.name]
                    self.forced[src.name] = _symmetric_qparams(max(abs(lo), abs(hi)))
                    self.notes.append(f"{n.name}: {what} producer {src.name} quantized "
                                      f"symmetrically (zero point 0) for the attention")

    def _source(self, n):
        """The node that produces ``n``'s data (through free permutes/views/pass-throughs)."""
        while n.op == "call_function" and (n.target in _PASS or n.target in _HEAD_VIEWS):
            n = n.args[0]
        return n

    # ------------------------------------------------------------------ emission
    def run(self):
        self.plan_adds()
        self.plan_attention()
        for n in self.ep.graph.nodes:
            if n.op == "placeholder":
                if n.name in self.user_inputs:
                    self.user_input(n)
            elif n.op == "call_function":
                self.call(n)
            elif n.op == "output":
                return self.output(n)
            else:
                raise CompileError(_where(n), f"unsupported node kind {n.op!r}")

    def user_input(self, n):
        shape = tuple(int(d) for d in n.meta["val"].shape)
        nchw = len(shape) == 4
        qp = self.qparams(n)
        shape = (shape[0], shape[2], shape[3], shape[1]) if nchw else shape
        self.values[n.name] = self.g.input(n.name, shape, scale=qp.scale, zero_point=qp.zero_point)
        self.nchw[n.name] = nchw

    def call(self, n):
        t = n.target
        if n.name in self.values:             # a ReLU already fused into its producer
            return
        if t in _LINEAR or t in _MATMUL:
            self.linear(n)
        elif t in _CONV:
            self.conv(n)
        elif t in _RELU:
            self.relu(n)
        elif t in _ADD:
            self.add(n)
        elif t in _PASS:
            self.alias(n, self.source_arg(n))
        elif t == aten.permute.default:
            self.permute(n)
        elif t in _TRANSPOSE:
            self.transpose(n)
        elif t in _VIEW:
            self.view(n)
        elif t in _SDPA:
            self.attention(n)
        elif t in _LAYER_NORM or t in _RMS_NORM:
            self.norm(n)
        elif t in _GELU or t in _SILU:
            self.activation(n)
        elif t in _SOFTMAX:
            self.softmax(n)
        elif t in _MUL:
            self.mul(n)
        else:
            raise CompileError(_where(n), f"unsupported op (supported: {SUPPORTED})")

    def source_arg(self, n):
        v = n.args[0] if n.args else None
        if not isinstance(v, torch.fx.Node) or v.name not in self.values:
            raise CompileError(_where(n), f"operand {v!r} is not an activation of the model")
        return v

    def alias(self, n, src, nchw=None, heads="keep"):
        self.values[n.name] = self.values[src.name]
        self.nchw[n.name] = self.nchw[src.name] if nchw is None else nchw
        h = self.heads.get(src.name) if heads == "keep" else heads
        if h is not None:
            self.heads[n.name] = h

    def permute(self, n):
        src, dims = self.source_arg(n), list(n.args[1])
        rank = len(dims)
        dims = [d % rank for d in dims]
        if src.name in self.heads:
            swap = list(range(rank))
            if rank >= 3:
                swap[-3], swap[-2] = swap[-2], swap[-3]
            if dims != swap:
                raise CompileError(_where(n), f"permute {dims} of the attention head view "
                                              f"{src.name!r} is a transpose the importer cannot "
                                              f"follow (only dims -3 and -2 swapped, e.g. "
                                              f"(0, 2, 1, 3))")
            return self.swap_heads(n, src)
        if not (self.nchw[src.name] and dims == _NHWC_PERMUTE):
            raise CompileError(_where(n), f"permute {dims} is unsupported (only NCHW -> NHWC "
                                          "(0, 2, 3, 1), which is free in the graph's layout, and "
                                          "the (0, 2, 1, 3) of an attention's head split)")
        self.alias(n, src, nchw=False)

    def transpose(self, n):
        src = self.source_arg(n)
        rank = len(_shape(n))
        dims = sorted(int(d) % rank for d in n.args[1:3])
        if src.name not in self.heads:
            raise CompileError(_where(n), f"transpose {list(n.args[1:3])} is unsupported (only "
                                          f"of an attention's head split [.., S, H, D/H] <-> "
                                          f"[.., H, S, D/H])")
        if rank < 3 or dims != [rank - 3, rank - 2]:
            raise CompileError(_where(n), f"transpose {list(n.args[1:3])} of the attention head "
                                          f"view {src.name!r} is a transpose the importer cannot "
                                          f"follow (only dims -3 and -2, e.g. transpose(1, 2))")
        self.swap_heads(n, src)

    def swap_heads(self, n, src):
        h = self.heads[src.name]
        self.alias(n, src, heads=_Heads("bhsd" if h.state == "split" else "split", h.heads,
                                        h.head_dim))

    def view(self, n):
        """A reshape is free in the graph when it splits the last dim into attention heads
        (``[.., S, D] -> [.., S, H, D/H]``), merges them back, or changes nothing."""
        src = self.source_arg(n)
        before, after = _shape(src), _shape(n)
        h = self.heads.get(src.name)
        if before == after:
            return self.alias(n, src)
        if self.nchw[src.name]:
            raise CompileError(_where(n), f"reshape of an NCHW activation {before} -> {after} is "
                                          f"unsupported (permute(0, 2, 3, 1) it first)")
        if h is None and len(after) == len(before) + 1 and len(before) >= 2 \
                and after[:-2] == before[:-1] and after[-2] * after[-1] == before[-1]:
            return self.alias(n, src, heads=_Heads("split", after[-2], after[-1]))
        merged = before[:-2] + (before[-2] * before[-1],) if len(before) >= 2 else None
        if h is not None and h.state == "split" and after == merged:
            return self.alias(n, src, heads=None)
        what = {None: "", "split": " of an attention head split [.., S, H, D/H]",
                "bhsd": " of attention heads [.., H, S, D/H] (transpose(1, 2) them back first)"}
        raise CompileError(_where(n), f"reshape {before} -> {after}{what[h and h.state]} is "
                                      f"unsupported (only the head split [.., S, D] -> "
                                      f"[.., S, H, D/H] of an attention, its merge back, or no "
                                      f"change)")

    def attention(self, n):
        a = self.sdpa_args(n)
        ts, hs = [], []
        for what in ("query", "key", "value"):
            v = a[what]
            h = self.heads.get(v.name) if isinstance(v, torch.fx.Node) else None
            if h is None or h.state != "bhsd":
                raise CompileError(_where(n), f"{what} {getattr(v, 'name', v)!r} is not a head "
                                              f"split the importer can follow (expected "
                                              f"linear(x).view(B, S, H, D/H).transpose(1, 2))")
            ts.append(self.values[v.name])
            hs.append(h)
        if len({h.heads for h in hs}) != 1 or len({h.head_dim for h in hs}) != 1:
            raise CompileError(_where(n), "q, k and v have different head counts or head sizes "
                                          f"({', '.join(f'{h.heads}x{h.head_dim}' for h in hs)}; "
                                          f"grouped-query attention is unsupported)")
        q, k, v = (self.symmetric(n, t, what) for t, what in zip(ts, ("q", "k", "v")))
        causal = bool(a["is_causal"])
        if causal and q.shape[-2] != k.shape[-2]:
            raise CompileError(_where(n), f"is_causal with {q.shape[-2]} queries and {k.shape[-2]} "
                                          f"keys is unsupported (torch aligns the mask top-left, "
                                          f"the graph bottom-right: equal lengths only)")
        dh = hs[0].head_dim
        sm_scale = float(a["scale"]) if a["scale"] is not None else 1.0 / math.sqrt(dh)
        absmax = self.scores.get(n.name, 0.0)
        score_scale = absmax / 127 or 1.0
        qp = self.qparams(n)
        self.values[n.name] = self.g.attention(q, k, v, heads=hs[0].heads, causal=causal,
                                               score_scale=score_scale, sm_scale=sm_scale,
                                               scale=qp.scale, zero_point=qp.zero_point,
                                               name=n.name)
        self.nchw[n.name], self.heads[n.name] = False, hs[0]
        self.notes.append(f"{n.name}: attention, {hs[0].heads} heads of {dh}, causal={causal}, "
                          f"scores up to {absmax:.4g} at scale {score_scale:.4g}")

    @staticmethod
    def sdpa_args(n):
        """The arguments of scaled_dot_product_attention node ``n``, checked (before anything is
        emitted, so that a mask computed in the graph is reported here and not at its ops)."""
        a = _bind(n.args, n.kwargs, _SDPA_ARGS)
        if a["attn_mask"] is not None:
            raise CompileError(_where(n), "attn_mask is unsupported (only is_causal=True masks)")
        if a["dropout_p"]:
            raise CompileError(_where(n), f"dropout_p={a['dropout_p']} is unsupported (inference: "
                                          f"dropout_p=0)")
        if a["enable_gqa"]:
            raise CompileError(_where(n), "enable_gqa (grouped-query attention) is unsupported "
                                          "(q, k and v with one head count)")
        return a

    def symmetric(self, n, t, what):
        """``t`` at zero point 0 (a requantize when its producer could not be made symmetric)."""
        if t.zero_point == 0:
            return t
        name = f"{n.name}.{what}.rq"
        qp = _symmetric_qparams(max(abs(float(t.scale) * (-128 - t.zero_point)),
                                    abs(float(t.scale) * (127 - t.zero_point))))
        self.notes.append(f"{n.name}: requantize {what} ({t.name}) to zero point 0")
        return self.g.requantize(t, scale=qp.scale, zero_point=0, name=name)

    def norm(self, n):
        layer = n.target in _LAYER_NORM
        a = _bind(n.args, n.kwargs, _LAYER_NORM_ARGS if layer else _RMS_NORM_ARGS)
        x = self.operand(n, a["input"])
        shape = _shape(a["input"])
        if list(a["normalized_shape"]) != [shape[-1]]:
            raise CompileError(_where(n), f"normalized_shape {list(a['normalized_shape'])} is "
                                          f"unsupported (only the last dim, [{shape[-1]}])")
        if self.nchw[a["input"].name]:
            raise CompileError(_where(n), "the input is NCHW: permute(0, 2, 3, 1) it first (a "
                                          "norm acts on the last dimension)")
        c = shape[-1]
        gamma = np.ones(c) if a["weight"] is None else self.param(n, a["weight"], "weight",
                                                                  "a norm's weight")
        qp = self.qparams(n)
        if layer:
            beta = np.zeros(c) if a["bias"] is None else self.param(n, a["bias"], "bias",
                                                                    "a norm's bias")
            y = self.g.layer_norm(x, gamma, beta, eps=float(a["eps"]), scale=qp.scale,
                                  zero_point=qp.zero_point, name=n.name)
        else:
            eps = torch.finfo(torch.float32).eps if a["eps"] is None else float(a["eps"])
            y = self.g.rms_norm(x, gamma, eps=eps, scale=qp.scale, zero_point=qp.zero_point,
                                name=n.name)
        self.values[n.name], self.nchw[n.name] = y, False

    def activation(self, n):
        x = self.operand(n, n.args[0])
        qp = self.qparams(n)
        kw = dict(scale=qp.scale, zero_point=qp.zero_point, name=n.name)
        if n.target in _SILU:
            y = self.g.silu(x, **kw)
        else:
            approx = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
            if approx == "none":
                y = self.g.gelu(x, **kw)
            elif approx == "tanh":
                y = self.g.lut(x, gelu_tanh, fn_name="gelu_tanh", **kw)
            else:
                raise CompileError(_where(n), f"gelu approximate={approx!r} is unsupported")
        self.values[n.name], self.nchw[n.name] = y, self.nchw[n.args[0].name]

    def softmax(self, n):
        x = self.operand(n, n.args[0])
        rank, dim = len(_shape(n)), int(n.args[1])
        if dim % rank != rank - 1 or self.nchw[n.args[0].name]:
            raise CompileError(_where(n), f"softmax over dim {dim} is unsupported (only the last "
                                          f"dim)")
        dtype = n.args[2] if n.target == aten.softmax.int and len(n.args) > 2 else None
        if dtype not in (None, torch.float32):
            raise CompileError(_where(n), f"softmax dtype {dtype} is unsupported")
        self.values[n.name], self.nchw[n.name] = self.g.softmax(x, name=n.name), False

    def mul(self, n):
        a, b = n.args[:2]
        if not all(isinstance(v, torch.fx.Node) and v.name in self.values for v in (a, b)):
            what = next(v for v in (a, b) if not (isinstance(v, torch.fx.Node)
                                                   and v.name in self.values))
            raise CompileError(_where(n), f"only the product of two activations is supported, "
                                          f"not by {getattr(what, 'name', what)!r} (a constant or "
                                          f"parameter)")
        if _shape(a) != _shape(b) or self.nchw[a.name] != self.nchw[b.name]:
            raise CompileError(_where(n), f"operands of shapes {_shape(a)} and {_shape(b)} are "
                                          f"unsupported (same shape and layout, no broadcasting)")
        qp = self.qparams(n)
        self.values[n.name] = self.g.mul(self.operand(n, a), self.operand(n, b), scale=qp.scale,
                                         zero_point=qp.zero_point, name=n.name)
        self.nchw[n.name] = self.nchw[a.name]

    def param(self, n, arg, what, why="two activations cannot be multiplied"):
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.params:
            raise CompileError(_where(n), f"{what} must be a parameter of the model ({why})")
        return _numpy(self.params[arg.name]).astype(np.float64)

    def weights(self, n, x, w, b):
        """Float ``w`` [..., N] and bias [N] → per-output-channel int8 weight and int32 bias."""
        wq_scale = np.maximum(np.abs(w.reshape(-1, w.shape[-1])).max(axis=0), 1e-12) / 127
        wq = np.clip(np.round(w / wq_scale), -127, 127).astype(np.int8)
        wt = self.g.const(f"{n.name}.weight", wq, scale=wq_scale)
        if b is None:
            return wt, None
        bq = np.round(b / (x.scale * wq_scale))
        if np.abs(bq).max(initial=0) >= 2**31:
            raise CompileError(_where(n), "bias does not fit int32 at input scale x weight scale")
        return wt, self.g.const(f"{n.name}.bias", bq.astype(np.int32))

    def gemm(self, n, x, w, b, **conv):
        qp, relu = self.qparams(n), self.fused_relu(n)
        fused = relu is not None
        wt, bt = self.weights(n, x, w, b)
        if conv:
            y = self.g.conv2d(x, wt, bt, scale=qp.scale, zero_point=qp.zero_point, relu=fused,
                              name=n.name, **conv)
        else:
            y = self.g.linear(x, wt, bt, scale=qp.scale, zero_point=qp.zero_point, relu=fused,
                              name=n.name)
        self.values[n.name] = y
        if fused:
            self.values[relu.name], self.nchw[relu.name] = y, self.nchw[n.name]

    def linear(self, n):
        x = self.operand(n, n.args[0])
        if self.nchw[n.args[0].name]:
            raise CompileError(_where(n), "the input is NCHW: permute(0, 2, 3, 1) it first "
                                          "(a linear acts on the last dimension)")
        self.nchw[n.name] = False
        if n.target in _LINEAR:
            w = self.param(n, n.args[1], "weight").T
            b = self.param(n, n.args[2], "bias") if len(n.args) > 2 and n.args[2] is not None else None
        else:
            w, b = self.param(n, n.args[1], "right operand"), None
        self.gemm(n, x, w, b)

    def conv(self, n):
        x = self.operand(n, n.args[0])
        w = self.param(n, n.args[1], "weight")                    # [OC, C, KH, KW]
        b = self.param(n, n.args[2], "bias") if len(n.args) > 2 and n.args[2] is not None else None
        stride, padding, dilation, groups = (list(n.args[3]) if len(n.args) > 3 else [1, 1],
                                             list(n.args[4]) if len(n.args) > 4 else [0, 0],
                                             list(n.args[5]) if len(n.args) > 5 else [1, 1],
                                             n.args[6] if len(n.args) > 6 else 1)
        if groups != 1 or dilation != [1, 1]:
            raise CompileError(_where(n), f"groups={groups}, dilation={dilation} are unsupported "
                                          "(groups 1, dilation 1)")
        if len(set(stride)) != 1 or len(set(padding)) != 1:
            raise CompileError(_where(n), f"stride {stride} / padding {padding} must be equal in "
                                          "height and width")
        self.nchw[n.name] = True
        oc, c, kh, kw = w.shape
        if (kh, kw) == (1, 1) and stride == [1, 1] and padding == [0, 0]:
            self.gemm(n, x, w.reshape(oc, c).T, b)                 # per-pixel linear over NHWC
        else:
            self.gemm(n, x, w.transpose(2, 3, 1, 0), b, stride=stride[0], padding=padding[0])

    def relu(self, n):
        x = self.operand(n, n.args[0])
        self.values[n.name] = self.g.relu(x, name=n.name)
        self.nchw[n.name] = self.nchw[n.args[0].name]

    def add(self, n):
        a, b = n.args[:2]
        if not all(isinstance(v, torch.fx.Node) for v in (a, b)) or n.kwargs.get("alpha", 1) != 1:
            raise CompileError(_where(n), "only tensor + tensor (alpha 1) is supported")
        if self.nchw[a.name] != self.nchw[b.name]:
            raise CompileError(_where(n), "operands are in different layouts (NCHW and NHWC)")
        qp = self.forced[n.name]
        ta, tb = (self.requantized(n, v, qp) for v in (a, b))
        self.values[n.name] = self.g.add(ta, tb, name=n.name)
        self.nchw[n.name] = self.nchw[a.name]

    def requantized(self, n, v, qp):
        t = self.operand(n, v)
        if np.isclose(float(t.scale), qp.scale) and t.zero_point == qp.zero_point:
            return t
        self.notes.append(f"{n.name}: requantize {v.name} to the add's scale {qp.scale:.4g}")
        return self.g.requantize(t, scale=qp.scale, zero_point=qp.zero_point,
                                 name=f"{n.name}.{v.name}.rq")

    def operand(self, n, v):
        if not isinstance(v, torch.fx.Node) or v.name not in self.values:
            raise CompileError(_where(n), f"operand {v!r} is not an activation of the model")
        if v.name in self.heads:
            h = self.heads[v.name]
            layout = "[.., S, H, D/H]" if h.state == "split" else "[.., H, S, D/H]"
            raise CompileError(_where(n), f"operand {v.name!r} is an attention head view "
                                          f"({layout}, {h.heads} heads): only "
                                          f"scaled_dot_product_attention "
                                          f"and the merge back to [.., S, D] can use it")
        return self.values[v.name]

    def output(self, n):
        outs = []
        for v in n.args[0]:
            t = self.operand(n, v)
            outs.append((t, QParams(float(t.scale), t.zero_point), self.nchw[v.name]))
        self.g.output(*(t for t, _, _ in outs))
        inputs = [(name, QParams(float(self.values[name].scale), self.values[name].zero_point),
                   self.nchw[name]) for name in self.user_inputs]
        return ImportedModel(self.g, inputs, outs, self.notes)


def import_exported(ep, calibration, *, name=None):
    """``torch.export.ExportedProgram`` of a float model + calibration batches → ImportedModel.

    ``calibration`` is one batch or a list of batches; a batch is the tuple of the model's inputs
    (tensors or arrays; a single input may be given bare). The batch shape is the compiled shape.
    """
    if not isinstance(ep, torch.export.ExportedProgram):
        raise CompileError("torch import", f"expected a torch.export.ExportedProgram, got "
                                           f"{type(ep).__name__}")
    model = _Importer(ep, calibration, name or "torch_model").run()
    model.graph.verify()
    return model
