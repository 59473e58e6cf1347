"""Functional coverage of the whole chip (cocotb-coverage), sampled from the transactions at the
device boundary (verif/boundary_monitor.py), so one model covers the RTL and the golden
chip model alike: :class:`ChipCoverage` is a subscriber of a ``BoundaryObserver``;
:func:`probe` / :func:`async_probe` put a device behind one when coverage is collected
(``KAKI_FUNCOV=1``, set by ``make coverage``).

Covergroups (names ``kaki.<group>.<point>``; bins are labels, classified against the array size):
descriptor opcode x queue and IRQ flag; DMA rows/planes/row bytes/alignment/stride/target per
direction; GEMM m (partial tiles pad to the array), k and n tiles, accumulate; vector-unit op
combinations, rows and zero point; event ids and dependency patterns (same/cross queue, blocked
waits, fan-out, fan-in, chains over three queues, barriers); queue occupancy at each doorbell and
ring wrap-around per queue; completion status per opcode; error codes; interrupt causes.
Direct submissions (``CMD``/``CMD_SUBMIT``, decoded by the monitor) count in the opcode and payload
bins but not the queue bins; their failures (``ERROR_INFO`` reads) in the error codes. A testbench
that makes its own register accesses (``ChipTB``) is observed with :func:`observe`.

Each process that sampled anything writes its database at exit (``export_on_exit``);
``python -m tools.coverage functional`` merges a regression's databases and lists the holes.
"""
import atexit
import os
from collections import defaultdict
from pathlib import Path

from cocotb_coverage.coverage import CoverCross, CoverPoint, coverage_db, coverage_section

from spec import registers as R
from spec.commands import decode
from spec.chip import EVENTS, QUEUES
from spec.descriptors import (COMMANDS, DMA_FIELDS, ENGINE_OPCODES, GEMM_FIELDS, VEC_FIELDS, Engine,
                              ErrorCode, Opcode)
from driver.program import reached

from . import boundary_monitor as BM

__all__ = ["ChipCoverage", "coverage_probe", "probe", "async_probe", "observe", "enabled", "export",
           "export_on_exit", "COVERAGE_DIR"]

M32 = 0xFFFF_FFFF
COVERAGE_DIR = Path(os.environ.get("KAKI_FUNCOV_DIR", Path(__file__).resolve().parent.parent
                                   / "build" / "coverage" / "functional"))
IRQ_CAUSES = tuple(f.name for f in R.IRQ_STATUS.fields)     # <engine>_DONE, ERROR, QUEUE_*, FW_MSG
EVENT_PATTERNS = ("same queue", "cross queue", "blocked", "already satisfied", "fan-out",
                  "fan-in", "chain over 3 queues", "barrier after engine work")
OCCUPANCY = ("1", "<25%", "25-75%", ">75%", "full", "overflow", "backwards")


# ---------------------------------------------------------------------------- classification
def _rows(n, dim):
    return "1" if n == 1 else "<dim" if n < dim else "=dim" if n == dim else "<256" if n < 256 \
        else ">=256"


def _length(n, dim):
    """An SFU row's length against the array width (one segment or several)."""
    return "1" if n == 1 else "<dim" if n < dim else "=dim" if n == dim else ">dim"


def _count(n):
    return "1" if n == 1 else "2-3" if n <= 3 else ">=4"


def _stride(row_bytes, stride, rows):
    if rows == 1:
        return None
    return "contiguous" if stride == row_bytes else "gapped" if stride > row_bytes else "overlap"


def _row_bytes(n):
    return "<8" if n < 8 else "x8" if n % 8 == 0 else "odd"


def _occupancy(used, entries):
    if used > entries:
        return "overflow"
    if used == entries:
        return "full"
    frac = used / entries
    return "1" if used == 1 else "<25%" if frac < .25 else "25-75%" if frac <= .75 else ">75%"


def _zero_point(zp):
    zp = zp - 256 if zp >= 128 else zp
    return "0" if zp == 0 else "neg" if zp < 0 else "pos"


#: the VecOps stages (VECTOR payload ``ops.*`` bits)
VEC_OPS = tuple(n[4:] for n in VEC_FIELDS if n.startswith("ops.") and n != "ops.reserved")


def _vec_ops(f):
    ops = [n for n in VEC_OPS if f[f"ops.{n}"]]
    return "+".join(ops) or "copy"


VEC_COMBOS = ("copy", "bias", "relu", "add", "maxred", "bias+relu", "bias+add", "relu+add",
              "bias+relu+add")


class Desc:
    """One doorbelled descriptor as the coverage model sees it."""

    def __init__(self, queue, index, words, dim):
        self.queue, self.index = queue, index
        self.f = decode(words)
        op = self.f["opcode"]
        self.opcode = op if isinstance(op, Opcode) else None     # unknown: opcode bin "bad"
        self.irq, self.dim = self.f["flags.irq"], dim

    def op(self):
        return self.opcode.name if self.opcode is not None else "bad"

    def get(self, opcodes, fn):
        return fn(self.f) if self.opcode in opcodes else None


def _with_payload(fields):
    return tuple(op for op, c in COMMANDS.items() if c.fields is fields)


# opcodes by payload (the command table): DMA, GEMM and VECTOR coverpoints sample each of them
_DMA, _GEMM, _VEC = _with_payload(DMA_FIELDS), _with_payload(GEMM_FIELDS), _with_payload(VEC_FIELDS)
_SFU = tuple(op for op, c in COMMANDS.items() if c.engine == Engine.SFU)
_OPS = [o.name for o in Opcode] + ["bad"]


def _dma(point, fn, bins):
    """A DMA coverpoint crossed with the direction: bins are (direction, class) pairs."""
    return CoverPoint(f"kaki.dma.{point}", xf=lambda d: (d.op(), fn(d)) if d.opcode in _DMA else None,
                      bins=[(o.name, b) for o in _DMA for b in bins])


_desc_cov = coverage_section(
    CoverPoint("kaki.desc.opcode", xf=lambda d: d.op(), bins=_OPS),
    CoverPoint("kaki.desc.queue", xf=lambda d: d.queue, bins=list(range(QUEUES))),
    CoverCross("kaki.desc.opcode_x_queue", items=["kaki.desc.opcode", "kaki.desc.queue"]),
    CoverPoint("kaki.desc.irq_flag", xf=lambda d: d.irq, bins=[0, 1]),
    _dma("rows", lambda d: _rows(d.f["rows"], d.dim), ["1", "<dim", "=dim", "<256", ">=256"]),
    _dma("planes", lambda d: _count(d.f["planes"]), ["1", "2-3", ">=4"]),
    _dma("row_bytes", lambda d: _row_bytes(d.f["row_bytes"]), ["<8", "x8", "odd"]),
    _dma("host_alignment", lambda d: "aligned" if d.f["host_addr"] % 8 == 0 else "unaligned",
         ["aligned", "unaligned"]),
    _dma("host_stride", lambda d: _stride(d.f["row_bytes"], d.f["host_row_stride"], d.f["rows"]),
         ["contiguous", "gapped", "overlap"]),
    _dma("target", lambda d: "accumulator" if d.f["acc"] else "scratchpad",
         ["scratchpad", "accumulator"]),
    _dma("col_offset", lambda d: "0" if d.f["col_offset"] == 0 else ">0", ["0", ">0"]),
    CoverPoint("kaki.gemm.m", xf=lambda d: d.get(_GEMM, lambda f: _rows(f["m"], d.dim)),
               bins=["1", "<dim", "=dim", "<256", ">=256"]),
    CoverPoint("kaki.gemm.partial_tile", xf=lambda d: d.get(_GEMM, lambda f:
               "padded" if f["m"] % d.dim else "whole"), bins=["whole", "padded"]),
    CoverPoint("kaki.gemm.k_tiles", xf=lambda d: d.get(_GEMM, lambda f: _count(f["k_tiles"])),
               bins=["1", "2-3", ">=4"]),
    CoverPoint("kaki.gemm.n_tiles", xf=lambda d: d.get(_GEMM, lambda f: _count(f["n_tiles"])),
               bins=["1", "2-3", ">=4"]),
    CoverPoint("kaki.gemm.accumulate", xf=lambda d: d.get(_GEMM, lambda f: f["accumulate"]),
               bins=[0, 1]),
    CoverCross("kaki.gemm.k_tiles_x_accumulate", items=["kaki.gemm.k_tiles", "kaki.gemm.accumulate"]),
    CoverPoint("kaki.gemm.b_transpose", xf=lambda d: d.get(_GEMM, lambda f: f["b_transpose"]),
               bins=[0, 1]),
    CoverPoint("kaki.gemm.batches", xf=lambda d: d.get(_GEMM, lambda f:
               _count(f["batches_m1"] + 1)), bins=["1", "2-3", ">=4"]),
    CoverPoint("kaki.vec.ops", xf=lambda d: d.get(_VEC, _vec_ops), bins=list(VEC_COMBOS)),
    CoverPoint("kaki.vec.rows", xf=lambda d: d.get(_VEC, lambda f: _rows(f["rows"], d.dim)),
               bins=["1", "<dim", "=dim", "<256", ">=256"]),
    CoverPoint("kaki.vec.zero_point", xf=lambda d: d.get(_VEC, lambda f:
               _zero_point(f["zero_point"])), bins=["neg", "0", "pos"]),
    CoverPoint("kaki.sfu.length", xf=lambda d: d.get(_SFU, lambda f: _length(f["length"], d.dim)),
               bins=["1", "<dim", "=dim", ">dim"]),
    CoverPoint("kaki.sfu.partial_segment", xf=lambda d: d.get(_SFU, lambda f:
               "padded" if f["length"] % d.dim else "whole"), bins=["whole", "padded"]),
    CoverPoint("kaki.sfu.rows", xf=lambda d: d.get(_SFU, lambda f: _count(f["rows"])),
               bins=["1", "2-3", ">=4"]),
    CoverPoint("kaki.sfu.softmax_causal", xf=lambda d: d.get((Opcode.SOFTMAX,),
               lambda f: f["causal"]), bins=[0, 1]),
    CoverPoint("kaki.event.id", xf=lambda d: d.get((Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT),
               lambda f: f["event"]), bins=list(range(EVENTS))),
)


@_desc_cov
def _sample_desc(d):
    pass


@coverage_section(
    CoverPoint("kaki.queue.occupancy", xf=lambda q, occ: occ, bins=list(OCCUPANCY)),
    CoverPoint("kaki.queue.doorbell", xf=lambda q, occ: q, bins=list(range(QUEUES))),
    CoverCross("kaki.queue.occupancy_x_queue", items=["kaki.queue.occupancy", "kaki.queue.doorbell"]),
)
def _sample_doorbell(q, occupancy):
    pass


@CoverPoint("kaki.queue.wrap", xf=lambda q, wrapped: (q, wrapped),
            bins=[(q, w) for q in range(QUEUES) for w in (False, True)])
def _sample_wrap(q, wrapped):
    pass


_STATUS = ("ok", "error")


@CoverPoint("kaki.record.status", xf=lambda op, status: (op, status),
            bins=[(o.name, s) for o in Opcode for s in _STATUS])
def _sample_record(op, status):
    pass


@CoverPoint("kaki.error.code", bins=[c.name for c in ErrorCode if c != ErrorCode.OK])
def _sample_error(name):
    pass


@CoverPoint("kaki.irq.cause", rel=lambda causes, b: b in causes, inj=False, bins=list(IRQ_CAUSES))
def _sample_irq(causes):
    pass


@CoverPoint("kaki.event.pattern", rel=lambda found, b: b in found, inj=False,
            bins=list(EVENT_PATTERNS))
def _sample_patterns(found):
    pass


# ---------------------------------------------------------------------------- the subscriber
class ChipCoverage:
    """Subscriber of a BoundaryObserver (verif/boundary_monitor.py): samples the
    covergroups from its transactions; :meth:`close` analyses the event dependency patterns of
    the whole run (at process exit, for every device)."""

    def __init__(self, dim=8):
        self.dim = dim
        self.streams = [({}, {}) for _ in range(QUEUES)]   # per queue: index -> Desc, -> record
        self.done = []           # the streams of queues that were reset
        self.closed = False
        _live.append(self)
        if enabled():
            export_on_exit()

    def write(self, txn):
        kind = type(txn)
        if kind is BM.DescriptorTxn:
            d = Desc(txn.queue, txn.index, list(txn.words), self.dim)
            self.streams[txn.queue][0][txn.index] = d
            _sample_desc(d)
            _sample_wrap(txn.queue, txn.index >= txn.entries)
        elif kind is BM.DirectCommandTxn:
            # A direct submission (no queue): its opcode and payload classes, not the queue bins.
            _sample_desc(Desc(None, None, list(txn.words), self.dim))
        elif kind is BM.DirectErrorTxn:
            _sample_error(_code_name(txn.code))
        elif kind is BM.DoorbellTxn:
            _sample_doorbell(txn.queue, "backwards" if txn.backwards else _occupancy(txn.used, txn.entries))
        elif kind is BM.RecordTxn:
            rec = txn.record
            self.streams[txn.queue][1][rec["index"]] = rec
            op = _opcode_name(rec["opcode"])
            if op:
                _sample_record(op, "ok" if rec["status"] == 0 else "error")
            if rec["status"]:
                _sample_error(_code_name(rec["status"]))
        elif kind is BM.IrqTxn:
            _sample_irq({c for c in IRQ_CAUSES if getattr(R.IRQ_STATUS, c).get(txn.status)})
        elif kind is BM.QueueErrorTxn:
            _sample_error(_code_name(txn.code))
        elif kind is BM.QueueResetTxn:
            self.done.append(self.streams[txn.queue])
            self.streams[txn.queue] = ({}, {})

    # ---------------------------------------------------------------- event patterns
    def close(self):
        """Analyse the dependency patterns of everything seen (at the end of a run; once)."""
        if self.closed:
            return set()
        self.closed = True
        found = set()
        signals = defaultdict(list)        # event -> [(value, timestamp, queue)]
        waits = []
        for descs, recs in self.done + self.streams:
            order = sorted(descs)
            for pos, i in enumerate(order):
                d, rec = descs[i], recs.get(i)
                if d.opcode == Opcode.SIGNAL_EVENT and rec:
                    signals[d.f["event"]].append((d.f["value"], rec["timestamp"], d.queue))
                elif d.opcode == Opcode.WAIT_EVENT and rec:
                    prev = recs.get(order[pos - 1]) if pos else None
                    waits.append((d, prev["timestamp"] if prev else None))
                    if pos and descs[order[pos - 1]].opcode == Opcode.WAIT_EVENT:
                        found.add("fan-in")
                elif d.opcode == Opcode.BARRIER and any(
                        descs[j].opcode in ENGINE_OPCODES for j in order[max(0, pos - 4):pos]):
                    found.add("barrier after engine work")
        matched = defaultdict(int)
        waited_on = {}                      # queue -> queues it waited on
        for d, prev_ts in waits:
            sig = _matching_signal(signals[d.f["event"]], d.f["value"])
            if sig is None:
                continue
            matched[(d.f["event"], sig)] += 1
            found.add("same queue" if sig[2] == d.queue else "cross queue")
            if sig[2] != d.queue:
                waited_on.setdefault(d.queue, set()).add(sig[2])
            blocked = prev_ts is not None and 0 < ((sig[1] - prev_ts) & M32) < 1 << 31
            found.add("blocked" if blocked else "already satisfied")
        if any(n > 1 for n in matched.values()):
            found.add("fan-out")
        if any(waited_on.get(p, set()) - {q} for q, ps in waited_on.items() for p in ps):
            found.add("chain over 3 queues")
        if found:
            _sample_patterns(found)
        return found


def _matching_signal(signals, value):
    """The earliest-completing SIGNAL that satisfies a WAIT for ``value`` (wrap-safe compare)."""
    ok = [s for s in signals if reached(s[0], value)]
    return min(ok, key=lambda s: s[1]) if ok else None


def _code_name(code):
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"code {code}"


def _opcode_name(op):
    try:
        return Opcode(op).name
    except ValueError:
        return None


# ---------------------------------------------------------------------------- export
_export_registered = []
_live = []


def enabled():
    """Sampling is on in runs that collect coverage (``make coverage`` sets KAKI_FUNCOV=1)."""
    return os.environ.get("KAKI_FUNCOV") == "1"


def coverage_probe(dev, dim):
    """``dev`` (synchronous) seen by a ChipCoverage (``probe.observer.subscribers[0]``)."""
    return BM.Probe(dev, BM.BoundaryObserver(ChipCoverage(dim)))


def probe(dev, dim):
    """``dev`` (synchronous) behind a coverage probe when coverage is collected, else ``dev``."""
    return coverage_probe(dev, dim) if enabled() else dev


def observe(tb, dim):
    """Attach a coverage observer to a testbench that notifies one itself (``ChipTB.observer``:
    its own register reads and writes, e.g. direct submissions and ``wait_irq``), when coverage
    is collected; returns the observer or None."""
    if not enabled():
        return None
    tb.observer = BM.BoundaryObserver(ChipCoverage(dim))
    return tb.observer


def async_probe(dev, dim):
    """``dev`` (async backend) behind a coverage probe when coverage is collected, else ``dev``."""
    return BM.AsyncProbe(dev, BM.BoundaryObserver(ChipCoverage(dim))) if enabled() else dev


def export(path=None):
    """Write this process's coverage database (YAML); returns the path."""
    path = Path(path) if path else COVERAGE_DIR / f"{os.environ.get('KAKI_FUNCOV_TAG', 'run')}-{os.getpid()}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    coverage_db.export_to_yaml(str(path))
    return path


def export_on_exit():
    """Export the database when this process exits (once per process, if anything was sampled)."""
    if not _export_registered:
        _export_registered.append(True)
        atexit.register(_export_at_exit)


def _export_at_exit():
    while _live:
        _live.pop().close()
    if any(coverage_db[k].coverage for k in coverage_db if k.count(".") >= 2):
        export()
