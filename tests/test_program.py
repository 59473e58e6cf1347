"""driver/program.py: relocation, event binding, validation errors."""
import pytest

from spec import commands
from spec.descriptors import ENGINE_OPCODES, Opcode
from driver.program import BufferSpec, Program, ProgramCommand, ProgramError, Reloc


def _prog():
    p = Program("t", events=1)
    p.add_buffer(BufferSpec("a", 256, role="input"))
    p.add_buffer(BufferSpec("c", 128, role="output"))
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, dict(row_bytes=8, rows=2, planes=1, host_row_stride=8),
                         (Reloc("host_addr", "a", 16),), note="load a"))
    p.add(ProgramCommand(0, Opcode.SIGNAL_EVENT, dict(event=0, value=1)))
    p.add(ProgramCommand(1, Opcode.WAIT_EVENT, dict(event=0, value=1)))
    p.add(ProgramCommand(1, Opcode.DMA_STORE, dict(row_bytes=8, rows=1, planes=1),
                         (Reloc("host_addr", "c"),), irq=True, tag=3))
    return p


def test_bind_relocates_addresses_and_events():
    out = _prog().bind({"a": 0x1000, "c": 0x2040}, {0: (9, 0xFFFF_FFFF)}, tag_base=10)
    assert sorted(out) == [0, 1]
    load = commands.decode(out[0][0])
    assert load["host_addr"] == 0x1010 and load["rows"] == 2
    sig, wait = commands.decode(out[0][1]), commands.decode(out[1][0])
    assert (sig["event"], sig["value"]) == (9, 0) and (wait["event"], wait["value"]) == (9, 0)
    store = commands.decode(out[1][1])
    assert store["host_addr"] == 0x2040 and store["flags.irq"] == 1 and store["tag"] == 13


@pytest.mark.parametrize("addresses,events,match", [
    ({"a": 0x1000}, {0: (1, 0)}, "buffer 'c' is not bound"),
    ({"a": 0x1001, "c": 0x2000}, {0: (1, 0)}, "not 64-byte aligned"),
    ({"a": 0x1000, "c": 0x2000}, {}, "program event 0 is not bound"),
])
def test_bind_errors_name_the_culprit(addresses, events, match):
    with pytest.raises(ProgramError, match=match):
        _prog().bind(addresses, events)


def test_validate_errors():
    p = _prog()
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, {}, (Reloc("host_addr", "nope"),), note="bad"))
    with pytest.raises(ProgramError, match="unknown buffer 'nope'"):
        p.validate()
    p = _prog()
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, {}, (Reloc("host_addr", "a", 256),)))
    with pytest.raises(ProgramError, match="offset 256 outside buffer 'a'"):
        p.validate()
    p = _prog()
    p.add(ProgramCommand(0, Opcode.WAIT_EVENT, dict(event=1, value=0)))
    with pytest.raises(ProgramError, match="event 1 outside"):
        p.validate()
    with pytest.raises(ProgramError, match="declared twice"):
        _prog().add_buffer(BufferSpec("a", 8))
    for kw, match in ((dict(nbytes=0), "positive"), (dict(nbytes=8, align=3), "power of two"),
                      (dict(nbytes=8, role="x"), "role")):
        with pytest.raises(ProgramError, match=match):
            BufferSpec("b", **kw)


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_serialized_program_gives_the_same_results(name):
    """The serialize switch: one queue, a BARRIER after each engine command, same outputs."""
    from compiler import models
    from compiler.compile import compile_graph
    from compiler.graph import interpret
    from compiler.refexec import execute
    from spec.capabilities import Capabilities
    from hdl_gen.config import KakiConfig

    g, feeds = models.build(name, 1)
    caps = Capabilities.from_config(KakiConfig(dim=8))
    cm = compile_graph(g, caps)
    serial = cm.program.serialized()
    assert serial.queues == [0] and len(cm.program.queues) > 1
    engine = [c for c in serial.commands if c.opcode in ENGINE_OPCODES]
    nxt = {id(a): b for a, b in zip(serial.commands, serial.commands[1:])}
    assert all(nxt[id(c)].opcode == Opcode.BARRIER for c in engine)
    key = lambda c: (int(c.opcode), c.note, c.tag, repr(sorted(c.fields.items())), c.relocs)  # noqa: E731
    added = [c for c in serial.commands if c.note.endswith(": serialize")]
    assert sorted(map(key, (c for c in serial.commands if c not in added))) == \
        sorted(map(key, cm.program.commands)) and len(added) == len(engine)
    ref = interpret(g, feeds)
    for prog in (cm.program, serial):
        model, addrs = execute(prog, caps, cm.pack_inputs(feeds), seed=3, check=True)
        got = cm.unpack_outputs(lambda b, n: model.host[addrs[b]:addrs[b] + n].tobytes())
        assert all((got[k] == ref[k]).all() for k in ref)


def test_serializing_a_deadlocked_program_is_an_error():
    p = Program("stuck", events=1)
    p.add(ProgramCommand(0, Opcode.WAIT_EVENT, {"event": 0, "value": 1}, note="waits"))
    p.add(ProgramCommand(1, Opcode.WAIT_EVENT, {"event": 0, "value": 2}, note="waits too"))
    with pytest.raises(ProgramError, match=r"program 'stuck' deadlocks: every queue waits \(\{0: 'waits', 1: 'waits too'\}\)"):
        p.serialized()
