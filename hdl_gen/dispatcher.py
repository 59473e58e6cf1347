"""Descriptor dispatch: routes submitted descriptors to per-engine command FIFOs and retires them."""
from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .descriptor import COMMANDS, DESCRIPTOR_BITS, Descriptor, Engine, ErrorCode, Opcode, engine_opcodes

#: Engines in index order (``Engine`` values); the port of engine ``e`` is ``e.name.lower()``.
ENGINES = tuple(Engine)


def port_name(engine):
    """The dispatcher port (and submodule prefix) of ``engine``: ``dma_load``, ``gemm``, ..."""
    return engine.name.lower()


_NOP = next(c.opcode for c in COMMANDS if c.name == "NOP")


class DispatchEntry(data.Struct):
    """A queued command: the descriptor and where it came from (for the queue's DMA window)."""
    desc: Descriptor
    queue: 2          #: source queue (meaningful when ``windowed``)
    windowed: 1       #: 1: forwarded from a queue, so DMA commands are checked against its window


class RetireSignature(wiring.Signature):
    """What the dispatcher reports for an engine when one of its commands retires.

    done : Out(1) pulse; irq : Out(1) the descriptor asked for a completion interrupt;
    error : Out(ErrorCode); opcode : Out(Opcode); tag : Out(16); queued : Out(1) it came from a
    queue (the issue unit), not from direct submission.
    """

    def __init__(self):
        super().__init__({"done": Out(1), "irq": Out(1), "error": Out(ErrorCode),
                          "opcode": Out(Opcode), "tag": Out(16), "queued": Out(1)})


class Dispatcher(wiring.Component):
    """Accepts one descriptor per ``submit`` and queues it for the engine its opcode names.

    Commands for different engines run concurrently; commands for one engine run in submission
    order. A descriptor that cannot be queued retires at once with an error (BAD_OPCODE for an
    opcode no engine serves, RESERVED_BITS for reserved flag bits, CMD_OVERFLOW when the engine's
    FIFO is full); NOP retires silently. Payload fields are checked by the engine.

    Ports
    -----
    desc       : In(256) — the descriptor, sampled when ``submit`` is high.
    submit     : In(1) — one-cycle submit strobe.
    queue      : In(2), windowed : In(1) — the descriptor's source, sampled with ``submit``.
    <engine>   : Out(stream.Signature(DispatchEntry)) — the next command for each engine of
                 :class:`Engine` (``dma_load``, ``dma_store``, ``gemm``, ``vec``), serving the
                 opcodes :data:`COMMANDS` assigns to it.
    engine_reset : In(len(ENGINES)) — bit i: engine i is being reset; its command in flight
                 retires with WATCHDOG (its FIFO is kept, and the engine's own done in that
                 cycle is ignored).
    <engine>_done, <engine>_error : In(1), In(ErrorCode) — the engine's retire pulse and result.
    retire     : Out(RetireSignature()).array(len(ENGINES)) — retire events per engine.
    reject     : Out(RetireSignature()) — descriptors refused at submission.
    inflight   : Out(len(ENGINES)) — engine i holds an accepted command.
    full       : Out(len(ENGINES)) — engine i's command FIFO is full.
    idle       : Out(1) — no command queued or executing.
    """

    def __init__(self, depth=4):
        if depth < 1:
            raise ValueError(f"FIFO depth must be at least 1, not {depth!r}")
        self.depth = depth
        members = {"desc": In(DESCRIPTOR_BITS), "submit": In(1), "queue": In(2),
                   "windowed": In(1), "engine_reset": In(len(ENGINES))}
        for name in map(port_name, ENGINES):
            members[name] = Out(stream.Signature(DispatchEntry))
            members[f"{name}_done"] = In(1)
            members[f"{name}_error"] = In(ErrorCode)
        members["retire"] = Out(RetireSignature()).array(len(ENGINES))
        members["reject"] = Out(RetireSignature())
        members["inflight"] = Out(len(ENGINES))
        members["full"] = Out(len(ENGINES))
        members["idle"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        desc = Descriptor(self.desc)
        known = Signal()
        flags_bad = Signal()
        m.d.comb += flags_bad.eq(desc.flags.reserved != 0)
        busy = []
        m.d.comb += [self.reject.opcode.eq(desc.opcode), self.reject.tag.eq(desc.tag),
                     self.reject.irq.eq(desc.flags.irq), self.reject.queued.eq(self.windowed)]
        entry = Signal(DispatchEntry)
        m.d.comb += entry.eq(Cat(self.desc, self.queue, self.windowed))
        for i, engine in enumerate(ENGINES):
            name = port_name(engine)
            q = fifo.SyncFIFOBuffered(width=data.Layout.cast(DispatchEntry).size, depth=self.depth)
            m.submodules[f"{name}_fifo"] = q
            port = getattr(self, name)
            served = desc.opcode.as_value().matches(*engine_opcodes(engine))
            hit = self.submit & served & ~flags_bad
            m.d.comb += [q.w_data.eq(entry), q.w_en.eq(hit),
                         port.valid.eq(q.r_rdy), port.payload.eq(q.r_data),
                         q.r_en.eq(port.ready)]
            with m.If(self.submit & served):
                m.d.comb += known.eq(1)
            with m.If(hit):
                with m.If(~q.w_rdy):
                    m.d.comb += [self.reject.done.eq(1),
                                 self.reject.error.eq(ErrorCode.CMD_OVERFLOW)]
            # The descriptor in flight, kept for its flags and tag until it retires.
            held = Signal(Descriptor, name=f"{name}_held")
            held_queued = Signal(name=f"{name}_held_queued")
            done = getattr(self, f"{name}_done")
            with m.If(done | self.engine_reset[i]):
                m.d.sync += self.inflight[i].eq(0)
            with m.If(port.valid & port.ready):   # after `done`: a same-cycle accept wins
                m.d.sync += [held.eq(port.payload.desc), held_queued.eq(port.payload.windowed),
                             self.inflight[i].eq(1)]
            r = self.retire[i]
            reset = self.engine_reset[i]
            m.d.comb += [r.done.eq(Mux(reset, self.inflight[i], done)),
                         r.error.eq(Mux(reset, ErrorCode.WATCHDOG, getattr(self, f"{name}_error"))),
                         r.irq.eq(held.flags.irq), r.opcode.eq(held.opcode), r.tag.eq(held.tag),
                         r.queued.eq(held_queued)]
            busy.append(q.r_rdy)
            m.d.comb += self.full[i].eq(~q.w_rdy)
        # Firmware commands only reach the dispatcher by direct submission: NOP retires silently,
        # the others (which need the firmware's queue state) are refused.
        with m.If(self.submit & ~known & (desc.opcode.as_value() != _NOP)):
            m.d.comb += [self.reject.done.eq(1), self.reject.error.eq(ErrorCode.BAD_OPCODE)]
        with m.Elif(self.submit & flags_bad):
            m.d.comb += [self.reject.done.eq(1), self.reject.error.eq(ErrorCode.RESERVED_BITS)]
        m.d.comb += self.idle.eq(~Cat(*busy).any() & ~self.inflight.any())
        return m
