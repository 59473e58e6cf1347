"""Serving the character LM on a device, checked three ways (the RTL test and ``make sim
MODEL=llm`` use it; tests/test_llm_serving.py runs it on the golden backend).

:func:`serve` runs the serving engine (serving/engine.py) over a
:class:`~serving.chip_executor.ChipExecutor` for a set of prompts, streaming each request's
tokens to ``on_token`` as they arrive, and records every step's logits. :func:`check` then
compares

1. the tokens of every request with the **NumPy reference** of the same integer model, the
   request run alone (``serving.executor.ReferenceExecutor``, bit-exact with the whole-window
   graph), and
2. every step's logits with the same engine run on the **golden chip model** (driver, firmware
   on the ISS, the golden engines; the same scheduler decisions, so the same steps).
"""
import asyncio
from dataclasses import dataclass, field

import numpy as np

from serving.engine import Engine
from serving.executor import ReferenceExecutor

__all__ = ["PROMPTS", "ServeConfig", "Served", "Recording", "serve", "reference_tokens", "check",
           "golden_serve", "shape_stats", "report"]

#: four prompts of different lengths (docs-like text: the model was trained on the docs)
PROMPTS = ("The compiler", "Every wait has a timeout that says", "A command list",
           "The driver talks to the chip only through its bus ports and")


@dataclass(frozen=True)
class ServeConfig:
    """The engine and executor settings every backend of one check shares."""
    max_tokens: int = 32
    num_blocks: int = 24
    max_batch: int = 8
    max_step_tokens: int = 32
    max_chunk: int = 32


@dataclass
class Served:
    """One serving run: per request its tokens; per step the executor's work and logits."""
    tokens: list
    steps: list = field(default_factory=list)     #: (SeqWork list, logits list) per executor step
    engine: object = None


class Recording:
    """Wraps an executor: records each step's work and logits in ``steps``."""

    def __init__(self, inner, steps):
        self._inner, self._steps = inner, steps

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def step(self, work):
        out = await self._inner.step(work)
        self._steps.append((list(work), [None if x is None else x.copy() for x in out]))
        return out

    async def poison(self, blocks):
        await self._inner.poison(blocks)


async def serve(executor, pack, prompts, cfg, *, on_token=None, on_step=None):
    """Serve ``prompts`` concurrently (all submitted before the first step) on ``executor``;
    ``on_token(request index, token id)`` as each token streams, ``on_step(engine, stats)``
    after each step."""
    steps = []
    engine = Engine(Recording(executor, steps), vocab=pack.vocab, check_invariants=True,
                    max_batch=cfg.max_batch, max_step_tokens=cfg.max_step_tokens,
                    on_step=on_step)
    streams = [engine.submit(p, cfg.max_tokens) for p in prompts]
    got = [[] for _ in prompts]

    def drain():
        # what the step delivered, without awaiting: the RTL runs under cocotb's scheduler
        for i, stream in enumerate(streams):
            for tok in stream.poll():
                got[i].append(int(tok))
                if on_token is not None:
                    on_token(i, int(tok))

    while engine.has_work():
        await engine.step()
        drain()
    drain()
    assert all(s.done for s in streams), "a stream did not end"
    return Served(got, steps, engine)


def reference_tokens(pack, prompts, cfg):
    """Each request alone on the NumPy reference executor."""
    async def one(p):
        ex = ReferenceExecutor(pack, cfg.num_blocks, max_batch=cfg.max_batch,
                               max_step_tokens=cfg.max_step_tokens)
        return (await serve(ex, pack, [p], cfg)).tokens[0]
    return [asyncio.run(one(p)) for p in prompts]


def golden_serve(pack, prompts, cfg, image, *, host_base, host_bytes, seed=0):
    """The same serving run on the golden chip model."""
    from driver.device import Device
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel
    from serving.chip_executor import ChipExecutor
    from spec.capabilities import Capabilities

    async def go():
        chip = ChipModel(Capabilities.default(8), host_bytes=host_base + host_bytes, seed=seed,
                         engine_delay=(1, 40))
        dev = await Device.open(GoldenBackend(chip), host_base=host_base,
                                host_bytes=host_bytes, firmware=image)
        ex = await ChipExecutor.open(dev, pack, num_blocks=cfg.num_blocks,
                                     max_batch=cfg.max_batch,
                                     max_step_tokens=cfg.max_step_tokens,
                                     max_chunk=cfg.max_chunk)
        return await serve(ex, pack, prompts, cfg)
    return asyncio.run(go())


def check(served, reference=None, golden=None):
    """Problems found (empty: all equal): per request the tokens against ``reference`` (lists of
    token ids), per step the logits against ``golden`` (a :class:`Served`)."""
    problems = []
    if reference is not None:
        for i, (got, want) in enumerate(zip(served.tokens, reference)):
            if got != want:
                k = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b),
                         min(len(got), len(want)))
                problems.append(f"request {i}: token {k} is {got[k:k + 1]}, the NumPy reference "
                                f"{want[k:k + 1]} ({len(got)} vs {len(want)} tokens)")
    if golden is not None:
        if len(served.steps) != len(golden.steps):
            problems.append(f"{len(served.steps)} steps, the golden run {len(golden.steps)}")
        for s, ((work, out), (gwork, gout)) in enumerate(zip(served.steps, golden.steps)):
            ids, gids = [w.seq_id for w in work], [w.seq_id for w in gwork]
            if ids != gids:
                problems.append(f"step {s}: sequences {ids}, the golden run {gids}")
                break
            for seq, a, b in zip(ids, out, gout):
                if (a is None) != (b is None) or (a is not None and not np.array_equal(a, b)):
                    problems.append(f"step {s}, sequence {seq}: logits differ from the golden "
                                    f"chip model's")
    return problems


def shape_stats(cm):
    """Static figures of a compiled step program: bytes its DMA loads read from constant buffers,
    and the MACs of its linear layers per token row (identity GEMMs excluded)."""
    from spec.descriptors import Opcode
    consts = {n for n, b in cm.program.buffers.items() if b.role == "const"}
    const_bytes = sum(c.fields["rows"] * c.fields["planes"] * c.fields["row_bytes"]
                      for c in cm.program.commands if c.opcode == Opcode.DMA_LOAD
                      and any(r.buffer in consts for r in c.relocs))
    per_row = sum(g.a.cols * g.w.cols for g in (tg.gemm for tg in cm.tiled.gemms)
                  if g.kind == "gemm" and not getattr(g.w, "identity", False))
    return dict(const_load_bytes=const_bytes, macs_per_row=per_row)


def report(ex, served, prompts, cfg, problems, streamed, *, wall, seed):
    """The ``report.json`` of a serving run on ``ex`` (a ChipExecutor with a PerfProbe):
    tools/sim_llm.py formats it."""
    pack = ex.pack
    return dict(prompts=list(prompts), config=cfg.__dict__, wall=wall, seed=seed,
                tokens=served.tokens, text=[pack.vocab.decode(t) for t in served.tokens],
                streamed_in_order=streamed == served.tokens, problems=problems,
                launches=[dict(x.__dict__, new_tokens=x.new_tokens) for x in ex.launches],
                steps=[s.__dict__ for s in served.engine.stats],
                shapes=[dict(key=list(k), **shape_stats(ex.compiled(*k)))
                        for k in sorted({(x.items, x.tokens, x.pages) for x in ex.launches})],
                layout=dict(layers=ex.layout.layers, d_model=ex.layout.d_model,
                            page_bytes=ex.layout.page_bytes))
