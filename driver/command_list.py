"""Command lists: a :class:`~driver.program.Program` recorded once per queue as ``EXEC_LIST``
entries, replayed with one descriptor per queue (docs/queues.md "Command lists", docs/driver.md
"Command lists").

:func:`record` is pure (no device access): per program queue a tuple of :class:`RecordedList`
**segments**, each one ``EXEC_LIST`` (one segment unless the queue is folded, below), holding the
bytes to put in device-visible memory (each entry a 32-byte descriptor, followed by a 32-byte
patch block when it has patches), the entry count and the **argument slots**, the words of the
list's argument table in a fixed order:

1. each buffer a relocation of the queue's commands uses, in the program's declaration order
   (the buffer's address; a relocated field holds the buffer offset and gets a patch adding it);
2. each program event the queue's SIGNAL/WAIT_EVENTs use, ascending: the device event index, then
   the base value (the ``event`` field holds 0 and the ``value`` field the relative value; the
   patches add them, the value wrapping modulo 2**32);
3. each scalar parameter (:class:`~driver.program.Param`) the queue uses, sorted by name (the
   field holds the command's value and gets a patch adding the parameter).

The patched descriptors are those :meth:`Program.bind <driver.program.Program.bind>` produces
for the same bindings, except the tag: entry ``i`` of a list has tag ``i`` (items write no
records; a failed list's record names its failed item by its run position, ``item`` = 1 + the
position: :meth:`RecordedList.item`).

**Folding** (``record(program, fold=True)``; the device-side tile loop of Gemmini's ``LOOP_WS``,
docs/queues.md "Looped lists"): a compiled schedule repeats itself: every M tile, N group or
layer issues the same commands with host addresses, scratchpad addresses and event values
advanced by a constant. :func:`find_loop` finds in a queue's commands the run ``start .. start +
passes × period`` whose commands equal those ``period`` earlier except for relocation offsets,
payload fields and event values that advance by the same amount every pass; that run becomes one
**looped** segment of ``period`` entries run ``passes`` times, whose argument slots carry a
**stride** (a buffer used with two strides gets two slots; a walking payload field gets a patch
from a ``walk`` slot of value 0), and the commands before and after it are folded the same way. A loop is
taken when it saves at least ``min_saving`` entries (:data:`MIN_LOOP_SAVING`): the engines receive
exactly the commands of the unfolded list, the device fetches the same 32-byte bursts per item
plus ``ceil(args / 8)`` fetcher cycles per pass (docs/queues.md), so what folding buys is the
list's memory and its one-time write, which grow with the model (a decode step of ten layers
records one layer).

**Splitting**: one list's argument table holds ``LIST_ARGS`` words and one list ``MAX_ENTRIES``
entries; a run of a queue's commands recorded once that needs more is cut into consecutive
segments, each ending before the command that would overflow its table (greedy; a compiled
model's load queue touches every weight buffer, a KV-cache step every page of its batch). Each
segment is one more ``EXEC_LIST`` (a ring slot, one argument-table burst per 8 words).

Limits (a :class:`~driver.program.ProgramError` names the program, queue, count and what they
are): ``LIST_PATCHES`` patches per command, a looped segment's slots within one table; a
relocated or parametrized field must be one a patch can reach (at most 64 bits within two
adjacent words, outside word 0).
"""
from dataclasses import dataclass

import numpy as np

from spec import commands
from spec.descriptors import (DESCRIPTOR_BITS, DESCRIPTOR_FIELDS, DESCRIPTOR_WORDS, LIST_ARGS,
                              LIST_ENTRY_FIELDS, LIST_FIELDS, LIST_PATCHES, PATCH_FIELDS, Opcode)
from .program import EVENT_OPS, M32, ProgramError, check_param_value

__all__ = ["ArgSlot", "RecordedList", "record", "args_bytes", "MAX_ENTRIES"]

ENTRY_BYTES = 4 * DESCRIPTOR_WORDS
#: commands one list can hold (the EXEC_LIST ``entries`` field)
MAX_ENTRIES = (1 << LIST_FIELDS["entries"][1]) - 1
#: the first bit a patch may touch (opcode, flags and tag, word 0, are not patched)
_FIRST_PATCHABLE = max(lsb + width for lsb, width in DESCRIPTOR_FIELDS.values())
_P_LSB, _P_WIDTH = LIST_ENTRY_FIELDS["patches"]
assert _P_LSB // 32 == (_P_LSB + _P_WIDTH - 1) // 32 and LIST_PATCHES < 1 << _P_WIDTH, \
    "the patch count is one field of one word"


#: the fewest entries a loop must save to be folded (record(fold=True))
MIN_LOOP_SAVING = 16


@dataclass(frozen=True)
class ArgSlot:
    """One word of a list's argument table: ``kind`` ``"buffer"`` (``name``: the buffer's address),
    ``"event_index"`` / ``"event_base"`` (``name``: the program event; its device event counter,
    its base value), ``"param"`` (``name``: the parameter's value) or ``"walk"`` (0: a looped
    list's field that advances by ``stride`` per pass); ``stride``: what a looped list adds to
    the word after each pass (mod 2**32)."""
    kind: str
    name: object
    stride: int = 0

    def __str__(self):
        if self.kind == "buffer":
            what = f"buffer {self.name!r}"
        elif self.kind == "param":
            what = f"param {self.name!r}"
        elif self.kind == "walk":
            return f"walk stride {self.stride}"
        else:
            what = f"event {self.name} {self.kind[len('event_'):]}"
        return what + (f" stride {self.stride}" if self.stride else "")


@dataclass(frozen=True)
class RecordedList:
    """One program queue's commands as a command list (see the module docstring)."""
    program: str
    queue: int
    data: bytes            #: entries and patch blocks, to write at the list's (32-byte aligned) address
    entries: int           #: entries in the list (a looped list: per pass)
    slots: tuple           #: ArgSlot per argument word, in table order
    commands: tuple        #: the ProgramCommand of each item, every pass
    buffer_align: tuple = ()    #: (buffer name, alignment) of the buffer slots
    first: int = 0         #: the queue position of the segment's first command
    passes: int = 1        #: passes over the entries (> 1: a looped list)

    @property
    def nargs(self):
        return len(self.slots)

    @property
    def table_bytes(self):
        """Bytes of the argument table (a looped list's strides follow the arguments)."""
        return len(self.table([0] * self.nargs))

    def table(self, words):
        """The argument table for argument ``words`` (:meth:`args`): the words, and for a looped
        list the slots' strides, each part padded to whole 32-byte bursts."""
        out = args_bytes(words)
        if self.passes > 1:
            out += args_bytes([s.stride for s in self.slots])
        return out or bytes(ENTRY_BYTES)

    def args(self, addresses, events=None, params=None):
        """The argument words for a launch: ``addresses`` buffer name -> host address, ``events``
        program event -> (device event, base value), ``params`` name -> value (as
        :meth:`Program.bind <driver.program.Program.bind>` takes them). Raises ProgramError
        naming a missing or misaligned binding or a bad value."""
        events, params = events or {}, params or {}
        align = dict(self.buffer_align)
        where = f"program {self.program!r}, queue {self.queue}"
        out = []
        for s in self.slots:
            if s.kind == "buffer":
                if s.name not in addresses:
                    raise ProgramError(f"{where}: buffer {s.name!r} is not bound")
                a = addresses[s.name]
                if not isinstance(a, int) or not 0 <= a <= M32:
                    raise ProgramError(f"{where}: buffer {s.name!r} bound at {a!r}, not a 32-bit "
                                       f"address (a list argument is one 32-bit word)")
                if a % align[s.name]:
                    raise ProgramError(f"{where}: buffer {s.name!r} bound at {a:#x}, not "
                                       f"{align[s.name]}-byte aligned")
                out.append(a)
            elif s.kind == "walk":
                out.append(0)
            elif s.kind == "param":
                if s.name not in params:
                    raise ProgramError(f"{where}: parameter {s.name!r} is not given")
                out.append(check_param_value(s.name, params[s.name]))
            else:
                if s.name not in events:
                    raise ProgramError(f"{where}: program event {s.name} is not bound")
                dev_event, base = events[s.name]
                out.append((dev_event if s.kind == "event_index" else base) & M32)
        return out

    def descriptor(self, list_addr, args_addr, *, tag=0, irq=True):
        """The EXEC_LIST descriptor (8 words) running this list from ``list_addr`` with its
        argument table at ``args_addr``."""
        return commands.encode(Opcode.EXEC_LIST, irq=irq, tag=tag, list_addr=list_addr,
                               entries=self.entries, args_addr=args_addr, args=self.nargs,
                               loops_m1=self.passes - 1)

    def item(self, pos):
        """``(queue position, ProgramCommand)`` of the item at run position ``pos`` (pass ×
        entries + entry; a failed list's record carries ``item`` = 1 + pos)."""
        if not 0 <= pos < len(self.commands):
            raise ProgramError(f"program {self.program!r}, queue {self.queue}: item {pos} is not in "
                               f"the list of {len(self.commands)}")
        return self.first + pos, self.commands[pos]

    def describe_slots(self):
        return ", ".join(f"{k}: {s}" for k, s in enumerate(self.slots))


def args_bytes(words):
    """An argument table's bytes: the words little-endian, padded to whole 32-byte bursts (the
    device reads ``ceil(args / 8)`` of them)."""
    raw = b"".join((w & M32).to_bytes(4, "little") for w in words)
    return raw + bytes(-len(raw) % ENTRY_BYTES)


def _patch_word(program, queue, i, c, field, width_lsb, arg):
    lsb, width = width_lsb
    if lsb < _FIRST_PATCHABLE or lsb + width > DESCRIPTOR_BITS or lsb % 32 + width > 64:
        raise ProgramError(f"program {program.name!r}, queue {queue}, command {i} ({c.note}): field "
                           f"{field!r} (bits {lsb}..{lsb + width - 1}) cannot be patched in a command "
                           f"list (a patch covers at most 64 bits of two adjacent words, not word 0)")
    word = commands.put_field(0, PATCH_FIELDS, "pos", lsb)
    word = commands.put_field(word, PATCH_FIELDS, "width_m1", width - 1)
    return commands.put_field(word, PATCH_FIELDS, "arg", arg)


def _moving(c):
    """The payload fields of ``c`` a loop may walk (all but an event command's event index)."""
    return tuple(sorted(k for k in c.fields if not (c.opcode in EVENT_OPS and k == "event")))


def _key(c):
    """What must be equal in two commands of a loop's passes: all but the relocation offsets and
    the values of the payload fields (those may advance by a constant per pass)."""
    return (c.opcode, c.irq, c.fields.get("event") if c.opcode in EVENT_OPS else None, _moving(c),
            tuple((r.field, r.buffer) for r in c.relocs), c.params)


def _delta(a, b):
    """What ``b`` adds to ``a``: per relocation its offset's, then per :func:`_moving` field its
    value's (an event value's modulo 2**32, as the device's timeline compares)."""
    d = tuple(rb.offset - ra.offset for ra, rb in zip(a.relocs, b.relocs))
    return d + tuple((b.fields[k] - a.fields[k]) & M32 if _wraps(a, k) else b.fields[k] - a.fields[k]
                     for k in _moving(a))


def _wraps(c, name):
    return c.opcode in EVENT_OPS and name == "value"


def _scaled(c, delta, t):
    """``delta`` of command ``c`` after ``t`` passes."""
    n = len(c.relocs)
    return tuple(d * t for d in delta[:n]) + tuple(
        d * t & M32 if _wraps(c, k) else d * t for k, d in zip(_moving(c), delta[n:]))


def _strides(body, cmds, passes):
    """Per body command: the pass-to-pass advance of each relocation offset and payload field
    (all 0 for a list run once)."""
    if passes == 1:
        return [_delta(c, c) for c in body]
    return [_delta(c, cmds[len(body) + j]) for j, c in enumerate(body)]


def _event_step(c, ds):
    """The per-pass advance of event command ``c``'s value (its event base slot's stride)."""
    return ds[len(c.relocs) + _moving(c).index("value")] if "value" in c.fields else 0


def _slot_sets(body, strides):
    """The argument slots a segment needs, unordered: ``(buffer, stride)`` pairs, ``{event:
    {base strides}}``, parameter names and walk strides."""
    buffers = {(r.buffer, d & M32) for c, ds in zip(body, strides) for r, d in zip(c.relocs, ds)}
    bases = {}
    for c, ds in zip(body, strides):
        if c.opcode in EVENT_OPS:
            bases.setdefault(c.fields["event"], set()).add(_event_step(c, ds))
    params = {p.name for c in body for p in c.params}
    walks = {d & M32 for c, ds in zip(body, strides) for _, d in _walks(c, ds)}
    return buffers, bases, params, walks


def _slot_count(sets):
    buffers, bases, params, walks = sets
    return len(buffers) + sum(1 + len(b) for b in bases.values()) + len(params) + len(walks)


def _walks(c, ds):
    """``(field, stride)`` of the payload fields of ``c`` that advance per pass (not an event
    command's value: its event base slot walks)."""
    return [(k, d) for k, d in zip(_moving(c), ds[len(c.relocs):]) if d and not _wraps(c, k)]


def _slots(program, body, strides, where):
    buffers, bases, params, walks = _slot_sets(body, strides)
    slots = [ArgSlot("buffer", name, d) for name in program.buffers
             for d in sorted(d for b, d in buffers if b == name)]
    for e in sorted(bases):
        slots += [ArgSlot("event_index", e)] + [ArgSlot("event_base", e, d) for d in sorted(bases[e])]
    slots += [ArgSlot("param", n) for n in sorted(params)]
    slots += [ArgSlot("walk", None, d) for d in sorted(walks)]
    if len(slots) > LIST_ARGS:
        raise ProgramError(
            f"{where}: {len(slots)} argument slots, more than the "
            f"{LIST_ARGS} (LIST_ARGS) a command list can load: "
            + ", ".join(map(str, slots)) + " (split the buffers across queues, or merge buffers)")
    return slots


def _record_segment(program, queue, cmds, first, period, passes):
    """The segment of queue ``queue``'s commands ``cmds[first:first + period * passes]``: entries
    ``period`` commands run ``passes`` times."""
    body, run = cmds[first:first + period], tuple(cmds[first:first + period * passes])
    where = f"program {program.name!r}, queue {queue}"
    if passes > 1:
        where += f", loop of {period} commands x {passes} from command {first}"
    strides = _strides(body, run, passes)
    slots = _slots(program, body, strides, where)
    index = {s: k for k, s in enumerate(slots)}
    data = bytearray()
    for i, (c, ds) in enumerate(zip(body, strides)):
        layout = commands.PAYLOAD_FIELDS[Opcode(c.opcode)]
        fields = dict(c.fields)
        patches, what = [], []
        seen = set()
        for r, d in zip(c.relocs, ds):
            if r.field in seen:
                raise ProgramError(f"{where}, command {first + i} ({c.note}): "
                                   f"two relocations of field {r.field!r}")
            seen.add(r.field)
            fields[r.field] = r.offset
            patches.append((r.field, index[ArgSlot("buffer", r.buffer, d & M32)]))
            what.append(f"{r.field} += buffer {r.buffer!r}")
        if c.opcode in EVENT_OPS:
            e = c.fields["event"]
            fields["event"] = 0
            patches += [("event", index[ArgSlot("event_index", e)]),
                        ("value", index[ArgSlot("event_base", e, _event_step(c, ds))])]
            what += [f"event += event {e} index", f"value += event {e} base"]
        for p in c.params:
            patches.append((p.field, index[ArgSlot("param", p.name)]))
            what.append(f"{p.field} += param {p.name!r}")
        for k, d in _walks(c, ds):
            patches.append((k, index[ArgSlot("walk", None, d & M32)]))
            what.append(f"{k} += {d} per pass")
        if len(patches) > LIST_PATCHES:
            raise ProgramError(f"{where}, command {first + i} ({c.note}): "
                               f"{len(patches)} patches, more than the {LIST_PATCHES} (LIST_PATCHES) "
                               f"of a list entry: " + ", ".join(what))
        try:
            words = commands.encode(c.opcode, irq=c.irq, tag=i, **fields)
        except ValueError as e:
            raise ProgramError(f"{where}, command {first + i} ({c.note}): {e}") from None
        words[_P_LSB // 32] |= len(patches) << _P_LSB % 32
        data += b"".join(w.to_bytes(4, "little") for w in words)
        if patches:
            block = [_patch_word(program, queue, first + i, c, f, layout[f], arg) for f, arg in patches]
            block += [0] * (DESCRIPTOR_WORDS - len(block))
            data += b"".join(w.to_bytes(4, "little") for w in block)
    align = tuple((s.name, program.buffers[s.name].align) for s in slots if s.kind == "buffer")
    return RecordedList(program.name, queue, bytes(data), len(body), tuple(slots), run, align,
                        first, passes)


def find_loop(cmds, min_saving=MIN_LOOP_SAVING):
    """``(start, period, passes)`` of the loop in ``cmds`` (ProgramCommands of one queue) that
    saves the most entries, ``(passes - 1) × period`` ≥ ``min_saving``, or None: commands
    ``start + t × period + j`` (t < passes) equal command ``start + j`` but for relocation
    offsets, payload fields and event values advancing by the same amount every pass (module
    docstring)."""
    n = len(cmds)
    ids = {}
    keys = np.array([ids.setdefault(_key(c), len(ids)) for c in cmds], dtype=np.int64)
    runs = []                     # (possible saving, start, period, passes)
    for period in range(1, n // 2 + 1):
        eq = np.concatenate(([False], keys[:-period] == keys[period:], [False]))
        edges = np.flatnonzero(eq[1:] != eq[:-1])
        for a, b in zip(edges[::2], edges[1::2]):
            passes = min((b - a) // period + 1, (1 << LIST_FIELDS["loops_m1"][1]),
                         MAX_ENTRIES // period)
            if (passes - 1) * period >= min_saving:
                runs.append(((passes - 1) * period, int(a), period, int(passes)))
    best = None
    for saving, start, period, passes in sorted(runs, reverse=True):
        if best is not None and saving <= best[0]:
            break
        body = cmds[start:start + period]
        step = [_delta(c, cmds[start + period + j]) for j, c in enumerate(body)]
        ok = 2
        while ok < passes and all(
                _scaled(c, step[j], ok) == _delta(c, cmds[start + ok * period + j])
                for j, c in enumerate(body)):
            ok += 1
        if ((ok - 1) * period >= min_saving and (best is None or (ok - 1) * period > best[0])
                and _loopable(body, step, ok)):
            best = ((ok - 1) * period, start, period, ok)
    return best and best[1:]


def _loopable(body, step, passes):
    """Whether the device can walk ``body`` ``passes`` times with these per-pass steps: an
    argument walks up only (an address is an unsigned 32-bit word; a field of at most 32 bits
    wraps with it), every walking field can be patched, and the slots and patches fit."""
    for c, ds in zip(body, step):
        if any(d < 0 for d in ds[:len(c.relocs)]):
            return False
        layout = commands.PAYLOAD_FIELDS[Opcode(c.opcode)]
        walks = _walks(c, ds)
        for k, d in walks:
            lsb, width = layout[k]
            if lsb < _FIRST_PATCHABLE or lsb % 32 + width > 64:
                return False
            if width > 32 and not 0 <= d * (passes - 1) <= M32:
                return False
        if (len(c.relocs) + 2 * (c.opcode in EVENT_OPS) + len(c.params) + len(walks)
                > LIST_PATCHES):
            return False
    return _slot_count(_slot_sets(body, step)) <= LIST_ARGS


def _fold(cmds, lo, hi, min_saving):
    """Segments ``(first, period, passes)`` covering ``cmds[lo:hi]``."""
    if hi <= lo:
        return []
    loop = find_loop(cmds[lo:hi], min_saving)
    if loop is None:
        return [(lo, hi - lo, 1)]
    start, period, passes = loop
    start += lo
    return (_fold(cmds, lo, start, min_saving) + [(start, period, passes)]
            + _fold(cmds, start + period * passes, hi, min_saving))


def _split(cmds, first, count):
    """Segments ``(first, period, 1)`` covering ``cmds[first:first + count]`` in order, each as
    long as its argument slots fit the LIST_ARGS words of one table (greedy) and its entries one
    list. A single command needing more slots than a table holds is left to ``_slots``'s error."""
    out, start, used = [], first, _SlotUse()
    for i in range(first, first + count):
        if not used.add(cmds[i]) or i - start >= MAX_ENTRIES:
            if i > start:
                out.append((start, i - start, 1))
            start, used = i, _SlotUse()
            used.add(cmds[i])
    out.append((start, first + count - start, 1))
    return out


class _SlotUse:
    """The argument slots of a run of commands recorded once (no strides), counted as they are
    added (``_slot_sets`` of the run, incrementally)."""

    def __init__(self):
        self.buffers, self.events, self.params = set(), set(), set()

    def add(self, c):
        """Add command ``c``; False (and nothing added) when its slots would exceed LIST_ARGS."""
        buffers = self.buffers | {r.buffer for r in c.relocs}
        events = self.events | ({c.fields["event"]} if c.opcode in EVENT_OPS else set())
        params = self.params | {p.name for p in c.params}
        if len(buffers) + 2 * len(events) + len(params) > LIST_ARGS and self.buffers | self.events | self.params:
            return False
        self.buffers, self.events, self.params = buffers, events, params
        return True


def _record_queue(program, queue, fold, min_saving):
    cmds = [c for c in program.commands if c.queue == queue]
    folded = _fold(cmds, 0, len(cmds), min_saving) if fold else [(0, len(cmds), 1)]
    segments = [seg for first, period, passes in folded
                for seg in ([(first, period, passes)] if passes > 1 else _split(cmds, first, period))]
    for first, period, passes in segments:
        if period > MAX_ENTRIES:
            raise ProgramError(f"program {program.name!r}, queue {queue}: {period} commands, more "
                               f"than the {MAX_ENTRIES} entries of one command list")
    return tuple(_record_segment(program, queue, cmds, *seg) for seg in segments)


def record(program, *, fold=False, min_saving=MIN_LOOP_SAVING):
    """``{program queue: (RecordedList, ...)}``: the segments of every queue ``program`` uses, in
    order (one, unless ``fold`` finds loops; see the module docstring). Raises ProgramError for an
    invalid program or one beyond the limits."""
    program.validate()
    return {q: _record_queue(program, q, fold, min_saving) for q in program.queues}
