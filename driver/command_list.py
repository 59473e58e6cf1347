"""Command lists: a :class:`~driver.program.Program` recorded once per queue as ``EXEC_LIST``
entries, replayed with one descriptor per queue (docs/queues.md "Command lists", docs/driver.md
"Command lists").

:func:`record` is pure (no device access): per program queue a :class:`RecordedList` holding the
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
for the same bindings, except the tag: item ``i`` of a list (the queue's ``i``-th command) has tag
``i`` (items write no records; a failed list's record names its failed item by its position,
``item`` = 1 + ``i``: :meth:`RecordedList.item`).

Limits (a :class:`~driver.program.ProgramError` names the program, queue, count and what they
are): at most ``LIST_ARGS`` argument slots per queue, ``LIST_PATCHES`` patches per command and
65535 commands per queue; a relocated or parametrized field must be one a patch can reach
(at most 64 bits within two adjacent words, outside word 0).
"""
from dataclasses import dataclass

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


@dataclass(frozen=True)
class ArgSlot:
    """One word of a list's argument table: ``kind`` ``"buffer"`` (``name``: the buffer's address),
    ``"event_index"`` / ``"event_base"`` (``name``: the program event; its device event counter,
    its base value) or ``"param"`` (``name``: the parameter's value)."""
    kind: str
    name: object

    def __str__(self):
        if self.kind == "buffer":
            return f"buffer {self.name!r}"
        if self.kind == "param":
            return f"param {self.name!r}"
        return f"event {self.name} {self.kind[len('event_'):]}"


@dataclass(frozen=True)
class RecordedList:
    """One program queue's commands as a command list (see the module docstring)."""
    program: str
    queue: int
    data: bytes            #: entries and patch blocks, to write at the list's (32-byte aligned) address
    entries: int           #: entries in the list (the queue's commands)
    slots: tuple           #: ArgSlot per argument word, in table order
    commands: tuple        #: the ProgramCommand of each item
    buffer_align: tuple = ()    #: (buffer name, alignment) of the buffer slots

    @property
    def nargs(self):
        return len(self.slots)

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
                               entries=self.entries, args_addr=args_addr, args=self.nargs)

    def item(self, pos):
        """``(pos, ProgramCommand)`` of item ``pos`` (a failed list's record carries ``item`` =
        1 + pos; the item's own tag is ``pos`` too)."""
        if not 0 <= pos < self.entries:
            raise ProgramError(f"program {self.program!r}, queue {self.queue}: item {pos} is not in "
                               f"the list of {self.entries}")
        return pos, self.commands[pos]

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


def _slots(program, cmds, queue):
    used = {r.buffer for c in cmds for r in c.relocs}
    slots = [ArgSlot("buffer", name) for name in program.buffers if name in used]
    for e in sorted({c.fields["event"] for c in cmds if c.opcode in EVENT_OPS}):
        slots += [ArgSlot("event_index", e), ArgSlot("event_base", e)]
    slots += [ArgSlot("param", n) for n in sorted({p.name for c in cmds for p in c.params})]
    if len(slots) > LIST_ARGS:
        raise ProgramError(
            f"program {program.name!r}, queue {queue}: {len(slots)} argument slots, more than the "
            f"{LIST_ARGS} (LIST_ARGS) a command list can load: "
            + ", ".join(map(str, slots)) + " (split the buffers across queues, or merge buffers)")
    return slots


def _record_queue(program, queue):
    cmds = [c for c in program.commands if c.queue == queue]
    if len(cmds) > MAX_ENTRIES:
        raise ProgramError(f"program {program.name!r}, queue {queue}: {len(cmds)} commands, more "
                           f"than the {MAX_ENTRIES} entries of one command list")
    slots = _slots(program, cmds, queue)
    index = {s: k for k, s in enumerate(slots)}
    data = bytearray()
    for i, c in enumerate(cmds):
        layout = commands.PAYLOAD_FIELDS[Opcode(c.opcode)]
        fields = dict(c.fields)
        patches, what = [], []
        seen = set()
        for r in c.relocs:
            if r.field in seen:
                raise ProgramError(f"program {program.name!r}, queue {queue}, command {i} ({c.note}): "
                                   f"two relocations of field {r.field!r}")
            seen.add(r.field)
            fields[r.field] = r.offset
            patches.append((r.field, index[ArgSlot("buffer", r.buffer)]))
            what.append(f"{r.field} += buffer {r.buffer!r}")
        if c.opcode in EVENT_OPS:
            e = c.fields["event"]
            fields["event"] = 0
            patches += [("event", index[ArgSlot("event_index", e)]),
                        ("value", index[ArgSlot("event_base", e)])]
            what += [f"event += event {e} index", f"value += event {e} base"]
        for p in c.params:
            patches.append((p.field, index[ArgSlot("param", p.name)]))
            what.append(f"{p.field} += param {p.name!r}")
        if len(patches) > LIST_PATCHES:
            raise ProgramError(f"program {program.name!r}, queue {queue}, command {i} ({c.note}): "
                               f"{len(patches)} patches, more than the {LIST_PATCHES} (LIST_PATCHES) "
                               f"of a list entry: " + ", ".join(what))
        try:
            words = commands.encode(c.opcode, irq=c.irq, tag=i, **fields)
        except ValueError as e:
            raise ProgramError(f"program {program.name!r}, queue {queue}, command {i} ({c.note}): {e}") from None
        words[_P_LSB // 32] |= len(patches) << _P_LSB % 32
        data += b"".join(w.to_bytes(4, "little") for w in words)
        if patches:
            block = [_patch_word(program, queue, i, c, f, layout[f], arg) for f, arg in patches]
            block += [0] * (DESCRIPTOR_WORDS - len(block))
            data += b"".join(w.to_bytes(4, "little") for w in block)
    align = tuple((s.name, program.buffers[s.name].align) for s in slots if s.kind == "buffer")
    return RecordedList(program.name, queue, bytes(data), len(cmds), tuple(slots), tuple(cmds), align)


def record(program):
    """``{program queue: RecordedList}`` for every queue ``program`` uses (see the module
    docstring). Raises ProgramError for an invalid program or one beyond the limits."""
    program.validate()
    return {q: _record_queue(program, q) for q in program.queues}
