"""Programs: compiled, relocatable command streams with named buffer bindings.

The compiler emits a :class:`Program`; the driver binds it to concrete host buffers and device
events and submits the result, as many times as it likes with different buffers. A program knows
nothing of addresses or device event numbers:

* every host address in a command is a :class:`Reloc` — ``buffer`` + ``offset`` — patched into the
  descriptor field at bind time;
* events are program-relative (0 .. ``events``-1) with values relative to the start of the run; at
  bind time each maps to a device event counter and a base value, so reruns keep the timeline
  increasing (SIGNAL_EVENT ``value`` and WAIT_EVENT ``value`` become ``base + value``, wrapping at
  2**32 as the hardware's wrap-safe compare allows);
* a :class:`Param` adds a named scalar launch parameter (an unsigned 32-bit value, e.g. a KV-cache
  offset) to a descriptor field at bind time, modulo 2**width of the field.

The same three bindings are what a recorded command list (driver/command_list.py) patches on the
device at each launch.
"""
from dataclasses import dataclass, field, replace

from spec import commands
from spec.descriptors import ENGINE_OPCODES, Opcode

__all__ = ["BufferSpec", "Reloc", "Param", "ProgramCommand", "Program", "ProgramError", "reached"]

ROLES = ("input", "output", "inout", "scratch", "const")
EVENT_OPS = (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT)
M32 = 0xFFFF_FFFF


def reached(counter, value):
    """Wrap-safe ``counter >= value`` of 32-bit timeline values: the hardware's and firmware's
    ``(int32)(counter - value) >= 0`` (every event and index compare in the stack uses it)."""
    return ((counter - value) & 0xFFFF_FFFF) < 0x8000_0000


def _blocked(cmd, counters):
    """A WAIT_EVENT whose program-relative value is not reached."""
    return cmd.opcode == Opcode.WAIT_EVENT and not reached(counters[cmd.fields["event"]],
                                                           cmd.fields.get("value", 0))


class ProgramError(ValueError):
    """A malformed program or binding; the message names the command, buffer or event."""


@dataclass(frozen=True)
class BufferSpec:
    """A host buffer the program reads or writes: ``nbytes`` bytes aligned to ``align``.

    ``role``: ``input`` (the caller fills it), ``output`` (the caller reads it), ``inout``,
    ``scratch`` (device-only intermediate) or ``const`` (e.g. weights, filled once); ``init``
    optionally holds the bytes of a ``const`` buffer.
    """
    name: str
    nbytes: int
    align: int = 64
    role: str = "scratch"
    init: bytes = None

    def __post_init__(self):
        if self.nbytes <= 0:
            raise ProgramError(f"buffer {self.name!r}: nbytes must be positive, not {self.nbytes}")
        if self.align <= 0 or self.align & (self.align - 1):
            raise ProgramError(f"buffer {self.name!r}: align must be a power of two, not {self.align}")
        if self.role not in ROLES:
            raise ProgramError(f"buffer {self.name!r}: role must be one of {ROLES}, not {self.role!r}")
        if self.init is not None and len(self.init) != self.nbytes:
            raise ProgramError(f"buffer {self.name!r}: init has {len(self.init)} bytes, not {self.nbytes}")


@dataclass(frozen=True)
class Reloc:
    """Descriptor field ``field`` (e.g. ``host_addr``) = address of ``buffer`` + ``offset``."""
    field: str
    buffer: str
    offset: int = 0


@dataclass(frozen=True)
class Param:
    """Descriptor field ``field`` += the value of scalar launch parameter ``name`` (an unsigned
    32-bit int given at bind or launch time; the sum is taken modulo 2**width of the field, so a
    field that also has a :class:`Reloc` gets address + offset + value)."""
    field: str
    name: str


@dataclass(frozen=True)
class ProgramCommand:
    """One descriptor of a program, on queue ``queue``; ``fields`` are its non-relocated payload
    fields (for SIGNAL/WAIT_EVENT: program event and relative value); ``params``: its
    :class:`Param` additions."""
    queue: int
    opcode: Opcode
    fields: dict = field(default_factory=dict)
    relocs: tuple = ()
    irq: bool = False
    tag: int = 0
    note: str = ""        #: what the command is for (the report and the trace show it)
    params: tuple = ()


def check_param_value(name, value):
    """ProgramError unless ``value`` (of parameter ``name``) is an int in 0..2**32-1."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= M32:
        raise ProgramError(f"parameter {name!r} = {value!r}: must be an int in 0..{M32}")
    return value


@dataclass
class Program:
    """A command stream over named buffers; see the module docstring."""
    name: str
    buffers: dict = field(default_factory=dict)        #: name -> BufferSpec
    commands: list = field(default_factory=list)       #: ProgramCommand, in submission order per queue
    events: int = 0                                    #: program-relative event counters used

    def add_buffer(self, spec):
        if spec.name in self.buffers:
            raise ProgramError(f"program {self.name!r}: buffer {spec.name!r} declared twice")
        self.buffers[spec.name] = spec
        return spec

    def add(self, cmd):
        self.commands.append(cmd)
        return cmd

    @property
    def queues(self):
        return sorted({c.queue for c in self.commands})

    @property
    def params(self):
        """The names of the scalar parameters the commands use, sorted."""
        return sorted({p.name for c in self.commands for p in c.params})

    def check_params(self, params):
        """ProgramError unless ``params`` (name -> value) gives exactly the program's parameters,
        each an int in 0..2**32-1."""
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ProgramError(f"params must be a dict of name -> int, not {type(params).__name__}")
        names = self.params
        for name in names:
            if name not in params:
                raise ProgramError(f"parameter {name!r} is not given (the program's parameters: "
                                   f"{names})")
            check_param_value(name, params[name])
        extra = sorted(set(params) - set(names), key=str)
        if extra:
            raise ProgramError(f"unknown parameter {extra[0]!r} (the program's parameters: {names})")
        return params

    def validate(self):
        """Check every relocation and event reference; raises ProgramError naming the command."""
        for i, c in enumerate(self.commands):
            layout = commands.PAYLOAD_FIELDS.get(Opcode(c.opcode))
            if layout is None:
                raise ProgramError(f"command {i} ({c.note or c.opcode}): unknown opcode {c.opcode!r}")
            for r in c.relocs:
                if r.field not in layout:
                    raise ProgramError(f"command {i} ({c.note}): {Opcode(c.opcode).name} has no field {r.field!r}")
                spec = self.buffers.get(r.buffer)
                if spec is None:
                    raise ProgramError(f"command {i} ({c.note}): unknown buffer {r.buffer!r}")
                if not 0 <= r.offset < spec.nbytes:
                    raise ProgramError(f"command {i} ({c.note}): offset {r.offset} outside buffer "
                                       f"{r.buffer!r} of {spec.nbytes} bytes")
            for p in c.params:
                if not isinstance(p, Param) or not isinstance(p.name, str) or not p.name:
                    raise ProgramError(f"command {i} ({c.note}): {p!r} is not a Param with a name")
                if p.field not in layout:
                    raise ProgramError(f"command {i} ({c.note}): {Opcode(c.opcode).name} has no field "
                                       f"{p.field!r} (parameter {p.name!r})")
            if c.opcode in EVENT_OPS and not 0 <= c.fields.get("event", -1) < self.events:
                raise ProgramError(f"command {i} ({c.note}): event {c.fields.get('event')} outside "
                                   f"the program's {self.events} events")

    def serialized(self):
        """The same commands on queue 0 in one legal total order, each engine command followed by
        a BARRIER, so nothing overlaps: running a program both ways and comparing the results
        separates scheduling bugs (missing events, hardware overlap) from datapath bugs.

        The order comes from a sequential run of the queues' semantics (docs/queues.md): a queue
        advances until a WAIT_EVENT whose program-relative value is not yet reached; SIGNAL_EVENT
        sets the value. Raises ProgramError if the queues deadlock."""
        self.validate()
        pending = {q: [c for c in self.commands if c.queue == q] for q in self.queues}
        counters = [0] * self.events
        order = []
        while any(pending.values()):
            moved = False
            for cmds in pending.values():
                while cmds and not _blocked(cmds[0], counters):
                    c = cmds.pop(0)
                    if c.opcode == Opcode.SIGNAL_EVENT:
                        counters[c.fields["event"]] = c.fields.get("value", 0)
                    order.append(c)
                    moved = True
            if not moved:
                heads = {q: cmds[0].note or cmds[0].opcode for q, cmds in pending.items() if cmds}
                raise ProgramError(f"program {self.name!r} deadlocks: every queue waits ({heads})")
        out = Program(f"{self.name}.serialized", dict(self.buffers), events=self.events)
        for c in order:
            out.add(replace(c, queue=0))
            if c.opcode in ENGINE_OPCODES:
                out.add(ProgramCommand(0, Opcode.BARRIER, note=f"{c.note}: serialize"))
        return out

    def bind(self, addresses, events=None, *, tag_base=0, params=None):
        """Descriptor words per queue: ``{queue: [words, ...]}``.

        ``addresses``: buffer name -> host address (every buffer the commands use); ``events``:
        program event -> (device event, base value) (every event used); ``params``: parameter
        name -> value (exactly the program's :attr:`params`, each an int in 0..2**32-1). Raises
        ProgramError for a missing, unknown or misaligned binding or a bad parameter value.
        """
        self.validate()
        events = events or {}
        params = self.check_params(params)
        for name, spec in self.buffers.items():
            if name in addresses and addresses[name] % spec.align:
                raise ProgramError(f"buffer {name!r} bound at {addresses[name]:#x}, not {spec.align}-byte aligned")
        out = {}
        for i, c in enumerate(self.commands):
            fields = dict(c.fields)
            for r in c.relocs:
                if r.buffer not in addresses:
                    raise ProgramError(f"command {i} ({c.note}): buffer {r.buffer!r} is not bound")
                fields[r.field] = addresses[r.buffer] + r.offset
            if c.opcode in EVENT_OPS:
                if c.fields["event"] not in events:
                    raise ProgramError(f"command {i} ({c.note}): program event {c.fields['event']} is not bound")
                dev_event, base = events[c.fields["event"]]
                fields["event"] = dev_event
                fields["value"] = (base + c.fields.get("value", 0)) & M32
            if c.params:
                layout = commands.PAYLOAD_FIELDS[Opcode(c.opcode)]
                for p in c.params:
                    width = layout[p.field][1]
                    fields[p.field] = (fields.get(p.field, 0) + params[p.name]) % (1 << width)
            words = commands.encode(c.opcode, irq=c.irq, tag=(tag_base + c.tag) & 0xFFFF, **fields)
            out.setdefault(c.queue, []).append(words)
        return out
