"""The chip executor: the :class:`~serving.executor.Executor` of the serving runtime on a Kaki
device (``driver.device.Device`` on the golden backend or on RTL), running the step programs of
``compiler.kv_cache`` as command lists (docs/serving.md "The chip executor").

* **The cache** is one device buffer, the step programs' ``kv_pool`` (``compiler.kv_cache``:
  every layer's K and V pages, plus the sink page padding rows write to), allocated once.
* **A step** runs its decode items (one token each) as one decode program of as many items, and
  each prefill chunk as a program of its own (one item). A program's shape is ``(items, tokens,
  pages)``: ``tokens`` the chunk length rounded up to a power of two (the padding rows repeat
  the last row and write the sink page), ``pages`` the pages the longest item reaches (at least
  the padded chunk's; keys past an item's position are masked). Each shape is compiled and
  recorded once (``Device.record``) and launched with the step's launch parameters: the block
  tables, slots and positions (``compiler.kv_cache.step_params``).
* **Weights** and the other constant buffers are uploaded once, shared by every shape (the same
  names and bytes in every program; a difference raises). Each shape has its own input, output
  and intermediate buffers; when the device memory runs short the least recently launched
  shapes' lists and buffers are freed (and recorded again when next needed).
* **The embedding rows** (``clamp(tok_q[t] + pos_q[p])``) are computed on the host and written
  as the program input.
"""
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from compiler import kv_cache as kc
from compiler.compile import compile_graph
from compiler.passes import COMPUTE_QS, LOAD_Q, STORE_Q
from driver.errors import OutOfMemory
from golden import ops

from .executor import check_work

__all__ = ["ChipExecutor", "StepLaunch", "PerfProbe"]

#: the device queues a compiled step program uses
PROGRAM_QUEUES = sorted({LOAD_Q, STORE_Q, *COMPUTE_QS})


def _pow2(n):
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass
class _Shape:
    """One compiled and recorded program shape and its private buffers."""
    cm: object
    cmd_list: object
    buffers: dict            #: input, output and scratch buffers of this shape


@dataclass(frozen=True)
class StepLaunch:
    """One launch of a step: its program shape, its items (sequence, first position, new
    tokens) and what the executor's ``probe`` measured around it (``{}`` without one; with
    :class:`PerfProbe`: ``t0``, ``cycles`` and the performance counters)."""
    items: int
    tokens: int
    pages: int
    work: tuple              #: (seq_id, start, new tokens) per item
    kind: str                #: "decode" or "prefill"
    perf: dict
    step: int = 0            #: the executor step (0, 1, ...) that made the launch

    @property
    def new_tokens(self):
        return sum(n for _, _, n in self.work)

    @property
    def cycles(self):
        return self.perf.get("cycles", 0)


class PerfProbe:
    """Measures a launch through the chip's CSR port: the TIMESTAMP before and after, and the
    performance counters (cleared before, read after; docs/registers.md)."""

    def __init__(self, backend, counters=()):
        self.backend, self.counters = backend, tuple(counters)

    async def start(self):
        from spec import registers as R
        await self.backend.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1))
        return await self.backend.read(R.TIMESTAMP)

    async def stop(self, t0):
        from spec import registers as R
        t1 = await self.backend.read(R.TIMESTAMP)
        out = dict(t0=t0, cycles=(t1 - t0) & 0xFFFFFFFF)
        for name in self.counters:
            out[name] = await self.backend.read(R.REGISTERS[name])
        return out


class ChipExecutor:
    """Executor on ``device`` for ``pack`` (``compiler.llm_model.CharLMPack``) with a cache of
    ``num_blocks`` blocks. Open with :meth:`open` (allocates the pool and uploads nothing yet).
    ``poison_byte``: the byte :meth:`poison` writes (and the pool starts with)."""

    page_tokens = kc.PAGE_TOKENS

    def __init__(self, device, pack, *, num_blocks, max_batch=8, max_step_tokens=64,
                 max_chunk=64, poison_byte=0x5A, probe=None):
        self.device, self.pack = device, pack
        self.num_blocks, self.max_batch = int(num_blocks), int(max_batch)
        self.max_step_tokens, self.max_chunk = int(max_step_tokens), int(max_chunk)
        self.context = int(pack.context)
        self.vocab_size = len(pack.vocab)
        self.poison_byte = int(poison_byte)
        self.layout = kc.KvLayout(int(pack.config["layers"]), int(pack.config["d_model"]),
                                  self.num_blocks)
        self.probe = probe                    #: a PerfProbe (or None: nothing measured)
        self._shapes = OrderedDict()          #: key -> _Shape, least recently launched first
        self._compiled = {}                   #: key -> CompiledModel (kept when a shape is evicted)
        self._consts = {}                     #: name -> (Buffer, sha256 of its bytes)
        self.pool = None
        self.queues = {}
        self.launches = []                    #: StepLaunch per launch, in order
        self.steps = 0                        #: steps run

    @classmethod
    async def open(cls, device, pack, **kw):
        ex = cls(device, pack, **kw)
        # the queues (and their rings) first: the shapes may take all memory that is left
        ex.queues = {q: await device.queue(q) for q in PROGRAM_QUEUES}
        ex.pool = device.alloc(ex.layout.pool_bytes, 64)
        await ex.pool.write(bytes([ex.poison_byte]) * ex.layout.pool_bytes)
        return ex

    def close(self):
        for key in list(self._shapes):
            self._evict(key)
        for buf, _ in self._consts.values():
            buf.free()
        self._consts.clear()
        if self.pool is not None:
            self.pool.free()
            self.pool = None

    # ------------------------------------------------------------------ the executor interface
    async def poison(self, blocks):
        page = bytes([self.poison_byte]) * self.layout.page_bytes
        for b in blocks:
            if not 0 <= int(b) < self.num_blocks:
                raise ValueError(f"poison of block {b}: outside the cache's blocks "
                                 f"0..{self.num_blocks - 1}")
            for layer in range(self.layout.layers):
                for kind in (0, 1):
                    await self.pool.write(page, self.layout.row(layer, kind, int(b), 0))

    async def step(self, work):
        check_work(work, page_tokens=self.page_tokens, num_blocks=self.num_blocks,
                   max_batch=self.max_batch, max_step_tokens=self.max_step_tokens,
                   context=self.context, vocab_size=self.vocab_size)
        for w in work:
            if len(w.tokens) > self.max_chunk:
                raise ValueError(f"sequence {w.seq_id}: a chunk of {len(w.tokens)} tokens, the "
                                 f"executor compiles chunks of at most {self.max_chunk}")
        out = [None] * len(work)
        decodes = [i for i, w in enumerate(work) if len(w.tokens) == 1]
        groups = ([decodes] if decodes else []) + [[i] for i, w in enumerate(work)
                                                   if len(w.tokens) > 1]
        for group in groups:
            items = [work[i] for i in group]
            for i, logits in zip(group, await self._launch(items)):
                out[i] = logits if work[i].want_logits else None
        self.steps += 1
        return out

    # ------------------------------------------------------------------ launches
    async def _launch(self, items):
        n_max = max(len(w.tokens) for w in items)
        tokens = 1 if n_max == 1 else _pow2(n_max)
        # the pages the longest item reaches (attention work grows with them), and at least the
        # padded chunk's rows (a program's keys include its own new rows)
        pages = max(max(-(-(w.start + len(w.tokens)) // self.page_tokens) for w in items),
                    -(-tokens // self.page_tokens))
        shape = await self._shape(len(items), tokens, pages)
        cm = shape.cm
        rows = [kc.pad_rows(self.embed_rows(w.tokens, w.start), tokens) for w in items]
        feeds = {cm.graph.inputs[0].name: np.stack(rows).astype(np.int8)}
        for name, data in cm.pack_inputs(feeds).items():
            await shape.buffers[name].write(data)
        params = kc.step_params(self.layout, [(w.start, len(w.tokens), w.block_table)
                                              for w in items],
                                items=len(items), tokens=tokens, pages=pages)
        mark = await self.probe.start() if self.probe else None
        await self.device.launch(shape.cmd_list, shape.buffers, params=params,
                                 queues={q: self.queues[q] for q in cm.program.queues})
        perf = await self.probe.stop(mark) if self.probe else {}
        self.launches.append(StepLaunch(len(items), tokens, pages,
                                        tuple((w.seq_id, w.start, len(w.tokens)) for w in items),
                                        "decode" if tokens == 1 else "prefill", perf,
                                        self.steps))
        out, = [t for t in cm.graph.outputs]
        logits = await shape.buffers[out.name].read(np.int8, out.shape)
        return [logits[i, len(w.tokens) - 1].copy() for i, w in enumerate(items)]

    def embed_rows(self, tokens, start):
        """int8 input rows of ``tokens`` at positions ``start ..``."""
        pos = np.arange(start, start + len(tokens))
        return ops.add_sat(self.pack.tok_q[np.asarray(tokens, np.int64)], self.pack.pos_q[pos])

    def compiled(self, items, tokens, pages):
        """The CompiledModel of one step-program shape (compiled once)."""
        key = (items, tokens, pages)
        if key not in self._compiled:
            g = kc.step_graph(self.pack, items=items, tokens=tokens, pages=pages,
                              blocks=self.num_blocks)
            self._compiled[key] = compile_graph(g, self.device.caps)
        return self._compiled[key]

    async def _shape(self, items, tokens, pages):
        key = (items, tokens, pages)
        shape = self._shapes.get(key)
        if shape is not None:
            self._shapes.move_to_end(key)
            return shape
        cm = self.compiled(items, tokens, pages)
        while True:
            try:
                shape = await self._make_shape(cm)
                break
            except OutOfMemory:                       # device memory full: free the oldest
                if not self._shapes:
                    raise
                self._evict(next(iter(self._shapes)))
        self._shapes[key] = shape
        return shape

    async def _make_shape(self, cm):
        buffers, made = {kc.POOL: self.pool}, []
        try:
            for name, spec in cm.program.buffers.items():
                if name == kc.POOL:
                    continue
                if spec.role == "const":
                    buffers[name] = await self._const(name, spec.init)
                else:
                    buffers[name] = self.device.alloc(spec.nbytes, spec.align)
                    made.append(buffers[name])
            cmd_list = await self.device.record(cm.program)
        except BaseException:
            for b in made:
                b.free()
            raise
        return _Shape(cm, cmd_list, buffers)

    async def _const(self, name, data):
        digest = hashlib.sha256(data).hexdigest()
        have = self._consts.get(name)
        if have is not None:
            if have[1] != digest:
                raise ValueError(f"constant buffer {name!r} differs between step programs")
            return have[0]
        buf = self.device.alloc(len(data), 64)
        await buf.write(data)
        self._consts[name] = (buf, digest)
        return buf

    def _evict(self, key):
        shape = self._shapes.pop(key)
        shape.cmd_list.free()
        for name, b in shape.buffers.items():
            if name != kc.POOL and name not in self._consts:
                b.free()
