"""The paged KV cache of a decoder language model, and its step programs (docs/llm.md "Prefill and
decode on the chip").

**The cache** is one program buffer, :data:`POOL` (``inout``: it outlives every launch), of
``layers x 2 (K, V) x blocks`` **pages** of :data:`PAGE_TOKENS` token rows of ``d_model`` int8
each (:class:`KvLayout`). A sequence's **block table** lists the physical block of each of its
16-token logical blocks; block ``p`` holds the sequence's K (and V) rows of those tokens in every
layer, at ``region(layer, kind) + p * page_bytes``.

**A step program** (:func:`step_graph`) runs ``items`` sequences of ``tokens`` new tokens each
(a decode step: one token per sequence; a prefill chunk: one sequence, a chunk of its prompt)
through the model's body. Each attention's K and V projections store their new rows straight
into the cache, one row per DMA at the address of the token's (block, slot); the attention then
reads the item's keys ``0 .. pages * 16 - 1`` page by page, one DMA per page and head group, each
page at its block's address, under a causal mask whose offset is the item's first new position:
keys after a query's own position (the rest of the last page, and pages the block table does not
fill yet) never reach a probability. The addresses and offsets are **launch parameters**
(:func:`step_params`), so one recorded command list per shape serves every step:

* ``kv.page.{b}.{j}``: block of item ``b``'s logical block ``j`` x page bytes (a page DMA adds
  it to its region's address);
* ``kv.slot.{b}.{i}``: where item ``b``'s new token ``i`` goes (its block x page bytes + its
  slot x row bytes);
* ``kv.pos.{b}``: the position of item ``b``'s first new token (the softmax mask offset).

The results are the bits of the whole-window graph (``CharLMPack.logits``): every other op acts
per position, a masked key takes no part in a row's max, sum or P·V, and a query's keys are the
same tokens in the same order.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["PAGE_TOKENS", "POOL", "KvLayout", "PagedKV", "page_param", "slot_param", "pos_param",
           "step_graph", "step_params", "pad_rows"]

#: tokens per KV-cache page (block)
PAGE_TOKENS = 16
#: the program buffer holding every layer's K and V pages
POOL = "kv_pool"


def page_param(b, j):
    return f"kv.page.{b}.{j}"


def slot_param(b, i):
    return f"kv.slot.{b}.{i}"


def pos_param(b):
    return f"kv.pos.{b}"


@dataclass(frozen=True)
class KvLayout:
    """The pool: ``layers`` x (K, V) regions of ``blocks + 1`` pages of ``PAGE_TOKENS`` rows of
    ``d_model`` bytes: the ``blocks`` a block table may name, then the **sink** page padding
    rows write to (:func:`step_params`)."""
    layers: int
    d_model: int
    blocks: int

    @property
    def row_bytes(self):
        return self.d_model

    @property
    def page_bytes(self):
        return PAGE_TOKENS * self.d_model

    @property
    def pool_bytes(self):
        return self.layers * 2 * (self.blocks + 1) * self.page_bytes

    @property
    def sink(self):
        return self.blocks

    def region(self, layer, kind):
        """Byte offset of layer ``layer``'s K (``kind`` 0) or V (1) pages in the pool."""
        return (2 * layer + kind) * (self.blocks + 1) * self.page_bytes

    def row(self, layer, kind, block, slot):
        """Byte offset of one token row in the pool."""
        return self.region(layer, kind) + block * self.page_bytes + slot * self.row_bytes


@dataclass(frozen=True)
class PagedKV:
    """Set as ``tensor.paged`` on a step graph's K or V projection output (``[items, tokens,
    d]``): its rows are stored into the pool, and the attention reads ``pages`` pages per item
    from there."""
    layout: KvLayout
    layer: int
    kind: int               #: 0: K, 1: V
    tokens: int             #: new rows per item
    pages: int              #: pages per item the attention reads

    @property
    def keys(self):
        return self.pages * PAGE_TOKENS

    @property
    def region(self):
        return self.layout.region(self.layer, self.kind)


def step_graph(pack, *, items, tokens, pages, blocks):
    """The step graph of ``pack`` (a :class:`compiler.llm_model.CharLMPack`) for ``items``
    sequences of ``tokens`` new tokens, each attending to ``pages`` pages of a pool of
    ``blocks`` blocks: input ``[items, tokens, d]`` embedded rows, output ``[items, tokens,
    vocab]`` int8 logits."""
    cfg = pack.config
    if not 1 <= tokens <= pages * PAGE_TOKENS <= pack.context:
        raise ValueError(f"tokens {tokens}, pages {pages}: need 1 <= tokens <= pages x "
                         f"{PAGE_TOKENS} <= the context {pack.context}")
    if not 1 <= items:
        raise ValueError(f"items {items}: need at least one")
    g = pack.graph(tokens, batch=items)
    g.name = f"{g.name}_b{items}_t{tokens}_p{pages}"
    layout = KvLayout(int(cfg["layers"]), int(cfg["d_model"]), blocks)
    attention = [n for n in g.nodes if n.op == "attention"]
    if len(attention) != layout.layers:
        raise ValueError(f"{len(attention)} attention nodes, the config says {layout.layers} layers")
    for layer, n in enumerate(attention):
        if not n.attrs["causal"]:
            raise ValueError(f"{n.name}: a decoder's attention must be causal")
        for kind, t in ((0, n.inputs[1]), (1, n.inputs[2])):
            if t.producer.op != "linear" or len(g.consumers(t)) != 1 or t.cols != layout.d_model:
                raise ValueError(f"{n.name}: its {'KV'[kind]} input {t.name!r} must be a linear's "
                                 f"[.., {layout.d_model}] output used by the attention only")
            t.paged = PagedKV(layout, layer, kind, tokens, pages)
        n.attrs = dict(n.attrs, mask_offset=0)
    return g


def step_params(layout, work, *, items, tokens, pages):
    """The launch parameters of a step program for ``work``: per item ``(start, ntokens,
    block_table)`` (the first new position, the new tokens: ``tokens`` or fewer, the physical
    block of each logical block). Pages the table does not reach point at its first block (the
    mask hides them); the rows after an item's ``ntokens`` (padding: the caller repeats the
    last row, :func:`pad_rows`) store their K and V into the sink page."""
    if len(work) != items:
        raise ValueError(f"{len(work)} work items for a program of {items}")
    params = {}
    for b, (start, n, table) in enumerate(work):
        table = [int(x) for x in table]
        end = start + n
        if not 1 <= n <= tokens or start < 0 or end > pages * PAGE_TOKENS:
            raise ValueError(f"item {b}: positions {start}..{end - 1} do not fit a program of "
                             f"{tokens} tokens x {pages} pages")
        if len(table) < -(-end // PAGE_TOKENS):
            raise ValueError(f"item {b}: block table of {len(table)} blocks does not cover "
                             f"position {end - 1}")
        if any(not 0 <= x < layout.blocks for x in table):
            raise ValueError(f"item {b}: block table {table} has a block outside 0..{layout.blocks - 1}")
        params[pos_param(b)] = start
        for j in range(pages):
            params[page_param(b, j)] = table[j if j < len(table) else 0] * layout.page_bytes
        for i in range(tokens):
            p = start + i
            block, slot = (table[p // PAGE_TOKENS], p % PAGE_TOKENS) if i < n else \
                (layout.sink, i % PAGE_TOKENS)
            params[slot_param(b, i)] = block * layout.page_bytes + slot * layout.row_bytes
    return params


def pad_rows(x, tokens):
    """``x`` ``[n, d]`` -> ``[tokens, d]``, the last row repeated (padding rows: their K and V go
    to the sink page, their logits are not read)."""
    x = np.asarray(x)
    return np.concatenate([x, np.repeat(x[-1:], tokens - len(x), 0)]) if len(x) < tokens else x
