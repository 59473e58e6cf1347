"""Register-level functional model of a whole Kaki chip: host CSRs, queue controller, issue unit,
engines, completion writer, and the firmware on the ISS (docs/queues.md).

The host talks to :class:`ChipModel` as to the chip: :meth:`~ChipModel.read`/:meth:`~ChipModel.write`
over the CSR map of ``hdl_gen/kaki_regs.rdl`` (``spec.registers``), host memory in
:attr:`~ChipModel.host` (a NumPy ``uint8`` array at address 0) and the :attr:`~ChipModel.irq` line.
:meth:`~ChipModel.run` advances time: every step is one cycle, in which the control core executes
one instruction of the real firmware ELF (golden/rv32_iss.py; asleep steps count too) and the
hardware behind its MMIO registers (``hdl_gen/kaki_mmio.rdl``) takes one step (how the model
avoids simulating steps in which nothing happens: "How time advances" below):

* **Queue controller**: per queue the doorbell, overflow and configuration checks, one 32-byte
  descriptor fetch at a time (round-robin, ``fetch_latency`` steps each) into a prefetch FIFO of
  :data:`PREFETCH`, halts, the reset handshake, and the completion writer (``cpl_depth``
  requests, ``cpl_latency`` steps per record; it writes the CompletionRecord, then the consumer
  index, then raises interrupts).
* **Command lists** (docs/queues.md "Command lists"): a fetched ring descriptor F that is a
  well-formed EXEC_LIST is not pushed; the queue expands the list instead, one 32-byte burst per
  fetch like a ring descriptor (round-robin with the other queues, each burst waiting for room in
  the prefetch FIFO): the argument table, then per entry the entry and its patch block, pushing
  the patched entry as a *list item* (index F), and at last ring slot F again, pushed as the
  list's *end* (served as a NOP), F += 1. An illegal patch or a nested EXEC_LIST halts the queue
  with BAD_LIST, a read that fails with its bus error, both at index F; a queue reset abandons
  the list. Items never get a completion request: a done item leaves the window silently, in
  order (every such queue in the same step, besides the one request). The first item to leave
  with a status other than OK fails the list: the queue issues nothing more (it failed when the
  item retired), the list's remaining items are dropped without running as they reach the head,
  and the end's request (opcode EXEC_LIST, its own flags and tag) carries that status, ``item``
  = 1 + the failed item's run position (pass × entries + entry, mod 2**16), and halts the queue
  (index C: the EXEC_LIST's). A looped list (``loops_m1`` > 0) also loads its stride words after
  the arguments, and after each pass's last entry restarts at the first with every argument +=
  its stride.
* **Issue unit** (docs/queues.md "Issue unit"): per queue a window of the descriptors popped from
  the prefetch FIFO and without a completion request (indices R..H-1, at most :data:`INFLIGHT`),
  and the event counters :attr:`~ChipModel.events` (the firmware's EVENT and the host's EVENT
  registers read them). While ISSUE.ENABLE is set it looks at the head of every active queue
  that has not failed and whose window has room, classified when the descriptor is fetched: an
  engine's opcode without reserved flag bits goes to the engine's command FIFO (engine tag
  ``(q << 14) | (index & 0x3FFF)`` in the descriptor's tag field, the queue's DMA window) while
  fewer than ``caps.fifo_depth`` commands of the engine are issued and not retired; NOP pops at
  once; BARRIER and SIGNAL_EVENT (``events[e] = value``) once the window is empty; WAIT_EVENT
  once ``(int32)(events[e] - value) >= 0``, the queue WAITING until then. Any other head (an
  unknown opcode, reserved flag bits, an event payload with reserved bits or ``e >= EVENTS``) is
  left to the firmware: WORK.QREADY; the firmware pops it with Q_POP.STATUS, into the window
  done with that status (a Q_POP of any other head, or with the window full, is ignored). The
  engine tag's index part is the window position H (the count of entries popped since the
  queue's reset: the descriptor index while no command list ran), as the RTL's. Each
  step at most one retirement is drained (round-robin over the engines' retire FIFOs,
  :data:`RETIRE_DEPTH`), marking its window entry done; at most one completion request is queued
  (round-robin over the queues whose oldest window entry is done, while the writer has room;
  tag, opcode and flags from the descriptor's word 0, halt if the status is not OK, the
  timestamp now); and at most one head acts (round-robin). A window entry done with a status
  other than OK fails its queue: it issues nothing more and raises no QREADY until its reset
  completes.
* **Engines**: an engine runs its commands in order, each for a delay drawn from
  ``engine_delay`` (a ``(lo, hi)`` range of steps, seeded by ``seed``), and executes it
  atomically at the end through :class:`golden.device_model.DeviceModel` (the same NumPy
  memories), then puts ``(ERROR, tag)`` in its retire FIFO and counts DONE_*. ENGINE_RESET
  abandons the command the engine runs (each DMA channel is an engine of its own), retires it
  with WATCHDOG (not counted in DONE_*) after the retirements already waiting, and starts the
  next one; an engine armed by DEBUG_HANG freezes on the next command it starts until it is
  reset. WORK.HUNG[e]: engine e holds issued commands (not yet drained from its retire FIFO) and
  none has retired for WATCHDOG.CYCLES steps, counted from the last retirement the issue unit
  drained, the engine's last reset or when it became busy (as hdl_gen/issue_unit.py counts).
* **Host bus timeouts** (docs/queues.md "Host bus timeouts"): ``blackhole`` (``(base, limit)``,
  or :meth:`set_blackhole`) is host memory that never answers. A DMA command that reaches it
  (``DeviceModel.reaches_blackhole``) runs BUS_TIMEOUT.CYCLES steps longer and fails with
  BUS_TIMEOUT; a descriptor fetch from it halts its queue with BUS_TIMEOUT (index F) after that
  many steps; a record or consumer write into it fails after that many steps: the queue halts with
  BUS_TIMEOUT and its later records are not written (the completion area is dead until the queue
  is reset); a record that timed out skips the consumer write. With BUS_TIMEOUT.CYCLES = 0 the
  DMA engine freezes (until the watchdog resets it) and a fetch or completion write never ends.
  Whether an access reaches the hole is decided when it starts.
* **Direct submission** (CMD/CMD_SUBMIT) executes at once through ``DeviceModel.submit`` while the
  core is held; while it runs, CMD_SUBMIT fails with DIRECT_SUBMIT (as hdl_gen/soc.py does).

**How time advances.** The results are those of taking every step in turn (the core's
instruction, then the hardware's tick); the model only leaves out work that would change nothing:

* The core executes in bursts (``RV32ISS.burst``) that build no commit records.
* A tick does its full work (events due, the fetcher, the engines, the issue unit's retire,
  complete and issue stages, finished queue resets, the core's interrupt input) only when the
  state changed since the last full tick, or an event is due. Changes are register writes the
  hardware acts on (every host CSR write; firmware writes of Q_POP, ISSUE, QRESET_ACK,
  ENGINE_RESET, FW_MSG_SEND, WORK_MASK and TIMER; the other firmware registers are storage) and
  what full ticks do: a full tick in which a stage of the issue unit acted makes the next tick a
  full one too (one retirement, one completion request and one issue per step). Events are the
  oldest completion request's write, the descriptor fetch, each running engine's finish, the
  step at which an engine holding a command becomes hung (WORK.HUNG) and, while
  WORK_MASK.TIMER is 0, the steps at which WORK.TIMER flips. Every other tick only counts the
  step. A tick in which no stage acted leaves the issue unit with nothing to do until one of
  these changes: its inputs (heads, windows, retire FIFOs, engine counts, writer room, events,
  ISSUE.ENABLE, queue states) change only there.
* Within a full tick, a stage of the issue unit and the fetcher's scan of the queues are passed
  over while they cannot act: a count of the retirements waiting, and flags ("a window head may
  be done", "a head may act", "a queue may fetch") that whatever can enable the stage sets (register
  writes, the other stages' actions, a fetch's return, a completion write, a queue reset) and a
  scan that found nothing clears. ``_skip_idle = False`` keeps every scan in every tick, the
  reference the tests compare with.
* The performance counters add up the steps since their last update at once, before anything
  they look at (engines, the waiting queues, PERF_CTRL) changes and whenever they are read.
* While the core is held, or asleep with nothing to wake it, and no tick has work, :meth:`run`
  skips to the next step with an event due in one go; ``mcycle``, TIMESTAMP and the counters
  advance by the steps skipped.

So step counts, TIMESTAMP reads, record timestamps and every register and memory byte are those
of stepping (tests/test_chip_model.py runs the queue scenarios both ways and compares them, down
to the step of every firmware MMIO access; tests/test_bench_golden.py does the same for compiled
programs through ``Device.run``).

**Where the time goes** (``make bench``'s golden figures, docs/bench.md). With the issue unit
dispatching engine commands the firmware sleeps through a compiled program (it retires 132
instructions in the ~1,700 steps of the 256³ GEMM program's ``Device.run``, as many in an
attention block's), so the ISS costs a few per cent and a faster executor for it
(a QEMU-based emulator such as ``unicorn``) would gain nothing measurable: the Python ISS stays
the one executor, also the commit-trace reference. The rest is shared by the full ticks (~600 for
the 256³ program, ~1,300 for a d_model 128 x seq 128 attention block: one per event or stage
action, each a few tens of microseconds of Python), the engines' NumPy arithmetic
(:class:`golden.device_model.DeviceModel` computes on strided views of its memories with the
:mod:`golden.ops` kernels minus their argument checks: one BLAS product per GEMM command, float32
while K <= 1024, DMA through views, in place, SOFTMAX's exponential tabulated, the norms over all
rows at once) and the driver. What keeps a full tick short: register addresses and
fields looked up once at import, the issue unit's head tests inlined, stages that cannot act
passed over, a held or sleeping core's due tick taken without an ISS burst, a completion record
written directly when nothing can fail; ``GoldenBackend`` yields to the event loop only when
another task is ready.

Model choices where docs/queues.md leaves room (as hdl_gen/queue_controller.py resolves them,
or, for the issue unit, as hdl_gen/issue_unit.py is expected to):

* WORK.QRESET[q] drops when the firmware acknowledges (at once while the core is held); the reset
  completes (prefetch FIFO emptied, indices, halt and error zeroed, the window's R = H = 0 and
  the failed flag cleared) once it is acknowledged, the queue's window is empty and the
  completion writer holds no request of the queue. The prefetch FIFO is kept until then (the
  head is not offered: the queue is not active). A doorbell while resetting is ignored.
* WORK.QREADY[q] also needs room in the queue's window (a full window "does not wake the
  firmware"). Q_STATUS.WAITING (and PERF_Q_EVENT_STALL) is set while the only thing holding a
  queue's head back is its WAIT_EVENT's condition (the queue active, not failed, ISSUE.ENABLE,
  room in the window).
* Holding the core (CORE_CTRL.RUN = 0, a firmware reload) clears ISSUE.ENABLE with the other
  firmware registers and zeroes the event counters (hdl_gen/soc.py resets the issue unit with
  the core). The windows, retire FIFOs and engine counts are kept, so commands issued before
  still retire and get their records; the RTL starts them afresh too, which only agrees while
  nothing is in flight (a firmware reload on an idle chip).
* With WATCHDOG.CYCLES = 0 an engine is hung as soon as it holds a command.
* MISALIGNED records Q_ERROR_INDEX = C. The queue fetches while ``(F - C) < (P - C) <= 2**LOG2``
  (mod 2**32): a producer moved back between C and F pauses fetching, also once C passes it.
* Halting keeps the first code and index, but every halt cause (each failed record too) raises
  QUEUE_ERROR; QUEUE_CPL follows the request's IRQ bit even if the writes failed.
* A fetch that returns after its queue halted or was disabled still enters the prefetch FIFO
  (only a reset discards it); a command-list burst likewise still acts. A completion write
  beyond ``host_bytes`` answers DECERR: the queue halts with AXI_DECERR, Q_ERROR_INDEX = the
  record's index, and the consumer index advances.
* Command lists: every burst of a list, argument-table and patch-block bursts too, waits for room
  in the prefetch FIFO; the patches take no extra steps; an entry whose opcode is EXEC_LIST halts
  with BAD_LIST when the entry arrives (its patch block is not read). Dropping a failed list's
  items (one per step, as the issue stage acts) and serving its end need the queue active and
  ISSUE.ENABLE, not window room (the end needs a window slot). The list's end is served as a NOP
  as soon as it is the head, also before its items completed; its request waits for them in the
  window and then takes the list's status.
* Performance counters: PERF_CYCLES, PERF_*_BUSY (engine holds a started command), PERF_*_FULL
  (command FIFO full), PERF_DMA_*_BYTES (bytes of completed transfers), PERF_Q_RETIRED and
  PERF_Q_EVENT_STALL are modelled; the data-stall and GEMM/vector ACTIVE counters read 0.
"""
import struct
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from spec import mmio_registers as M
from spec import registers as R
from spec.completion import RECORD_BYTES, pack_record, record_offset, unpack_record
from spec.chip import CPL_DEPTH, EVENTS, INFLIGHT, PREFETCH, QUEUES, RETIRE_DEPTH
from spec.descriptors import (CPL_FIELDS, COMMANDS, DESCRIPTOR_FIELDS, DMA_FIELDS, EVENT_FIELDS, LIST_ARGS, LIST_ENTRY_FIELDS,
                              LIST_FIELDS, PATCH_FIELDS, Engine, ErrorCode, Opcode)
from spec.firmware_image import DMEM_BASE, DMEM_BYTES, IMEM_BASE, IMEM_BYTES, FirmwareImage, FirmwareState

from .control_model import MMIO_BASE, ControlModel, FirmwareRegisters, FirmwareTimeout
from .device_model import DeviceModel

M32 = 0xFFFF_FFFF
# QUEUES, EVENTS, PREFETCH (per queue), RETIRE_DEPTH (per-engine retire FIFO), CPL_DEPTH (completion
# requests the writer holds), INFLIGHT (issue-unit window per queue): spec.chip, i.e. KakiConfig;
# the engine FIFO depth is caps.fifo_depth.
ENGINES = len(Engine)
DESC_BYTES = 32
__all__ = ["ChipModel", "ChipTimeout", "pack_record", "unpack_record"]
#: Engine names by index (Engine values): DONE_<name>, PERF_<name>_*, IRQ_STATUS.<name>_DONE
ENGINE_NAMES = tuple(Engine(e).name for e in range(ENGINES))
#: the engine index serving each engine opcode (the command table)
_OP_ENGINE = {int(op): c.engine.value for op, c in COMMANDS.items() if c.engine is not None}
#: the DMA's two channels: they carry the queue's DMA window (and can reach the black hole)
_DMA = (Engine.DMA_LOAD.value, Engine.DMA_STORE.value)
_DIRECT_SUBMIT = getattr(ErrorCode, "DIRECT_SUBMIT", 15)   # being added to hdl_gen/descriptor.py
#: engine tag of descriptor ``index`` of queue ``q``: ``(q << _TAG_Q_SHIFT) | (index & _TAG_INDEX)``
_TAG_Q_SHIFT, _TAG_INDEX = 14, 0x3FFF


class ChipTimeout(RuntimeError):
    """:meth:`ChipModel.run_until_idle` ran out of steps; the message describes the chip state."""


def _reg(name, i=None):
    return R.REGISTERS[name if i is None else f"{name}{i}"]


def _mreg(name, i=None):
    return M.REGISTERS[name if i is None else f"{name}{i}"]


def _per_queue(name):
    return tuple(_reg(name, q).addr for q in range(QUEUES))


# Register addresses the model touches every cycle or every event, looked up once.
_Q_CFG = {n: _per_queue(n) for n in ("Q_RING_BASE", "Q_RING_SIZE", "Q_CPL_BASE", "Q_WINDOW_BASE",
                                      "Q_WINDOW_SIZE", "Q_CTRL")}
_ENABLE = R.Q_CTRL0.ENABLE.mask
_FREEZE = R.PERF_CTRL.FREEZE.mask
_PERF_CYCLES = R.PERF_CYCLES.addr
_PERF_BUSY = tuple(_reg(f"PERF_{n}_BUSY").addr for n in ENGINE_NAMES)
_PERF_FULL = tuple(_reg(f"PERF_{n}_FULL").addr for n in ENGINE_NAMES)
_PERF_BYTES = {e: _reg(f"PERF_{n}_BYTES").addr for e, n in enumerate(ENGINE_NAMES)
               if f"PERF_{n}_BYTES" in R.REGISTERS}     # the DMA channels count bytes
_PERF_Q_RETIRED = {a: q for q, a in enumerate(_per_queue("PERF_Q_RETIRED"))}
_PERF_Q_STALL = {a: q for q, a in enumerate(_per_queue("PERF_Q_EVENT_STALL"))}
_DONE = tuple(_reg(f"DONE_{n}").addr for n in ENGINE_NAMES)
_IRQ_DONE = tuple(getattr(R.IRQ_STATUS, f"{n}_DONE").mask for n in ENGINE_NAMES)
_WATCHDOG = R.WATCHDOG.addr
_Q_CTRL = _Q_CFG["Q_CTRL"]
_Q_CPL_BASE = _Q_CFG["Q_CPL_BASE"]
_Q_WINDOW_BASE, _Q_WINDOW_SIZE = _Q_CFG["Q_WINDOW_BASE"], _Q_CFG["Q_WINDOW_SIZE"]
_Q_RING_SIZE = _Q_CFG["Q_RING_SIZE"]
_LOG2_LSB, _LOG2_MASK = R.Q_RING_SIZE0.LOG2.lsb, (1 << R.Q_RING_SIZE0.LOG2.width) - 1
_PERF_CTRL = R.PERF_CTRL.addr
_IRQ_STATUS, _IRQ_ENABLE = R.IRQ_STATUS.addr, R.IRQ_ENABLE.addr
_QUEUE_CPL_LSB, _QUEUE_ERROR_LSB = R.IRQ_STATUS.QUEUE_CPL.lsb, R.IRQ_STATUS.QUEUE_ERROR.lsb
_WORK_MASK = M.WORK_MASK.addr
#: host CSRs a write acts on (not only const and ro fields) -> the mask of the bits it stores
_WRITABLE = {r.addr: sum(f.mask for f in r.fields if f.kind in ("rw", "wstrobe"))
             for r in R.REGISTERS.values() if not {f.kind for f in r.fields} <= {"const", "ro"}}
_TIMER = M.TIMER.addr
# Fields used every tick or register access, looked up once (a Register searches its fields).
_QREADY, _HUNG, _QRESET = (getattr(M.WORK, f).lsb for f in ("QREADY", "HUNG", "QRESET"))
_WORK_TIMER = M.WORK.TIMER.mask
_MASKABLE = M.WORK_MASK.QREADY.mask | M.WORK_MASK.TIMER.mask
_TIMER_MASKED = M.WORK_MASK.TIMER.mask
_ISSUE = M.ISSUE.addr
_ISSUE_ENABLE = M.ISSUE.ENABLE.mask
_POP_QUEUE, _POP_STATUS = M.Q_POP.QUEUE, M.Q_POP.STATUS
_NEVER = 1 << 62      #: "no event scheduled" (any step count the model reaches is smaller)
#: round-robin order after queue q was served: q + 1, ..., q (mod QUEUES)
_RR_ORDER = tuple(tuple((last + k) % QUEUES for k in range(1, QUEUES + 1)) for last in range(QUEUES))

# Descriptor word 0 (opcode, flags, tag), from the descriptor layout.
_TAG_LSB = DESCRIPTOR_FIELDS["tag"][0]
_FLAGS_LSB = DESCRIPTOR_FIELDS["flags.irq"][0]
_IRQ_FLAG = 1 << _FLAGS_LSB
_RESERVED_FLAGS = (1 << DESCRIPTOR_FIELDS["flags.reserved"][1]) - 1 << DESCRIPTOR_FIELDS["flags.reserved"][0]
assert all(lsb + w <= 32 for lsb, w in DESCRIPTOR_FIELDS.values()), "opcode, flags and tag are in word 0"

# What the issue unit does with a head (docs/queues.md "Issue unit"), decided when it is fetched.
_FIRMWARE, _ENGINE, _NOP, _BARRIER, _SIGNAL, _WAIT = range(6)
_SERVED = {Opcode.NOP: _NOP, Opcode.BARRIER: _BARRIER, Opcode.SIGNAL_EVENT: _SIGNAL,
           Opcode.WAIT_EVENT: _WAIT}


# What a prefetch FIFO entry or window slot is (docs/queues.md "Command lists"): a ring
# descriptor, an item of a command list (never a record), or a list's end (its EXEC_LIST, served as
# a NOP; its record carries the list's status).
_RING, _ITEM, _END = range(3)
# Command lists: the list-entry flags (patches cleared before the push) and the patch words.
_PATCHES_LSB, _PATCHES_W = LIST_ENTRY_FIELDS["patches"]
_PATCHES_MASK = (1 << _PATCHES_W) - 1 << _PATCHES_LSB
assert _PATCHES_LSB + _PATCHES_W <= 32, "the patch count is in word 0"


_RECORD_FIELDS = tuple((CPL_FIELDS[n][0], (1 << CPL_FIELDS[n][1]) - 1) for n in
                       ("index", "opcode", "status", "queue", "flags", "tag", "timestamp", "item"))


def _pack_record(*values):
    """``pack_record(index=, opcode=, status=, queue=, flags=, tag=, timestamp=, item=)`` with
    the values in that order (the other record fields 0)."""
    v = 0
    for (lsb, mask), x in zip(_RECORD_FIELDS, values):
        v |= (x & mask) << lsb
    return v.to_bytes(RECORD_BYTES, "little")


def _get(big, layout, name):
    lsb, width = layout[name]
    return big >> lsb & ((1 << width) - 1)


#: the descriptor words holding the DMA fields PERF_DMA_*_BYTES multiplies, and each field's
#: (shift, mask) within them
_DMA_COUNT_WORDS = (min(DMA_FIELDS[n][0] for n in ("row_bytes", "rows", "planes")) // 32,
                    max(sum(DMA_FIELDS[n]) - 1 for n in ("row_bytes", "rows", "planes")) // 32)
_DMA_COUNT_FIELDS = tuple((DMA_FIELDS[n][0] - 32 * _DMA_COUNT_WORDS[0], (1 << DMA_FIELDS[n][1]) - 1)
                          for n in ("row_bytes", "rows", "planes"))


def _event_field(big, name):
    return _get(big, EVENT_FIELDS, name)


def _big(words):
    return sum(w << (32 * i) for i, w in enumerate(words))


def _starts_list(words):
    """A ring descriptor the queue controller expands as a command list: an EXEC_LIST with no
    reserved bit (flags or payload) set, ``entries`` != 0, ``args`` <= LIST_ARGS and both addresses
    32-byte aligned; returns ``(list_addr, entries, args_addr, args, loops_m1)``, else None (pushed
    as it is: the firmware fails it)."""
    if words[0] & 0xFF != Opcode.EXEC_LIST or words[0] & _RESERVED_FLAGS:
        return None
    big = _big(words)
    f = {name: _get(big, LIST_FIELDS, name) for name in LIST_FIELDS}
    if (f["reserved"] or not f["entries"] or f["args"] > LIST_ARGS
            or f["list_addr"] % DESC_BYTES or f["args_addr"] % DESC_BYTES):
        return None
    return f["list_addr"], f["entries"], f["args_addr"], f["args"], f["loops_m1"]


def _patch(words, block, n, args):
    """Apply the first ``n`` patch words of ``block`` to descriptor ``words`` with argument table
    ``args``; the patched words, or None if a patch is illegal (BAD_LIST)."""
    big = _big(words)
    for p in block[:n]:
        pos, width = _get(p, PATCH_FIELDS, "pos"), _get(p, PATCH_FIELDS, "width_m1") + 1
        arg = _get(p, PATCH_FIELDS, "arg")
        if (pos < 32 or pos + width > 256 or pos % 32 + width > 64 or arg >= len(args)
                or _get(p, PATCH_FIELDS, "reserved0") or _get(p, PATCH_FIELDS, "reserved")):
            return None
        mask = (1 << width) - 1
        value = ((big >> pos & mask) + args[arg]) & mask
        big = big & ~(mask << pos) | value << pos
    return [big >> (32 * i) & M32 for i in range(len(words))]


def _classify(words, end=False):
    """What the issue unit does with a head ``words``: ``(_ENGINE, engine)``, ``(_NOP,)``,
    ``(_BARRIER,)``, ``(_SIGNAL, event, value)``, ``(_WAIT, event, value)`` or ``(_FIRMWARE,)``
    (an unknown opcode, reserved flag bits, an event payload with reserved bits or an event
    index >= EVENTS: the firmware decides the status). ``end``: the entry is a list's end, whose
    EXEC_LIST (no reserved flag bits) is served as a NOP."""
    w0 = words[0]
    op = w0 & 0xFF
    if w0 & _RESERVED_FLAGS:
        return (_FIRMWARE,)
    if end and op == Opcode.EXEC_LIST:
        return (_NOP,)
    if op in _OP_ENGINE:
        return (_ENGINE, _OP_ENGINE[op])
    kind = _SERVED.get(op)
    if kind in (_SIGNAL, _WAIT):
        big = sum(w << (32 * i) for i, w in enumerate(words))
        event = _event_field(big, "event")
        if _event_field(big, "reserved0") or _event_field(big, "reserved") or event >= EVENTS:
            return (_FIRMWARE,)
        return (kind, event, _event_field(big, "value"))
    return (_FIRMWARE,) if kind is None else (kind,)


@dataclass(slots=True)
class _Command:
    words: list            #: descriptor words with the engine tag in the tag field
    tag: int               #: engine tag: (queue << 14) | (window position & 0x3FFF)
    queue: int             #: source queue (its window applies to DMA commands)
    window: tuple = None   #: taken when the engine starts the command (as the RTL samples it)


@dataclass
class _Engine:
    fifo: deque = field(default_factory=deque)      #: commands waiting to start
    current: _Command = None
    due: int = 0                                    #: step at which ``current`` completes
    armed: bool = False                             #: DEBUG_HANG: freeze on the next start
    frozen: bool = False
    retire: deque = field(default_factory=deque)    #: (error, engine tag) for the issue unit
    issued: int = 0          #: commands issued to the engine and not drained from ``retire``
    since: int = 0           #: step of the last drained retirement or reset, or of becoming busy

    def holds(self):
        """The engine holds issued commands not retired yet (WORK.HUNG counts while it does)."""
        return self.issued > 0


@dataclass(slots=True)
class _Slot:
    """A window entry of the issue unit: a descriptor popped, its completion not requested yet."""
    index: int               #: the descriptor's index (a list item: its EXEC_LIST's)
    w0: int                  #: descriptor word 0: opcode, flags and tag (all the record needs)
    done: bool = False
    status: int = 0
    mark: int = 0            #: _RING, _ITEM (leaves the window without a record) or _END
    pos: int = 0             #: an item's position in its list


@dataclass
class _List:
    """A command list the queue controller expands in place of ring descriptor ``index``."""
    index: int               #: F: the EXEC_LIST's index (F stays until the list's end is pushed)
    addr: int                #: host address of the next entry (or of the pending entry's patch block)
    entries: int
    left: int                #: entries not pushed yet
    args_addr: int
    nargs: int
    loops: int = 0           #: passes over the entries still to run after this one
    args: list = field(default_factory=list)        #: argument words loaded so far
    strides: list = field(default_factory=list)     #: a looped list's stride words loaded so far
    entry: list = None       #: an entry whose patch block is still to be read
    pushed: int = 0          #: items pushed, all passes (an item's run position)

    def __post_init__(self):
        self.base = self.addr
        # a looped list's strides follow its arguments at the next 32-byte boundary
        self.nstrides = self.nargs if self.loops else 0
        self.strides_addr = self.args_addr + DESC_BYTES * -(-self.nargs // 8)

    def next_read(self, ring_addr):
        """Host address of the next 32-byte burst: an argument-table or stride burst, the pending
        entry's patch block, the next entry, or (all entries pushed) ring slot F again."""
        if len(self.args) < self.nargs:
            return self.args_addr + 4 * len(self.args)
        if len(self.strides) < self.nstrides:
            return self.strides_addr + 4 * len(self.strides)
        return self.addr if self.entry is not None or self.left else ring_addr

    def pass_done(self):
        """The last entry of a pass was pushed: the next pass starts at the first entry with every
        argument += its stride (mod 2**32)."""
        self.addr, self.left, self.loops = self.base, self.entries, self.loops - 1
        self.args = [(a + d) & M32 for a, d in zip(self.args, self.strides)]


@dataclass
class _Queue:
    producer: int = 0        #: P
    fetch: int = 0           #: F
    consumer: int = 0        #: C
    halted: bool = False
    resetting: bool = False
    acked: bool = False      #: the firmware acknowledged the reset
    error: int = 0
    error_index: int = 0
    retired: int = 0         #: PERF_Q_RETIRED
    event_stall: int = 0     #: PERF_Q_EVENT_STALL
    cpl_dead: bool = False   #: a completion write timed out: no more writes until the reset
    #: prefetched (index, words, _classify(words), _RING / _ITEM / _END, an item's list position);
    #: an item's index is its EXEC_LIST's
    fifo: deque = field(default_factory=deque)
    list: _List = None       #: the command list being expanded
    # The issue unit's state of the queue.
    window: deque = field(default_factory=deque)    #: _Slots of window positions R..H-1
    #: R: window position of the oldest entry (positions count the entries popped since the reset;
    #: they equal the descriptor indices while no command list ran)
    rd: int = 0
    failed: bool = False     #: a window entry completed with an error: issue nothing more
    #: (status, position) of the first item of the current list that left the window failed: the
    #: list failed (its items are dropped, its end's record gets the status)
    list_fail: tuple = None


@dataclass(slots=True)
class _CplRequest:
    queue: int
    irq: bool
    halt: bool
    flags: int
    status: int
    opcode: int
    tag: int
    timestamp: int
    due: int
    waited: bool = False      #: a write reached the black hole: the request ends when due
    item: int = 0             #: a list's end: 1 + the position of the item that failed (0: none)


class _ChipMMIO(FirmwareRegisters):
    """The firmware's MMIO block with the hardware's side of every register (``kaki_mmio.rdl``)."""

    def __init__(self, chip):
        self.chip = chip
        super().__init__()
        self._reads, self._writes = {}, {}
        c = chip
        self._reads[M.WORK.addr] = c._work
        self._reads[M.TIMESTAMP.addr] = lambda: c.now & M32
        self._reads[M.WATCHDOG.addr] = lambda: c._host_regs[_WATCHDOG]
        self._reads[M.PERF_VALUE.addr] = lambda: c._perf_read(M.PERF_SEL.ADDR.get(self.values[M.PERF_SEL.addr]))
        for q in range(QUEUES):
            self._reads[_mreg("Q_HEAD_INDEX", q).addr] = lambda q=q: c._head_index(q)
            for w in range(8):
                self._reads[_mreg("Q_HEAD", 8 * q + w).addr] = lambda q=q, w=w: c._head_word(q, w)
        for e in range(EVENTS):
            self._reads[_mreg("EVENT", e).addr] = lambda e=e: c.events[e]
        self._writes[M.FW_MSG_SEND.addr] = c._fw_msg_send
        self._writes[M.Q_POP.addr] = c._q_pop
        self._writes[M.QRESET_ACK.addr] = c._qreset_ack
        self._writes[M.ENGINE_RESET.addr] = c._engine_reset
        # Writes the hardware acts on (the rest is storage the firmware and host read back).
        self._acted = {*self._writes, M.WORK_MASK.addr, M.TIMER.addr, _ISSUE}
        self._ro = {r.addr for r in M.REGISTERS.values() if all(f.kind == "ro" for f in r.fields)}
        self._pulse = {r.addr: sum(f.mask for f in r.fields if f.kind == "pulse") for r in M.REGISTERS.values()}

    def read(self, addr):
        off = addr - MMIO_BASE
        fn = self._reads.get(off)
        return fn() & M32 if fn is not None else self.values.get(off, 0)

    def write(self, addr, value, wstrb):
        off = addr - MMIO_BASE
        if off not in self.values or off in self._ro:
            return
        if off in self._acted:
            self.chip._changing()
        super().write(addr, value, wstrb)
        self.values[off] &= ~self._pulse[off] & M32      # pulse fields read back 0
        fn = self._writes.get(off)
        if fn is not None:
            fn(value & M32)


class ChipModel(ControlModel):
    """A Kaki chip with capabilities ``caps`` and ``host_bytes`` of host memory at address 0.

    Host memory beyond ``host_bytes`` answers DECERR (descriptor fetches, completion writes and DMA
    alike); ``blackhole`` (``(base, limit)`` or None) never answers (module docstring, "Host bus
    timeouts"; :meth:`set_blackhole` changes it). ``engine_delay``, ``fetch_latency`` and
    ``cpl_latency`` are step counts, each an int, an inclusive ``(lo, hi)`` range or a function
    of a NumPy Generator, drawn per operation from a generator seeded with ``seed``.
    ``firmware``: a FirmwareImage (or ELF path) loaded through CORE_MEM_* and started.
    """

    def __init__(self, caps, host_bytes=1 << 20, *, firmware=None, seed=0, engine_delay=1,
                 fetch_latency=2, cpl_latency=2, prefetch=PREFETCH, cpl_depth=CPL_DEPTH,
                 blackhole=None):
        self.caps = caps
        self.dev = DeviceModel(caps, host_bytes=host_bytes, blackhole=blackhole)
        self.host_bytes = host_bytes
        self.rng = np.random.default_rng(seed)
        self.engine_delay, self.fetch_latency, self.cpl_latency = engine_delay, fetch_latency, cpl_latency
        self.prefetch, self.cpl_depth = prefetch, cpl_depth
        self.fifo_depth = caps.fifo_depth
        self.now = 0
        self.queues = [_Queue() for _ in range(QUEUES)]
        self.engines = [_Engine() for _ in range(ENGINES)]
        self._cpl = deque()
        self._fetching = None          # (queue, index F, due, address) of the one burst read in flight
        self._rr = QUEUES - 1          # last queue served by the fetcher
        #: the event counters (hardware: SIGNAL_EVENT sets them, the firmware and host read them)
        self.events = [0] * EVENTS
        # The issue unit's round-robin pointers: last engine drained, last queue completed, last
        # queue issued.
        self._rr_retire, self._rr_complete, self._rr_issue = ENGINES - 1, QUEUES - 1, QUEUES - 1
        self._perf = dict.fromkeys(_PERF_BUSY + _PERF_FULL + tuple(_PERF_BYTES.values()) + (_PERF_CYCLES,), 0)
        self._perf_at = 0              # cycles before this step are in self._perf
        self._host_regs = {r.addr: sum(f.reset << f.lsb for f in r.fields) for r in R.REGISTERS.values()}
        self._build_host_map()
        self.deadline = 0              # first step whose tick must be a full one (see _tick)
        # What lets a full tick pass over the issue unit's stages that cannot act (module
        # docstring, "How time advances"): retirements waiting in the engines' retire FIFOs, a
        # window head that may be done, a head that may act, queues resetting. The two "may"
        # flags are set by everything that can make a stage act and cleared by a scan of the
        # stage that found nothing to do; ``_skip_idle`` False keeps them set (every stage runs
        # its full scan every full tick: the reference tests/test_chip_model.py compares with).
        self._n_retire = 0
        self._done_dirty = self._issue_dirty = True
        self._fetch_dirty = True       # a queue may have a descriptor or list burst to fetch
        self._n_resetting = 0
        self._skip_idle = True
        #: (engine, PERF_*_BUSY address, PERF_*_FULL address) per engine, for _perf_flush
        self._perf_engines = tuple(zip(self.engines, _PERF_BUSY, _PERF_FULL))
        super().__init__(regs=_ChipMMIO(self))
        if firmware is not None:
            self.load_firmware(firmware)

    # ================================================================== host side
    @property
    def host(self):
        """Host memory (uint8, address 0). DeviceModel replaces the array on stores: use this."""
        return self.dev.host

    @property
    def irq(self):
        """The chip's interrupt line: ``(IRQ_STATUS & IRQ_ENABLE) != 0``."""
        hr = self._host_regs
        return bool(hr[_IRQ_STATUS] & hr[_IRQ_ENABLE])

    def read(self, reg):
        """Read a host CSR (a ``spec.registers`` Register or its address)."""
        addr = reg if isinstance(reg, int) else reg.addr
        fn = self._rd.get(addr)
        return (fn() if fn is not None else self._host_regs.get(addr, 0)) & M32

    def write(self, reg, value):
        """Write a host CSR (a ``spec.registers`` Register or its address)."""
        addr = reg if isinstance(reg, int) else reg.addr
        value = int(value) & M32
        mask = _WRITABLE.get(addr)
        if mask is None:                                   # no register, or read-only
            return
        self._changing()
        old = self._host_regs[addr]
        if addr == _IRQ_STATUS:                            # W1C
            self._host_regs[addr] &= ~value
        else:                                              # pulse fields are not stored: read 0
            self._host_regs[addr] = (old & ~mask) | (value & mask)
        fn = self._wr.get(addr)
        if fn is not None:
            fn(value, old)

    def host_write(self, addr, data):
        self.host[addr:addr + len(data)] = np.frombuffer(bytes(data), dtype=np.uint8)

    def set_blackhole(self, base, limit):
        """Host bytes [base, limit) stop answering (a test hook of the memory, not of the chip):
        accesses that start from now on wait on the bus (module docstring)."""
        if not 0 <= base < limit:
            raise ValueError(f"black hole [{base:#x}, {limit:#x}) is empty or negative")
        self.dev.blackhole = (base, limit)

    def clear_blackhole(self):
        """The black hole answers again; accesses already waiting on it end as they would have."""
        self.dev.blackhole = None

    def _bus_limit(self):
        return self._host_regs[R.BUS_TIMEOUT.addr]

    def _bus_wait(self):
        """When an access that reached the black hole ends: BUS_TIMEOUT.CYCLES steps from now, or
        never while the timeout is off."""
        limit = self._bus_limit()
        return self.now + limit if limit else _NEVER

    def host_read(self, addr, n):
        return bytes(self.host[addr:addr + n])

    def load_firmware(self, image, max_steps=200_000):
        """Load ``image`` (a FirmwareImage or ELF path) into IMEM and DMEM by backdoor, as a
        testbench preloads memories, release the core (CORE_CTRL.RUN) and run until the firmware
        sleeps; returns FW_VERSION. (The host's own path through CORE_MEM_* is
        ``driver.bringup``, which runs on this model through the golden backend.)"""
        if not isinstance(image, FirmwareImage):
            image = FirmwareImage.from_elf(image)
        self.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(0))
        self.load(image)
        self.write(R.CORE_CTRL, R.CORE_CTRL.RUN.put(1))
        self.run(max_steps, until=lambda: self.iss.sleeping)
        if self.firmware_state() != FirmwareState.READY:
            raise FirmwareTimeout(f"firmware not READY after {max_steps} steps: {self.fault_summary()}")
        return self.regs[M.FW_VERSION]

    def run_core(self, max_steps):
        return self.run(max_steps, until=lambda: self.iss.sleeping)

    # ------------------------------------------------------------------ time
    def run(self, max_steps, until=None):
        """Advance up to ``max_steps`` steps; returns the steps taken.

        ``until()`` is evaluated after each step that did more than run an instruction on the
        core: a full tick (an event, a register write the hardware acts on; so after every change
        of :attr:`irq` or of a queue's indices and state), the core falling asleep, waking or
        taking an interrupt; the run stops once it is true. Other steps change only the core's
        registers and data memory and the step count (conditions on the count belong in
        ``max_steps``)."""
        n = 0
        iss = self.iss
        while n < max_steps:
            if not self.running or iss.idle:
                k = min(self.deadline - self.now, max_steps - n)
                if k > 0:
                    self._skip(k)
                    n += k
                    continue
                # The tick is due: one step (the core held or asleep: it only counts the step),
                # then the full tick, as burst() and _tick() would take it.
                if self.running:
                    iss.skip(1)
                self._tick_full()
                n += 1
            else:
                n += iss.burst(max_steps - n, self, self._tick_full)
            if until is not None and until():
                break
        return n

    def _skip(self, k):
        """``k`` steps at once while nothing is due and the core is held or asleep."""
        if self.running:
            self.iss.skip(k)
        self.now += k

    def wait(self, cycles):
        """Let the chip run ``cycles`` steps (the scenario runners' ``wait``)."""
        self.run(cycles)

    def busy(self):
        """Something in the chip can still make progress without the host."""
        if self._fetching is not None or self._cpl:
            return True
        for e in self.engines:
            if e.current is not None and not e.frozen or e.fifo or e.retire:
                return True
        for q, s in enumerate(self.queues):
            if self._can_fetch(q) or s.window and s.window[0].done or self._issue(q, act=False):
                return True
            if s.resetting and s.acked and not s.window:
                return True          # completes once the writer has written its requests
        if self.running:
            if self.firmware_state() == FirmwareState.FAULT:
                return False
            return not self.iss.sleeping or self.iss.irq
        return False

    def run_until_idle(self, max_steps=1_000_000, chunk=64):
        """Run until nothing can progress without the host (firmware asleep, hardware quiet, or a
        frozen engine the watchdog has not reset yet counts as busy); returns steps taken.

        Raises :class:`ChipTimeout` with a state summary after ``max_steps``."""
        n = 0
        while n < max_steps:
            if not self.busy() and not any(e.frozen for e in self.engines):
                return n
            n += self.run(min(chunk, max_steps - n))
        raise ChipTimeout(f"chip still busy after {n} steps: {self.describe()}")

    def describe(self):
        """One-paragraph state summary for error messages."""
        parts = [self.fault_summary() if self.running else "core held",
                 f"sleeping={self.iss.sleeping} core_irq={self.iss.irq} step={self.now} "
                 f"issue={int(self._issue_enabled())}"]
        for i, q in enumerate(self.queues):
            head = f" head={q.fifo[0][2]}" if q.fifo else ""
            if q.list is not None:
                L = q.list
                head += (f" list@{L.index}(entries left={L.left}, args={len(L.args)}/{L.nargs}, "
                         f"next read={L.next_read(self._desc_addr(i, q.fetch)):#x})")
            parts.append(f"q{i}: P={q.producer} F={q.fetch} C={q.consumer} fifo={len(q.fifo)}{head} "
                         f"R={q.rd} window={len(q.window)} done={sum(s.done for s in q.window)} "
                         f"failed={q.failed} active={self._active(i)} halted={q.halted} "
                         f"resetting={q.resetting} acked={q.acked} err={q.error}@{q.error_index}"
                         + (f" list failed={q.list_fail}" if q.list_fail else ""))
        for i, e in enumerate(self.engines):
            parts.append(f"{ENGINE_NAMES[i]}: fifo={len(e.fifo)} current="
                         f"{None if e.current is None else hex(e.current.tag)} frozen={e.frozen} "
                         f"issued={e.issued} retire={len(e.retire)}")
        parts.append(f"cpl requests={len(self._cpl)} fetching={self._fetching} events={self.events}")
        return "; ".join(parts)

    def _tick(self):
        """The hardware's half of one step (after the core's instruction).

        A full tick serves everything due (completion write, fetch, engines), runs the issue
        unit's stages (retire, complete, issue), completes queue resets, counts the performance
        counters and drives the core's interrupt input. It is needed from ``deadline`` on: 0
        after a register write the hardware acts on (:meth:`_changing`), the next step after a
        full tick in which a stage of the issue unit acted, else the step of the earliest event
        (completion write, fetch, engine finish, an engine becoming hung, timer edge). Any other
        tick would change nothing but the step count, so it only counts the step (performance
        counters catch up in bulk, see :meth:`_perf_flush`)."""
        if self.now >= self.deadline:
            self._tick_full()
        else:
            self.now += 1

    def _tick_full(self):
        now = self.now
        if now != self._perf_at:
            self._perf_flush()
        cpl = self._cpl
        if cpl and cpl[0].due <= now:
            self._write_record(cpl.popleft())
            self._fetch_dirty = True             # C moved: the ring may have room to fetch
        fetching = self._fetching
        if fetching is not None and fetching[2] <= now:
            self._fetch_done()
            self._issue_dirty = self._fetch_dirty = True   # a new head (or list burst) may act
        if self._fetching is None and self._fetch_dirty:
            self._fetch_issue()
        for i, e in enumerate(self.engines):
            if e.current is not None and not e.frozen and e.due <= now:
                self._engine_finish(i)
        # The issue unit, one action per stage (each sees what the stages before it did); a
        # stage that cannot act is passed over (see __init__).
        acted = self._retire_one() if self._n_retire else False
        if self._done_dirty:
            acted |= self._complete_one()
        if self._issue_dirty and self._issue_one():
            acted = self._fetch_dirty = True     # a head left its prefetch FIFO: room
        if self._n_resetting:
            for i, q in enumerate(self.queues):
                if (q.resetting and q.acked and not q.window
                        and not any(r.queue == i for r in self._cpl)):
                    self._reset_done(i)
                    self._fetch_dirty = True
        self.now = now + 1
        self._end_tick(acted)

    def _end_tick(self, acted):
        """The end of a full tick: the core's interrupt input (``_work``, inlined, masked) and the
        next step whose tick must be a full one: the next step if the issue unit acted, else
        :meth:`_next_event` (verif/model_time.py's ``stepped`` replaces it)."""
        now = self.now
        values, hr = self.regs.values, self._host_regs
        mask = values[_WORK_MASK] & _MASKABLE
        v = 0
        issue_on = values[_ISSUE] & _ISSUE_ENABLE
        if issue_on:
            for q, s in enumerate(self.queues):
                f = s.fifo
                if (f and f[0][2][0] == _FIRMWARE and len(s.window) < INFLIGHT   # _offered
                        and not s.failed and hr[_Q_CTRL[q]] & _ENABLE and not s.halted
                        and not s.resetting):
                    v |= 1 << (_QREADY + q)
        if self._n_resetting:
            for q, s in enumerate(self.queues):
                if s.resetting and not s.acked:
                    v |= 1 << (_QRESET + q)
        limit = hr[_WATCHDOG]
        for e, eng in enumerate(self.engines):
            if eng.issued > 0 and now - eng.since >= limit:       # eng.holds()
                v |= 1 << (_HUNG + e)
        if (now - values[_TIMER]) & M32 < 0x8000_0000:
            v |= _WORK_TIMER
        self.iss.set_irq(bool(v & ~mask))
        # Nothing this tick did leaves work for the next one but events and the issue unit's next
        # action (a queue whose reset completed has nothing to fetch or issue: P = F = C = 0).
        self.deadline = now if acted else self._next_event(not mask & _TIMER_MASKED)

    def _next_event(self, timer_on):
        """The first step whose tick has something due (_NEVER if none)."""
        t = _NEVER
        now = self.now
        if self._cpl:
            t = self._cpl[0].due
        if self._fetching is not None:
            t = min(t, self._fetching[2])
        limit = self._host_regs[_WATCHDOG]
        for e in self.engines:
            if e.current is not None and not e.frozen and e.due < t:
                t = e.due
            if e.issued > 0:          # e.holds()
                # WORK.HUNG rises when now - since reaches the limit: the tick before sets irq.
                hung = e.since + limit - 1
                if hung >= now:
                    t = min(t, hung)
        if timer_on:
            # WORK.TIMER flips when TIMESTAMP - TIMER crosses 0 or 2**31: the tick before sets irq.
            t = min(t, now + ((self.regs.values[M.TIMER.addr] - 1 - now) & 0x7FFF_FFFF))
        return t

    def _delay(self, spec):
        if isinstance(spec, int):
            return spec
        if callable(spec):
            return int(spec(self.rng))
        lo, hi = spec
        return int(self.rng.integers(lo, hi + 1))

    # ------------------------------------------------------------------ host register map
    def _build_host_map(self):
        c = self.caps
        hr = self._host_regs
        hr[R.CAP_ARRAY.addr] = R.CAP_ARRAY.ROWS.put(c.dim) | R.CAP_ARRAY.COLS.put(c.dim)
        hr[R.CAP_SPAD.addr] = R.CAP_SPAD.BANKS.put(c.spad_banks) | R.CAP_SPAD.BANK_ROWS.put(c.spad_bank_rows)
        hr[R.CAP_ACC.addr] = R.CAP_ACC.BANKS.put(c.acc_banks) | R.CAP_ACC.BANK_ROWS.put(c.acc_bank_rows)
        hr[R.CAP_DMA.addr] = (R.CAP_DMA.DATA_BYTES.put(c.dma_data_bytes) | R.CAP_DMA.MAX_BURST.put(c.dma_max_burst)
                              | R.CAP_DMA.OUTSTANDING.put(c.dma_outstanding)
                              | R.CAP_DMA.ADDR_BITS.put(c.addr_bits))
        hr[R.CAP_QUEUES.addr] = (R.CAP_QUEUES.QUEUES.put(QUEUES) | R.CAP_QUEUES.FIFO_DEPTH.put(c.fifo_depth)
                                 | R.CAP_QUEUES.PREFETCH.put(self.prefetch) | R.CAP_QUEUES.EVENTS.put(EVENTS))
        rd = self._rd = {}
        wr = self._wr = {}
        rd[R.STATUS.addr] = self._status
        rd[R.FW_VERSION.addr] = lambda: self.regs[M.FW_VERSION]
        rd[R.FW_STATUS.addr] = lambda: (R.FW_STATUS.STATE.put(M.FW_STATUS.STATE.get(self.regs[M.FW_STATUS]))
                                        | R.FW_STATUS.SLEEPING.put(int(self.running and self.iss.sleeping)))
        rd[R.FW_FAULT_PC.addr] = lambda: self.regs[M.FW_FAULT_PC]
        rd[R.FW_FAULT_CAUSE.addr] = lambda: self.regs[M.FW_FAULT_CAUSE]
        rd[R.FW_FAULT_TVAL.addr] = lambda: self.regs[M.FW_FAULT_TVAL]
        rd[R.TIMESTAMP.addr] = lambda: self.now & M32
        rd[R.CORE_PC.addr] = lambda: self.iss.pc     # the next pc (the RTL: the last committed)
        for addr in (*self._perf, *_PERF_Q_RETIRED, *_PERF_Q_STALL):
            rd[addr] = lambda addr=addr: self._perf_read(addr)
        for q in range(QUEUES):
            rd[_reg("Q_CONSUMER", q).addr] = lambda q=q: self.queues[q].consumer
            rd[_reg("Q_STATUS", q).addr] = lambda q=q: self._q_status(q)
            rd[_reg("Q_ERROR", q).addr] = lambda q=q: self.queues[q].error
            rd[_reg("Q_ERROR_INDEX", q).addr] = lambda q=q: self.queues[q].error_index
            rd[_reg("Q_FETCH", q).addr] = lambda q=q: self.queues[q].fetch
            wr[_reg("Q_DOORBELL", q).addr] = lambda v, old, q=q: self._doorbell(q, v)
            wr[_reg("Q_CTRL", q).addr] = lambda v, old, q=q: self._q_ctrl(q, v, old)
        for e in range(EVENTS):
            rd[_reg("EVENT", e).addr] = lambda e=e: self.events[e]
        wr[R.CMD_SUBMIT.addr] = lambda v, old: self._cmd_submit(v)
        wr[R.PERF_CTRL.addr] = lambda v, old: self._perf_ctrl(v)
        wr[R.CORE_CTRL.addr] = lambda v, old: self._core_ctrl(v)
        wr[R.CORE_MEM_DATA.addr] = lambda v, old: self._core_mem_data(v)
        wr[R.DEBUG_HANG.addr] = lambda v, old: self._debug_hang(v)

    def _status(self):
        v = 0
        for i, e in enumerate(self.engines):
            if e.current is not None:
                v |= 1 << i
        idle = all(e.current is None and not e.fifo for e in self.engines)
        return v | R.STATUS.IDLE.put(int(idle))

    def _set_irq(self, reg_field, bits):
        self._host_regs[R.IRQ_STATUS.addr] |= reg_field.put(bits) if reg_field.width > 1 else reg_field.mask

    def _error_info(self, code, opcode, tag):
        """IRQ_STATUS.ERROR and ERROR_INFO: the first direct-submission failure since cleared."""
        hr = self._host_regs
        if not R.IRQ_STATUS.ERROR.get(hr[R.IRQ_STATUS.addr]):
            hr[R.ERROR_INFO.addr] = (R.ERROR_INFO.CODE.put(int(code)) | R.ERROR_INFO.OPCODE.put(opcode & 0xFF)
                                     | R.ERROR_INFO.TAG.put(tag & 0xFFFF))
        hr[R.IRQ_STATUS.addr] |= R.IRQ_STATUS.ERROR.mask

    def _cmd_submit(self, value):
        if not R.CMD_SUBMIT.GO.get(value):
            return
        words = [self._host_regs[r.addr] for r in R.CMD]
        opcode, tag = words[0] & 0xFF, words[0] >> 16
        if self.running:
            self._error_info(_DIRECT_SUBMIT, opcode, tag)
            return
        code = self.dev.submit(words)
        reserved_flags = (words[0] >> DESCRIPTOR_FIELDS["flags.reserved"][0]) & 0x7F
        e = _OP_ENGINE.get(opcode)
        if e is not None and not reserved_flags:
            self._host_regs[_DONE[e]] = (self._host_regs[_DONE[e]] + 1) & M32
            irq_flag = (words[0] >> DESCRIPTOR_FIELDS["flags.irq"][0]) & 1
            if code == ErrorCode.OK and irq_flag:
                self._host_regs[R.IRQ_STATUS.addr] |= _IRQ_DONE[e]
            if code == ErrorCode.OK:
                self._count_dma_bytes(e, words)
        if code != ErrorCode.OK:
            self._error_info(code, opcode, tag)

    def _perf_ctrl(self, value):
        if R.PERF_CTRL.CLEAR.get(value):
            for k in self._perf:
                self._perf[k] = 0
            for q in self.queues:
                q.retired = q.event_stall = 0

    def _core_ctrl(self, value):
        if R.CORE_CTRL.RUN.get(value):
            self.running = True      # from the reset vector: hold() reset the core
        else:
            self.hold()

    def hold(self):
        """CORE_CTRL.RUN = 0: core and firmware registers in reset (ISSUE.ENABLE clears: nothing
        more is issued) and the event counters zeroed, as the issue unit starts afresh; its
        windows and retire FIFOs go on (module docstring); pending queue resets are acknowledged
        at once (nobody else will)."""
        self._changing()
        super().hold()
        self.events = [0] * EVENTS
        for i, q in enumerate(self.queues):
            if q.resetting and not q.acked:
                self._ack(i)

    def _core_mem_data(self, value):
        addr = self._host_regs[R.CORE_MEM_ADDR.addr]
        if not self.running and not addr & 3:
            word = value.to_bytes(4, "little")
            if IMEM_BASE <= addr < IMEM_BASE + IMEM_BYTES:
                self.iss.load_imem(word, addr - IMEM_BASE)
            elif DMEM_BASE <= addr < DMEM_BASE + DMEM_BYTES:
                self.iss.dmem[addr - DMEM_BASE:addr - DMEM_BASE + 4] = word
        self._host_regs[R.CORE_MEM_ADDR.addr] = (addr + 4) & M32

    def _debug_hang(self, value):
        for name, armed in R.DEBUG_HANG.decode(value).items():    # fields named after engines
            if armed:
                self.engines[Engine[name].value].armed = True

    # ------------------------------------------------------------------ performance counters
    def _changing(self):
        """Called before a register write changes the state: the next tick must be a full one,
        and the steps counted so far saw the state before the write."""
        self._perf_flush()
        self.deadline = 0
        self._done_dirty = self._issue_dirty = self._fetch_dirty = True

    def _perf_flush(self):
        """Count the steps since the last flush, all at once. Every step counts with the state
        after its tick; every change of what the counters look at (engines, waiting queues, PERF_CTRL)
        happens in a full tick or a register write, which flush first, so all these steps saw
        the present state."""
        n = self.now - self._perf_at
        if not n:
            return
        self._perf_at = self.now
        if self._host_regs[_PERF_CTRL] & _FREEZE:
            return
        p = self._perf
        p[_PERF_CYCLES] = (p[_PERF_CYCLES] + n) & M32
        depth = self.fifo_depth
        for e, busy, full in self._perf_engines:
            if e.current is not None:
                p[busy] = (p[busy] + n) & M32
            if len(e.fifo) >= depth:
                p[full] = (p[full] + n) & M32
        if not self.regs.values[_ISSUE] & _ISSUE_ENABLE:
            return                    # no queue is waiting
        hr, events = self._host_regs, self.events
        for i, q in enumerate(self.queues):
            f = q.fifo
            # _waiting(i), inlined: a WAIT_EVENT head offered (_offered) and its event not reached
            if f and f[0][2][0] == _WAIT and len(q.window) < INFLIGHT and not q.failed \
                    and hr[_Q_CTRL[i]] & _ENABLE and not q.halted and not q.resetting:
                _, event, value = f[0][2]
                if (events[event] - value) & M32 >= 0x8000_0000:
                    q.event_stall = (q.event_stall + n) & M32

    def _count_dma_bytes(self, e, words):
        if e not in _PERF_BYTES or self._host_regs[_PERF_CTRL] & _FREEZE:
            return
        row = COMMANDS.get(words[0] & 0xFF)
        if row is None or row.fields is not DMA_FIELDS:     # DMA_PEER: no host bytes
            return
        lo, hi = _DMA_COUNT_WORDS
        v = 0
        for i in range(hi, lo - 1, -1):
            v = v << 32 | words[i]
        (s0, m0), (s1, m1), (s2, m2) = _DMA_COUNT_FIELDS
        a = _PERF_BYTES[e]
        self._perf[a] = (self._perf[a] + (v >> s0 & m0) * (v >> s1 & m1) * (v >> s2 & m2)) & M32

    def _perf_read(self, addr):
        """A PERF_* counter by host CSR address (0 for other addresses), up to this step."""
        self._perf_flush()
        if addr in _PERF_Q_RETIRED:
            return self.queues[_PERF_Q_RETIRED[addr]].retired
        if addr in _PERF_Q_STALL:
            return self.queues[_PERF_Q_STALL[addr]].event_stall
        return self._perf.get(addr, 0)

    # ================================================================== queue controller
    def _cfg(self, name, q):
        return self._host_regs[_Q_CFG[name][q]]

    def _log2(self, q):
        return self._host_regs[_Q_RING_SIZE[q]] >> _LOG2_LSB & _LOG2_MASK

    def _active(self, q):
        s = self.queues[q]
        return bool(self._host_regs[_Q_CTRL[q]] & _ENABLE) and not s.halted and not s.resetting

    def _q_status(self, q):
        s = self.queues[q]
        waiting = int(self._waiting(q))
        F = R.Q_STATUS0
        return (F.ACTIVE.put(int(self._active(q))) | F.HALTED.put(int(s.halted))
                | F.RESETTING.put(int(s.resetting)) | F.WAITING.put(waiting)
                | F.PREFETCHED.put(min(len(s.fifo), 255)))

    def _halt(self, q, code, index):
        s = self.queues[q]
        if not s.halted:                # the first error is kept
            s.halted, s.error, s.error_index = True, int(code), index & M32
        self._host_regs[_IRQ_STATUS] |= 1 << (_QUEUE_ERROR_LSB + q)

    def _activate(self, q, was_active):
        """Check the configuration when the queue becomes active (docs/queues.md)."""
        if was_active or not self._active(q):
            return
        log2 = self._log2(q)
        if (self._cfg("Q_RING_BASE", q) % DESC_BYTES or self._cfg("Q_CPL_BASE", q) % RECORD_BYTES
                or not 1 <= log2 <= 15):
            self._halt(q, ErrorCode.MISALIGNED, self.queues[q].consumer)

    def _q_ctrl(self, q, value, old):
        s = self.queues[q]
        was_active = bool(R.Q_CTRL0.ENABLE.get(old)) and not s.halted and not s.resetting
        if R.Q_CTRL0.RESET.get(value) and not s.resetting:
            s.resetting, s.acked = True, False
            self._n_resetting += 1
            if self._fetching is not None and self._fetching[0] == q:
                self._fetching = (q, None, *self._fetching[2:])   # discarded when it returns
            if not self.running:
                self._ack(q)
        self._activate(q, was_active)

    def _doorbell(self, q, value):
        s = self.queues[q]
        if s.resetting:
            return                      # the reset zeroes P
        if (value - s.consumer) & M32 > 1 << self._log2(q):
            self._halt(q, ErrorCode.RING_OVERFLOW, value)
        else:
            s.producer = value

    def _can_fetch(self, q):
        s = self.queues[q]
        inflight = self._fetching is not None and self._fetching[0] == q
        if not (len(s.fifo) + inflight < self.prefetch and self._host_regs[_Q_CTRL[q]] & _ENABLE
                and not s.halted and not s.resetting):
            return False
        if s.list is not None:
            return True             # every burst of a list waits for room, as a ring fetch does
        ahead = (s.producer - s.consumer) & M32
        return (s.fetch - s.consumer) & M32 < ahead <= 1 << self._log2(q)

    def _read_addr(self, q):
        """Host address of queue q's next 32-byte read: ring slot F, or the next burst of the
        command list it expands."""
        s = self.queues[q]
        ring = self._desc_addr(q, s.fetch)
        return ring if s.list is None else s.list.next_read(ring)

    def _fetch_issue(self):
        queues = self.queues
        for k in range(1, QUEUES + 1):
            q = (self._rr + k) % QUEUES
            s = queues[q]
            # (the cheap half of _can_fetch first: no fetch is in flight here)
            if (s.producer != s.fetch or s.list is not None) and self._can_fetch(q):
                self._rr = q
                addr = self._read_addr(q)
                due = self.now + self._delay(self.fetch_latency)
                if self.dev.in_blackhole(addr, DESC_BYTES):
                    due = self._bus_wait()
                self._fetching = (q, self.queues[q].fetch, due, addr)
                return
        if self._skip_idle:
            self._fetch_dirty = False    # nothing to fetch until something changes (see __init__)

    def _desc_addr(self, q, index):
        return self._cfg("Q_RING_BASE", q) + DESC_BYTES * (index % (1 << self._log2(q)))

    def _fetch_done(self):
        q, index, _, addr = self._fetching
        self._fetching = None
        if index is None:
            return                                   # the queue was reset meanwhile
        s = self.queues[q]
        code = None
        if self.dev.in_blackhole(addr, DESC_BYTES):
            code = ErrorCode.BUS_TIMEOUT
        elif addr + DESC_BYTES > self.host_bytes:
            code = ErrorCode.AXI_DECERR
        if code is not None:                         # the read is dropped, F stays
            self._halt(q, code, index)
            s.list = None
            return
        words = list(struct.unpack_from("<8I", self.host, addr))
        if s.list is not None:
            self._list_read(q, words)
            return
        shape = _starts_list(words)
        if shape is not None:                        # expand the list in its place; F stays
            list_addr, entries, args_addr, nargs, loops = shape
            s.list = _List(index, list_addr, entries, entries, args_addr, nargs, loops)
            return
        s.fifo.append((index, words, _classify(words), _RING, 0))
        s.fetch = (index + 1) & M32

    def _list_read(self, q, words):
        """A burst of the command list queue q expands arrived (docs/queues.md "Command lists"):
        argument words, an entry, an entry's patch block or the list's end (ring slot F again)."""
        s = self.queues[q]
        L = s.list
        if len(L.args) < L.nargs:
            L.args += words[:L.nargs - len(L.args)]
            return
        if len(L.strides) < L.nstrides:
            L.strides += words[:L.nstrides - len(L.strides)]
            return
        if L.entry is None and not L.left:           # the end: pushed after every item, F += 1
            s.fifo.append((L.index, words, _classify(words, end=True), _END, 0))
            s.fetch = (L.index + 1) & M32
            s.list = None
            return
        L.addr += DESC_BYTES
        if L.entry is None:
            if words[0] & 0xFF == Opcode.EXEC_LIST:  # lists do not nest
                self._bad_list(q)
                return
            if words[0] & _PATCHES_MASK:
                L.entry = words                      # its patch block is the next burst
                return
        else:
            entry, L.entry = L.entry, None
            words = _patch(entry, words, (entry[0] & _PATCHES_MASK) >> _PATCHES_LSB, L.args)
            if words is None:
                self._bad_list(q)
                return
            words[0] &= ~_PATCHES_MASK
        s.fifo.append((L.index, words, _classify(words), _ITEM, L.pushed & 0xFFFF))
        L.pushed += 1
        L.left -= 1
        if not L.left and L.loops:
            L.pass_done()

    def _bad_list(self, q):
        s = self.queues[q]
        self._halt(q, ErrorCode.BAD_LIST, s.list.index)
        s.list = None

    def _head_index(self, q):
        """Q_HEAD_INDEX: F minus the entries of the prefetch FIFO that are not list items (an
        item's index is its EXEC_LIST's)."""
        s = self.queues[q]
        return (s.fetch - sum(e[3] != _ITEM for e in s.fifo)) & M32

    def _head_word(self, q, w):
        s = self.queues[q]
        return s.fifo[0][1][w] if s.fifo else 0

    def _work(self):
        v = 0
        for q, s in enumerate(self.queues):
            if s.fifo and s.fifo[0][2][0] == _FIRMWARE and self._offered(q):
                v |= 1 << (_QREADY + q)
            if s.resetting and not s.acked:
                v |= 1 << (_QRESET + q)
        limit = self._host_regs[_WATCHDOG]
        now = self.now
        for e, eng in enumerate(self.engines):
            if eng.issued > 0 and now - eng.since >= limit:       # eng.holds()
                v |= 1 << (_HUNG + e)
        if (now - self.regs.values[_TIMER]) & M32 < 0x8000_0000:
            v |= _WORK_TIMER
        return v

    def _q_pop(self, value):
        """The firmware pops the heads of Q_POP.QUEUE into their windows, done with Q_POP.STATUS;
        a bit is ignored unless the queue's head is one the issue unit leaves to the firmware and
        the window has room (as hdl_gen/issue_unit.py takes it; an empty FIFO has no head)."""
        bits, status = _POP_QUEUE.get(value), _POP_STATUS.get(value)
        for q in range(QUEUES):
            s = self.queues[q]
            if (not bits >> q & 1 or not s.fifo or s.fifo[0][2][0] != _FIRMWARE
                    or len(s.window) >= INFLIGHT):
                continue
            index, words, _, mark, pos = s.fifo.popleft()
            s.window.append(_Slot(index, words[0], True, status, mark, pos))
            self._done_dirty = True
            if status != ErrorCode.OK:
                s.failed = True

    def _write_record(self, r):
        q = r.queue
        s = self.queues[q]
        base = self._host_regs[_Q_CPL_BASE[q]]
        index = s.consumer
        rec_addr = base + record_offset(index, self._log2(q))
        record = _pack_record(index, r.opcode, r.status, q, r.flags, r.tag, r.timestamp, r.item)
        if (not s.cpl_dead and self.dev.blackhole is None
                and rec_addr + RECORD_BYTES <= self.host_bytes and base + 4 <= self.host_bytes):
            # the writes below with nothing failing: the record, then the consumer index
            host = self.dev.host.data
            host[rec_addr:rec_addr + RECORD_BYTES] = record
            host[base:base + 4] = ((index + 1) & M32).to_bytes(4, "little")
            s.consumer = (index + 1) & M32
            hr = self._host_regs
            if not hr[_PERF_CTRL] & _FREEZE:
                s.retired = (s.retired + 1) & M32
            if r.irq:
                hr[_IRQ_STATUS] |= 1 << (_QUEUE_CPL_LSB + q)
            if r.halt:
                self._halt(q, r.status, index)
            return
        code = ErrorCode.BUS_TIMEOUT if s.cpl_dead else None     # the first failure
        for addr, data in (() if s.cpl_dead else
                           ((rec_addr, record), (base, ((index + 1) & M32).to_bytes(4, "little")))):
            if self.dev.in_blackhole(addr, len(data)):
                if not r.waited:            # the write waits on the bus; the request ends later
                    r.waited, r.due = True, self._bus_wait()
                    self._cpl.appendleft(r)
                    return
                s.cpl_dead = True
                code = code or ErrorCode.BUS_TIMEOUT
                break                       # a record that timed out skips the consumer write
            if addr + len(data) > self.host_bytes:
                code = code or ErrorCode.AXI_DECERR
            else:
                self.dev.host.data[addr:addr + len(data)] = data      # (host_write, for bytes)
        s.consumer = (index + 1) & M32
        if not self._host_regs[_PERF_CTRL] & _FREEZE:
            s.retired = (s.retired + 1) & M32
        if code is not None:
            self._halt(q, code, index)
        if r.irq:
            self._host_regs[_IRQ_STATUS] |= 1 << (_QUEUE_CPL_LSB + q)
        if r.halt:
            self._halt(q, r.status, index)

    def _qreset_ack(self, value):
        bits = M.QRESET_ACK.QUEUE.get(value)
        for q in range(QUEUES):
            if bits >> q & 1 and self.queues[q].resetting and not self.queues[q].acked:
                self._ack(q)

    def _ack(self, q):
        self.queues[q].acked = True

    def _reset_done(self, q):
        s = self.queues[q]
        s.fifo.clear()
        s.list = None                   # a list being expanded is abandoned
        s.producer = s.fetch = s.consumer = 0
        s.halted, s.error, s.error_index, s.cpl_dead = False, 0, 0, False
        s.resetting = s.acked = False
        self._n_resetting -= 1
        s.rd, s.failed, s.list_fail = 0, False, None
        self._activate(q, was_active=False)

    def _fw_msg_send(self, value):
        if M.FW_MSG_SEND.GO.get(value):
            self._host_regs[R.FW_MSG.addr] = self.regs.values[M.FW_MSG.addr]
            self._host_regs[R.IRQ_STATUS.addr] |= R.IRQ_STATUS.FW_MSG.mask

    # ================================================================== issue unit
    def _issue_enabled(self):
        return bool(self.regs.values[_ISSUE] & _ISSUE_ENABLE)

    def _offered(self, q):
        """Queue q's head may act (or wake the firmware): the queue active with a head, ISSUE
        enabled, the queue not failed and room in its window."""
        s = self.queues[q]
        return (bool(s.fifo) and len(s.window) < INFLIGHT and not s.failed
                and bool(self.regs.values[_ISSUE] & _ISSUE_ENABLE)
                and bool(self._host_regs[_Q_CTRL[q]] & _ENABLE) and not s.halted and not s.resetting)

    def _event_reached(self, event, value):
        return (self.events[event] - value) & M32 < 0x8000_0000     # (int32)(EVENT - value) >= 0

    def _waiting(self, q):
        """Q_STATUS.WAITING: only the condition of the WAIT_EVENT at the head holds the queue."""
        s = self.queues[q]
        if not s.fifo or s.fifo[0][2][0] != _WAIT or not self._offered(q):
            return False
        _, event, value = s.fifo[0][2]
        return not self._event_reached(event, value)

    def _issue(self, q, act=True):
        """Queue q's head acts if it can (docs/queues.md "Issue unit"); returns whether it can
        (with ``act`` False: only whether it could)."""
        s = self.queues[q]
        fifo = s.fifo
        if s.list_fail is not None and fifo and fifo[0][3] != _RING:
            return self._drop_failed_list(q, act)
        if not (fifo and len(s.window) < INFLIGHT and not s.failed         # _offered(q), inlined
                and self.regs.values[_ISSUE] & _ISSUE_ENABLE
                and self._host_regs[_Q_CTRL[q]] & _ENABLE and not s.halted and not s.resetting):
            return False
        index, words, what, mark, pos = fifo[0]
        kind = what[0]
        if kind == _FIRMWARE:
            return False
        if kind == _ENGINE:
            e = what[1]
            eng = self.engines[e]
            if eng.issued >= self.fifo_depth:
                return False
            if not act:
                return True
            # The engine echoes the engine tag (the window position H); the record gets the
            # descriptor's own word 0.
            tag = q << _TAG_Q_SHIFT | (s.rd + len(s.window)) & _TAG_INDEX
            cmd = list(words)
            cmd[0] = (cmd[0] & ~(0xFFFF << _TAG_LSB)) | tag << _TAG_LSB
            if not eng.holds():
                eng.since = self.now          # the watchdog counts from becoming busy
            eng.fifo.append(_Command(cmd, tag, q))
            eng.issued += 1
            s.fifo.popleft()
            s.window.append(_Slot(index, words[0], mark=mark, pos=pos))
            if eng.current is None:
                self._engine_start(e)
            return True
        if kind in (_BARRIER, _SIGNAL) and s.window:
            return False
        if kind == _WAIT and (self.events[what[1]] - what[2]) & M32 >= 0x8000_0000:  # not reached
            return False
        if act:
            if kind == _SIGNAL:
                self.events[what[1]] = what[2]
            s.fifo.popleft()
            s.window.append(_Slot(index, words[0], True, ErrorCode.OK, mark, pos))
            self._done_dirty = True
        return True

    def _drop_failed_list(self, q, act):
        """The head of queue q, whose list failed, is one of its items (dropped without running)
        or its end (into the window done, as a NOP; its record takes the list's status); returns
        whether it can act (with ``act`` False: only whether it could)."""
        s = self.queues[q]
        if not (self._issue_enabled() and self._active(q)):
            return False
        end = s.fifo[0][3] == _END
        if end and len(s.window) >= INFLIGHT:
            return False
        if act:
            index, words, _, mark, pos = s.fifo.popleft()
            if end:
                s.window.append(_Slot(index, words[0], True, ErrorCode.OK, mark, pos))
                self._done_dirty = True
        return True

    def _issue_one(self):
        """Stage 3: one head acts, round-robin over the queues."""
        if not self.regs.values[_ISSUE] & _ISSUE_ENABLE:
            return False
        queues, engines, events, depth = self.queues, self.engines, self.events, self.fifo_depth
        for q in _RR_ORDER[self._rr_issue]:
            s = queues[q]
            if not s.fifo:
                continue                               # no head: nothing to act
            what = s.fifo[0][2]
            kind = what[0]
            # Heads that cannot act whether or not the queue is offered (_issue would say no);
            # a failed list's items and end go through _issue.
            if s.list_fail is None and (
                    kind == _FIRMWARE
                    or kind == _ENGINE and engines[what[1]].issued >= depth
                    or kind == _WAIT and (events[what[1]] - what[2]) & M32 >= 0x8000_0000):
                continue
            if self._issue(q):
                self._rr_issue = q
                return True
        if self._skip_idle:
            self._issue_dirty = False    # no head can act until something changes (see __init__)
        return False

    def _retire_one(self):
        """Stage 1: one retirement leaves its engine's retire FIFO (round-robin over the engines)
        and marks its window entry done."""
        for k in range(1, ENGINES + 1):
            e = (self._rr_retire + k) % ENGINES
            eng = self.engines[e]
            if not eng.retire:
                continue
            self._rr_retire = e
            code, tag = eng.retire.popleft()
            self._n_retire -= 1
            self._done_dirty = self._issue_dirty = True   # a done slot; room in the engine
            eng.issued -= 1
            eng.since = self.now
            s = self.queues[tag >> _TAG_Q_SHIFT]
            slot = s.window[((tag & _TAG_INDEX) - s.rd) & _TAG_INDEX]
            assert not slot.done, (slot, tag)
            slot.done, slot.status = True, code
            if code != ErrorCode.OK:
                s.failed = True
            return True
        return False

    def _complete_one(self):
        """Stage 2: every queue whose oldest window entry is a done list item drops it (no
        record; the first that failed fails its list); then, while the completion writer has room,
        one other queue whose oldest window entry is done gets its completion request (round-robin
        over the queues; a list's end with the list's status); R += 1."""
        silent = 0
        if self._skip_idle and not any(s.window and s.window[0].done for s in self.queues):
            self._done_dirty = False     # no window head is done (see __init__)
            return False
        for q, s in enumerate(self.queues):
            if s.window and s.window[0].done and s.window[0].mark == _ITEM:
                slot = s.window.popleft()
                s.rd = (s.rd + 1) & M32
                silent |= 1 << q
                if slot.status != ErrorCode.OK and s.list_fail is None:
                    s.list_fail = (slot.status, slot.pos)
        if silent:
            self._issue_dirty = True     # room in the window
        if len(self._cpl) >= self.cpl_depth:
            return bool(silent)
        for k in range(1, QUEUES + 1):
            q = (self._rr_complete + k) % QUEUES
            s = self.queues[q]
            if silent >> q & 1 or not s.window or not s.window[0].done:
                continue
            self._rr_complete = q
            slot = s.window.popleft()
            self._issue_dirty = True     # room in the window
            s.rd = (s.rd + 1) & M32
            w0, status, item = slot.w0, slot.status, 0
            if slot.mark == _END and s.list_fail is not None:
                (status, pos), s.list_fail = s.list_fail, None
                item = (pos + 1) & 0xFFFF
            self._cpl.append(_CplRequest(
                queue=q, irq=bool(w0 & _IRQ_FLAG), halt=status != ErrorCode.OK,
                flags=w0 >> _FLAGS_LSB & 0xFF, status=status, opcode=w0 & 0xFF,
                tag=w0 >> _TAG_LSB & 0xFFFF, timestamp=self.now & M32,
                due=self.now + self._delay(self.cpl_latency), item=item))
            return True
        return bool(silent)

    # ================================================================== engines
    def _engine_start(self, e):
        eng = self.engines[e]
        cmd = eng.fifo.popleft()
        hr = self._host_regs
        cmd.window = (hr[_Q_WINDOW_BASE[cmd.queue]], hr[_Q_WINDOW_SIZE[cmd.queue]])
        eng.current = cmd
        eng.due = self.now + max(1, self._delay(self.engine_delay))
        if (e in _DMA and self.dev.blackhole is not None
                and self.dev.reaches_blackhole(cmd.words, cmd.window)):
            if self._bus_limit():
                eng.due += self._bus_limit()        # then fails with BUS_TIMEOUT
            else:
                eng.frozen = True                   # waits on the bus until reset
        if eng.armed:
            eng.armed, eng.frozen = False, True

    def _retired(self, e, code, tag):
        """Engine e puts a retirement in its retire FIFO (the issue unit drains it)."""
        eng = self.engines[e]
        # It holds at most the engine's issued commands (fewer than caps.fifo_depth < RETIRE_DEPTH).
        assert len(eng.retire) < RETIRE_DEPTH, f"{ENGINE_NAMES[e]} retire FIFO overflow"
        eng.retire.append((int(code), tag))
        self._n_retire += 1

    def _engine_finish(self, e):
        eng = self.engines[e]
        cmd = eng.current
        eng.current = None
        code = self.dev.submit(cmd.words, window=cmd.window if e in _DMA else None)
        self._host_regs[_DONE[e]] = (self._host_regs[_DONE[e]] + 1) & M32
        if code == ErrorCode.OK:
            self._count_dma_bytes(e, cmd.words)
        self._retired(e, code, cmd.tag)
        if eng.fifo:
            self._engine_start(e)

    def _engine_reset(self, value):
        """ENGINE_RESET: each engine named abandons its command (retired with WATCHDOG, after the
        retirements already in its FIFO; DONE_* does not count it) and starts its next one."""
        bits = M.ENGINE_RESET.ENGINE.get(value)
        for e in range(ENGINES):
            if not bits >> e & 1:
                continue
            eng = self.engines[e]
            if eng.current is not None:
                self._retired(e, ErrorCode.WATCHDOG, eng.current.tag)
            eng.current, eng.frozen, eng.armed = None, False, False
            eng.since = self.now
            if eng.fifo:
                self._engine_start(e)
