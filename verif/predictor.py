"""Command-by-command prediction with the golden device model, as the run proceeds.

:class:`CommandPredictor` subscribes to the boundary transactions (verif/boundary_monitor.py):
host writes keep a mirror of host memory in a :class:`golden.device_model.DeviceModel`; doorbelled
descriptors are queued per hardware queue; each completion record releases its command, which the
predictor then executes on the model the way the firmware would (docs/queues.md): queue order per
queue, a WAIT_EVENT holds its queue until the model's counter reached the value (so a command runs
only after the SIGNAL that the chip's order put before it), queue-level checks (unknown opcode,
reserved flag bits, event payload, event index) in the firmware's order, engine commands through
``DeviceModel.submit`` with the queue's DMA window; after a ``DEBUG_HANG`` write the next GEMM
(VECTOR) command predicted is expected to fail with WATCHDOG. Each record is compared field by field with
the prediction (opcode, tag, status); a completed DMA_STORE yields a :class:`StoreCheck` — the
bytes the chip must have written — which the caller compares against host memory
(:meth:`CommandPredictor.compare_store`). The first difference raises :class:`PredictionError`
naming the queue, the index, the command and expected against actual.

Assumption (kept by the sequences and compiled programs): no host byte is written by two commands
of one run, so a store's bytes can be checked as soon as its record arrives. The rows of one store
may overlap (host stride < row bytes): the model writes them in (plane, row) order, so the expected
bytes are read back from the model after the whole store, the later row's bytes winning.
"""
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from spec import registers as R
from spec.commands import decode
from spec.chip import EVENTS
from spec.descriptors import COMMANDS, FIRMWARE_OPCODES, Engine, ErrorCode, Opcode
from driver.program import reached
from golden.device_model import DeviceModel

from . import boundary_monitor as BM

__all__ = ["CommandPredictor", "PredictionError", "StoreCheck", "store_rows", "command_name"]

M32 = 0xFFFF_FFFF
_QUEUE_OPS = FIRMWARE_OPCODES      # served by the firmware itself, never reach an engine


class PredictionError(AssertionError):
    """The chip's result for one command differs from the golden prediction."""

    def __init__(self, queue, index, command, what, expected, actual):
        super().__init__(f"queue {queue} index {index} ({command}): {what} expected {expected}, "
                         f"got {actual}")
        self.queue, self.index, self.command = queue, index, command
        self.what, self.expected, self.actual = what, expected, actual


@dataclass(frozen=True)
class StoreCheck:
    """A completed DMA_STORE: the host bytes [lo, hi) to read back; ``segments`` (address,
    expected bytes) are the bytes the command wrote."""
    queue: int
    index: int
    command: str
    lo: int
    hi: int
    segments: tuple


def store_rows(d):
    """(host address, bytes) of each row a decoded DMA_STORE descriptor ``d`` writes."""
    return [(d["host_addr"] + p * d["host_plane_stride"] + r * d["host_row_stride"], d["row_bytes"])
            for p in range(d["planes"]) for r in range(d["rows"])]


def command_name(d):
    """The opcode (or its raw value) and tag of a decoded descriptor: ``DMA_STORE tag 5``."""
    op = d["opcode"]
    return f"{op.name if isinstance(op, Opcode) else f'opcode {op:#x}'} tag {d['tag']}"


def _queue_status(d):
    """The firmware's verdict on a queue-level command (firmware/queues.c head_status)."""
    if d["flags.reserved"]:
        return ErrorCode.RESERVED_BITS
    if d["opcode"] in (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT):
        if d["reserved0"] or d["reserved"]:
            return ErrorCode.RESERVED_BITS
        if d["event"] >= EVENTS:
            return ErrorCode.BAD_EVENT
    return ErrorCode.OK


class CommandPredictor:
    """Subscriber of a BoundaryObserver; see the module doc."""

    def __init__(self, caps, host_bytes, blackhole=None):
        # blackhole: host memory the chip's memory never answers (its DMA commands: BUS_TIMEOUT)
        self.model = DeviceModel(caps, host_bytes=host_bytes, blackhole=blackhole)
        self.descs = defaultdict(dict)       # queue -> index -> words
        self.records = defaultdict(dict)     # queue -> index -> record
        self.next = defaultdict(int)         # queue -> next index to predict
        self.config = defaultdict(dict)      # queue -> Q_* register -> value
        self.events = [0] * EVENTS
        self.pending = []                    # StoreChecks not yet compared
        self.hang = {Engine[f.name]: False for f in R.DEBUG_HANG.fields}   # engine armed by DEBUG_HANG
        self.predicted = 0
        self.stores_checked = 0

    # ---------------------------------------------------------------- transactions
    def write(self, txn):
        kind = type(txn)
        if kind is BM.HostWriteTxn:
            lo, hi = txn.addr, min(txn.addr + len(txn.data), self.model.host_bytes)
            if lo < hi:
                self.model.host[lo:hi] = np.frombuffer(txn.data[:hi - lo], np.uint8)
        elif kind is BM.QueueConfigTxn:
            self.config[txn.queue][txn.name] = txn.value
        elif kind is BM.DescriptorTxn:
            self.descs[txn.queue][txn.index] = txn.words
        elif kind is BM.RecordTxn:
            self.records[txn.queue][txn.record["index"]] = txn.record
            self._advance()
        elif kind is BM.DebugHangTxn:
            for name, armed in R.DEBUG_HANG.decode(txn.value).items():     # fields named after engines
                self.hang[Engine[name]] |= bool(armed)
        elif kind is BM.QueueResetTxn:
            for table in (self.descs, self.records, self.next):
                table.pop(txn.queue, None)

    # ---------------------------------------------------------------- prediction
    def _advance(self):
        progress = True
        while progress:
            progress = False
            for q in list(self.records):
                i = self.next[q]
                rec, words = self.records[q].get(i), self.descs[q].get(i)
                if rec is None or words is None or not self._may_run(words):
                    continue
                self._predict(q, i, decode(list(words)), list(words), rec)
                self.next[q] = (i + 1) & M32
                progress = True

    def _may_run(self, words):
        d = decode(list(words))
        if d["opcode"] != Opcode.WAIT_EVENT or _queue_status(d) != ErrorCode.OK:
            return True
        return reached(self.events[d["event"]], d["value"])

    def _predict(self, q, i, d, words, rec):
        op = d["opcode"]
        engine = COMMANDS[op].engine if op in COMMANDS else None
        if not isinstance(op, Opcode):
            status = ErrorCode.BAD_OPCODE
        elif op in _QUEUE_OPS:
            status = _queue_status(d)
            if status == ErrorCode.OK and op == Opcode.SIGNAL_EVENT:
                self.events[d["event"]] = d["value"]
        elif self.hang.get(engine):      # the armed engine freezes; the firmware's watchdog fires
            self.hang[engine] = False
            status = ErrorCode.WATCHDOG
        else:
            cfg = self.config[q]
            status = self.model.submit(words, window=(cfg.get("Q_WINDOW_BASE", 0),
                                                      cfg.get("Q_WINDOW_SIZE", 0)))
        self.predicted += 1
        for what, exp, act in (("opcode", int(op), rec["opcode"]), ("tag", d["tag"], rec["tag"]),
                               ("status", int(status), rec["status"])):
            if exp != act:
                raise PredictionError(q, i, command_name(d), what, _fmt(what, exp), _fmt(what, act))
        if engine == Engine.DMA_STORE and status == ErrorCode.OK and d["row_bytes"]:
            self.pending.append(self._store_check(q, i, d))

    def _store_check(self, q, i, d):
        segs = [(a, self.model.host[a:a + n].tobytes()) for a, n in store_rows(d)]
        lo = min(a for a, _ in segs)
        hi = max(a + len(b) for a, b in segs)
        return StoreCheck(q, i, command_name(d), lo, hi, tuple(segs))

    # ---------------------------------------------------------------- store data
    def take_checks(self):
        out, self.pending = self.pending, []
        return out

    def compare_store(self, check, actual):
        """``actual``: the host bytes [check.lo, check.hi) read back from the chip's memory."""
        for addr, exp in check.segments:
            got = bytes(actual[addr - check.lo:addr - check.lo + len(exp)])
            if got != exp:
                k = next(j for j in range(len(exp)) if got[j] != exp[j])
                raise PredictionError(check.queue, check.index, check.command,
                                      f"host byte {addr + k:#x}", f"{exp[k]:#04x}", f"{got[k]:#04x}")
        self.stores_checked += 1


def _fmt(what, v):
    if what == "status":
        try:
            return ErrorCode(v).name
        except ValueError:
            return f"code {v}"
    if what == "opcode":
        try:
            return Opcode(v).name
        except ValueError:
            return f"{v:#x}"
    return v


class SyncScoreboard:
    """Predictor plus store comparison for a synchronous device (the golden chip model): a
    BoundaryObserver subscriber that reads each completed store back through ``host_read``."""

    def __init__(self, predictor, host_read):
        self.predictor, self.host_read = predictor, host_read

    def write(self, txn):
        self.predictor.write(txn)
        for check in self.predictor.take_checks():
            self.predictor.compare_store(check, self.host_read(check.lo, check.hi - check.lo))
