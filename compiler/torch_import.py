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
``permute(0, 2, 3, 1)`` of NCHW,        free: the graph already holds 4-D activations as NHWC
``dropout``/``clone``/``contiguous``
=====================================  ==================================================

Anything else is a :class:`~compiler.errors.CompileError` naming the exported node and the reason.

Activations are quantized per tensor, asymmetric, with the observed range widened to include 0
(so zero and ReLU are exact); a ReLU output uses the full 256 codes from 0 up.
:class:`ImportedModel` converts float inputs to the graph's int8 feeds (NCHW → NHWC) and int8
outputs back to float tensors in torch's layout.
"""
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
SUPPORTED = "linear, mm/matmul by a parameter, conv2d, relu, add, permute(0,2,3,1), dropout (eval)"


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

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.numel():
            lo, hi = float(out.min()), float(out.max())
            old = self.ranges.get(n.name, (lo, hi))
            self.ranges[n.name] = (min(lo, old[0]), max(hi, old[1]))
        return out


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
        self.ranges = self._calibrate(calibration)
        self.values = {}        #: exported node name -> graph Tensor
        self.nchw = {}          #: exported node name -> True when torch holds it as NCHW
        self.forced = {}        #: exported node name -> QParams an add needs it to have
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
        return obs.ranges

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

    def _source(self, n):
        """The node that produces ``n``'s data (through free permutes/pass-throughs)."""
        while n.op == "call_function" and (n.target in _PASS or n.target == aten.permute.default):
            n = n.args[0]
        return n

    # ------------------------------------------------------------------ emission
    def run(self):
        self.plan_adds()
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
            self.alias(n, n.args[0])
        elif t == aten.permute.default:
            self.permute(n)
        else:
            raise CompileError(_where(n), f"unsupported op (supported: {SUPPORTED})")

    def alias(self, n, src, nchw=None):
        self.values[n.name] = self.values[src.name]
        self.nchw[n.name] = self.nchw[src.name] if nchw is None else nchw

    def permute(self, n):
        src, dims = n.args[0], list(n.args[1])
        if not (self.nchw[src.name] and dims == _NHWC_PERMUTE):
            raise CompileError(_where(n), f"permute {dims} is unsupported (only NCHW -> NHWC "
                                          "(0, 2, 3, 1), which is free in the graph's layout)")
        self.alias(n, src, nchw=False)

    def param(self, n, arg, what):
        if not isinstance(arg, torch.fx.Node) or arg.name not in self.params:
            raise CompileError(_where(n), f"{what} must be a parameter of the model (two "
                                          "activations cannot be multiplied)")
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
