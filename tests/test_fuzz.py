"""Malformed-descriptor fuzzing without a simulator: the oracle and the generator
(verif/malformed.py), and the fuzzing scenario (verif/fuzz.py) on the golden chip model.

The golden chip takes 10,000 faults (four slices of 2,500, run in parallel) in `make test`.
Every random test prints its seed and honours ``SEED=``: rerun with
``SEED=<n> .venv/bin/python -m pytest tests/test_fuzz.py``.
"""
import os
import secrets
import time
from collections import Counter

import numpy as np
import pytest

from spec.capabilities import Capabilities
from spec.commands import decode, encode
from spec.descriptors import FIRMWARE_OPCODES, ErrorCode, Opcode
from driver.ops import run_sync
from firmware.build import shared_elf
from golden.chip_model import ChipModel
from golden.device_model import DeviceModel
from hdl_gen.config import KakiConfig
from verif.chip_scenarios import run_workload
from verif.dag_workload import Failure, firmware_status, new_workload, queue_configs
from verif.fuzz import CONFIG_KINDS, canary_rows, fuzz_scenario
from verif.malformed import (DECERR_SLACK, FAULTS, Context, Malformer, dma_extent,
                             expected_status)
from verif.queue_scoreboard import ScoreboardError
from verif.ring_layout import Layout

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))
CAPS8 = Capabilities.from_config(KakiConfig(dim=8))
#: The golden chip runs use small local memories (the firmware on the ISS sets the pace).
CAPS = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=128, acc_bank_rows=128))
HOST_BYTES = 1 << 18
#: Faults on the golden chip, in slices.
FAULTS_GOLDEN, SLICES = 10_000, 4


def seed(offset=0):
    print(f"[fuzz] SEED={SEED} (+{offset}) (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_fuzz.py)")
    return SEED + offset


# ------------------------------------------------------------------------------ the oracle
def _ctx(caps=CAPS8, window=(0x10000, 0x1000), host_bytes=0x80000, shifts=None):
    return Context(caps, window, host_bytes, shifts or {0: (63,) * caps.dim, 1: (64,) + (0,) * (caps.dim - 1)})


def _dma(op=Opcode.DMA_STORE, **kw):
    f = dict(host_addr=0x10000, host_row_stride=16, host_plane_stride=64, row_bytes=8, rows=4,
             planes=1, local_addr=0, local_row_stride=1, local_plane_stride=4)
    return encode(op, **{**f, **kw})


def test_oracle_limits_are_exact():
    """Every limit of the oracle at its last valid value and one past it."""
    c = _ctx()
    n, top = CAPS8.spad_rows, 1 << CAPS8.addr_bits
    cases = [
        # DMA: the last local row, the last host byte of the address space, the window edges
        (_dma(local_addr=n - 4), ErrorCode.OK), (_dma(local_addr=n - 3), ErrorCode.LOCAL_RANGE),
        (_dma(local_addr=0, local_row_stride=(n - 1) // 3), ErrorCode.OK),
        (_dma(local_addr=0, local_row_stride=(n - 1) // 3 + 1), ErrorCode.LOCAL_RANGE),
        (_dma(host_addr=top - 56), ErrorCode.WINDOW),          # ends at the top: in the space
        (_dma(host_addr=top - 55), ErrorCode.HOST_RANGE),      # one byte past it
        (_dma(host_addr=top - 56, host_row_stride=17), ErrorCode.HOST_RANGE),
        (_dma(host_addr=0x10000 + 0x1000 - 56), ErrorCode.OK),
        (_dma(host_addr=0x10000 + 0x1000 - 55), ErrorCode.WINDOW),
        (_dma(host_addr=0xFFFF), ErrorCode.WINDOW),
        (_dma(row_bytes=0, host_addr=top * 4), ErrorCode.OK),           # no host byte touched
        (_dma(row_bytes=8, col_offset=0), ErrorCode.OK), (_dma(row_bytes=8, col_offset=1), ErrorCode.BAD_SHAPE),
        (_dma(rows=0), ErrorCode.BAD_SHAPE), (_dma(planes=0), ErrorCode.BAD_SHAPE),
        (_dma(acc=1, row_bytes=32, local_addr=CAPS8.acc_rows - 4), ErrorCode.OK),
        (_dma(acc=1, row_bytes=33), ErrorCode.BAD_SHAPE),
        # GEMM: A, B and C ends
        (encode(Opcode.GEMM, a_addr=n - 8, b_addr=0, c_addr=0, m=8, k_tiles=1, n_tiles=1), ErrorCode.OK),
        (encode(Opcode.GEMM, a_addr=n - 7, b_addr=0, c_addr=0, m=8, k_tiles=1, n_tiles=1), ErrorCode.LOCAL_RANGE),
        (encode(Opcode.GEMM, b_addr=n - 16, m=1, k_tiles=2, n_tiles=1, a_kt_stride=1), ErrorCode.OK),
        (encode(Opcode.GEMM, b_addr=n - 15, m=1, k_tiles=2, n_tiles=1, a_kt_stride=1), ErrorCode.LOCAL_RANGE),
        (encode(Opcode.GEMM, c_addr=CAPS8.acc_rows - 3, m=1, k_tiles=1, n_tiles=3, c_nt_stride=1), ErrorCode.OK),
        (encode(Opcode.GEMM, c_addr=CAPS8.acc_rows - 2, m=1, k_tiles=1, n_tiles=3, c_nt_stride=1), ErrorCode.LOCAL_RANGE),
        (encode(Opcode.GEMM, m=0, k_tiles=1, n_tiles=1), ErrorCode.BAD_SHAPE),
        # VECTOR: operands, ops that add operands, the shift row's values
        (encode(Opcode.VECTOR, rows=1, shift_addr=0, bias_addr=CAPS8.acc_rows), ErrorCode.OK),
        (encode(Opcode.VECTOR, rows=1, shift_addr=0, bias_addr=CAPS8.acc_rows, **{"ops.bias": 1}), ErrorCode.LOCAL_RANGE),
        (encode(Opcode.VECTOR, rows=2, shift_addr=0, dst_addr=n - 1, **{"ops.maxred": 1}), ErrorCode.OK),
        (encode(Opcode.VECTOR, rows=2, shift_addr=0, dst_addr=n - 1), ErrorCode.LOCAL_RANGE),
        (encode(Opcode.VECTOR, rows=1, shift_addr=1), ErrorCode.BAD_SHIFT),
        (encode(Opcode.VECTOR, rows=0, shift_addr=1), ErrorCode.BAD_SHAPE),
    ]
    for words, code in cases:
        assert expected_status(words, c) == code, (words, code)


def test_oracle_check_order():
    """Faults together: the one checked first decides (module doc of verif/malformed.py)."""
    c = _ctx()
    n = CAPS8.spad_rows
    flags = lambda w: [w[0] | 1 << 9] + w[1:]
    opcode = lambda w: [(w[0] & ~0xFF) | 0x80] + w[1:]
    every = _dma(reserved=1, rows=0, local_addr=n, host_addr=1 << 40)
    assert expected_status(opcode(flags(every)), c) == ErrorCode.BAD_OPCODE
    assert expected_status(flags(every), c) == ErrorCode.RESERVED_BITS
    assert expected_status(every, c) == ErrorCode.RESERVED_BITS
    assert expected_status(_dma(rows=0, local_addr=n, host_addr=1 << 40), c) == ErrorCode.BAD_SHAPE
    assert expected_status(_dma(local_addr=n, host_addr=1 << 40), c) == ErrorCode.LOCAL_RANGE
    assert expected_status(_dma(host_addr=1 << 40), c) == ErrorCode.HOST_RANGE
    assert expected_status(_dma(host_addr=0x90000), c) == ErrorCode.WINDOW
    wide = _ctx(window=(0, 1 << 32))
    assert expected_status(_dma(host_addr=0x90000), wide) == ErrorCode.AXI_DECERR
    vec = dict(rows=1, shift_addr=1)
    assert expected_status(encode(Opcode.VECTOR, src_addr=CAPS8.acc_rows, **vec), c) == ErrorCode.LOCAL_RANGE
    event = encode(Opcode.WAIT_EVENT, event=200, reserved0=1)
    assert expected_status(event, c) == ErrorCode.RESERVED_BITS
    assert expected_status(flags(encode(Opcode.WAIT_EVENT, event=200)), c) == ErrorCode.RESERVED_BITS
    assert expected_status(encode(Opcode.SIGNAL_EVENT, event=200), c) == ErrorCode.BAD_EVENT
    garbage = encode(Opcode.BARRIER)[:1] + [0xFFFF_FFFF] * 7
    assert expected_status(garbage, c) == ErrorCode.OK, "NOP/BARRIER payload bits are ignored"


def _malformer(rng, caps=CAPS8, p_second=0.35):
    decerr, scratch = 0xF0000, 0x12000
    good, bad = caps.acc_rows - 1, caps.acc_rows - 2
    shifts = {good: tuple(int(v) for v in rng.integers(0, 64, caps.dim)),
              bad: tuple(int(v) for v in rng.integers(0, 64, caps.dim))[:-1] + (int(rng.integers(64, 1 << 31)),)}
    window = (0x10000, decerr + DECERR_SLACK + dma_extent(caps) - 0x10000)
    ctx = Context(caps, window, decerr, shifts)
    spad, acc = canary_rows(caps)
    return Malformer(rng, ctx, spad=spad, acc=acc, scratch=(scratch, scratch + dma_extent(caps)),
                     good_shift=good, bad_shift=bad, decerr=decerr, p_second=p_second)


def test_oracle_agrees_with_the_golden_models():
    """10,000 malformed descriptors of every class (a third with two faults) and valid ones at the
    edge of the rules: the oracle's status equals the golden models' (the firmware's checks,
    ``firmware_status``, then ``DeviceModel.submit`` with the window and the shift rows)."""
    rng = np.random.default_rng(seed(1))
    mal = _malformer(rng)
    ctx = mal.ctx
    dev = DeviceModel(CAPS8, host_bytes=ctx.host_bytes)
    for row, values in ctx.shifts.items():
        dev.acc[row] = values
    host = dev.host.copy()
    seen = Counter()
    for i in range(10_000):
        if i % 20 == 0:
            words, code = mal.edge(), ErrorCode.OK
        else:
            words, code, _ = mal.fault(list(FAULTS)[i % len(FAULTS)])
            assert code == expected_status(words, ctx)
        golden = firmware_status(words)
        if golden is None:
            golden = ErrorCode.OK if words[0] & 0xFF in FIRMWARE_OPCODES else dev.submit(words, window=ctx.window)
        assert golden == code, f"descriptor {[hex(w) for w in words]}: golden {ErrorCode(golden).name}, " \
                               f"oracle {code.name} (SEED={SEED})"
        seen[code] += 1
    assert set(seen) == {ErrorCode.OK, *FAULTS.values()}, seen
    assert np.array_equal(dev.host, host), "a command wrote host memory"


def test_each_fault_class_alone_gives_its_code():
    rng = np.random.default_rng(seed(2))
    mal = _malformer(rng, p_second=0.0)
    for cls, code in FAULTS.items():
        got = Counter(mal.fault(cls)[1] for _ in range(300))
        assert got == {code: 300}, (cls, got)


def test_golden_rejects_a_huge_dma_without_listing_its_rows():
    """Found by the fuzzing: DeviceModel listed every local row (planes x rows of them) before
    the range check, so a DMA of 65535 x 65535 rows that must fail with LOCAL_RANGE took minutes
    and gigabytes (the fuzzing run died); the RTL rejects it in its check cycles."""
    dev = DeviceModel(CAPS8)
    words = encode(Opcode.DMA_LOAD, host_addr=0x1000, row_bytes=8, rows=65535, planes=65535,
                   local_addr=1, local_row_stride=1, local_plane_stride=0)
    t = time.monotonic()
    assert dev.submit(words) == ErrorCode.LOCAL_RANGE
    assert time.monotonic() - t < 1.0


# ------------------------------------------------------------------------------ on the golden chip
def bimodal(rng):
    """Engine delay: mostly quick, sometimes slow, so halts race with work in flight."""
    return rng.integers(200, 800) if rng.random() < 0.15 else rng.integers(1, 30)


def _fuzz(s, faults, chip=None, **kw):
    chip = chip or ChipModel(CAPS, host_bytes=HOST_BYTES, firmware=shared_elf(), seed=s,
                             engine_delay=bimodal)
    return run_sync(fuzz_scenario(CAPS, s, host_bytes=HOST_BYTES, faults=faults, **kw), chip)


@pytest.mark.parametrize("part", [pytest.param(k, marks=pytest.mark.slow if k else ())
                                  for k in range(SLICES)])
def test_fuzz_on_the_golden_chip(part):
    """10,000 faults on the golden chip, in slices with their own seeds (pytest-xdist runs them in
    parallel; ~30 s of CPU each; make test runs the first slice, make regress all): every class occurs, each faulty queue halts with the oracle's
    code and recovers, the host memory and the local canary rows stay as the replay says."""
    rep = _fuzz(seed(100 + part), FAULTS_GOLDEN // SLICES)
    assert rep.injected >= FAULTS_GOLDEN // SLICES and rep.double > 0
    assert set(FAULTS) <= set(rep.faults) and set(CONFIG_KINDS) <= set(rep.faults), rep.faults


def test_fuzz_catches_a_chip_that_ignores_the_window(monkeypatch):
    """A device without the DMA window check: the oracle's WINDOW is missed (the golden replay,
    which uses the same broken model, cannot tell; the oracle can). 150 faults: with 60 a seed
    (1051823045 + 4) drew no window fault; 150 caught it for each of 150 seeds tried."""
    submit = DeviceModel.submit
    monkeypatch.setattr(DeviceModel, "submit", lambda self, words, window=None: submit(self, words))
    with pytest.raises(ScoreboardError):
        _fuzz(seed(4), 150)


def test_fuzz_catches_a_stray_write_of_a_rejected_command():
    """A device that rejects a DMA_STORE but writes one byte of it: the whole-memory compare
    against the replay catches it."""
    s = seed(5)
    chip = ChipModel(CAPS, host_bytes=HOST_BYTES, firmware=shared_elf(), seed=s)
    submit = chip.dev.submit

    def leaky(words, window=None):
        code = submit(words, window=window)
        addr = words[1] | (words[2] & 0xFFFF) << 32
        if code != ErrorCode.OK and words[0] & 0xFF == Opcode.DMA_STORE and addr < HOST_BYTES:
            chip.dev.host[addr] ^= 0x5A
        return code
    chip.dev.submit = leaky
    with pytest.raises(ScoreboardError, match="host memory differs"):
        _fuzz(s, 60, chip=chip)


def test_a_halted_queue_is_drained_before_the_run_ends():
    """Found by the fuzzing: the host queue driver (verif/queue_host.py ``drive``) ended a run
    when a failing queue was halted, its consumer index quiet and the engines idle, while a
    command forwarded before the halt had finished but its record was not yet written; that
    record (and, for a store, its bytes) then changed host memory after the scoreboard's check.
    It now also waits for C = Q_FETCH - PREFETCHED. Here a store queued behind another runs for
    3000 cycles after the halt, and the run is polled every cycle."""
    layout = Layout(HOST_BYTES)
    chip = ChipModel(CAPS, host_bytes=HOST_BYTES, firmware=shared_elf(), engine_delay=3000)
    wl = new_workload("late record", CAPS, 0, layout, [0])
    store = dict(host_row_stride=CAPS.dim, row_bytes=CAPS.dim, rows=2, planes=1, local_row_stride=1)
    out = layout.data_base
    wl.add(0, encode(Opcode.DMA_STORE, tag=1, host_addr=out, **store))
    wl.add(0, encode(Opcode.GEMM, tag=2, m=0, k_tiles=1, n_tiles=1))
    wl.add(0, encode(Opcode.DMA_STORE, tag=3, host_addr=out + 64, **store))
    wl.failing[0] = Failure(ErrorCode.BAD_SHAPE, 1)
    wl.configs = queue_configs(layout, [0], np.random.default_rng(0), {0: (out, 128)})
    image = bytes(HOST_BYTES)
    rep = run_sync(run_workload(wl, host_image=image, poll=1), chip)
    assert [r["status"] for _, r in sorted(rep.records[0].items())] == \
        [ErrorCode.OK, ErrorCode.BAD_SHAPE, ErrorCode.OK]
    chip.run(20_000)
    assert chip.host_read(0, HOST_BYTES) == rep.host, "host memory changed after the run ended"


def test_fuzz_catches_a_local_write_of_a_rejected_command():
    """A device that rejects a DMA_LOAD but writes its first local row: the canary rows, no longer
    zero, show it."""
    s = seed(6)
    chip = ChipModel(CAPS, host_bytes=HOST_BYTES, firmware=shared_elf(), seed=s)
    submit = chip.dev.submit

    def leaky(words, window=None):
        code = submit(words, window=window)
        d = decode(words)
        if code != ErrorCode.OK and d["opcode"] == Opcode.DMA_LOAD:
            mem = chip.dev.acc if d["acc"] else chip.dev.spad
            if d["local_addr"] < len(mem):
                mem[d["local_addr"], 0] = 0x5A
        return code
    chip.dev.submit = leaky
    with pytest.raises(ScoreboardError, match="canary rows still zero"):
        _fuzz(s, 60, chip=chip)
