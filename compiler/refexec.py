"""Reference executor: runs a bound :class:`driver.program.Program` on the golden
:class:`golden.device_model.DeviceModel` with the queue semantics of docs/queues.md, and checks
that every pair of conflicting commands is ordered.

Semantics modelled (the firmware's, docs/queues.md "Firmware service loop"): each queue
dispatches in order; an engine command is forwarded to the engine the command table names
(``spec.descriptors.COMMANDS``; each runs its commands one at a time in forwarding order, the engines run concurrently,
so two engine commands of one queue may overlap); SIGNAL_EVENT (and BARRIER) waits until every
earlier command of its queue completed; WAIT_EVENT holds the queue until the counter reached the
value (wrap-safe). Among the enabled actions (dispatch the head of a queue, complete the oldest
command of an engine) a seeded RNG picks one, so different seeds give different legal
interleavings.

Race detection is by happens-before (vector clocks over the engines): a command's data
accesses (scratchpad / accumulator rows, host bytes) are checked against the last writer and
the readers of every location it touches; an access not ordered after a conflicting one is a
:class:`Hazard`, whatever order this particular interleaving happened to pick.
"""
import numpy as np

from spec import commands
from spec.chip import SFU_LUT_ENTRIES
from spec.descriptors import COMMANDS, ENGINE_OPCODES, Engine, ErrorCode, Opcode
from driver.program import reached
from golden.device_model import DeviceModel

__all__ = ["Hazard", "accesses", "layout_buffers", "execute", "check_schedulable"]

#: engine index of every opcode an engine serves (the command table), and the engines' names
ENGINE = {op: COMMANDS[op].engine.value for op in ENGINE_OPCODES}
ENGINE_NAMES = tuple(e.name.lower() for e in sorted(Engine))
ENGINES = len(Engine)


class Hazard(AssertionError):
    """Two conflicting commands are not ordered by the queues' events and barriers."""


def _rows(base, planes, rows, pstride, rstride):
    p = np.arange(planes)[:, None]
    r = np.arange(rows)[None, :]
    return np.unique((base + p * pstride + r * rstride).ravel())


def accesses(d, caps):
    """Data a decoded command touches: ``(reads, writes)``, each a list of ``(memory, index array)``
    with memory ``"spad"``/``"acc"`` (row indices) or ``"host"`` (byte addresses). Raises ValueError
    for a local row outside its memory."""
    op, dim = d["opcode"], caps.dim
    reads, writes = [], []
    if op in (Opcode.DMA_LOAD, Opcode.DMA_STORE):
        mem = "acc" if d["acc"] else "spad"
        local = _rows(d["local_addr"], d["planes"], d["rows"], d["local_plane_stride"],
                      d["local_row_stride"])
        host = []
        if d["row_bytes"]:
            starts = _rows(d["host_addr"], d["planes"], d["rows"], d["host_plane_stride"],
                           d["host_row_stride"])
            host = np.unique((starts[:, None] + np.arange(d["row_bytes"])[None, :]).ravel())
        if op == Opcode.DMA_LOAD:
            writes.append((mem, local))
            if len(host):
                reads.append(("host", host))
        else:
            reads.append((mem, local))
            if len(host):
                writes.append(("host", host))
    elif op == Opcode.DMA_PEER:
        # reads its local rows; what it writes is another chip's memory
        reads.append(("acc" if d["acc"] else "spad", d["local_addr"] + np.arange(d["rows"])))
    elif op == Opcode.GEMM:
        m, kt, nt = d["m"], d["k_tiles"], d["n_tiles"]
        # B's tiles step by b_nt_stride along n (k-tiles consecutive) or, transposed, along k
        steps, lin = (kt, nt) if d.get("b_transpose") else (nt, kt)
        batch = np.arange(d.get("batches_m1", 0) + 1)
        a = _rows(d["a_addr"], kt, m, d["a_kt_stride"], 1)
        b = (d["b_addr"] + np.arange(steps)[:, None] * d["b_nt_stride"]
             + np.arange(lin * dim)[None, :]).ravel()
        c = _rows(d["c_addr"], nt, m, d["c_nt_stride"], 1)
        over = lambda rows, stride: np.unique((rows[None, :] + batch[:, None] * stride).ravel())
        a, b = over(a, d.get("a_batch_stride", 0)), over(b, d.get("b_batch_stride", 0))
        c = over(c, d.get("c_batch_stride", 0))
        reads += [("spad", np.union1d(a, b))]
        if d["accumulate"]:
            reads.append(("acc", c))
        writes.append(("acc", c))
    elif COMMANDS[op].engine == Engine.SFU:
        segs = -(-d["length"] // dim)
        seg_rows = lambda base: _rows(base, segs, d["rows"], d["seg_stride"], 1)
        srcs = [d["a_addr"], d["b_addr"]] if op == Opcode.EMUL else [d["src_addr"]]
        spad = [seg_rows(x) for x in srcs]
        if op == Opcode.LUT:
            spad.append(np.arange(d["table_addr"], d["table_addr"] + SFU_LUT_ENTRIES // dim))
        reads.append(("spad", np.unique(np.concatenate(spad))))
        params = {Opcode.LAYERNORM: ("gamma_addr", "beta_addr"), Opcode.RMSNORM: ("gamma_addr",)}
        if op in params:
            reads.append(("acc", np.unique(np.concatenate(
                [np.arange(d[p], d[p] + segs) for p in params[op]]))))
        writes.append(("spad", seg_rows(d["dst_addr"])))
    elif op == Opcode.VECTOR:
        rows = d["rows"]
        acc = [np.arange(d["src_addr"], d["src_addr"] + rows), [d["mult_addr"], d["shift_addr"]]]
        if d["ops.bias"]:
            acc.append([d["bias_addr"]])
        reads.append(("acc", np.unique(np.concatenate([np.asarray(x) for x in acc]))))
        if d["ops.add"]:
            reads.append(("spad", np.arange(d["res_addr"], d["res_addr"] + rows)))
        writes.append(("spad", np.arange(d["dst_addr"], d["dst_addr"] + (1 if d["ops.maxred"] else rows))))
    limits = {"spad": caps.spad_rows, "acc": caps.acc_rows}
    for mem, idx in reads + writes:
        if mem in limits and len(idx) and (idx.min() < 0 or idx.max() >= limits[mem]):
            raise ValueError(f"{mem} row {int(idx.max())} outside the {limits[mem]}-row memory")
    return reads, writes


def layout_buffers(program, base=0x1000):
    """Consecutive host addresses for the program's buffers: ``({name: addr}, end)``."""
    addrs, cur = {}, base
    for name, spec in program.buffers.items():
        cur = -(-cur // spec.align) * spec.align
        addrs[name] = cur
        cur += spec.nbytes
    return addrs, -(-cur // 64) * 64 + 64


class _Tracker:
    """Last writer and readers per location, as (engine, engine sequence number)."""

    def __init__(self, size):
        self.w_eng = np.full(size, -1, np.int64)
        self.w_seq = np.full(size, -1, np.int64)
        self.r_seq = np.full((ENGINES, size), -1, np.int64)     # latest read per engine

    def check(self, idx, start, is_write, what, culprits):
        we, ws = self.w_eng[idx], self.w_seq[idx]
        has = we >= 0
        if has.any():
            bad = has & (ws >= start[np.where(has, we, 0)])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise Hazard(f"{what} location {int(idx[i])} was written by {culprits(int(we[i]), int(ws[i]))}, "
                             f"which is not ordered before it")
        if is_write:
            for e in range(ENGINES):
                rs = self.r_seq[e, idx]
                bad = rs >= start[e]
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise Hazard(f"{what} overwrites location {int(idx[i])} read by "
                                 f"{culprits(e, int(rs[i]))}, which is not ordered before it")

    def record(self, idx, eng, seq, is_write):
        if is_write:
            self.w_eng[idx], self.w_seq[idx] = eng, seq
            self.r_seq[:, idx] = -1
        else:
            self.r_seq[eng, idx] = np.maximum(self.r_seq[eng, idx], seq)


def _simulate(queues, caps, rng, model=None, check=True):
    """Core scheduler over ``{queue: [decoded descriptor]}``; returns the completion order."""
    heads = {q: 0 for q in queues}
    qclock = {q: np.zeros(ENGINES, np.int64) for q in queues}
    outstanding = {q: [] for q in queues}       # engine commands dispatched, not completed
    completed = {q: np.zeros(ENGINES, np.int64) for q in queues}   # join of their completion clocks
    events, event_clock = {}, {}
    fifo = [[] for _ in range(ENGINES)]         # (queue, index, start clock)
    done_clock = [np.zeros(ENGINES, np.int64) for _ in range(ENGINES)]
    seq = [0] * ENGINES
    who = {}
    mems = {}
    if check:
        mems = {"spad": _Tracker(caps.spad_rows), "acc": _Tracker(caps.acc_rows)}
    order = []
    while True:
        actions = []
        for q, cmds in queues.items():
            if heads[q] >= len(cmds):
                continue
            d = cmds[heads[q]]
            op = d["opcode"]
            if op in ENGINE:
                if len(fifo[ENGINE[op]]) < 64:
                    actions.append(("dispatch", q))
            elif op in (Opcode.SIGNAL_EVENT, Opcode.BARRIER):
                if not outstanding[q]:
                    actions.append(("dispatch", q))
            elif op == Opcode.WAIT_EVENT:
                if reached(events.get(d["event"], 0), d["value"]):
                    actions.append(("dispatch", q))
            else:
                actions.append(("dispatch", q))
        actions += [("complete", e) for e in range(ENGINES) if fifo[e]]
        if not actions:
            stuck = {q: heads[q] for q in queues if heads[q] < len(queues[q])}
            if stuck:
                raise RuntimeError(f"deadlock: queues stuck at commands {stuck} (event counters {events})")
            return order
        kind, x = actions[rng.integers(len(actions))] if rng is not None else actions[0]
        if kind == "dispatch":
            q = x
            d = queues[q][heads[q]]
            op = d["opcode"]
            if op in ENGINE:
                e = ENGINE[op]
                fifo[e].append((q, heads[q], qclock[q].copy()))
                outstanding[q].append(e)
            elif op in (Opcode.SIGNAL_EVENT, Opcode.BARRIER):
                # every earlier command of the queue completed: later ones are ordered after them
                qclock[q] = np.maximum(qclock[q], completed[q])
                if op == Opcode.SIGNAL_EVENT:
                    events[d["event"]] = d["value"]
                    event_clock[d["event"]] = qclock[q].copy()
            elif op == Opcode.WAIT_EVENT:
                # acquire the clock of the signal that set the counter's current value
                if d["event"] in event_clock:
                    qclock[q] = np.maximum(qclock[q], event_clock[d["event"]])
            heads[q] += 1
        else:
            e = x
            q, i, clk = fifo[e].pop(0)
            start = np.maximum(clk, done_clock[e])
            d = queues[q][i]
            what = f"queue {q} command {i} ({ENGINE_NAMES[e]})"
            if check:
                reads, writes = accesses(d, caps)
                culprits = lambda eng, s: who[(eng, s)]   # noqa: E731
                for is_write, lst in ((False, reads), (True, writes)):
                    for mem, idx in lst:
                        if mem == "host":
                            if "host" not in mems:
                                mems["host"] = _Tracker(int(model.host_bytes if model else 1 << 24))
                        mems[mem].check(idx, start, is_write, f"{what} {mem}", culprits)
                for is_write, lst in ((False, reads), (True, writes)):
                    for mem, idx in lst:
                        mems[mem].record(idx, e, seq[e], is_write)
            who[(e, seq[e])] = what
            if model is not None:
                code = model.submit(commands.encode(d["opcode"], **{k: v for k, v in d.items()
                                                                    if k not in ("opcode", "flags.irq", "flags.reserved", "tag")}))
                if code != ErrorCode.OK:
                    raise RuntimeError(f"{what} failed on the device model with {code.name}")
            end = start.copy()
            seq[e] += 1
            end[e] = seq[e]
            done_clock[e] = end
            outstanding[q].remove(e)
            completed[q] = np.maximum(completed[q], end)
            order.append((q, i))


def _decoded(program, addresses, events, params=None):
    """Per queue the decoded descriptors; parameters default to 0 (an ordering check does not
    depend on them)."""
    bound = program.bind(addresses, events,
                         params=params if params is not None else dict.fromkeys(program.params, 0))
    return {q: [commands.decode(w) for w in words] for q, words in sorted(bound.items())}


def execute(program, caps, inputs, *, seed=0, check=True, params=None):
    """Run ``program`` on a DeviceModel: ``inputs`` maps buffer names to bytes (const buffers with
    ``init`` are filled automatically), ``params`` its launch parameters (default 0). Returns
    ``(model, addresses)``; raises :class:`Hazard` on an unordered conflict, RuntimeError on a
    deadlock or a failing command."""
    addresses, end = layout_buffers(program)
    model = DeviceModel(caps, host_bytes=end)
    for name, spec in program.buffers.items():
        data = inputs.get(name, spec.init)
        if data is not None:
            raw = np.frombuffer(bytes(data), np.uint8)
            model.host[addresses[name]:addresses[name] + raw.size] = raw
    queues = _decoded(program, addresses, {e: (e, 0) for e in range(program.events)}, params)
    _simulate(queues, caps, np.random.default_rng(seed), model, check)
    return model, addresses


def check_schedulable(program):
    """Raise RuntimeError if the program's queues can deadlock on their events (first-fit order)."""
    addresses, _ = layout_buffers(program)
    queues = _decoded(program, addresses, {e: (e, 0) for e in range(program.events)})
    _simulate(queues, None, None, None, check=False)
