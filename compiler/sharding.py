"""SPMD compilation of a graph over a grid of Kaki chips, with the semantics of MLIR's ``shard``
dialect (formerly ``mesh``), and its multi-chip interpreter.

Semantics (docs/cluster.md "SPMD compilation")
----------------------------------------------
* A :class:`Grid` is ``shard.grid``: a name and a shape; chip ``c`` has the row-major multi-index
  of ``c`` (``shard.process_linear_index``).
* A :class:`Sharding` is ``shard.sharding``: per tensor dimension the grid axes it is split along
  (``split_axes``; ``()`` = not split), and the grid axes along which the tensor is a *partial sum*
  (``partial_axes``, reduction ``sum``: the mesh dialect's ``partial = sum[...]``). A dimension split
  along axes ``[a, b]`` has ``shape[a] * shape[b]`` equal parts; the chip's part is its multi-index
  on ``a, b`` linearized (outer to inner), the order in which ``shard.all_gather`` concatenates.
  Every split must be even: a dimension that does not divide is a CompileError naming it.
* :func:`shard` takes the unsharded graph and ``{tensor name: Sharding}`` annotations (weights,
  inputs, and constraints on intermediates, like ``shard.shard``), propagates shardings forward
  through the ops, inserts a collective wherever a value's sharding must change (``reshard``), and
  emits one graph per chip: the same nodes and shapes on every chip, each chip holding its slices
  of the constants (the program parameterized by chip index). Graph outputs end replicated.
* Constants are distributed at compile time: each use gets exactly the slices it needs (a bias
  follows its layer's output columns), so constants never need a collective. An unannotated
  constant weight follows its input: K split like the input's channels, N whole.

Propagation rules (rows = every dimension but the last, channels = the last):

=====================  ===========================================================================
op                     rule
=====================  ===========================================================================
linear / matmul        weight split on N (columns): input channels whole, output channels split
                       like N, bias sliced. Weight split on K (rows): input channels split like K;
                       the int32 product is a partial sum; ``matmul`` returns it partial, ``linear``
                       becomes ``matmul`` (partial) -> ``all_reduce`` -> ``requantize`` with the
                       int32 bias (added once, after the sum) -> ``relu``. The zero-point term
                       ``-x.zp * colsum(w)`` splits with K: each chip's matmul subtracts its rows'.
requantize             input made non-partial (``all_reduce``); channels split like the input.
relu, lut, add, mul    elementwise: like the (first) input.
rms/layer_norm,        channels whole (``all_gather`` if split), rows as the input; a causal
softmax                softmax also keeps its query rows whole.
attention              q, k, v with their sequence dimension whole and their channels split like
                       q's: the heads split (``heads`` must divide by the parts).
other ops              every operand replicated, computed whole on every chip.
=====================  ===========================================================================

``reshard(src -> dst)``: partial axes that ``dst`` splits a dimension along become
``reduce_scatter``, other partial axes one ``all_reduce``; then every dimension split differently
is gathered (``all_gather``) and every dimension ``dst`` splits is sliced locally
(``all_slice``). :func:`interpret_spmd` runs the per-chip graphs in lockstep, every collective by
:mod:`golden.collectives` over its group; :func:`dump` prints one chip's program in MLIR generic
syntax with the dialect's op names.
"""
from dataclasses import dataclass, field, replace

import numpy as np

from golden import collectives

from . import mlir
from .errors import CompileError
from .graph import GRID_OPS, Graph, _attrs_of, check_feeds, run_nodes

__all__ = ["Grid", "Sharding", "ShardedGraph", "shard", "tensor_parallel", "interpret_spmd",
           "dump", "local_part"]


# ------------------------------------------------------------------------------ grid and sharding

@dataclass(frozen=True)
class Grid:
    """``shard.grid``: ``name`` and ``shape`` (chips per grid axis)."""
    name: str
    shape: tuple

    def __post_init__(self):
        shape = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else (self.shape,)
        if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                            for d in shape):
            raise CompileError(f"grid {self.name!r}", f"shape {self.shape!r} must be positive integers")
        if not str(self.name).isidentifier():
            raise CompileError(f"grid {self.name!r}", "the name must be an identifier")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))

    @property
    def size(self):
        return int(np.prod(self.shape))

    def position(self, chip, axes):
        """Chip ``chip``'s index in its group along ``axes`` (multi-index linearized, outer to inner)."""
        coords = np.unravel_index(chip, self.shape)
        return int(np.ravel_multi_index([coords[a] for a in axes], [self.shape[a] for a in axes]))

    def groups(self, axes):
        """The groups of chips that differ only along ``axes``, each in group order."""
        groups = {}
        for c in range(self.size):
            coords = np.unravel_index(c, self.shape)
            key = tuple(int(x) for a, x in enumerate(coords) if a not in axes)
            groups.setdefault(key, []).append(c)
        return [sorted(g, key=lambda c: self.position(c, axes)) for g in groups.values()]

    def parts(self, axes):
        return int(np.prod([self.shape[a] for a in axes]))


@dataclass(frozen=True)
class Sharding:
    """``shard.sharding``: ``split_axes[d]`` = the grid axes tensor dimension ``d`` is split along
    (missing trailing dimensions are not split); ``partial_axes``: the value is a partial sum along
    these grid axes."""
    grid: Grid
    split_axes: tuple = ()
    partial_axes: tuple = ()
    partial_type: str = "sum"

    def __post_init__(self):
        split = tuple(tuple(int(a) for a in axes) for axes in self.split_axes)
        partial = tuple(int(a) for a in self.partial_axes)
        used = [a for axes in split for a in axes] + list(partial)
        where = f"sharding on grid {self.grid.name!r}"
        if any(not 0 <= a < len(self.grid.shape) for a in used):
            raise CompileError(where, f"grid axis out of range in split_axes {split}, partial_axes "
                                      f"{partial} (the grid has {len(self.grid.shape)} axes)")
        if len(set(used)) != len(used):
            raise CompileError(where, f"a grid axis is used twice in split_axes {split}, "
                                      f"partial_axes {partial}")
        if self.partial_type != "sum":
            raise CompileError(where, f"partial_type {self.partial_type!r}: only 'sum' is supported")
        object.__setattr__(self, "split_axes", split)
        object.__setattr__(self, "partial_axes", partial)

    @classmethod
    def replicated(cls, grid, rank):
        return cls(grid, ((),) * rank)

    def fit(self, rank, where):
        """This sharding with exactly ``rank`` dimension entries."""
        if len(self.split_axes) > rank:
            raise CompileError(where, f"split_axes {self.split_axes} name more than the tensor's "
                                      f"{rank} dimensions")
        return replace(self, split_axes=self.split_axes + ((),) * (rank - len(self.split_axes)))

    def with_split(self, dim, axes):
        split = list(self.split_axes)
        split[dim] = tuple(axes)
        return replace(self, split_axes=tuple(split))

    def without_partial(self, axes=None):
        keep = () if axes is None else tuple(a for a in self.partial_axes if a not in axes)
        return replace(self, partial_axes=keep)

    def local_shape(self, shape, where):
        """The shape of one chip's part; every split dimension must divide evenly."""
        out = []
        for d, (size, axes) in enumerate(zip(shape, self.split_axes)):
            parts = self.grid.parts(axes)
            if size % parts:
                raise CompileError(where, f"dimension {d} of size {size} does not split evenly over "
                                          f"grid axes {list(axes)} of {self.grid.name!r} ({parts} "
                                          f"parts): uneven splits are not supported")
            out.append(size // parts)
        return tuple(out)


def local_part(array, sharding, chip):
    """Chip ``chip``'s part of the whole ``array`` under ``sharding`` (the chunking rule of
    :func:`golden.collectives.chunks` per split dimension)."""
    for d, axes in enumerate(sharding.split_axes):
        if axes:
            start, stop = collectives.chunks(array.shape[d], sharding.grid.parts(axes))[
                sharding.grid.position(chip, axes)]
            array = np.take(array, np.arange(start, stop), axis=d)
    return np.ascontiguousarray(array)


def tensor_parallel(grid, column=(), row=(), axis=0):
    """Annotations of a Megatron-style tensor-parallel block: the ``column`` weights ``[K, N]``
    split by columns (N), the ``row`` weights by rows (K), along grid axis ``axis``."""
    out = {name: Sharding(grid, ((), (axis,))) for name in column}
    out.update({name: Sharding(grid, ((axis,), ())) for name in row})
    return out


# ------------------------------------------------------------------------------ the partitioner

@dataclass
class _Value:
    """A tensor as the chips hold it: one local Tensor per chip and its sharding."""
    parts: list
    sharding: Sharding


@dataclass
class ShardedGraph:
    """The per-chip graphs of one SPMD program."""
    graph: Graph                 #: the unsharded graph
    grid: Grid
    chips: list                  #: one compiler Graph per chip (same nodes and shapes)
    shardings: dict = field(default_factory=dict)   #: local tensor name -> Sharding
    inputs: dict = field(default_factory=dict)      #: graph input name -> Sharding
    outputs: dict = field(default_factory=dict)     #: graph output name -> local tensor name

    def chip_feeds(self, chip, feeds):
        """Chip ``chip``'s parts of the whole graph's ``feeds``."""
        return {name: local_part(feeds[name], s, chip) for name, s in self.inputs.items()}

    def dump(self, chip=0):
        return dump(self, chip)


class _Partitioner:
    def __init__(self, graph, grid, annotations):
        self.graph, self.grid = graph, grid
        self.out = ShardedGraph(graph, grid, [Graph(f"{graph.name}.chip{c}") for c in range(grid.size)])
        self.names = {n.name: n.output for n in graph.nodes}
        self.notes = self._check_annotations(annotations or {})
        self.vals, self.consts, self.resharded, self.taken = {}, {}, {}, set()

    def _check_annotations(self, annotations):
        out = {}
        for name, s in annotations.items():
            if name not in self.names:
                raise CompileError(f"graph {self.graph.name!r}", f"annotation for unknown tensor "
                                                                f"{name!r}")
            if not isinstance(s, Sharding) or s.grid != self.grid:
                raise CompileError(f"tensor {name!r}", f"annotation {s!r} is not a Sharding on grid "
                                                      f"{self.grid.name!r}")
            t = self.names[name]
            if s.partial_axes and (t.producer.op in ("input", "const") or t.dtype != "int32"):
                raise CompileError(f"tensor {name!r}", "only an int32 result can be partial")
            out[name] = s.fit(len(t.shape), f"tensor {name!r}")
        return out

    # ---------------------------------------------------------------- building on every chip
    def fresh(self, base, own=None):
        """A local name from ``base`` used by no local tensor and (unless it is ``own``, the
        tensor's own name) by no tensor of the graph, whose nodes keep their names."""
        name, i = base, 1
        while name in self.taken or (name != own and name in self.names):
            name, i = f"{base}.{i}", i + 1
        self.taken.add(name)
        return name

    def on_chips(self, sharding, build):
        """``build(chip, graph)`` on every chip -> a _Value with ``sharding``."""
        parts = [build(c, g) for c, g in enumerate(self.out.chips)]
        self.taken.add(parts[0].name)
        self.out.shardings[parts[0].name] = sharding
        return _Value(parts, sharding)

    def replicated(self, t):
        return Sharding.replicated(self.grid, len(t.shape))

    def sharding_of(self, t):
        if id(t) in self.vals:
            return self.vals[id(t)].sharding
        return self.notes.get(t.name) or self.replicated(t)

    def operand(self, t, target):
        """``t``'s parts under ``target``: constants sliced at compile time, values resharded."""
        if t.is_const:
            return self.const(t, target).parts
        key = (id(t), target)                  # one collective however many users need it
        if key not in self.resharded:
            self.resharded[key] = self.reshard(self.vals[id(t)], target, t.name).parts
        return self.resharded[key]

    def const(self, t, s):
        key = (id(t), s)
        if key not in self.consts:
            where = f"const {t.name!r}"
            s.local_shape(t.shape, where)
            name = self.fresh(t.name, own=t.name)
            self.consts[key] = self.on_chips(s, lambda c, g: g.const(
                name, local_part(t.data, s, c), scale=self._local_scale(t, s, c),
                zero_point=t.zero_point))
        return self.consts[key]

    def _local_scale(self, t, s, chip):
        if np.ndim(t.scale) and s.split_axes[-1]:          # a per-channel scale splits with N
            return local_part(np.asarray(t.scale), replace(s, split_axes=s.split_axes[-1:]), chip)
        return t.scale

    # ---------------------------------------------------------------- resharding
    def collective(self, v, op, axes, dim, sharding, base):
        name = self.fresh(f"{base}.{op}")
        return self.on_chips(sharding, lambda c, g: g.collective(
            op, v.parts[c], grid=self.grid.name, grid_shape=self.grid.shape, grid_axes=axes,
            axis=dim, name=name))

    def reshard(self, v, dst, base):
        """``v`` under ``dst``: reduce partial sums, gather, then slice (module docstring)."""
        src = v.sharding
        if any(a not in src.partial_axes for a in dst.partial_axes):
            raise CompileError(f"tensor {base!r}", f"cannot make a value partial ({src} -> {dst})")
        pending = [a for a in src.partial_axes if a not in dst.partial_axes]
        for d, axes in enumerate(dst.split_axes):
            if axes and not v.sharding.split_axes[d] and set(axes) <= set(pending):
                s = v.sharding.without_partial(axes).with_split(d, axes)
                v = self.collective(v, "reduce_scatter", axes, d, s, base)
                pending = [a for a in pending if a not in axes]
        if pending:
            v = self.collective(v, "all_reduce", tuple(pending), None,
                                v.sharding.without_partial(pending), base)
        for d, axes in enumerate(v.sharding.split_axes):
            if axes and axes != dst.split_axes[d]:
                v = self.collective(v, "all_gather", axes, d, v.sharding.with_split(d, ()), base)
        for d, axes in enumerate(dst.split_axes):
            if axes and not v.sharding.split_axes[d]:
                v = self.collective(v, "all_slice", axes, d, v.sharding.with_split(d, axes), base)
        return v

    # ---------------------------------------------------------------- the graph
    def run(self):
        for n in self.graph.nodes:
            if n.op == "const":
                continue                                   # materialized at each use
            rule = _RULES.get(n.op, _whole)
            v = rule(self, n)
            if n.name in self.notes and n.op != "input":
                v = self.reshard(v, self.notes[n.name], n.name)
            self.vals[id(n.output)] = v
        for t in self.graph.outputs:
            parts = self.operand(t, self.replicated(t))    # every chip holds each whole output
            for g, part in zip(self.out.chips, parts):
                g.output(part)
            self.out.outputs[t.name] = parts[0].name
        for g in self.out.chips:
            g.verify()
        return self.out


# ------------------------------------------------------------------------------ propagation rules

def _input(p, n):
    t = n.output
    s = p.sharding_of(t)
    shape = s.local_shape(t.shape, n.where)
    p.out.inputs[n.name] = s
    return p.on_chips(s, lambda c, g: g.input(n.name, shape, t.dtype, t.scale, t.zero_point))


def _weight_sharding(p, w, sx):
    """An annotated weight keeps its annotation; an unannotated constant follows the input's K split."""
    if not w.is_const or w.name in p.notes:
        return p.sharding_of(w)
    return Sharding(p.grid, (sx.split_axes[-1], ()))


def _gemm(p, n):
    """linear / matmul (module docstring)."""
    x, w = n.inputs[0], n.inputs[1]
    bias = n.inputs[2] if len(n.inputs) > 2 else None
    sx = p.sharding_of(x)
    k_axes, n_axes = _weight_sharding(p, w, sx).split_axes
    if k_axes and n_axes:
        raise CompileError(n.where, f"weight {w.name!r} is split on both K {list(k_axes)} and N "
                                    f"{list(n_axes)}")
    rows = sx.split_axes[:-1]
    try:
        xs = Sharding(p.grid, rows + (k_axes,))
        out_s = Sharding(p.grid, rows + (n_axes,), partial_axes=k_axes)
    except CompileError as e:
        raise CompileError(n.where, f"input rows split along {list(rows)} clash with the weight's "
                                    f"split ({e.reason})") from e
    xp = p.operand(x, xs)
    wp = p.operand(w, Sharding(p.grid, (k_axes, n_axes)))
    bp = p.operand(bias, Sharding(p.grid, (n_axes,))) if bias is not None and not k_axes else None
    a, out = n.attrs, n.output
    if n.op == "matmul":
        return p.on_chips(out_s, lambda c, g: g.matmul(xp[c], wp[c], name=n.name))
    if not k_axes:
        return p.on_chips(out_s, lambda c, g: g.linear(
            xp[c], wp[c], bp[c] if bp else None, scale=out.scale, zero_point=a["zero_point"],
            relu=a["relu"], name=n.name))
    return _row_parallel_linear(p, n, xp, wp, out_s)


def _row_parallel_linear(p, n, xp, wp, partial):
    """``linear`` with K split: partial matmul -> all_reduce -> requantize (+ bias) -> relu."""
    a, out, bias = n.attrs, n.output, (n.inputs[2] if len(n.inputs) > 2 else None)
    name = p.fresh(f"{n.name}.partial")
    mm = p.on_chips(partial, lambda c, g: g.matmul(xp[c], wp[c], name=name))
    whole = p.reshard(mm, partial.without_partial(), n.name)
    bp = p.operand(bias, Sharding.replicated(p.grid, 1)) if bias is not None else None
    rq_name = p.fresh(f"{n.name}.requantize") if a["relu"] else n.name
    v = p.on_chips(whole.sharding, lambda c, g: g.requantize(
        whole.parts[c], scale=out.scale, zero_point=a["zero_point"],
        bias=bp[c] if bp else None, name=rq_name))
    if a["relu"]:
        v = p.on_chips(v.sharding, lambda c, g: g.relu(v.parts[c], name=n.name))
    return v


def _requantize(p, n):
    x, out = n.inputs[0], n.output
    s = p.sharding_of(x).without_partial()
    xp = p.operand(x, s)
    bp = (p.operand(n.inputs[1], Sharding(p.grid, (s.split_axes[-1],)))
          if len(n.inputs) > 1 else None)
    return p.on_chips(s, lambda c, g: g.requantize(xp[c], scale=out.scale, zero_point=out.zero_point,
                                                   bias=bp[c] if bp else None, name=n.name))


def _elementwise(p, n):
    """relu, lut, add, mul: every operand like the first."""
    s = p.sharding_of(n.inputs[0]).without_partial()
    ins = [p.operand(t, s) for t in n.inputs]
    out = n.output
    if n.op == "relu":
        return p.on_chips(s, lambda c, g: g.relu(ins[0][c], name=n.name))
    if n.op == "add":
        return p.on_chips(s, lambda c, g: g.add(ins[0][c], ins[1][c], name=n.name))
    if n.op == "mul":
        return p.on_chips(s, lambda c, g: g.mul(ins[0][c], ins[1][c], scale=out.scale,
                                                zero_point=out.zero_point, name=n.name))
    return _clone(p, n, s, ins)                            # lut: its table is per code, not per channel


def _rowwise(p, n):
    """rms_norm, layer_norm, softmax: the normalized (last) dimension whole; a causal softmax
    also keeps its query rows whole (the mask depends on the row's position)."""
    s = p.sharding_of(n.inputs[0]).without_partial()
    whole = (-1, -2) if n.attrs.get("causal") else (-1,)
    for d in whole:
        s = s.with_split(len(s.split_axes) + d, ())
    xp = p.operand(n.inputs[0], s)
    if n.op == "softmax":
        return p.on_chips(s, lambda c, g: g.softmax(xp[c], causal=n.attrs["causal"], name=n.name))
    return _clone(p, n, s, [xp])                           # gamma / beta: every channel, unchanged


def _attention(p, n):
    q, k, v = n.inputs
    s = p.sharding_of(q).without_partial()
    s = s.with_split(len(s.split_axes) - 2, ())            # the sequence whole: keys are all needed
    heads_axes = s.split_axes[-1]
    parts = p.grid.parts(heads_axes)
    a, out = n.attrs, n.output
    if a["heads"] % parts:
        raise CompileError(n.where, f"heads={a['heads']} do not split evenly over the {parts} parts "
                                    f"of grid axes {list(heads_axes)} (q's channels)")
    qp, kp, vp = (p.operand(t, s) for t in (q, k, v))
    return p.on_chips(s, lambda c, g: g.attention(
        qp[c], kp[c], vp[c], heads=a["heads"] // parts, score_scale=a["score_scale"],
        scale=out.scale, zero_point=a["zero_point"], causal=a["causal"], sm_scale=a["sm_scale"],
        name=n.name))


def _whole(p, n):
    """Any other op: every operand replicated, the node computed whole on every chip."""
    ins = [p.operand(t, p.replicated(t)) for t in n.inputs]
    return _clone(p, n, p.replicated(n.output), ins)


def _clone(p, n, s, ins):
    """``n`` with its attributes on every chip's operands ``ins`` (shape: ``s``'s part)."""
    out = n.output
    shape = s.local_shape(out.shape, n.where)
    return p.on_chips(s, lambda c, g: g._add(n.op, n.name, [x[c] for x in ins], dict(n.attrs),
                                             shape, out.dtype, out.scale, out.zero_point))


_RULES = {"input": _input, "linear": _gemm, "matmul": _gemm, "requantize": _requantize,
          "relu": _elementwise, "lut": _elementwise, "add": _elementwise, "mul": _elementwise,
          "rms_norm": _rowwise, "layer_norm": _rowwise, "softmax": _rowwise,
          "attention": _attention}


def shard(graph, grid, annotations=None):
    """The SPMD program of ``graph`` on ``grid`` under ``annotations`` ``{tensor name: Sharding}``:
    a :class:`ShardedGraph` (module docstring). Raises CompileError naming the tensor or node."""
    graph.verify()
    return _Partitioner(graph, grid, annotations).run()


# ------------------------------------------------------------------------------ multi-chip interpreter

def _group_result(node, xs):
    """The results of collective ``node`` for one group's inputs ``xs`` (in group order)."""
    a = node.attrs
    if node.op == "all_reduce":
        return collectives.all_reduce(xs)
    if node.op == "reduce_scatter":
        return collectives.reduce_scatter(xs, axis=a["axis"])
    if node.op == "all_gather":
        return collectives.all_gather(xs, axis=a["axis"])
    bounds = collectives.chunks(xs[0].shape[a["axis"]], len(xs))           # all_slice: local
    return [np.take(x, np.arange(*bounds[i]), axis=a["axis"]) for i, x in enumerate(xs)]


def _collective(grid, node, xs):
    """Every chip's result of collective ``node`` given every chip's input ``xs``."""
    if node.attrs["grid"] != grid.name or tuple(node.attrs["grid_shape"]) != grid.shape:
        raise CompileError(node.where, f"runs on grid {node.attrs['grid']!r}, not {grid.name!r}")
    ys = [None] * grid.size
    for group in grid.groups(node.attrs["grid_axes"]):
        res = _group_result(node, [xs[c] for c in group])
        for c, y in zip(group, res):
            ys[c] = y
    return ys


def _step(run, value):
    """Advance one chip's interpreter: ``("wait", node, x)`` at a collective, or ``("done", outputs)``."""
    try:
        node, x = run.send(value)
        return "wait", node, x
    except StopIteration as done:
        return "done", done.value


def interpret_spmd(sharded, feeds):
    """Run the per-chip graphs of ``sharded`` together on the whole graph's ``feeds`` (each chip
    gets its parts); every collective runs over its groups with :mod:`golden.collectives`.
    Returns ``{output name: array}`` (every chip holds each whole output; they must agree)."""
    feeds = check_feeds(sharded.graph, feeds)
    runs = [run_nodes(g, sharded.chip_feeds(c, feeds)) for c, g in enumerate(sharded.chips)]
    states = [_step(r, None) for r in runs]
    while any(s[0] == "wait" for s in states):
        names = {s[1].name if s[0] == "wait" else None for s in states}
        if len(names) != 1:
            raise CompileError(f"graph {sharded.graph.name!r}", f"the chips diverged: they wait at "
                                                               f"{sorted(map(str, names))}")
        node = states[0][1]
        ys = _collective(sharded.grid, node, [s[2] for s in states])
        states = [_step(r, y) for r, y in zip(runs, ys)]
    results = {}
    for name, local in sharded.outputs.items():
        first = states[0][1][local]
        for c, s in enumerate(states[1:], 1):
            if not np.array_equal(s[1][local], first):
                raise CompileError(f"output {name!r}", f"chip {c}'s copy differs from chip 0's")
        results[name] = first
    return results


# ------------------------------------------------------------------------------ MLIR dump

class _Text(str):
    """An attribute value already in MLIR syntax (not quoted as a string)."""


def _line(op, results, operands, attrs, in_types, out_types):
    """:func:`mlir.op_line` with attribute values that may be :class:`_Text`."""
    line = mlir.op_line(op, results, operands, {}, in_types, out_types)
    if not attrs:
        return line
    body = ", ".join(f"{k} = {v if isinstance(v, _Text) else mlir.attr(v)}" for k, v in attrs.items())
    return line.replace(") : (", f") {{{body}}} : (", 1)


def _axes(axes):
    return _Text("array<i16" + (": " + ", ".join(map(str, axes)) if axes else "") + ">")


def _sharding_attrs(s):
    split = "[" + ", ".join("[" + ", ".join(map(str, a)) + "]" for a in s.split_axes) + "]"
    attrs = dict(grid=_Text(f"@{s.grid.name}"), split_axes=_Text(f"#shard.axisarray<{split}>"))
    if s.partial_axes:
        attrs.update(partial_axes=_axes(s.partial_axes),
                     partial_type=_Text(f"#shard.partial<{s.partial_type}>"))
    return attrs


def _grid_op_attrs(n):
    a = n.attrs
    attrs = dict(grid=_Text(f"@{a['grid']}"), grid_axes=_axes(a["grid_axes"]))
    if n.op in ("all_reduce", "reduce_scatter"):
        attrs["reduction"] = _Text("#shard.partial<sum>")
    if "axis" in a:
        key = {"all_gather": "gather_axis", "reduce_scatter": "scatter_axis",
               "all_slice": "slice_axis"}[n.op]
        attrs[key] = _Text(f"{a['axis']} : index")
    return attrs


def dump(sharded, chip=0):
    """Chip ``chip``'s program in MLIR generic syntax: ``shard.grid``, one ``shard.sharding`` per
    distinct sharding, every value annotated by ``shard.shard`` (its users take the annotated
    value), the Kaki ops on the chip's local types and the collectives as ``shard.*`` ops."""
    g, grid = sharded.chips[chip], sharded.grid
    lines = [_line("shard.grid", [], [], dict(sym_name=grid.name, shape=_Text(
        "array<i64: " + ", ".join(map(str, grid.shape)) + ">")), [], [])]
    ids = {}
    for s in sharded.shardings.values():
        if s not in ids:
            ids[s] = f"sharding{len(ids)}"
            lines.append(_line("shard.sharding", [ids[s]], [], _sharding_attrs(s), [],
                               ["!shard.sharding"]))
    for n in g.nodes:
        t = n.output
        ins, in_types = [f"{i.name}.sh" for i in n.inputs], [i.mlir_type() for i in n.inputs]
        if n.op in GRID_OPS:
            lines.append(_line(f"shard.{n.op}", [t.name], ins, _grid_op_attrs(n), in_types,
                               [t.mlir_type()]))
        else:
            lines.append(mlir.op_line(f"kaki.{n.op}", [t.name], ins, _attrs_of(n), in_types,
                                      [t.mlir_type()]))
        lines.append(_line("shard.shard", [f"{t.name}.sh"], [t.name, ids[sharded.shardings[t.name]]],
                           {}, [t.mlir_type(), "!shard.sharding"], [t.mlir_type()]))
    lines.append(mlir.op_line("kaki.return", [], [f"{t.name}.sh" for t in g.outputs], {},
                              [t.mlir_type() for t in g.outputs], []))
    return mlir.module(f"{sharded.graph.name}.{grid.name}.chip{chip}", lines)
