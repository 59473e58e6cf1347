"""The executor interface the serving runtime drives, and the NumPy reference executor
(docs/serving.md "Executors").

An **executor** runs one step of the model for a batch of sequences over a paged KV cache it
owns: :class:`SeqWork` says, per sequence, which tokens to process at which positions and which
physical blocks hold its positions; ``step`` writes the new tokens' K and V rows into those
blocks and returns the int8 logits of each item's last token. The runtime never touches the
cache's bytes; it only names blocks (``serving.kv_blocks``). The chip executor (compiled
prefill/decode programs launched through the driver on the golden backend or on RTL) and
:class:`ReferenceExecutor` implement the same :class:`Executor` protocol.

:class:`ReferenceExecutor` is the integer model of the imported graph (``pack.graph()``, see
``compiler.llm_model``) run token-rows-at-a-time with the cache in a NumPy array
``[layers][K, V][num_blocks][16][d_model]`` int8. Per step, the new rows of every item are
stacked and every per-position node of the graph is evaluated on them by the graph's own
interpreter (:func:`compiler.graph.interpret` of a one-node graph: the same code and integer
parameters as the whole-window reference). At each attention node the new K and V rows are
written into the cache at their (block, slot); the item's keys and values ``0 .. start + n - 1``
are gathered through its block table and the attention node is interpreted with the new rows as
queries, the gathered rows as keys and values, and the causal mask offset ``start`` (query ``i``
is position ``start + i``: it sees keys ``0 .. start + i``). This is bit-exact with
``pack.logits(graph, ids)``: every other op acts per position, and the causal softmax gives a
masked key no part in the row's max or sum and writes its probability as 0, so the positions
after a query (and the poison beyond the written slots) never reach it; the tests prove it.
"""
import asyncio
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from compiler.graph import Graph, Node, Tensor, interpret
from golden import ops

from .kv_blocks import PAGE_TOKENS, blocks_for

__all__ = ["SeqWork", "Executor", "ReferenceExecutor", "check_work", "PER_POSITION_OPS"]

#: graph ops that act on each position (row) alone: evaluated on the new rows only
PER_POSITION_OPS = ("linear", "matmul", "add", "relu", "requantize", "rms_norm", "layer_norm",
                    "lut", "mul")


@dataclass(frozen=True)
class SeqWork:
    """One sequence's part of a step."""
    seq_id: int
    tokens: np.ndarray        #: int64 token ids to process this step: a prefill chunk, or the 1 decode token
    start: int                #: position of tokens[0] (tokens before it are already in the KV cache)
    block_table: tuple        #: physical block of each logical block, covering positions 0 .. start+len(tokens)-1
    want_logits: bool         #: the step's last token's logits are needed (decode, last prefill chunk)


@runtime_checkable
class Executor(Protocol):
    page_tokens: int          #: 16
    num_blocks: int           #: physical KV blocks in the cache
    max_batch: int            #: most SeqWork items per step (8)
    max_step_tokens: int      #: token budget per step the executor supports
    context: int              #: 256: positions 0..context-1

    async def step(self, work: list[SeqWork]) -> list[np.ndarray | None]:
        """int8 logits [vocab] of each item's last token (None when not wanted)."""

    async def poison(self, blocks: list[int]) -> None:
        """Fill these physical blocks of every layer's K and V with poison bytes."""


def check_work(work, *, page_tokens, num_blocks, max_batch, max_step_tokens, context,
               vocab_size=None):
    """Raise ValueError unless ``work`` is a step an executor of these limits can run: at most
    ``max_batch`` items of distinct sequences, at most ``max_step_tokens`` tokens, each item's
    positions inside the context, its block table long enough and inside the cache, token ids in
    the vocabulary, and no physical (block, slot) written by two items."""
    if not work:
        raise ValueError("empty step")
    if len(work) > max_batch:
        raise ValueError(f"{len(work)} items in a step: the executor runs at most {max_batch}")
    total = sum(len(w.tokens) for w in work)
    if total > max_step_tokens:
        raise ValueError(f"{total} tokens in a step: the executor's budget is {max_step_tokens}")
    seen, written = set(), {}
    for w in work:
        if w.seq_id in seen:
            raise ValueError(f"sequence {w.seq_id} appears twice in one step")
        seen.add(w.seq_id)
        n = len(w.tokens)
        if n < 1 or w.start < 0 or w.start + n > context:
            raise ValueError(f"sequence {w.seq_id}: positions {w.start}..{w.start + n - 1} are "
                             f"outside 0..{context - 1}")
        if len(w.block_table) < blocks_for(w.start + n, page_tokens):
            raise ValueError(f"sequence {w.seq_id}: block table of {len(w.block_table)} blocks "
                             f"does not cover positions 0..{w.start + n - 1}")
        for j, b in enumerate(w.block_table):
            if not 0 <= int(b) < num_blocks:
                raise ValueError(f"sequence {w.seq_id}: logical block {j} -> {b}, outside the "
                                 f"cache's blocks 0..{num_blocks - 1}")
        if vocab_size is not None and ((w.tokens < 0) | (w.tokens >= vocab_size)).any():
            raise ValueError(f"sequence {w.seq_id}: token ids outside 0..{vocab_size - 1}")
        for p in range(w.start, w.start + n):
            key = (int(w.block_table[p // page_tokens]), p % page_tokens)
            if key in written:
                raise ValueError(f"sequences {written[key]} and {w.seq_id} both write block "
                                 f"{key[0]} slot {key[1]}")
            written[key] = w.seq_id


def _input_tensor(t, shape):
    node = Node("input", t.name, [], {})
    node.output = Tensor(t.name, shape, t.dtype, t.scale, t.zero_point, node)
    return node


def _const_tensor(t):
    node = Node("const", t.name, [], {})
    node.output = Tensor(t.name, t.shape, t.dtype, t.scale, t.zero_point, node, t.data)
    return node


def node_graph(node, input_shapes, out_shape, attrs=None):
    """A graph of ``node`` alone: its non-constant operands become inputs of ``input_shapes``
    (in operand order), its constants stay, its output gets ``out_shape``; ``attrs`` replaces
    attributes (e.g. an attention's ``mask_offset``). The interpreter runs it with the node's
    own integer parameters."""
    g = Graph(f"{node.name}.rows")
    ins, shapes, made = [], iter(input_shapes), {}
    for t in node.inputs:
        if id(t) not in made:
            src = _const_tensor(t) if t.is_const else _input_tensor(t, next(shapes))
            g.nodes.append(src)
            made[id(t)] = src.output
        ins.append(made[id(t)])
    out = node.output
    n = Node(node.op, node.name, ins, dict(node.attrs, **(attrs or {})))
    n.output = Tensor(out.name, out_shape, out.dtype, out.scale, out.zero_point, n)
    g.nodes.append(n)
    g.outputs = [n.output]
    return g


class ReferenceExecutor:
    """The NumPy reference executor (module docstring) of ``pack`` (``compiler.llm_model.load()``)
    with a cache of ``num_blocks`` blocks. ``poison``: the byte poisoned blocks are filled with,
    or ``"random"`` (default): fresh bytes from a generator seeded by ``seed``, so a result a
    poisoned byte reached would differ from run to run. The cache starts poisoned. ``yield_items``:
    ``step`` yields to the event loop between items (as a launch on a device would), so other
    tasks (a cancel) run during a step."""

    page_tokens = PAGE_TOKENS

    def __init__(self, pack, num_blocks, *, max_batch=8, max_step_tokens=256, poison="random",
                 seed=0, yield_items=True, graph=None):
        self.pack = pack
        self.graph = graph if graph is not None else pack.graph()
        self.num_blocks = int(num_blocks)
        self.max_batch = int(max_batch)
        self.max_step_tokens = int(max_step_tokens)
        self.context = int(pack.context)
        self.vocab_size = len(pack.vocab)
        self.logit_scale = float(pack.output["scale"])
        self.yield_items = yield_items
        self._poison_byte = None if poison == "random" else int(poison)
        self._rng = np.random.default_rng(seed)
        self._in_name, self._out_name = pack.input["name"], pack.output["name"]
        self._nodes = []
        self._attn = {}
        for n in self.graph.nodes:
            if n.op in ("input", "const"):
                continue
            if n.op == "attention":
                a = n.attrs
                if not a["causal"] or a["mask_offset"] != 0:
                    raise ValueError(f"{n.where}: a paged KV cache needs causal self-attention "
                                     f"(causal {a['causal']}, mask offset {a['mask_offset']})")
                if len({id(t) for t in n.inputs}) != 3:
                    raise ValueError(f"{n.where}: q, k and v must be distinct tensors")
                self._attn[id(n)] = len(self._attn)
            elif n.op not in PER_POSITION_OPS:
                raise ValueError(f"{n.where}: op {n.op!r} does not act per position; the "
                                 f"reference executor cannot run it a few rows at a time")
            self._nodes.append(n)
        if not self._attn:
            raise ValueError("the graph has no attention: nothing to cache")
        d = {n.inputs[1].cols for n in self._nodes if id(n) in self._attn}
        if len(d) != 1:
            raise ValueError(f"attention K widths differ across layers: {sorted(d)}")
        self.d_kv = d.pop()
        self.kv = np.empty((len(self._attn), 2, self.num_blocks, self.page_tokens, self.d_kv),
                           np.int8)
        self._fill(slice(None))
        self.steps = 0
        self.tokens_processed = 0

    @property
    def layers(self):
        return len(self._attn)

    def _fill(self, blocks):
        view = self.kv[:, :, blocks]
        if self._poison_byte is None:
            self.kv[:, :, blocks] = self._rng.integers(-128, 128, view.shape, dtype=np.int8)
        else:
            self.kv[:, :, blocks] = np.int8(np.uint8(self._poison_byte).view(np.int8))

    async def poison(self, blocks):
        blocks = [int(b) for b in blocks]
        for b in blocks:
            if not 0 <= b < self.num_blocks:
                raise ValueError(f"poison: block {b} outside 0..{self.num_blocks - 1}")
        if blocks:
            self._fill(np.asarray(blocks, np.int64))

    def embed_rows(self, tokens, start):
        """int8 graph-input rows of ``tokens`` at positions ``start ..`` (``pack.embed``'s
        arithmetic: the saturating add of the token's and the position's int8 rows)."""
        tokens = np.asarray(tokens, np.int64)
        return ops.add_sat(self.pack.tok_q[tokens], self.pack.pos_q[start:start + len(tokens)])

    async def step(self, work):
        check_work(work, page_tokens=self.page_tokens, num_blocks=self.num_blocks,
                   max_batch=self.max_batch, max_step_tokens=self.max_step_tokens,
                   context=self.context, vocab_size=self.vocab_size)
        lens = [len(w.tokens) for w in work]
        bounds = np.cumsum([0] + lens)
        rows = int(bounds[-1])
        env = {}
        x = np.concatenate([self.embed_rows(w.tokens, w.start) for w in work])
        env[self._in_name] = x.reshape(1, rows, -1)
        for n in self._nodes:
            if id(n) in self._attn:
                env[n.name] = await self._attention(n, env, work, bounds)
                continue
            feeds = {}
            for t in n.inputs:
                if not t.is_const:
                    feeds[t.name] = env[t.name]
            g = node_graph(n, [(1, rows, t.cols) for t in _operands(n)], (1, rows, n.output.cols))
            env[n.name] = interpret(g, feeds)[n.name]
        logits = env[self._out_name][0]
        self.steps += 1
        self.tokens_processed += rows
        return [logits[bounds[i + 1] - 1].copy() if w.want_logits else None
                for i, w in enumerate(work)]

    async def _attention(self, n, env, work, bounds):
        layer = self._attn[id(n)]
        q, k, v = (env[t.name][0] for t in n.inputs)
        out = np.empty(q.shape, np.int8)
        for i, w in enumerate(work):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            table = np.asarray(w.block_table, np.int64)
            pos = np.arange(w.start, w.start + (hi - lo))
            self.kv[layer, 0, table[pos // self.page_tokens], pos % self.page_tokens] = k[lo:hi]
            self.kv[layer, 1, table[pos // self.page_tokens], pos % self.page_tokens] = v[lo:hi]
            keys = np.arange(w.start + (hi - lo))
            kk = self.kv[layer, 0, table[keys // self.page_tokens], keys % self.page_tokens]
            vv = self.kv[layer, 1, table[keys // self.page_tokens], keys % self.page_tokens]
            sk = len(keys)
            g = node_graph(n, [(1, hi - lo, q.shape[1]), (1, sk, self.d_kv), (1, sk, self.d_kv)],
                           (1, hi - lo, n.output.cols), attrs=dict(mask_offset=int(w.start)))
            qn, kn, vn = (t.name for t in n.inputs)
            out[lo:hi] = interpret(g, {qn: q[lo:hi].reshape(1, hi - lo, -1),
                                       kn: kk.reshape(1, sk, -1), vn: vv.reshape(1, sk, -1)})[
                n.name][0]
            if self.yield_items:
                await asyncio.sleep(0)
        return out.reshape(1, *out.shape)


def _operands(n):
    """The distinct non-constant operands of ``n`` in order (the inputs of its node graph)."""
    out, seen = [], set()
    for t in n.inputs:
        if not t.is_const and id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
