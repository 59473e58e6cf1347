"""The KV block manager: which physical KV-cache block holds which 16 positions of which sequence
(docs/serving.md "Block manager").

The cache is ``total`` physical **blocks** of :data:`PAGE_TOKENS` token positions (in every layer,
K and V; the executor owns the bytes, this module only the bookkeeping). A sequence's **block
table** lists the physical block of each of its logical blocks: logical block ``j`` holds its
positions ``16 j .. 16 j + 15``. Blocks are allocated on the 16-token boundary: a table covering
``n`` positions has exactly ``ceil(n / 16)`` entries, and a new block is taken when a position
crosses into the next logical block.

**Reference counts and prefix sharing** (vLLM's automatic prefix caching). When a block is *full*
(its 16 positions computed), it is registered under the chained hash of the token prefix it
closes: ``h_j = sha256(h_{j-1} || tokens[16 j : 16 j + 16])``. The K and V rows of a position
depend only on the tokens up to it (causal model), so any sequence whose tokens start with the
same ``16 (j + 1)`` tokens may map its logical block ``j`` to that physical block instead of
computing it: :meth:`BlockManager.lookup` finds the cached prefix of a new sequence and
:meth:`BlockManager.allocate` shares those blocks (reference count + 1). Only full blocks are ever
shared, and a shared block is never written again (the last, partial block of a sequence is its
own), so sharing needs no copy-on-write. Like vLLM, a prefix hit never covers a prompt's last
token: its logits are needed, so it is always computed.

**Free blocks** are the blocks of reference count 0, kept in an LRU queue: a freed sequence's
blocks go to the back (its last block first, so a sequence's tail is evicted before its head);
allocation takes the front. A freed block that holds a registered full prefix stays findable by
its hash until it is taken for other content (then it is evicted from the hash table); a later
sequence with that prefix revives it without recomputation. ``free + used == total`` always.

**Poison before reuse.** A block that held any sequence's rows and is taken for *new* content
(not revived by a prefix hit) is listed in :meth:`BlockManager.pending_poison`; the engine has
the executor fill it with poison bytes (``Executor.poison``) and reports it with
:meth:`BlockManager.mark_poisoned` before the step that writes it runs. A bug that reads a
position the sequence never wrote then reads poison, not another request's keys.

:meth:`BlockManager.check` verifies every invariant (docs/serving.md "Invariants"); misuse
raises :class:`BlockError` (:class:`DoubleFreeError` for a double free) naming the block and the
sequence.
"""
import hashlib
from collections import OrderedDict

import numpy as np

from compiler import kv_cache

__all__ = ["PAGE_TOKENS", "BlockError", "DoubleFreeError", "InvariantError", "BlockManager",
           "blocks_for", "prefix_hashes"]

#: token positions per KV block (page): the compiled step programs' page size
PAGE_TOKENS = kv_cache.PAGE_TOKENS


class BlockError(RuntimeError):
    """The block manager was asked for something impossible (an unknown sequence, a table that
    would shrink, a shared block that is not cached)."""


class DoubleFreeError(BlockError):
    """A sequence's blocks freed twice, or a block's reference count going below zero."""


class InvariantError(AssertionError):
    """A serving invariant does not hold (docs/serving.md "Invariants"); the message names the
    block, sequence or request and what was expected."""


def blocks_for(num_tokens, page_tokens=PAGE_TOKENS):
    """Blocks a table covering positions ``0 .. num_tokens - 1`` has: ``ceil(n / page)``."""
    return -(-int(num_tokens) // page_tokens)


def prefix_hashes(tokens, page_tokens=PAGE_TOKENS, limit=None):
    """The chained hashes of the full blocks of ``tokens`` (at most ``limit`` blocks): entry ``j``
    identifies ``tokens[: page * (j + 1)]``."""
    toks = np.asarray(tokens, np.int64)
    n = len(toks) // page_tokens if limit is None else min(limit, len(toks) // page_tokens)
    out, h = [], b""
    for j in range(n):
        h = hashlib.sha256(h + toks[j * page_tokens:(j + 1) * page_tokens].tobytes()).digest()
        out.append(h)
    return out


class BlockManager:
    """Block tables, reference counts, the free LRU queue, the prefix cache and the poison list of
    a cache of ``num_blocks`` physical blocks (module docstring). ``prefix_caching=False``: full
    blocks are never registered or shared (every sequence computes all its positions)."""

    def __init__(self, num_blocks, page_tokens=PAGE_TOKENS, *, prefix_caching=True):
        if int(num_blocks) < 1:
            raise ValueError(f"num_blocks = {num_blocks}: need at least one block")
        self.total = int(num_blocks)
        self.page_tokens = int(page_tokens)
        self.prefix_caching = bool(prefix_caching)
        self._ref = [0] * self.total
        self._free = OrderedDict((b, None) for b in range(self.total))   # LRU: take the front
        self._tables = {}           # seq -> [physical block of each logical block]
        self._slots = {}            # seq -> positions the table covers
        self._registered = {}       # seq -> leading blocks of the table that are full and hashed
        self._hash_of = {}          # block -> chained prefix hash (registered full blocks)
        self._prefix_of = {}        # block -> the token prefix its hash stands for (for check())
        self._cached = {}           # hash -> block
        self._dirty = set()         # blocks that may hold some sequence's rows
        self._pending = set()       # taken for new content, stale bytes, not poisoned yet
        self._freed = OrderedDict()  # recently freed seq -> its blocks (for error messages)
        self.counters = dict(allocated=0, prefix_hits=0, evicted=0, poisoned=0, freed_seqs=0)

    # ------------------------------------------------------------------------------ queries
    @property
    def num_free(self):
        return len(self._free)

    @property
    def num_used(self):
        return self.total - len(self._free)

    def refcount(self, block):
        return self._ref[block]

    def has(self, seq_id):
        return seq_id in self._tables

    def table(self, seq_id):
        """The block table of a live sequence (a tuple: logical block -> physical block)."""
        if seq_id not in self._tables:
            raise BlockError(f"sequence {seq_id} has no block table"
                             + self._freed_note(seq_id))
        return tuple(self._tables[seq_id])

    def covered(self, seq_id):
        """Positions ``0 .. covered - 1`` of the sequence have a block."""
        return self._slots.get(seq_id, 0)

    def seqs(self):
        return list(self._tables)

    def is_cached(self, block):
        return block in self._hash_of

    def _freed_note(self, seq_id):
        if seq_id in self._freed:
            return f" (it was freed already: blocks {list(self._freed[seq_id])})"
        return ""

    # ------------------------------------------------------------------------------ prefix cache
    def lookup(self, tokens):
        """The cached full blocks a new sequence of ``tokens`` can share: the longest run of
        leading full blocks of ``tokens[:-1]`` (the last token is always computed: its logits are
        needed) whose prefix hash is registered. Returns a list of physical blocks (may be
        empty); :meth:`allocate` with ``shared=`` takes them."""
        if not self.prefix_caching or len(tokens) < 2:
            return []
        out = []
        for j, h in enumerate(prefix_hashes(tokens[:-1], self.page_tokens)):
            b = self._cached.get(h)
            if b is None:
                break
            out.append(b)
        return out

    # ------------------------------------------------------------------------------ allocation
    def blocks_needed(self, seq_id, num_tokens, shared=()):
        """New blocks :meth:`allocate` would take to cover ``num_tokens`` positions."""
        have = len(self._tables.get(seq_id, ())) or len(shared)
        return max(0, blocks_for(num_tokens, self.page_tokens) - have)

    def can_allocate(self, seq_id, num_tokens, shared=()):
        revived = sum(1 for b in shared if self._ref[b] == 0)
        return self.blocks_needed(seq_id, num_tokens, shared) <= self.num_free - revived

    def allocate(self, seq_id, num_tokens, shared=()):
        """Grow ``seq_id``'s table to cover positions ``0 .. num_tokens - 1``; a new sequence first
        maps its leading logical blocks to ``shared`` (from :meth:`lookup`: reference count + 1,
        revived from the free queue when it was 0). All or nothing: returns False and changes
        nothing when the free blocks do not suffice."""
        num_tokens = int(num_tokens)
        new_seq = seq_id not in self._tables
        if shared and not new_seq:
            raise BlockError(f"sequence {seq_id}: shared blocks are only taken when its table is "
                             f"created (it has {self._tables[seq_id]})")
        if new_seq and seq_id in self._freed:
            del self._freed[seq_id]           # re-admitted (after preemption)
        for j, b in enumerate(shared):
            if b not in self._hash_of:
                raise BlockError(f"sequence {seq_id}: block {b} (logical {j}) is not a cached "
                                 f"full block and cannot be shared")
        if num_tokens < self._slots.get(seq_id, 0) or num_tokens < len(shared) * self.page_tokens:
            raise BlockError(f"sequence {seq_id}: allocate({num_tokens}) would shrink its table "
                             f"(covers {max(self._slots.get(seq_id, 0), len(shared) * 16)})")
        if not self.can_allocate(seq_id, num_tokens, shared):
            return False
        if new_seq:
            self._tables[seq_id], self._slots[seq_id] = [], 0
            self._registered[seq_id] = len(shared)
            for b in shared:
                if self._ref[b] == 0:
                    del self._free[b]
                self._ref[b] += 1
                self._tables[seq_id].append(b)
            self.counters["prefix_hits"] += len(shared)
            self._slots[seq_id] = len(shared) * self.page_tokens
        table = self._tables[seq_id]
        for _ in range(blocks_for(num_tokens, self.page_tokens) - len(table)):
            b, _ = self._free.popitem(last=False)
            h = self._hash_of.pop(b, None)
            if h is not None:                 # evict a cached prefix for new content
                del self._cached[h]
                del self._prefix_of[b]
                self.counters["evicted"] += 1
            if b in self._dirty:
                self._pending.add(b)
            self._dirty.add(b)
            self._ref[b] = 1
            table.append(b)
            self.counters["allocated"] += 1
        self._slots[seq_id] = max(self._slots[seq_id], num_tokens)
        return True

    def commit(self, seq_id, tokens, num_computed):
        """Positions ``0 .. num_computed - 1`` of ``seq_id`` (whose tokens start with ``tokens``)
        are in the cache: register its full blocks under their prefix hashes so later sequences
        can share them. A block whose prefix another block already holds stays unregistered (two
        sequences computed the same prefix at once; the first one's block is the cached one)."""
        table = self._tables.get(seq_id)
        if table is None:
            raise BlockError(f"commit: sequence {seq_id} has no block table"
                             + self._freed_note(seq_id))
        if num_computed > self._slots[seq_id] or num_computed > len(tokens):
            raise BlockError(f"commit: sequence {seq_id} computed {num_computed} positions but "
                             f"covers {self._slots[seq_id]} and has {len(tokens)} tokens")
        if not self.prefix_caching:
            return
        full = num_computed // self.page_tokens
        done = self._registered[seq_id]
        if full <= done:
            return
        hashes = prefix_hashes(tokens, self.page_tokens, full)
        for j in range(done, full):
            b, h = table[j], hashes[j]
            if h not in self._cached and b not in self._hash_of:
                self._cached[h] = b
                self._hash_of[b] = h
                self._prefix_of[b] = tuple(int(t) for t in tokens[:(j + 1) * self.page_tokens])
        self._registered[seq_id] = full

    def free(self, seq_id):
        """Release a finished, cancelled or preempted sequence's blocks (reference count - 1; at 0
        the block joins the back of the free queue, the sequence's last block first). Freeing a
        sequence that has no table raises :class:`DoubleFreeError` naming it (and its blocks when
        it was freed before)."""
        table = self._tables.get(seq_id)
        if table is None:
            raise DoubleFreeError(f"double free: sequence {seq_id} has no blocks to free"
                                  + self._freed_note(seq_id))
        for b in reversed(table):
            if self._ref[b] <= 0:
                raise DoubleFreeError(f"double free: block {b} of sequence {seq_id} already has "
                                      f"reference count {self._ref[b]}")
        for b in reversed(table):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                self._free[b] = None
                self._pending.discard(b)      # still dirty: poisoned when taken again
        del self._tables[seq_id], self._slots[seq_id], self._registered[seq_id]
        self._freed[seq_id] = tuple(table)
        while len(self._freed) > 4096:
            self._freed.popitem(last=False)
        self.counters["freed_seqs"] += 1

    # ------------------------------------------------------------------------------ poison
    def pending_poison(self):
        """Blocks taken for new content that still hold an earlier sequence's bytes: the executor
        must poison them before the next step (sorted)."""
        return sorted(self._pending)

    def mark_poisoned(self, blocks):
        for b in blocks:
            if b not in self._pending:
                raise BlockError(f"block {b} was poisoned but is not pending poison")
            self._pending.discard(b)
        self.counters["poisoned"] += len(blocks)

    # ------------------------------------------------------------------------------ invariants
    def check(self, seq_tokens=None):
        """Raise :class:`InvariantError` unless every bookkeeping invariant holds:

        * conservation: ``free + used == total``; the free queue holds exactly the blocks of
          reference count 0, each once;
        * block tables: every entry a valid block, distinct within a table; a table covering
          ``n`` positions has ``ceil(n / 16)`` entries (allocation on the 16-token boundary);
        * reference counts: a block's count equals the number of table entries naming it;
        * sharing: a block named by several tables is a registered full block at the same
          logical index in each, and (with ``seq_tokens``: {seq: its tokens}) every sharer's
          tokens up to the block's end equal the prefix the block was registered for, and hash
          to its registered hash;
        * the prefix cache maps hashes and blocks one to one;
        * a block pending poison is freshly taken: reference count 1.
        """
        n, page = self.total, self.page_tokens
        counts, where = [0] * n, {}
        for s, table in self._tables.items():
            if len(table) != blocks_for(self._slots[s], page):
                raise InvariantError(f"sequence {s}: table of {len(table)} blocks covers "
                                     f"{self._slots[s]} positions: expected "
                                     f"{blocks_for(self._slots[s], page)} (16-token boundary)")
            if len(set(table)) != len(table):
                raise InvariantError(f"sequence {s}: a physical block appears twice in its table "
                                     f"{table}")
            for j, b in enumerate(table):
                if not 0 <= b < n:
                    raise InvariantError(f"sequence {s}: logical block {j} maps to {b}, outside "
                                         f"0..{n - 1}")
                counts[b] += 1
                where.setdefault(b, []).append((s, j))
        for b in range(n):
            if counts[b] != self._ref[b]:
                raise InvariantError(f"block {b}: reference count {self._ref[b]} but "
                                     f"{counts[b]} table entries name it ({where.get(b, [])})")
        free = list(self._free)
        if len(set(free)) != len(free) or set(free) != {b for b in range(n) if self._ref[b] == 0}:
            raise InvariantError(f"free queue {sorted(free)} is not exactly the blocks of "
                                 f"reference count 0")
        used = sum(1 for b in range(n) if self._ref[b] > 0)
        if len(free) + used != n:
            raise InvariantError(f"conservation: free {len(free)} + used {used} != total {n}")
        if len(self._cached) != len(self._hash_of) or any(
                self._hash_of.get(b) != h for h, b in self._cached.items()):
            raise InvariantError("prefix cache: hash -> block and block -> hash disagree")
        for b, users in where.items():
            if len(users) < 2:
                continue
            if b not in self._hash_of:
                raise InvariantError(f"block {b} is shared by {users} but is not a registered "
                                     f"full block")
            js = {j for _, j in users}
            if len(js) != 1:
                raise InvariantError(f"block {b} is shared at different logical indices {users}")
            if seq_tokens is not None:
                j = js.pop()
                want = self._prefix_of[b]
                for s, _ in users:
                    got = tuple(int(t) for t in np.asarray(seq_tokens[s])[:(j + 1) * page])
                    if got != want:
                        raise InvariantError(f"block {b} (logical {j}) is shared by sequence {s} "
                                             f"whose tokens differ from the block's prefix")
                    if prefix_hashes(got, page)[j] != self._hash_of[b]:
                        raise InvariantError(f"block {b}: sequence {s}'s prefix hash differs "
                                             f"from the registered one")
        for b in self._pending:
            if self._ref[b] != 1:
                raise InvariantError(f"block {b} is pending poison with reference count "
                                     f"{self._ref[b]} (expected 1: freshly taken)")

    def stats(self):
        return dict(total=self.total, free=self.num_free, used=self.num_used,
                    cached=len(self._cached), seqs=len(self._tables), **self.counters)
