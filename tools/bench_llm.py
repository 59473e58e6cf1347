"""`make bench`'s LLM serving figures (issue 15; docs/bench.md "LLM serving"), on the character LM
(docs/llm.md) through the chip executor (serving/chip_executor.py).

On the RTL (:func:`llm_bench`, a ``@cocotb.test()``; every logit row checked against the NumPy
reference executor):

* **decode MBU at batch 1** and **tokens per cycle at batch 8 vs batch 1**: eight sequences with
  :data:`CONTEXT` tokens of context each (their K and V pages computed by the reference executor
  and written into the device's cache: the benchmark's set-up, not measured), then decode steps
  alternating batch 1 (one sequence) and batch 8 (all), :data:`DECODE_ROUNDS` of each; cycles =
  TIMESTAMP around the launch. MBU = (bytes the launch loads from the weight/parameter buffers
  + the K and V bytes its token attends to) / (cycles x 8 bytes per cycle);
* **time to first token** of a :data:`TTFT_PROMPT`-token prompt: its prefill in chunks of the
  serving configuration's ``max_chunk``, the cycles of the launches (the first token is the
  argmax of the last chunk's logits);
* **the RTL sample of the serving trace** (below): its first :data:`SAMPLE_STEPS` executor steps
  replayed on the RTL with the same work, logits equal to the golden run's, cycles measured.

On the golden backend (:func:`golden_trace`, outside the simulator): a seeded arrival trace of
:data:`TRACE_REQUESTS` requests (serving/traces.py) served by the engine over the chip executor on
the golden chip model (driver, firmware on the ISS), every request's tokens equal to the
request served alone on the NumPy reference. Its **throughput** is tokens per cycle with each
launch's cycles from the cost model (``compile_graph(...).report()["bound"]`` of its program
shape: the golden model's engine times are random delays, not the RTL's), scaled by the RTL
sample's measured / predicted ratio, and in tokens per second at the clock
(:func:`tools.sim_llm.clock_hz`).
"""
import asyncio
import json
import os
import statistics
import time

import cocotb
import numpy as np

__all__ = ["GOALS", "CONTEXT", "TTFT_PROMPT", "TRACE_REQUESTS", "SAMPLE_STEPS", "llm_bench",
           "golden_trace", "figures", "format_lines"]

#: (key, text, goal, unit, kind) rows for tools/bench.py's goal table
GOALS = [
    ("llm_mbu_b1", "LLM decode MBU at batch 1 ((weight + KV bytes) / (cycles x 8))", 0.60, "%",
     "min"),
    ("llm_batch8", "LLM decode tokens per cycle, batch 8 vs batch 1", 5.0, "x", "min"),
]
BATCH = 8
CONTEXT = 48             #: context tokens of each decode-benchmark sequence
DECODE_ROUNDS = 2
TTFT_PROMPT = 128
TRACE_REQUESTS = 32
SAMPLE_STEPS = 6
NUM_BLOCKS = 32          #: the RTL executor's cache (fits the 1 MiB host memory with the weights)


def _config():
    from verif import llm_serving as LS
    return LS.ServeConfig(num_blocks=NUM_BLOCKS)


#: the benchmark's prompts are cut from this text (fixed here: the docs the model was trained on
#: change with every commit, and the figures must not)
TEXT = (
    "Kaki is an open spatial AI accelerator together with the whole stack that drives it: the "
    "host driver, the device firmware, the compiler and the serving runtime. The driver writes "
    "descriptors into a ring in host memory and rings the doorbell of a queue. The queue "
    "controller fetches them, the firmware on the control core dispatches them, and the engines "
    "run them: the DMA moves tiles between host memory and the scratchpad, the GEMM engine "
    "multiplies them on the systolic array, the vector unit requantizes the results. Every "
    "command ends with a completion record, and the last one of a program raises an interrupt. "
    "A command list is recorded once and replayed with one doorbell; its argument table patches "
    "buffer addresses and scalar parameters such as the pages of the KV cache. ")


def corpus_ids(pack, n=4096):
    """``n`` token ids of :data:`TEXT`, repeated (the prompts of the benchmark)."""
    ids = pack.vocab.encode(TEXT)
    return np.resize(ids, n)


# ------------------------------------------------------------------------------ golden, outside
def golden_trace(seed, firmware, host_base, host_bytes):
    """Serve the seeded trace on the golden backend; returns its figures and the first
    :data:`SAMPLE_STEPS` steps (work and logits) for the RTL to replay."""
    from compiler import llm_model
    from driver.device import Device
    from golden.backend import GoldenBackend
    from golden.chip_model import ChipModel
    from serving import traces
    from serving.chip_executor import ChipExecutor
    from serving.engine import Engine
    from serving.executor import ReferenceExecutor
    from spec.capabilities import Capabilities
    from verif import llm_serving as LS

    pack, cfg = llm_model.load(), _config()
    rng = np.random.default_rng(seed)
    trace = traces.random_trace(rng, corpus_ids(pack), requests=TRACE_REQUESTS, max_prompt=40,
                                max_tokens=16, steps=24, cancel=0.0)
    steps = []

    async def go():
        chip = ChipModel(Capabilities.default(8), host_bytes=host_base + host_bytes, seed=seed,
                         engine_delay=(1, 40))
        dev = await Device.open(GoldenBackend(chip), host_base=host_base, host_bytes=host_bytes,
                                firmware=firmware)
        ex = await ChipExecutor.open(dev, pack, num_blocks=cfg.num_blocks,
                                     max_batch=cfg.max_batch,
                                     max_step_tokens=cfg.max_step_tokens,
                                     max_chunk=cfg.max_chunk)
        engine = Engine(LS.Recording(ex, steps), check_invariants=True,
                        max_batch=cfg.max_batch, max_step_tokens=cfg.max_step_tokens)
        streams = await traces.run_trace(engine, trace)
        return ex, engine, [s.poll() for s in streams]

    t0 = time.process_time()
    ex, engine, tokens = asyncio.run(go())
    cpu = time.process_time() - t0

    async def alone(t):
        ref = Engine(ReferenceExecutor(pack, cfg.num_blocks, max_step_tokens=cfg.max_step_tokens),
                     max_batch=cfg.max_batch, max_step_tokens=cfg.max_step_tokens)
        return await traces.serve_alone(ref, t.prompt, t.max_tokens, t.eos)
    wrong = [i for i, t in enumerate(trace) if asyncio.run(alone(t)) != tokens[i]]
    predicted = [ex.compiled(x.items, x.tokens, x.pages).report()["bound"] for x in ex.launches]
    generated = sum(len(t) for t in tokens)
    return dict(requests=len(trace), steps=len(engine.stats), launches=len(ex.launches),
                generated=generated, processed=sum(x.new_tokens for x in ex.launches),
                predicted_cycles=int(sum(predicted)), golden_cpu_s=cpu, wrong_requests=wrong,
                occupancy=statistics.mean(s.batch for s in engine.stats) / cfg.max_batch,
                sample=[dict(work=[dict(seq=w.seq_id, tokens=[int(t) for t in w.tokens],
                                        start=w.start, table=[int(b) for b in w.block_table],
                                        want=w.want_logits) for w in work],
                             logits=[None if x is None else x.tolist() for x in out],
                             predicted=p)
                        for (work, out), p in zip(steps[:SAMPLE_STEPS],
                                                  _step_predictions(ex, SAMPLE_STEPS))])


def _step_predictions(ex, steps):
    """Predicted cycles of the first ``steps`` executor steps (the launches each made)."""
    out = [0] * steps
    for x in ex.launches:
        if x.step < steps:
            out[x.step] += ex.compiled(x.items, x.tokens, x.pages).report()["bound"]
    return out


# ------------------------------------------------------------------------------ RTL, inside
@cocotb.test()
async def llm_bench(dut):
    """The RTL half (module docstring): writes ``llm_rtl.json``."""
    from compiler import llm_model
    from driver.device import Device
    from serving.chip_executor import ChipExecutor, PerfProbe
    from serving.executor import ReferenceExecutor, SeqWork
    from spec.firmware_image import FirmwareImage
    from verif import llm_serving as LS
    from verif.chip_tb import ChipTB
    from verif.model_run import HOST_BASE, HOST_BYTES, PERF

    tb = ChipTB(dut)
    await tb.reset()
    dev = await Device.open(tb, host_base=HOST_BASE, host_bytes=HOST_BYTES,
                            firmware=FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"]))
    pack, cfg = llm_model.load(), _config()
    ex = await ChipExecutor.open(dev, pack, num_blocks=cfg.num_blocks, max_batch=cfg.max_batch,
                                 max_step_tokens=cfg.max_step_tokens, max_chunk=cfg.max_chunk,
                                 probe=PerfProbe(tb, PERF))
    ref = ReferenceExecutor(pack, cfg.num_blocks, max_step_tokens=pack.context,
                            yield_items=False)
    ids = corpus_ids(pack)
    out = dict(seed=tb.seed, problems=[])

    async def both(work, what):
        got, want = await ex.step(work), await ref.step(work)
        for w, a, b in zip(work, got, want):
            if w.want_logits and not np.array_equal(a, b):
                out["problems"].append(f"{what}: sequence {w.seq_id}: logits differ from the "
                                       f"NumPy reference")
        return got, ex.launches[-1]

    # time to first token: one prompt, chunked as the serving configuration chunks it
    prompt = ids[:TTFT_PROMPT]
    table = tuple(range(-(-TTFT_PROMPT // ex.page_tokens)))
    n0, chunks = len(ex.launches), []
    for start in range(0, TTFT_PROMPT, cfg.max_chunk):
        chunk = prompt[start:start + cfg.max_chunk]
        _, launch = await both([SeqWork(100, chunk, start, table, True)], "TTFT prefill")
        chunks.append(launch.cycles)
    out["ttft"] = dict(prompt=TTFT_PROMPT, chunk=cfg.max_chunk, cycles=sum(chunks),
                       chunks=chunks)

    # decode: BATCH sequences of CONTEXT tokens (K and V written by the reference executor)
    tables = [tuple(range(b * 4, b * 4 + 4)) for b in range(BATCH)]
    seqs = [list(ids[1000 + 97 * b:1000 + 97 * b + CONTEXT]) for b in range(BATCH)]
    for b, (s, t) in enumerate(zip(seqs, tables)):
        logits, = await ref.step([SeqWork(b, np.array(s), 0, t, True)])
        seqs[b].append(int(np.argmax(logits)))
    await _copy_cache(ex, ref, range(BATCH * 4))
    rows = []
    for _ in range(DECODE_ROUNDS):
        for batch in (1, BATCH):
            work = [SeqWork(b, np.array(seqs[b][-1:]), len(seqs[b]) - 1, tables[b], True)
                    for b in range(batch)]
            got, launch = await both(work, f"decode batch {batch}")
            for b, g in enumerate(got):
                seqs[b].append(int(np.argmax(g)))
            stats = LS.shape_stats(ex.compiled(launch.items, launch.tokens, launch.pages))
            rows.append(dict(batch=batch, cycles=launch.cycles, work=list(launch.work),
                             const_load_bytes=stats["const_load_bytes"], perf=launch.perf))
    out["decode"] = rows
    out["layout"] = dict(layers=ex.layout.layers, d_model=ex.layout.d_model)

    # the serving trace's RTL sample
    with open(os.environ["KAKI_LLM_SAMPLE"]) as f:
        sample = json.load(f)
    seq_base = 1000           # the trace's sequences: blocks of their own tables; fresh cache
    await ex.poison(list(range(cfg.num_blocks)))
    measured = []
    for k, step in enumerate(sample):
        work = [SeqWork(seq_base + w["seq"], np.array(w["tokens"], np.int64), w["start"],
                        tuple(w["table"]), w["want"]) for w in step["work"]]
        first = len(ex.launches)
        got = await ex.step(work)
        for w, a, b in zip(step["work"], got, step["logits"]):
            if (a is None) != (b is None) or (a is not None and a.tolist() != b):
                out["problems"].append(f"trace step {k}: sequence {w['seq']}: RTL logits differ "
                                       f"from the golden run's")
        measured.append(dict(cycles=sum(x.cycles for x in ex.launches[first:]),
                             predicted=step["predicted"]))
    out["sample"] = measured
    with open("llm_rtl.json", "w") as f:
        json.dump(out, f, indent=1)
    assert not out["problems"], "; ".join(out["problems"])


async def _copy_cache(ex, ref, blocks):
    """Write the reference executor's K and V pages of ``blocks`` into the device's cache."""
    for layer in range(ex.layout.layers):
        for kind in (0, 1):
            for b in blocks:
                await ex.pool.write(ref.kv[layer, kind, b].tobytes(),
                                    ex.layout.row(layer, kind, b, 0))


# ------------------------------------------------------------------------------ figures
def figures(rtl, golden, clock):
    """``(goals, why, summary)`` from the RTL json, the golden trace dict and ``(Hz, source)``."""
    from tools.sim_llm import mbu
    b1 = [r for r in rtl["decode"] if r["batch"] == 1]
    b8 = [r for r in rtl["decode"] if r["batch"] == BATCH]
    t1 = statistics.mean(r["cycles"] for r in b1)
    t8 = statistics.mean(r["cycles"] for r in b8)
    goals = dict(llm_mbu_b1=statistics.mean(
        mbu(r["const_load_bytes"], r["work"], r["cycles"], rtl["layout"])[0] for r in b1),
        llm_batch8=BATCH * t1 / t8)
    busiest = max(v for k, v in b1[0]["perf"].items() if k.endswith("_BUSY"))
    why = dict(llm_mbu_b1=f"batch-1 decode {t1:,.0f} cycles for {b1[0]['const_load_bytes']:,} "
                          f"weight bytes; busiest engine {busiest:,} cycles",
               llm_batch8=f"batch 1 {t1:,.0f} cycles, batch {BATCH} {t8:,.0f} cycles per step")
    hz, source = clock
    sample = rtl["sample"]
    calib = sum(s["cycles"] for s in sample) / max(sum(s["predicted"] for s in sample), 1)
    cycles = golden["predicted_cycles"] * calib
    summary = dict(
        decode_cycles_b1=t1, decode_cycles_b8=t8, clock_hz=hz, clock_source=source,
        ttft_cycles=rtl["ttft"]["cycles"], ttft_us=rtl["ttft"]["cycles"] / hz * 1e6,
        ttft_chunks=rtl["ttft"]["chunks"],
        trace=dict(golden, sample=None, calibration=calib, cycles=cycles,
                   tokens_per_mcycle=1e6 * golden["processed"] / cycles,
                   generated_per_s=golden["generated"] / (cycles / hz)))
    return goals, why, summary


def format_lines(s, t_prompt=TTFT_PROMPT):
    """The LLM section of the bench report (``s``: :func:`figures`' summary)."""
    tr = s["trace"]
    return [
        f"  LLM serving (character LM, docs/llm.md; clock {s['clock_hz'] / 1e6:.0f} MHz, "
        f"{s['clock_source']}):",
        f"    decode step: batch 1 {s['decode_cycles_b1']:,.0f} cycles, batch {BATCH} "
        f"{s['decode_cycles_b8']:,.0f} cycles",
        f"    time to first token, {t_prompt}-token prompt: {s['ttft_cycles']:,} cycles = "
        f"{s['ttft_us']:,.0f} us (chunks: {', '.join(f'{c:,}' for c in s['ttft_chunks'])})",
        f"    trace of {tr['requests']} requests on the golden backend: {tr['steps']} steps, "
        f"{tr['generated']} tokens generated, {tr['processed']} processed, batch occupancy "
        f"{tr['occupancy']:.0%}; tokens equal to each request alone: "
        + ("all" if not tr["wrong_requests"] else f"NOT requests {tr['wrong_requests']}"),
        f"    throughput (cost model x RTL sample ratio {tr['calibration']:.2f}): "
        f"{tr['tokens_per_mcycle']:.1f} tokens processed per million cycles, "
        f"{tr['generated_per_s']:,.0f} generated tokens/s",
    ]
