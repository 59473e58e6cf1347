"""The long random stress (verif/stress.py) without a simulator: its workload is legal (every
two commands touching the same host bytes, one of them a store, are ordered by the DAG), it runs
on the golden chip model, and its checks see a lost record, a duplicated record and a stray
write into a local memory. The RTL run is cocotb_tests/test_stress.py.

Every random test prints its seed and honours ``SEED=``: rerun with
``SEED=<n> .venv/bin/python -m pytest tests/test_stress.py``.
"""
import os
import secrets

import pytest

from spec.capabilities import Capabilities
from spec.descriptors import Opcode
from spec.commands import decode
from driver.ops import run_sync
from firmware.build import shared_elf
from golden.chip_model import ChipModel
from hdl_gen.config import KakiConfig
from verif.malformed import dma_span
from verif.queue_host import ScenarioTimeout
from verif.queue_scoreboard import ScoreboardError
from verif.ring_layout import Layout
from verif.stress import StressBuilder, build_stress, stress_scenario

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))
CAPS = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=128, acc_bank_rows=128))
#: About the output arena's smallest size: 4 x 800 descriptors reuse it five times or more.
HOST_BYTES = 0x14800
#: Descriptors per queue: the golden chip runs, and the workload checks (no simulation).
COMMANDS, WORKLOAD_COMMANDS = 300, 800


def seed(offset=0):
    print(f"[stress] SEED={SEED} (+{offset}) (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_stress.py)")
    return SEED + offset


def bimodal(rng):
    """Engine delay: mostly quick, sometimes slow, so unordered commands would really race."""
    return rng.integers(200, 800) if rng.random() < 0.15 else rng.integers(1, 30)


def chip(s):
    return ChipModel(CAPS, host_bytes=HOST_BYTES, firmware=shared_elf(), seed=s, engine_delay=bimodal)


def unordered_conflicts(wl):
    """Pairs of DMA commands touching common host bytes, one a store, that the workload does not
    order: neither a BARRIER/SIGNAL_EVENT of the same queue between them nor a chain of
    SIGNAL_EVENT -> WAIT_EVENT edges (vector clocks over the queues, in generation order)."""
    wait_of = {id(w): s for s, w in wl.edges}
    pos = {id(d): k for s in wl.streams.values() for k, d in enumerate(s)}
    known = {q: {} for q in wl.streams}           # queue -> {queue: last position known complete}
    at_signal, clock = {}, {}
    for d in sorted((d for s in wl.streams.values() for d in s), key=lambda d: d.seq):
        q, k = d.queue, pos[id(d)]
        clock[id(d)] = dict(known[q])
        if d.opcode in (Opcode.BARRIER, Opcode.SIGNAL_EVENT):
            known[q][q] = k
            if d.opcode == Opcode.SIGNAL_EVENT:
                at_signal[id(d)] = {**known[q], q: k - 1}
        elif d.opcode == Opcode.WAIT_EVENT and id(d) in wait_of:
            for r, p in at_signal[id(wait_of[id(d)])].items():
                known[q][r] = max(known[q].get(r, -1), p)
    accesses = []
    for d in sorted((d for s in wl.streams.values() for d in s), key=lambda d: d.seq):
        if d.opcode in (Opcode.DMA_LOAD, Opcode.DMA_STORE):
            f = decode(d.words)
            if f["row_bytes"]:
                accesses.append((d, *dma_span(f)))
    out = []
    for i, (b, blo, bhi) in enumerate(accesses):
        for a, alo, ahi in accesses[:i]:
            if alo < bhi and blo < ahi and Opcode.DMA_STORE in (a.opcode, b.opcode):
                if clock[id(b)].get(a.queue, -1) < pos[id(a)]:
                    out.append((a, b))
    return out


#: Without dependencies between jobs, only the arena's reuse orders commands across queues.
SPARSE = dict(p_dep=0.0, p_extra=0.0)


@pytest.mark.parametrize("knobs", [None, SPARSE], ids=["default", "sparse"])
def test_stress_workload_orders_every_host_conflict(knobs):
    wl = build_stress(CAPS, seed(1), Layout(HOST_BYTES), commands=WORKLOAD_COMMANDS, knobs=knobs)
    assert min(len(s) for s in wl.streams.values()) >= WORKLOAD_COMMANDS
    assert not unordered_conflicts(wl)
    stores = sorted((d.seq, *dma_span(decode(d.words))) for s in wl.streams.values() for d in s
                    if d.opcode == Opcode.DMA_STORE and decode(d.words)["row_bytes"])
    reused = [b for i, b in enumerate(stores) if any(a[1] < b[2] and b[1] < a[2] for a in stores[:i])]
    # over seeds, 47-72 % of the stores land on bytes an earlier store wrote (without reuse: ~0)
    assert len(reused) > len(stores) // 3, "the output arena was hardly reused"


class _Unordered(StressBuilder):
    """Recycles outputs without ordering the reuse: what the check above must catch."""

    def output(self, q, size):
        self.users.clear()          # forget who touched the arena
        return super().output(q, size)


def test_the_conflict_check_finds_an_unordered_reuse(monkeypatch):
    import verif.stress as S
    monkeypatch.setattr(S, "StressBuilder", _Unordered)
    wl = S.build_stress(CAPS, seed(2), Layout(HOST_BYTES), commands=WORKLOAD_COMMANDS, knobs=SPARSE)
    assert unordered_conflicts(wl)


def test_stress_on_the_golden_chip():
    s = seed(3)
    rep = run_sync(stress_scenario(CAPS, s, host_bytes=HOST_BYTES, commands=COMMANDS), chip(s))
    assert rep.descriptors >= 4 * COMMANDS


def test_stress_on_the_golden_chip_sparse():
    """Independent jobs, so the output arena's reuse is all that orders the queues: on the golden
    chip (random engine delays) any missing order shows in the host memory."""
    s = seed(6)
    rep = run_sync(stress_scenario(CAPS, s, host_bytes=HOST_BYTES, commands=COMMANDS, knobs=SPARSE),
                   chip(s))
    assert rep.descriptors >= 4 * COMMANDS


def _sabotaged(s, method, make):
    c = chip(s)
    original = getattr(c, method)
    calls = [0]

    def wrapper(*args):
        calls[0] += 1
        return make(original, calls[0], *args)
    setattr(c, method, wrapper)
    return c


@pytest.mark.parametrize("fault", ["lost", "duplicated"])
def test_stress_catches_a_lost_or_duplicated_record(fault):
    """The 200th completion record is not written (its slot keeps old bytes) or written twice.
    A record written twice also moves the consumer index one too far, so the host may refill a
    ring slot whose descriptor the chip has not fetched yet: depending on the seed the scoreboard
    sees a wrong record, or a WAIT of the lost descriptor's job never ends and the scenario
    times out naming the queues' progress. Either fails the run; a timeout counts only if the
    same seed runs clean without the fault."""
    def write(original, n, r):
        if n != 200:
            return original(r)
        if fault == "duplicated":
            original(r)
            return original(r)
        q = c.queues[r.queue]
        q.consumer = (q.consumer + 1) & 0xFFFF_FFFF
        return None
    s = seed(4)
    c = _sabotaged(s, "_write_record", write)
    caught = (ScoreboardError, ScenarioTimeout) if fault == "duplicated" else ScoreboardError
    with pytest.raises(caught) as err:
        run_sync(stress_scenario(CAPS, s, host_bytes=HOST_BYTES, commands=COMMANDS), c)
    if err.type is ScenarioTimeout:
        assert "not finished after" in str(err.value)
        run_sync(stress_scenario(CAPS, s, host_bytes=HOST_BYTES, commands=COMMANDS), chip(s))


def test_stress_catches_a_stray_local_write():
    """The 10th GEMM also adds 1 to a scratchpad byte outside every job's rows: only the final
    dump of the local memories can see it."""
    s = seed(5)
    c = chip(s)
    gemm = c.dev._gemm
    count = [0]

    def stray(d):
        gemm(d)
        count[0] += 1
        if count[0] == 10:
            c.dev.spad[CAPS.spad_rows - 1, 0] += 1
    c.dev._gemm = stray
    with pytest.raises(ScoreboardError, match="host memory differs"):
        run_sync(stress_scenario(CAPS, s, host_bytes=HOST_BYTES, commands=COMMANDS), c)
