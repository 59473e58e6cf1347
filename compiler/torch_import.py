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
``add.Tensor``                          ``add`` (a residual stream's adds and operands share
                                        one symmetric scale, chosen as their producers'
                                        output scale: no ``requantize``)
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
hand-written attention: ``matmul``      the same single ``attention`` as for SDPA: ``sm_scale``
(``@``) of q and k^T (``transpose(-2,   = the product of the constants (after the matmul, or
-1)``/``mT``/``permute``), ``mul``/     on q or k: the graph holds q and k unscaled);
``div`` by positive constants, at most  ``causal`` when the mask, evaluated at import from its
one ``masked_fill``/``where``/``add``   buffer or constants, is torch's lower-triangular one
of a constant mask, ``softmax`` over    with -inf (or <= -1e4) above the diagonal; the scores'
the last dim, ``matmul`` with v         int8 scale calibrated as for SDPA. Eval ``dropout``,
                                        ``.float()``/``.type_as`` in between are free; no head
                                        split (q, k, v ``[.., S, D]``): one head
``view``/``reshape``/``flatten``/       free: ``[.., S, D] -> [.., S, H, D/H]`` (head split),
``unflatten`` and ``transpose``/        ``transpose`` of dims -3, -2 (or the equivalent
``permute`` around an attention         ``permute``, e.g. ``(0, 2, 1, 3)``) to ``[.., H, S,
                                        D/H]`` and back, then the merge to ``[.., S, D]``: the
                                        graph keeps ``[.., S, D]`` (head ``h`` is columns
                                        ``h*D/H`` ..); for a hand-written ``q @ k^T`` also
                                        k's ``transpose(-2, -1)`` (or ``permute(0, 2, 3, 1)``
                                        of the split) to ``[.., H, D/H, S]``
``permute(0, 2, 3, 1)`` of NCHW,        free: the graph already holds 4-D activations as NHWC
``dropout``/``clone``/``contiguous``
=====================================  ==================================================

Anything else is a :class:`~compiler.errors.CompileError` naming the exported node and the reason
(e.g. an attention with ``attn_mask``, ``dropout_p > 0``, grouped-query heads or a transpose the
importer cannot follow; a hand-written attention whose scores or probabilities also feed another
op, whose mask is not the causal one or depends on the input, whose masked scores are not -inf
(or <= -1e4), with a training-mode dropout on its probabilities or a non-positive scale; a
multiplication by a constant elsewhere; a reshape other than the head split/merge).
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
_TRANSPOSE = {aten.transpose.int, aten.mT.default}
#: where a view/transpose may leave data that only an attention (or the merge back) can use
_HEAD_VIEWS = _VIEW | _TRANSPOSE | {aten.permute.default}
#: hand-written attention softmax(q @ k^T * c [masked]) @ v: what may sit between its matmuls
_SCALE = {aten.mul.Tensor, aten.mul.Scalar, aten.div.Tensor, aten.div.Scalar}
_MASKED_FILL = {aten.masked_fill.Scalar, aten.masked_fill.Tensor}
_WHERE = {aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf, aten.where.Scalar}
_CASTS = {aten.to.dtype, aten._to_copy.default, aten.type_as.default, aten.to.dtype_layout}
_ASSERTS = {aten._assert_tensor_metadata.default}
#: a finite mask value must be at most this (after any scaling that follows the mask): -1e4, -1e9,
#: finfo.min ... (and the masked probabilities must come out exactly 0 in calibration)
_MASK_FILL_MAX = -1e4
SUPPORTED = ("linear, mm/matmul by a parameter, conv2d, relu, add, mul of two activations, "
             "layer_norm, rms_norm, gelu, silu, softmax (last dim), scaled_dot_product_attention "
             "and hand-written softmax(q @ k^T * scale [causal mask]) @ v (with the head "
             "split/merge view/reshape/transpose/permute around it), permute(0,2,3,1), "
             "dropout (eval)")
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
    and returns), ``bhds`` is ``[.., H, D/H, S]`` (k transposed, the right operand of a hand-written
    ``q @ k^T``); ``t`` is a whole ``[.., S, D]`` transposed to ``[.., D, S]`` (k^T of a
    single-head hand-written attention, ``heads`` 1). Head ``h`` is the graph tensor's columns
    ``h*D/H .. (h+1)*D/H``."""
    state: str
    heads: int
    head_dim: int


#: the order of the last three dims of a head view (S: sequence, H: heads, D: head dim)
_HEAD_ORDER = {"split": "SHD", "bhsd": "HSD", "bhds": "HDS"}
_HEAD_STATE = {v: k for k, v in _HEAD_ORDER.items()}


@dataclass
class _Manual:
    """A hand-written attention ``softmax(q @ k^T * sm_scale [masked]) @ v`` (node names are the
    exported graph's): ``qk`` the scores matmul, ``pv`` the matmul with v (where the graph's
    attention is emitted), the paths from q and k^T back to their producers (``*_stop``) that
    calibration replays without the scale factors folded into ``sm_scale``."""
    qk: object
    softmax: object
    pv: object
    q_path: list
    q_stop: object
    k_path: list
    k_stop: object
    sm_scale: float
    causal: bool
    mask: object            #: the masked_fill/where/add node, or None
    nodes: list             #: the exported nodes the attention replaces, in graph order


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

    def __init__(self, gm, manual=None):
        # with a hand-written attention, keep every value of a run: its q and k are replayed from
        # their producers at its P @ V matmul
        super().__init__(gm, garbage_collect_values=not manual)
        self.manual = manual or {}
        self.by_softmax = {m.softmax.name: m for m in self.manual.values()}
        self.ranges = {}
        self.scores = {}        #: attention node name -> max |q_h k_h^T * sm_scale| (unmasked)
        self.masked_p = {}      #: hand-written causal attention -> max probability where masked

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
            lo, hi = float(out.min()), float(out.max())
            old = self.ranges.get(n.name, (lo, hi))
            self.ranges[n.name] = (min(lo, old[0]), max(hi, old[1]))
        if n.op == "call_function" and n.target in _SDPA:
            a = _bind(*self.fetch_args_kwargs_from_env(n), _SDPA_ARGS)
            q, k = a["query"], a["key"]
            sm_scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
            self.observe_scores(n.name, q, k.transpose(-2, -1), sm_scale, bool(a["is_causal"]))
        elif n.name in self.manual:
            m = self.manual[n.name]
            self.observe_scores(n.name, self.replay(m.q_path, m.q_stop),
                                self.replay(m.k_path, m.k_stop), m.sm_scale, m.causal)
        elif n.name in self.by_softmax and self.by_softmax[n.name].causal and out.dim() >= 2:
            m = self.by_softmax[n.name]
            masked = ~torch.ones(out.shape[-2:], dtype=torch.bool).tril()
            if masked.any():
                self.masked_p[m.pv.name] = max(self.masked_p.get(m.pv.name, 0.0),
                                               float(out[..., masked].max()))
        return out

    def replay(self, path, stop):
        """The value at the end of ``path`` (nodes from an attention operand back to ``stop``) with
        the multiplications by constants that were folded into ``sm_scale`` left out."""
        val = self.env[stop]
        for node in reversed(path):
            if node.target in _SCALE:
                continue
            rest = torch.fx.node.map_arg((node.args[1:], node.kwargs), lambda a: self.env[a])
            val = node.target(val, *rest[0], **rest[1])
        return val

    def observe_scores(self, name, q, kt, sm_scale, causal):
        """The float attention scores of one batch, as the graph's attention quantizes them."""
        if q.dim() < 2 or q.shape[:-2] != kt.shape[:-2] or q.shape[-1] != kt.shape[-2]:
            return              # not an attention the importer takes (it says why when emitting)
        s = (q @ kt) * sm_scale
        if causal:              # torch's mask: key j takes part in query i when j <= i
            keep = torch.ones(s.shape[-2:], dtype=torch.bool).tril()
            s = s.masked_fill(~keep, 0.0)
        self.scores[name] = max(self.scores.get(name, 0.0), float(s.abs().max()))


def _shape(n):
    return tuple(int(d) for d in n.meta["val"].shape)


def _where(n):
    target = getattr(n.target, "__name__", str(n.target))
    return f"exported node {n.name!r} ({target})"


def _names(nodes):
    return ", ".join(f"exported node {u.name!r} ({getattr(u.target, '__name__', u.target)})"
                     for u in nodes)


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
        self.dynamic = set()    #: exported nodes that depend on a model input (the rest: constant)
        for n in ep.graph.nodes:
            if n.name in self.user_inputs or any(a.name in self.dynamic
                                                  for a in n.all_input_nodes):
                self.dynamic.add(n.name)
        self.const_values = {}  #: constant exported node name -> its value (masks, scales)
        self.absorbed = set()   #: exported nodes a hand-written attention replaces (no emission)
        self.k_paths = set()    #: exported nodes on a hand-written attention's k^T operand path
        self.folded = set()     #: its q/k multiplications by constants (sm_scale): aliases
        self.manual = self.match_manual_attention()    #: P @ V node name -> _Manual
        self.ranges, self.scores, self.masked_p = self._calibrate(calibration)
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
        obs = _RangeObserver(self.ep.graph_module, self.manual)
        with torch.no_grad():
            for args in batches:
                args = args if isinstance(args, tuple) else (args,)
                if len(args) != len(self.user_inputs):
                    raise CompileError("calibration", f"a batch has {len(args)} inputs, the model "
                                                      f"takes {len(self.user_inputs)}")
                feed = dict(zip(self.user_inputs, (torch.as_tensor(a, dtype=torch.float32) for a in args)))
                obs.run(*(self.params.get(p.name, feed.get(p.name)) for p in placeholders))
        return obs.ranges, obs.scores, obs.masked_p

    def fused_relu(self, n):
        """The ReLU fused into GEMM node ``n`` (its only consumer), or None."""
        users = list(n.users)
        gemm = n.target in _LINEAR or n.target in _MATMUL or n.target in _CONV
        return users[0] if gemm and len(users) == 1 and users[0].target in _RELU else None

    def qparams(self, n):
        n = self.fused_relu(n) or n           # a fused ReLU's output is what gets stored
        return self.forced.get(n.name) or _range_qparams(*self.ranges[n.name])

    # ------------------------------------------------------------------ hand-written attention
    def is_dynamic(self, v):
        return isinstance(v, torch.fx.Node) and v.name in self.dynamic

    @staticmethod
    def users(n):
        """``n``'s consumers, leaving out torch.export's dtype/device assertions."""
        return [u for u in n.users if u.target not in _ASSERTS]

    @staticmethod
    def identity_cast(n):
        """``.float()``/``.to(float32)``/``.type_as(q)`` of a float32 tensor (changes nothing)."""
        if n.op != "call_function" or n.target not in _CASTS or not n.args \
                or not isinstance(n.args[0], torch.fx.Node):
            return False
        return all(isinstance(v, torch.Tensor) and v.dtype == torch.float32
                   for v in (n.meta.get("val"), n.args[0].meta.get("val")))

    def scale_operand(self, n):
        """(activation, constant) when ``n`` multiplies or divides an activation by a constant."""
        if n.op != "call_function" or n.target not in _SCALE:
            return None
        a, b = n.args[:2]
        if self.is_dynamic(a) and not self.is_dynamic(b):
            return a, b
        if self.is_dynamic(b) and not self.is_dynamic(a) and n.target in _MUL | {aten.mul.Scalar}:
            return b, a
        return None

    def scale_factor(self, n):
        """The positive factor by which constant multiplication/division ``n`` scales its input."""
        v = self.constant(self.scale_operand(n)[1], n, "the scale")
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise CompileError(_where(n), f"scaling the attention by a tensor of shape "
                                              f"{tuple(v.shape)} is unsupported (a scalar)")
            v = v.item()
        v = float(v)
        f = v if n.target in _MUL | {aten.mul.Scalar} else (1.0 / v if v else math.inf)
        if not (math.isfinite(f) and f > 0):
            raise CompileError(_where(n), f"scaling the attention by {f:g} is unsupported (a "
                                          f"positive constant, folded into its sm_scale)")
        return f

    def constant(self, v, at, what):
        """``v``'s value when it is a number or an exported node computed from parameters, buffers
        and constants only (the ops computing it are then part of the attention ``at``)."""
        if not isinstance(v, torch.fx.Node):
            return v
        if v.name in self.dynamic:
            raise CompileError(_where(at), f"{what} {v.name!r} depends on the model's input "
                                           f"(only a constant: a registered buffer or a tensor "
                                           f"built in forward from constants)")
        need, stack = set(), [v]
        while stack:
            x = stack.pop()
            if x.name not in need and x.name not in self.const_values:
                need.add(x.name)
                stack.extend(x.all_input_nodes)
        with torch.no_grad():
            for x in self.ep.graph.nodes:
                if x.name not in need:
                    continue
                if x.op == "placeholder" and x.name in self.params:
                    val = self.params[x.name]
                elif x.op == "call_function":
                    args, kwargs = torch.fx.node.map_arg((x.args, x.kwargs),
                                                         lambda a: self.const_values[a.name])
                    val = x.target(*args, **kwargs)
                    self.absorbed.add(x.name)
                else:
                    raise CompileError(_where(at), f"{what} {v.name!r} is not computed from the "
                                                   f"model's parameters and constants ({x.name!r})")
                self.const_values[x.name] = val
        return self.const_values[v.name]

    def match_manual_attention(self):
        """Every hand-written attention ``softmax(q @ k^T * c [masked]) @ v`` of the exported
        graph, checked (before calibration, which measures its scores): {P @ V node: _Manual}."""
        manual = {}
        for s in self.ep.graph.nodes:
            if s.op == "call_function" and s.target in _SOFTMAX and s.name in self.dynamic:
                m = self.match_softmax(s)
                if m is not None:
                    manual[m.pv.name] = m
        return manual

    def score_operand(self, x):
        """The activation operand when ``x`` may sit between ``q @ k^T`` and the softmax (a scale
        by a constant, a mask, a pass-through), else None."""
        t = x.target
        if x.op != "call_function":
            return None
        if t in _SCALE:
            so = self.scale_operand(x)
            return so and so[0]
        if t in _MASKED_FILL:
            return x.args[0] if self.is_dynamic(x.args[0]) else None
        if t in _WHERE or (t in _ADD and x.kwargs.get("alpha", 1) == 1):
            a, b = x.args[1:3] if t in _WHERE else x.args[:2]
            if self.is_dynamic(a) != self.is_dynamic(b):
                return a if self.is_dynamic(a) else b
            return None
        if t in _PASS or self.identity_cast(x):
            return x.args[0]
        return None

    def match_softmax(self, s):
        """The hand-written attention around softmax node ``s``, or None when its input is not
        ``q @ k^T`` of two activations (possibly scaled and masked)."""
        chain, x = [], s.args[0]                   # softmax <- .. <- q @ k^T
        while self.is_dynamic(x):
            nxt = self.score_operand(x)
            if nxt is None:
                break
            chain.append(x)
            x = nxt
        qk = x
        if not (isinstance(qk, torch.fx.Node) and qk.op == "call_function"
                and qk.target in _MATMUL and all(self.is_dynamic(a) for a in qk.args[:2])):
            return None
        self.check_softmax(s)
        scores = [qk] + chain[::-1]                # in data order
        for a, b in zip(scores, scores[1:] + [s]):
            others = [u for u in self.users(a) if u is not b]
            if others:
                raise CompileError(_where(a), f"the attention scores {a.name!r} are also used by "
                                              f"{_names(others)}: the graph's attention keeps "
                                              f"its scores and probabilities internal (only "
                                              f"softmax(q @ k^T) @ v)")
        probs, y = [], s                           # softmax -> .. -> P @ V
        while True:
            us = self.users(y)
            if not (len(us) == 1 and us[0].op == "call_function" and us[0].args[0] is y
                    and (us[0].target in _PASS or self.identity_cast(us[0]))):
                break
            y = us[0]
            probs.append(y)
        us = self.users(y)
        pv = us[0] if len(us) == 1 else None
        if pv is None or pv.op != "call_function" or pv.target not in _MATMUL \
                or pv.args[0] is not y or not self.is_dynamic(pv.args[1]):
            raise CompileError(_where(y), f"the attention probabilities {y.name!r} are used by "
                                          f"{_names(us) or 'nothing'}: the graph's attention "
                                          f"keeps its scores and probabilities internal (only "
                                          f"softmax(q @ k^T) @ v, the probabilities as the left "
                                          f"operand of a matmul with v)")
        for x in chain + probs:
            if x.target == aten.dropout.default:
                a = _bind(x.args, x.kwargs, (("input", "p", "train"), {}))
                if a["train"] and a["p"]:
                    what = "scores" if x in chain else "probabilities"
                    raise CompileError(_where(x), f"dropout p={a['p']} (training mode) on the "
                                                  f"attention {what} is unsupported (inference: "
                                                  f"export the model in eval mode, or p=0)")
        sm_scale, after_mask, mask, masked, fill = 1.0, 1.0, None, None, None
        for x in chain[::-1]:
            if x.target in _SCALE:
                f = self.scale_factor(x)
                sm_scale *= f
                after_mask *= f if mask is not None else 1.0
            elif x.target in _MASKED_FILL or x.target in _WHERE or x.target in _ADD:
                if mask is not None:
                    raise CompileError(_where(x), f"a second mask on the attention scores (after "
                                                  f"{mask.name!r}) is unsupported (one causal "
                                                  f"mask)")
                mask = x
                masked, fill = self.mask_of(x)
        if mask is not None:
            self.check_causal(mask, masked, fill * after_mask, _shape(qk))
        q_path, q_stop, q_factor = self.operand_path(qk.args[0], qk)
        k_path, k_stop, k_factor = self.operand_path(qk.args[1], qk)
        self.k_paths.update(x.name for x in k_path)
        own = {x.name for x in scores + [s] + probs}
        own.update(u.name for x in scores + [s] + probs for u in x.users if u.target in _ASSERTS)
        self.absorbed.update(own)
        nodes = [x for x in self.ep.graph.nodes if x.name in own or x is pv]
        return _Manual(qk, s, pv, q_path, q_stop, k_path, k_stop,
                       sm_scale * q_factor * k_factor, mask is not None, mask, nodes)

    def mask_of(self, x):
        """(bool tensor: where the scores are masked, the largest value a masked score gets) of
        masked_fill/where/add node ``x``, from its constant mask."""
        dyn = self.is_dynamic
        if x.target in _ADD:
            a, b = x.args[:2]
            m = torch.as_tensor(self.constant(b if dyn(a) else a, x, "the additive mask"),
                                dtype=torch.float64)
            masked = m != 0
            return masked, float(m[masked].max()) if masked.any() else -math.inf
        if x.target in _MASKED_FILL:
            cond, fill = self.constant(x.args[1], x, "the mask"), x.args[2]
            masked = torch.as_tensor(cond).bool()
        else:
            cond = torch.as_tensor(self.constant(x.args[0], x, "the mask (condition)")).bool()
            a, b = x.args[1:3]
            masked, fill = (~cond, b) if dyn(a) else (cond, a)
        fill = self.constant(fill, x, "the fill value")
        if isinstance(fill, torch.Tensor):
            if fill.numel() != 1:
                raise CompileError(_where(x), f"a fill value of shape {tuple(fill.shape)} is "
                                              f"unsupported (one number, e.g. -inf)")
            fill = fill.item()
        return masked, float(fill)

    @staticmethod
    def check_causal(x, masked, fill, shape):
        """Mask node ``x`` must be torch's causal mask (key j masked for query i when j > i, the
        same for every batch item and head) with masked scores at -inf or far below."""
        sq, sk = shape[-2:]
        try:
            masked = torch.broadcast_to(masked, shape)
        except RuntimeError:
            raise CompileError(_where(x), f"the mask's shape {tuple(masked.shape)} does not "
                                          f"broadcast to the scores' {shape}") from None
        causal = ~torch.ones(sq, sk, dtype=torch.bool).tril()
        slices = masked.reshape(-1, sq, sk)
        if not bool((slices == causal).all()):
            how = (f"it differs at {int((slices[0] != causal).sum())} of its {sq}x{sk} positions"
                   if bool((slices == slices[0]).all()) else
                   "it is not the same for every batch item and head")
            raise CompileError(_where(x), f"the mask is not the causal one (key j masked for "
                                          f"query i exactly when j > i, e.g. masked_fill("
                                          f"tril(ones(S, S)) == 0, -inf)): {how} (only a causal "
                                          f"mask is supported, no arbitrary or padding mask)")
        if sq != sk:
            raise CompileError(_where(x), f"a causal mask with {sq} queries and {sk} keys is "
                                          f"unsupported (torch's tril mask aligns top-left, the "
                                          f"graph bottom-right: equal lengths only)")
        if not (fill == -math.inf or fill <= _MASK_FILL_MAX):
            raise CompileError(_where(x), f"masked scores set to {fill:g} are unsupported (-inf, "
                                          f"or a large negative number <= {_MASK_FILL_MAX:g} "
                                          f"such as -1e9: the graph's causal attention gives "
                                          f"masked keys probability 0)")

    def operand_path(self, x, qk):
        """The nodes from attention operand ``x`` back to its producer through views,
        pass-throughs, identity casts and multiplications by constants (folded into the
        attention's sm_scale: the graph holds q and k unscaled) -> (path, producer, factor)."""
        path, factor = [], 1.0
        while isinstance(x, torch.fx.Node) and x.op == "call_function":
            so = self.scale_operand(x)
            if so is not None:
                factor *= self.scale_factor(x)
                path.append(x)
                self.folded.add(x.name)
                x = so[0]
            elif x.target in _PASS or x.target in _HEAD_VIEWS or self.identity_cast(x):
                path.append(x)
                x = x.args[0]
            else:
                break
        last = max((j for j, node in enumerate(path) if node.target in _SCALE), default=-1)
        for j, p in enumerate(path[:last + 1]):    # a folded multiplication feeds nothing else
            others = [u for u in self.users(p) if u is not (path[j - 1] if j else qk)
                      and not (u.target == aten.type_as.default and u.args[0] is not p)]
            if others:
                raise CompileError(_where(path[last]), f"this multiplication by a constant is "
                                                       f"folded into the attention's sm_scale, "
                                                       f"but {p.name!r} is also used by "
                                                       f"{_names(others)}")
        return path, x, factor

    @staticmethod
    def check_softmax(n):
        rank, dim = len(_shape(n)), int(n.args[1])
        if dim % rank != rank - 1:
            raise CompileError(_where(n), f"softmax over dim {dim} is unsupported (only the last "
                                          f"dim)")
        dtype = (n.kwargs.get("dtype", n.args[2] if len(n.args) > 2 else None)
                 if n.target == aten.softmax.int else None)
        if dtype not in (None, torch.float32):
            raise CompileError(_where(n), f"softmax dtype {dtype} is unsupported")

    # ------------------------------------------------------------------ planning
    def plan_adds(self):
        """Give every add, its operands and every add chained to them (a residual stream) one
        symmetric scale covering all of them, so the graph's ``add`` (same scale, zero points
        summed) needs no requantize anywhere along the stream (a standalone requantize costs a
        whole identity GEMM on the device; a ReLU output at zero point 0 costs one bit)."""
        parent = {}

        def find(x):
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        span = {}                                # group member -> its observed |range|
        for n in self.ep.graph.nodes:
            if n.target in _ADD and n.name not in self.absorbed:
                args = [x for x in n.args[:2] if isinstance(x, torch.fx.Node)]
                for x in args:
                    parent[find(self._source(x).name)] = find(n.name)
                for x in args + [n]:
                    name = n.name if x is n else self._source(x).name
                    span[name] = max(span.get(name, 0.0), *(abs(v) for v in self.ranges[x.name]))
        absmax = {}
        for name, v in span.items():
            absmax[find(name)] = max(absmax.get(find(name), 0.0), v)
        for name in span:
            self.forced[name] = _symmetric_qparams(absmax[find(name)])

    def plan_attention(self):
        """Graph.attention takes q, k and v at zero point 0: the nodes producing them (through the
        free head split) are quantized symmetrically over their observed range, unless an add
        already gave them symmetric parameters."""
        for n in self.ep.graph.nodes:
            if n.op == "call_function" and (n.target in _SDPA or n.name in self.manual):
                if n.name in self.manual:
                    qkv = (*self.manual[n.name].qk.args[:2], n.args[1])
                else:
                    self.sdpa_args(n)
                    qkv = n.args[:3]
                for what, x in zip(("q", "k", "v"), qkv):
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
        """The node that produces ``n``'s data (through free permutes/views/pass-throughs and an
        attention's multiplications by constants folded into its sm_scale)."""
        while n.op == "call_function" and (n.target in _PASS or n.target in _HEAD_VIEWS
                                           or n.name in self.folded):
            n = self.scale_operand(n)[0] if n.name in self.folded else n.args[0]
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
        if n.name in self.values or n.name in self.absorbed:  # a fused ReLU, part of an attention
            return
        if n.name in self.manual:
            self.manual_attention(n)
        elif n.name in self.folded:
            src = self.scale_operand(n)[0]
            if src.name not in self.values:
                raise CompileError(_where(n), f"operand {src.name!r} is not an activation of the "
                                              f"model")
            self.alias(n, src)
        elif t in _LINEAR or t in _MATMUL:
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
        if src.name in self.heads or self.plain_kt(n, src, dims):
            return self.permute_heads(n, src, dims, f"permute {dims}")
        if not (self.nchw[src.name] and dims == _NHWC_PERMUTE):
            raise CompileError(_where(n), f"permute {dims} is unsupported (only NCHW -> NHWC "
                                          "(0, 2, 3, 1), which is free in the graph's layout, and "
                                          "the (0, 2, 1, 3) of an attention's head split)")
        self.alias(n, src, nchw=False)

    def transpose(self, n):
        src = self.source_arg(n)
        rank = len(_shape(n))
        pair = [-2, -1] if n.target == aten.mT.default else list(n.args[1:3])
        dims = list(range(rank))
        a, b = (int(d) % rank for d in pair)
        dims[a], dims[b] = dims[b], dims[a]
        if src.name not in self.heads and not self.plain_kt(n, src, dims):
            raise CompileError(_where(n), f"transpose {pair} is unsupported (only of an "
                                          f"attention's head split [.., S, H, D/H] <-> [.., H, S, "
                                          f"D/H], and k^T in a hand-written softmax(q @ k^T) @ v)")
        self.permute_heads(n, src, dims, f"transpose {pair}")

    def plain_kt(self, n, src, dims):
        """Whether ``n`` is k^T ``[.., D, S]`` of a single-head hand-written attention: the last
        two dims of a whole activation (no head split) swapped, on the way to ``q @ k^T``."""
        rank = len(dims)
        return (n.name in self.k_paths and src.name not in self.heads and rank >= 2
                and not self.nchw[src.name]
                and dims == list(range(rank - 2)) + [rank - 1, rank - 2])

    def permute_heads(self, n, src, dims, what):
        """A head view permuted: the last three dims reordered among the states the importer
        follows ([.., S, H, D/H], [.., H, S, D/H], [.., H, D/H, S]), leading dims in place."""
        rank = len(dims)
        h = self.heads.get(src.name)
        if h is None:                              # plain_kt
            return self.alias(n, src, heads=_Heads("t", 1, _shape(src)[-1]))
        lead = rank - 3
        order = None
        if h.state in _HEAD_ORDER and lead >= 0 and dims[:lead] == list(range(lead)):
            order = "".join(_HEAD_ORDER[h.state][d - lead] for d in dims[lead:])
        if order not in _HEAD_STATE:
            raise CompileError(_where(n), f"{what} of the attention head view {src.name!r} is a "
                                          f"transpose the importer cannot follow (only dims -3 "
                                          f"and -2, e.g. transpose(1, 2) or permute(0, 2, 1, 3), "
                                          f"and k.transpose(-2, -1) for a hand-written q @ k^T)")
        self.alias(n, src, heads=_Heads(_HEAD_STATE[order], h.heads, h.head_dim))

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
                "bhsd": " of attention heads [.., H, S, D/H] (transpose(1, 2) them back first)",
                "bhds": " of transposed attention heads [.., H, D/H, S]",
                "t": " of an attention's k^T"}
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
        causal = bool(a["is_causal"])
        if causal and ts[0].shape[-2] != ts[1].shape[-2]:
            raise CompileError(_where(n), f"is_causal with {ts[0].shape[-2]} queries and "
                                          f"{ts[1].shape[-2]} keys is unsupported (torch aligns "
                                          f"the mask top-left, the graph bottom-right: equal "
                                          f"lengths only)")
        dh = hs[0].head_dim
        sm_scale = float(a["scale"]) if a["scale"] is not None else 1.0 / math.sqrt(dh)
        self.emit_attention(n, ts, hs[0], causal, sm_scale, "attention")

    def emit_attention(self, n, ts, h, causal, sm_scale, what):
        """One graph ``attention`` for exported node ``n`` on graph tensors q, k, v ``ts`` (head
        layout ``h``); the scores' int8 scale from their calibrated max."""
        q, k, v = (self.symmetric(n, t, w) for t, w in zip(ts, ("q", "k", "v")))
        absmax = self.scores.get(n.name, 0.0)
        score_scale = absmax / 127 or 1.0
        qp = self.qparams(n)
        self.values[n.name] = self.g.attention(q, k, v, heads=h.heads, causal=causal,
                                               score_scale=score_scale, sm_scale=sm_scale,
                                               scale=qp.scale, zero_point=qp.zero_point,
                                               name=n.name)
        self.nchw[n.name] = False
        if h.state == "bhsd":
            self.heads[n.name] = h
        self.notes.append(f"{n.name}: {what}, {h.heads} heads of {h.head_dim}, causal={causal}, "
                          f"sm_scale {sm_scale:.6g}, scores up to {absmax:.4g} at scale "
                          f"{score_scale:.4g}")

    def manual_attention(self, n):
        """The graph's attention for hand-written ``softmax(q @ k^T * c [masked]) @ v`` ending at
        P @ V node ``n`` (the scores matmul, scale, mask and softmax emit nothing)."""
        m = self.manual[n.name]
        (qn, kn), vn = m.qk.args[:2], n.args[1]
        for x, at in ((qn, m.qk), (kn, m.qk), (vn, n)):
            if x.name not in self.values:
                raise CompileError(_where(at), f"operand {x.name!r} is not an activation of the "
                                               f"model")
        hq, hk, hv = (self.heads.get(x.name) for x in (qn, kn, vn))
        if hk is not None and hk.state == "t":     # one head: q, k, v whole [.., S, D]
            for x, at, what in ((qn, m.qk, "q"), (vn, n, "v")):
                if x.name in self.heads or self.nchw[x.name]:
                    raise CompileError(_where(at), f"{what} {x.name!r} is not a [.., S, D] "
                                                   f"activation like k (single head: no head "
                                                   f"split on q, k or v)")
            h = _Heads("t", 1, hk.head_dim)
        else:
            expect = "linear(x).view(B, S, H, D/H).transpose(1, 2)"
            if hq is None or hq.state != "bhsd":
                raise CompileError(_where(m.qk), f"q {qn.name!r} (the left operand of q @ k^T) is "
                                                 f"not a head split the importer can follow "
                                                 f"(expected {expect})")
            if hk is None or hk.state != "bhds":
                raise CompileError(_where(m.qk), f"k^T {kn.name!r} (the right operand of q @ "
                                                 f"k^T) is not a transposed head split the "
                                                 f"importer can follow (expected "
                                                 f"{expect}.transpose(-2, -1))")
            if hv is None or hv.state != "bhsd":
                raise CompileError(_where(n), f"v {vn.name!r} (the right operand of P @ v) is "
                                              f"not a head split the importer can follow "
                                              f"(expected {expect})")
            if len({x.heads for x in (hq, hk, hv)}) != 1 \
                    or len({x.head_dim for x in (hq, hk, hv)}) != 1:
                raise CompileError(_where(n), "q, k and v have different head counts or head "
                                              "sizes (" + ", ".join(f"{x.heads}x{x.head_dim}"
                                                                    for x in (hq, hk, hv))
                                              + "; grouped-query attention is unsupported)")
            h = hq
        if self.masked_p.get(n.name, 0.0) > 0:
            raise CompileError(_where(m.mask), f"masked keys kept probabilities up to "
                                               f"{self.masked_p[n.name]:.3g} in calibration (mask "
                                               f"with -inf: the graph's causal attention gives "
                                               f"them 0)")
        self.emit_attention(n, [self.values[x.name] for x in (qn, kn, vn)], h, m.causal,
                            m.sm_scale, "hand-written attention (" + ", ".join(
                                x.name for x in m.nodes) + ")")

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
            layout = {"split": "[.., S, H, D/H]", "bhsd": "[.., H, S, D/H]",
                      "bhds": "[.., H, D/H, S]", "t": "[.., D, S]"}[h.state]
            raise CompileError(_where(n), f"operand {v.name!r} is an attention head view "
                                          f"({layout}, {h.heads} heads): only "
                                          f"scaled_dot_product_attention or a hand-written "
                                          f"softmax(q @ k^T) @ v and the merge back to [.., S, D] "
                                          f"can use it")
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
