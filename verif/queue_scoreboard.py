"""The scoreboard of the command-queue scenarios (verif/chip_scenarios.py): given a workload
(verif/dag_workload.py), what the host queue driver observed and the host memory before and
after, :func:`check` requires, per queue: exactly one record per retired descriptor, in order,
with the descriptor's index/opcode/flags/tag and the expected status; the consumer index in host
memory and in Q_CONSUMER; PERF_Q_RETIRED; timestamps strictly increasing within a queue and,
along every event edge, every record before the SIGNAL older than the WAIT's record;
QUEUE_CPL/QUEUE_ERROR interrupts; the expected halt (Q_ERROR, Q_ERROR_INDEX) of a failing queue;
and the whole host memory: every byte equals the initial image plus the ring writes plus the
results of replaying the retired commands on a fresh :class:`DeviceModel` in generation order (a
legal order: the DAG orders every conflicting pair), except the completion areas' record slots
and consumer words, which the record checks cover.
"""
import numpy as np

from spec import registers as R
from spec.completion import RECORD_BYTES
from spec.descriptors import ENGINE_OPCODES, ErrorCode, Opcode

from golden.device_model import DeviceModel

from .ring_layout import M32, in_host, ts_after


#: Statuses of an engine command that hung (stated by the injection, not replayed): the commands
#: forwarded behind it still run and get records.
_HANGS = (ErrorCode.WATCHDOG, ErrorCode.BUS_TIMEOUT)


class ScoreboardError(AssertionError):
    """The device's results differ from the scenario's expectations."""


def _fail(wl, msg):
    raise ScoreboardError(f"{wl.name} seed={wl.seed}: {msg}")


def reference(wl, executed, host_image):
    """Replay the engine commands in ``executed`` (Descs) in generation order on a fresh
    DeviceModel; returns (its host memory, {Desc: ErrorCode})."""
    dev = DeviceModel(wl.caps, host_bytes=wl.layout.host_bytes)
    dev.host[:] = host_image
    codes = {}
    for d in sorted(executed, key=lambda d: d.seq):
        cfg = wl.configs[d.queue]
        codes[d] = dev.submit(d.words, window=(cfg.window_base, cfg.window_size))
    return dev.host, codes


def check(wl, records, consumer, base, host_before, host_after, regs):
    """The scoreboard (see the module docstring). ``regs``: {register name: value} read at the end
    (Q_CONSUMER*, Q_ERROR*, Q_ERROR_INDEX*, Q_STATUS*, PERF_Q_RETIRED* deltas, IRQ_STATUS)."""
    retired = []
    for q, stream in wl.streams.items():
        cfg = wl.configs[q]
        recs = records[q]
        n = (consumer[q] - base[q]) & M32
        if regs[f"Q_CONSUMER{q}"] != consumer[q]:
            _fail(wl, f"queue {q}: Q_CONSUMER {regs[f'Q_CONSUMER{q}']} but consumer index in memory {consumer[q]}")
        if regs[f"PERF_Q_RETIRED{q}"] != n:
            _fail(wl, f"queue {q}: PERF_Q_RETIRED advanced by {regs[f'PERF_Q_RETIRED{q}']}, {n} records")
        failure = wl.failing.get(q)
        cpl_ok = in_host(wl.layout, cfg.cpl_base, cfg.cpl_bytes())
        if failure is None:
            if n != len(stream):
                _fail(wl, f"queue {q}: {n} of {len(stream)} descriptors retired")
            if regs[f"Q_ERROR{q}"] or R.Q_STATUS0.HALTED.get(regs[f"Q_STATUS{q}"]):
                _fail(wl, f"queue {q} halted with error {regs[f'Q_ERROR{q}']} at "
                          f"{regs[f'Q_ERROR_INDEX{q}']}")
        else:
            if not R.Q_STATUS0.HALTED.get(regs[f"Q_STATUS{q}"]):
                _fail(wl, f"queue {q} did not halt (expected {ErrorCode(failure.code).name})")
            if regs[f"Q_ERROR{q}"] != failure.code:
                got = regs[f"Q_ERROR{q}"]
                _fail(wl, f"queue {q}: Q_ERROR {ErrorCode(got).name if got in ErrorCode._value2member_map_ else got}, "
                          f"expected {ErrorCode(failure.code).name}")
            idx = failure.index
            if isinstance(idx, int):
                want = stream[idx].index
            elif idx[0] == "value":
                want = idx[1]
            else:
                want = base[q] + idx[1]
            if regs[f"Q_ERROR_INDEX{q}"] != want:
                _fail(wl, f"queue {q}: Q_ERROR_INDEX {regs[f'Q_ERROR_INDEX{q}']}, expected {want}")
            if not R.IRQ_STATUS.QUEUE_ERROR.get(regs["IRQ_STATUS"]) >> q & 1:
                _fail(wl, f"queue {q} halted but IRQ_STATUS.QUEUE_ERROR[{q}] is clear")
        if not cpl_ok:
            # The records never reached memory, but the commands ran: replay them all the same.
            retired += [(d, None) for d in stream[:n]]
            continue
        last_ts = None
        fail_pos = None
        for pos in range(n):
            d = stream[pos]
            r = recs.get(d.index)
            if r is None:
                _fail(wl, f"queue {q}: no record for {d}")
            want = dict(index=d.index, opcode=d.opcode, queue=q, flags=d.flags, tag=d.tag, item=0)
            got = {k: r[k] for k in want}
            if got != want:
                _fail(wl, f"queue {q}: record of {d} is {r}, expected fields {want}")
            if last_ts is not None and not ts_after(r["timestamp"], last_ts):
                _fail(wl, f"queue {q}: record timestamps not increasing at {d}: {last_ts} then {r['timestamp']}")
            last_ts = r["timestamp"]
            if fail_pos is not None and d.opcode in (Opcode.BARRIER, Opcode.SIGNAL_EVENT):
                _fail(wl, f"queue {q}: {d} got a record after the failure at position {fail_pos}")
            if r["status"] != ErrorCode.OK and fail_pos is None:
                fail_pos = pos
            retired.append((d, r))
        if failure is None and fail_pos is not None:
            _fail(wl, f"queue {q}: {stream[fail_pos]} failed with status {recs[stream[fail_pos].index]['status']}")
        if failure is not None and isinstance(failure.index, int):
            if fail_pos != failure.index:
                _fail(wl, f"queue {q}: first failing record at position {fail_pos}, expected "
                          f"{failure.index} ({stream[failure.index]})")
            bad = stream[fail_pos]
            if bad.expect not in (None, *_HANGS) and n != fail_pos + 1:
                # The firmware found the fault at dispatch: it popped nothing after it.
                _fail(wl, f"queue {q}: {n - fail_pos - 1} records after {bad}, which the firmware "
                          f"rejected at dispatch")
    # ---- statuses and results: replay what retired
    executed = [d for d, r in retired if d.opcode in ENGINE_OPCODES and d.expect is None
                and (r is None or r["status"] != ErrorCode.WATCHDOG)]
    expected_host, codes = reference(wl, executed, host_before)
    for d, r in retired:
        if r is None:
            continue
        want = d.expect if d.expect is not None else codes.get(d, ErrorCode.OK)
        if r["status"] != want:
            name = lambda c: ErrorCode(c).name if c in ErrorCode._value2member_map_ else c
            _fail(wl, f"{d}: record status {name(r['status'])}, expected {name(want)}")
    # ---- interrupts (cleared when the run started)
    for q in wl.streams:
        if bool(R.IRQ_STATUS.QUEUE_ERROR.get(regs["IRQ_STATUS"]) >> q & 1) != (q in wl.failing):
            _fail(wl, f"queue {q}: IRQ_STATUS.QUEUE_ERROR[{q}] is {q not in wl.failing:d}")
        if not in_host(wl.layout, wl.configs[q].cpl_base, wl.configs[q].cpl_bytes()):
            continue            # the records are not readable: nothing to compare with
        wants_cpl = any(r["flags"] & 1 for d, r in retired if d.queue == q and r is not None)
        if bool(R.IRQ_STATUS.QUEUE_CPL.get(regs["IRQ_STATUS"]) >> q & 1) != bool(wants_cpl):
            _fail(wl, f"queue {q}: IRQ_STATUS.QUEUE_CPL[{q}] is {not wants_cpl:d} but "
                      f"{'a' if wants_cpl else 'no'} descriptor with flags.irq retired")
    # ---- ordering along event edges
    by_desc = {id(d): r for d, r in retired if r is not None}
    position = {id(d): i for stream in wl.streams.values() for i, d in enumerate(stream)}
    for sig, wait in wl.edges:
        rw = by_desc.get(id(wait))
        if rw is None:
            continue
        if by_desc.get(id(sig)) is None:
            _fail(wl, f"{wait} retired but the {sig} it waits for did not")
        # Record timestamps increase along a queue (checked above), so the latest record before
        # the signal is that of the descriptor just before it.
        i = position[id(sig)]
        before = by_desc.get(id(wl.streams[sig.queue][i - 1])) if i else None
        if before is not None and not ts_after(rw["timestamp"], before["timestamp"]):
            _fail(wl, f"event edge {sig} -> {wait}: a record before the signal has timestamp "
                      f"{before['timestamp']} >= the wait's {rw['timestamp']}")
    # ---- host memory
    expected = np.array(expected_host, dtype=np.uint8)
    after = np.frombuffer(bytes(host_after), dtype=np.uint8).copy()
    for q, cfg in wl.configs.items():
        if not in_host(wl.layout, cfg.cpl_base, cfg.cpl_bytes()):
            continue
        for lo, hi in ((cfg.cpl_base, cfg.cpl_base + 4), (cfg.cpl_base + RECORD_BYTES, cfg.cpl_base + cfg.cpl_bytes())):
            expected[lo:hi] = after[lo:hi] = 0
        c = int.from_bytes(bytes(host_after[cfg.cpl_base:cfg.cpl_base + 4]), "little")
        if q in wl.streams and c != consumer[q]:
            _fail(wl, f"queue {q}: consumer index in memory {c}, expected {consumer[q]}")
    diff = np.flatnonzero(expected != after)
    if diff.size:
        a = int(diff[0])
        _fail(wl, f"host memory differs from the reference at {diff.size} bytes, first at {a:#x}: "
                  f"{after[a]:#04x} instead of {expected[a]:#04x}")
    return retired
