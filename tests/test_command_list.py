"""Command lists (EXEC_LIST, docs/queues.md "Command lists"; driver/command_list.py, Device.record /
Device.launch): the scenarios of verif/command_lists.py on the golden chip model with the real
firmware, compiled models launched as lists against Device.run, the golden model's expansion
seen from inside (prefetch FIFO, Q_HEAD_INDEX), and pure tests of the recorder.

Reproducibility: ``SEED=<n>`` in the environment (otherwise a fresh seed per process), printed
by every random test; rerun with ``SEED=<n> .venv/bin/python -m pytest tests/test_command_list.py``.
"""
import asyncio
import os
import random

import numpy as np
import pytest

from compiler import models
from compiler.compile import compile_graph
from compiler.graph import interpret
from driver.command_list import ArgSlot, args_bytes, find_loop, record
from driver.device import Device
from driver.program import BufferSpec, Param, Program, ProgramCommand, ProgramError, Reloc
from firmware import build as fw_build
from golden.backend import GoldenBackend, golden_chip
from golden.chip_model import ChipModel, MMIO_BASE
from hdl_gen.config import KakiConfig
from spec import mmio_registers as M
from spec import registers as R
from spec.capabilities import Capabilities
from spec.commands import decode, encode
from spec.descriptors import LIST_ARGS, LIST_ENTRY_FIELDS, LIST_PATCHES, PATCH_FIELDS, ErrorCode, Opcode
from spec.firmware_image import FirmwareImage
from verif import command_lists as S
from verif.model_run import HOST_BASE, HOST_BYTES
from verif.model_time import log_mmio, stepped

SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))


def _seed(offset=0):
    print(f"[command lists] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest "
          f"tests/test_command_list.py)")
    return SEED + offset


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return FirmwareImage.from_elf(fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf"))


def _env(seed):
    # the chip's memory ends at HOST_BASE + HOST_BYTES: beyond it reads answer DECERR
    return S.ListEnv(seed=seed, unmapped=HOST_BASE + HOST_BYTES, unmapped_code=ErrorCode.AXI_DECERR)


def _run(image, body, seed, caps=None):
    """``await body(dev)`` on a fresh golden chip (memory [0, HOST_BASE + HOST_BYTES))."""
    if caps is None:
        chip = golden_chip(8, host_bytes=HOST_BASE + HOST_BYTES, seed=seed)
    else:
        chip = ChipModel(caps, host_bytes=HOST_BASE + HOST_BYTES, seed=seed, engine_delay=(1, 40))
    return _run_on(chip, image, body)


def _run_on(chip, image, body):
    """``await body(dev)`` with a Device on ``chip`` (firmware booted)."""
    async def go():
        dev = await Device.open(GoldenBackend(chip), host_base=HOST_BASE, host_bytes=HOST_BYTES,
                                firmware=image)
        return await body(dev)
    return asyncio.run(go())


# ============================================================================ scenarios
@pytest.mark.parametrize("scenario", S.SCENARIOS, ids=[s.__name__ for s in S.SCENARIOS])
def test_scenario(scenario, image):
    seed = _seed()
    _run(image, lambda dev: scenario(dev, _env(seed)), seed)


@pytest.mark.parametrize("what", sorted(S.MALFORMED))
def test_malformed_exec_list(what, image):
    seed = _seed()
    try:
        _run(image, lambda dev: S.malformed_exec_list(dev, _env(seed), what), seed)
    except Exception as e:
        if S.MALFORMED[what][1] == 0 and _firmware_lacks_list_checks():
            pytest.xfail(f"firmware EXEC_LIST checks pending ({type(e).__name__}: {e})")
        raise


def _firmware_lacks_list_checks():
    from pathlib import Path
    return "KAKI_OP_EXEC_LIST" not in (Path(fw_build.__file__).parent / "queues.c").read_text()


@pytest.mark.parametrize("name,queues,fold", [("mlp", None, False), ("attention", None, False),
                                              ("mlp", 1, False), ("mlp", None, True),
                                              ("attention", None, True)])
def test_compiled_model_as_list(name, queues, fold, image):
    """A compiled model launched as a command list, twice with different inputs and freshly
    bound buffers: outputs bit-identical to Device.run and to the NumPy interpreter (the MLP on
    three queues with events, and on one compute queue; the attention block on four; both
    with their loops folded, which must find some)."""
    seed = _seed(1)
    caps = Capabilities.from_config(KakiConfig(dim=8))
    g, feeds = models.build(name, seed % 1000)
    cm = compile_graph(g, caps, compute_queues=queues)
    rng = np.random.default_rng(seed)
    feeds2 = {k: rng.integers(-128, 128, v.shape, dtype=v.dtype) for k, v in feeds.items()}
    if fold:
        lists = record(cm.program, fold=True)
        assert any(rl.passes > 1 for segs in lists.values() for rl in segs), lists
    outs = _run(image, lambda dev: S.model_list_matches_run(dev, _env(seed), cm, [feeds, feeds2],
                                                            fold=fold), seed, caps=cm.caps)
    for out, f in zip(outs, (feeds, feeds2)):
        ref = interpret(g, f)
        for k in ref:
            assert np.array_equal(out[k], ref[k]), k
    assert not np.array_equal(outs[0][g.outputs[0].name], outs[1][g.outputs[0].name])


# ============================================================================ the golden model
def test_model_expansion_fifo_and_head_index():
    """With the core held (nothing issues), a list fills the prefetch FIFO with patched items
    (index: the EXEC_LIST's, patches cleared), then its end and the next ring descriptor;
    Q_HEAD_INDEX is F minus the FIFO's non-items: the EXEC_LIST's index for an item or the end."""
    chip = golden_chip(8, host_bytes=0x20000, seed=_seed(), prefetch=64)
    ring, cpl, lst, args = 0x1000, 0x2000, 0x3000, 0x4000
    entries = [(encode(Opcode.NOP, tag=k), [S.patch_word(64, 32, k % 2)]) for k in range(5)]
    chip.host_write(lst, S.raw_list(entries))
    chip.host_write(args, args_bytes([0x1111, 0x2222]))
    descs = [encode(Opcode.NOP, tag=100), S.list_descriptor(lst, 5, args, 2, tag=101),
             encode(Opcode.NOP, tag=102)]
    chip.host_write(ring, b"".join(w.to_bytes(4, "little") for d in descs for w in d))
    for name, v in (("Q_RING_BASE0", ring), ("Q_RING_SIZE0", 3), ("Q_CPL_BASE0", cpl),
                    ("Q_WINDOW_BASE0", 0), ("Q_WINDOW_SIZE0", 0x20000)):
        chip.write(R.REGISTERS[name], v)
    chip.write(R.Q_CTRL0, R.Q_CTRL0.ENABLE.put(1))
    chip.write(R.Q_DOORBELL0, 3)
    chip.run(2000)
    s = chip.queues[0]
    marks = [(e[0], e[3]) for e in s.fifo]
    assert marks == [(0, 0)] + [(1, 1)] * 5 + [(1, 2), (2, 0)], marks
    items = [decode(e[1]) for e in s.fifo if e[3] == 1]
    assert [d["tag"] for d in items] == list(range(5))
    assert all(not d["flags.reserved"] for d in items), "patches cleared"
    big = [sum(w << 32 * i for i, w in enumerate(e[1])) for e in s.fifo if e[3] == 1]
    assert [b >> 64 & M32 for b in big] == [0x1111, 0x2222] * 2 + [0x1111]
    head_index = lambda: chip.regs.read(MMIO_BASE + M.REGISTERS["Q_HEAD_INDEX0"].addr)
    assert head_index() == 0 and chip.read(R.Q_FETCH0) == 3
    s.fifo.popleft()                         # as if issued: the head is an item now
    assert head_index() == 1
    for _ in range(5):
        s.fifo.popleft()
    assert head_index() == 1                 # the end: the EXEC_LIST's own index


M32 = 0xFFFF_FFFF


def test_model_item_pacing_and_silent_completion(image):
    """A list longer than the prefetch FIFO, items completing out of engine order: one record, the
    consumer index advancing by one, PERF_Q_RETIRED counting the record only."""
    async def body(dev):
        q = await dev.queue(0)
        dim = dev.caps.dim
        src = await dev.upload(np.arange(dim * 4, dtype=np.uint8))
        entries = []
        for k in range(30):
            entries.append((encode(Opcode.DMA_LOAD, tag=k, host_row_stride=dim, row_bytes=dim,
                                   rows=1, planes=1, local_addr=k, local_row_stride=1),
                            [S.patch_word(32, 48, 0)]))
            entries.append((encode(Opcode.NOP, tag=1000 + k), []))
        lbuf, abuf, n = await S.put_list(dev, entries, args=[src.addr])
        await dev.backend.write(R.PERF_CTRL, R.PERF_CTRL.CLEAR.put(1))
        recs = await (await q.submit([S.list_descriptor(lbuf.addr, n, abuf.addr, 1, tag=3)])).wait()
        assert [(r["index"], r["opcode"], r["tag"]) for r in recs] == [(0, Opcode.EXEC_LIST, 3)]
        assert await q.consumer() == 1
        assert await dev.backend.read(R.PERF_Q_RETIRED0) == 1
        assert await dev.backend.read(R.PERF_DMA_LOAD_BYTES) == 30 * dim
    _run(image, body, _seed(2))


# ============================================================================ the recorder (pure)
def _expand(rl, args):
    """The device's expansion of a recorded list (an independent reference of docs/queues.md):
    the patched descriptors' words, every pass of a looped list (each pass's arguments += the
    slots' strides, mod 2**32)."""
    out = []
    for _ in range(rl.passes):
        out += _expand_once(rl, args)
        args = [(a + s.stride) & M32 for a, s in zip(args, rl.slots)]
    return out


def _expand_once(rl, args):
    def get(v, layout, name):
        lsb, w = layout[name]
        return v >> lsb & ((1 << w) - 1)
    data, out, off = rl.data, [], 0
    p_lsb, p_w = LIST_ENTRY_FIELDS["patches"]
    for _ in range(rl.entries):
        words = [int.from_bytes(data[off + 4 * i:off + 4 * i + 4], "little") for i in range(8)]
        off += 32
        big = sum(w << 32 * i for i, w in enumerate(words))
        n = get(big, LIST_ENTRY_FIELDS, "patches")
        if n:
            block = [int.from_bytes(data[off + 4 * i:off + 4 * i + 4], "little") for i in range(8)]
            off += 32
            for pw in block[:n]:
                pos, width = get(pw, PATCH_FIELDS, "pos"), get(pw, PATCH_FIELDS, "width_m1") + 1
                assert pos >= 32 and pos + width <= 256 and pos % 32 + width <= 64
                mask = (1 << width) - 1
                value = ((big >> pos & mask) + args[get(pw, PATCH_FIELDS, "arg")]) & mask
                big = big & ~(mask << pos) | value << pos
            big &= ~(((1 << p_w) - 1) << p_lsb)
        out.append([big >> 32 * i & M32 for i in range(8)])
    assert off == len(data)
    return out


def _random_program(rng, queues=3, n=40):
    p = Program("random", events=3)
    for k in range(4):
        p.add_buffer(BufferSpec(f"b{k}", 4096, align=64 << k % 2, role="input"))
    for i in range(n):
        q = int(rng.integers(0, queues))
        kind = rng.integers(0, 5)
        if kind == 0:
            p.add(ProgramCommand(q, Opcode.SIGNAL_EVENT, dict(event=int(rng.integers(0, 3)),
                                                                value=int(rng.integers(0, 1 << 32))),
                                 note=f"c{i}", params=(Param("value", "v"),) if rng.random() < .3 else ()))
        elif kind == 1:
            p.add(ProgramCommand(q, Opcode.WAIT_EVENT, dict(event=int(rng.integers(0, 3)), value=i), note=f"c{i}"))
        elif kind == 2:
            p.add(ProgramCommand(q, Opcode.GEMM, dict(a_addr=int(rng.integers(0, 1 << 20)), m=3,
                                                      k_tiles=1, n_tiles=2),
                                 params=(Param("a_addr", "off"), Param("c_addr", "off")), note=f"c{i}",
                                 irq=bool(rng.random() < .5)))
        else:
            op = Opcode.DMA_LOAD if kind == 3 else Opcode.DMA_STORE
            p.add(ProgramCommand(q, op, dict(rows=int(rng.integers(1, 9)), row_bytes=8, planes=1),
                                 (Reloc("host_addr", f"b{int(rng.integers(0, 4))}", int(rng.integers(0, 4096))),),
                                 params=(Param("rows", "v"),) if rng.random() < .3 else (),
                                 tag=int(rng.integers(0, 1 << 16)), note=f"c{i}"))
    return p


def _looped_program(rng, queues=3, n=40):
    """A random program whose commands repeat: a random body of each queue's commands run
    several times with relocation offsets and event values advancing by a constant per pass,
    between random prologue and epilogue commands."""
    base = _random_program(rng, queues, n)
    p = Program("looped", events=3)
    for b in base.buffers.values():
        p.add_buffer(BufferSpec(b.name, 1 << 16, align=b.align, role=b.role))
    cmds = list(base.commands)
    body, passes = cmds[5:5 + int(rng.integers(4, 12))], int(rng.integers(3, 9))
    step = {id(c): int(rng.integers(0, 512)) for c in body}
    out = cmds[:5]
    for t in range(passes):
        for c in body:
            d = step[id(c)] * t
            relocs = tuple(Reloc(r.field, r.buffer, r.offset + d) for r in c.relocs)
            fields = dict(c.fields)
            if c.opcode in (Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT):
                fields["value"] = (fields["value"] + d) & M32
            out.append(ProgramCommand(c.queue, c.opcode, fields, relocs, c.irq, c.tag, f"{c.note}.{t}",
                                      c.params))
    for c in out + cmds[5 + len(body):]:
        p.add(c)
    return p


@pytest.mark.parametrize("k,fold", [(k, f) for k in range(4) for f in (False, True)])
def test_record_expands_to_bind(k, fold):
    """Random programs (with repeating runs when ``fold``): every queue's recorded segments,
    expanded with their argument words as the device does, are exactly Program.bind's
    descriptors with the tag replaced by the entry's position; folding finds the loops."""
    rng = np.random.default_rng(_seed(10 + k))
    p = _looped_program(rng) if fold else _random_program(rng)
    addresses = {f"b{j}": int(rng.integers(1, 1 << 20)) * 128 for j in range(4)}
    events = {e: (int(rng.integers(0, 16)), int(rng.integers(0, 1 << 32))) for e in range(3)}
    params = {n: int(rng.integers(0, 1 << 32)) for n in p.params}
    lists = record(p, fold=fold, min_saving=4)
    if fold:
        assert any(rl.passes > 1 for segs in lists.values() for rl in segs)
    _check_expansion(p, lists, addresses, events, params)


def _check_expansion(p, lists, addresses, events, params):
    """Every queue's segments, expanded as the device does, are Program.bind's descriptors (tags:
    the entry positions); the segments are consecutive and each fits one argument table."""
    bound = p.bind(addresses, events, params=params)
    assert sorted(lists) == sorted(bound)
    for q, segments in lists.items():
        got, tags, cmds = [], [], []
        for rl in segments:
            assert rl.first == len(cmds) and rl.nargs <= LIST_ARGS
            part = _expand(rl, rl.args(addresses, events, params))
            assert len(part) == len(rl.commands) == rl.entries * rl.passes
            got += part
            tags += list(range(rl.entries)) * rl.passes
            cmds += rl.commands
        assert len(got) == len(bound[q])
        for pos, (g, b) in enumerate(zip(got, bound[q])):
            dg, db = decode(g), decode(b)
            assert dg.pop("tag") == tags[pos]
            db.pop("tag")
            assert dg == db, (q, pos, cmds[pos])
        rl = segments[-1]
        j = 3 % len(rl.commands)
        assert rl.item(j) == (rl.first + j, rl.commands[j])


def test_find_loop():
    """find_loop: the loop saving the most entries; offsets must advance by one constant per
    pass, upwards only; min_saving."""
    def load(off, buf="b", rows=1):
        return ProgramCommand(0, Opcode.DMA_LOAD, dict(rows=rows, row_bytes=8, planes=1),
                              (Reloc("host_addr", buf, off),))
    nop = ProgramCommand(0, Opcode.NOP)
    cmds = [nop, load(0, rows=2)] + [c for t in range(6) for c in (load(64 * t), nop, load(8 * t, "c"))] + [nop]
    assert find_loop(cmds, 4) == find_loop(cmds, 15) == (2, 3, 6)
    assert find_loop(cmds, 16) is None
    bent = cmds[:2 + 3 * 4] + [load(64 * 4 + 1), nop, load(32, "c")] + cmds[2 + 3 * 5:]
    assert find_loop(bent, 4) == (2, 3, 4)             # pass 4's offset breaks the progression
    down = [c for t in range(6) for c in (load(640 - 64 * t), nop)]
    assert find_loop(down, 2) is None


def test_record_slots_order_and_descriptor():
    p = Program("order", events=2)
    for name in ("z", "a", "m"):
        p.add_buffer(BufferSpec(name, 256, role="input"))
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, dict(rows=1, row_bytes=8, planes=1),
                         (Reloc("host_addr", "m", 8),), params=(Param("rows", "n"),)))
    p.add(ProgramCommand(0, Opcode.WAIT_EVENT, dict(event=1, value=2)))
    p.add(ProgramCommand(0, Opcode.DMA_STORE, dict(rows=1, row_bytes=8, planes=1),
                         (Reloc("host_addr", "z"),), params=(Param("host_addr", "b"),)))
    (rl,) = record(p)[0]
    assert [str(s) for s in rl.slots] == ["buffer 'z'", "buffer 'm'", "event 1 index", "event 1 base",
                                          "param 'b'", "param 'n'"]
    assert rl.slots[0] == ArgSlot("buffer", "z")
    assert rl.args({"z": 0x100, "m": 0x200, "a": 0}, {1: (7, 9)}, {"n": 1, "b": 2}) == \
        [0x100, 0x200, 7, 9, 2, 1]
    d = decode(rl.descriptor(0x3000, 0x4000, tag=5))
    assert (d["opcode"], d["list_addr"], d["entries"], d["args_addr"], d["args"], d["flags.irq"], d["tag"]) == \
        (Opcode.EXEC_LIST, 0x3000, 3, 0x4000, 6, 1, 5)
    assert len(rl.data) == 32 * (3 + 3)             # every command has patches
    assert len(args_bytes([1] * 9)) == 64
    for addresses, events, params, match in (
            ({"m": 0x200}, {1: (7, 9)}, {"n": 1, "b": 2}, "buffer 'z' is not bound"),
            ({"z": 0x101, "m": 0x200}, {1: (7, 9)}, {"n": 1, "b": 2}, "not 64-byte aligned"),
            ({"z": 1 << 32, "m": 0x200}, {1: (7, 9)}, {"n": 1, "b": 2}, "not a 32-bit address"),
            ({"z": 0x100, "m": 0x200}, {}, {"n": 1, "b": 2}, "program event 1 is not bound"),
            ({"z": 0x100, "m": 0x200}, {1: (7, 9)}, {"n": 1}, "parameter 'b' is not given"),
            ({"z": 0x100, "m": 0x200}, {1: (7, 9)}, {"n": 1, "b": -2}, "parameter 'b' = -2")):
        with pytest.raises(ProgramError, match=match):
            rl.args(addresses, events, params)


def test_record_splits_a_queue_at_the_argument_table_size():
    """A queue whose commands use more argument words than one table holds is recorded as
    consecutive segments, each cut before the command that would overflow its table (greedy),
    which expand to Program.bind's descriptors."""
    p = Program("wide", events=LIST_ARGS)
    p.add_buffer(BufferSpec("buf", 64, role="input"))
    p.add(ProgramCommand(2, Opcode.DMA_LOAD, dict(rows=1, row_bytes=1, planes=1), (Reloc("host_addr", "buf"),)))
    for e in range(LIST_ARGS // 2):
        p.add(ProgramCommand(2, Opcode.SIGNAL_EVENT, dict(event=e, value=1)))
    for k in range(3 * LIST_ARGS):        # one parameter each: three more tables
        p.add(ProgramCommand(2, Opcode.DMA_LOAD, dict(rows=1, row_bytes=1, planes=1),
                             (Reloc("host_addr", "buf"),), params=(Param("rows", f"p{k:03}"),)))
    segments = record(p)[2]
    assert [(rl.first, rl.entries, rl.nargs) for rl in segments] == [
        (0, 16, 31), (16, 30, 32), (46, 31, 32), (77, 31, 32), (108, 5, 6)]
    _check_expansion(p, {2: segments}, {"buf": 0x400},
                     {e: (e, 7 * e) for e in range(LIST_ARGS)},
                     {f"p{k:03}": k for k in range(3 * LIST_ARGS)})


def test_record_limits_name_the_culprit():
    p = Program("patchy")
    p.add_buffer(BufferSpec("buf", 64, role="input"))
    names = "abcdefg"
    p.add(ProgramCommand(1, Opcode.DMA_LOAD, dict(rows=1, row_bytes=1, planes=1), (Reloc("host_addr", "buf"),),
                         params=tuple(Param("rows", n) for n in names), note="too many"))
    with pytest.raises(ProgramError, match=r"program 'patchy', queue 1, command 0 \(too many\): "
                                           rf"{LIST_PATCHES + 1} patches, more than the {LIST_PATCHES} "
                                           r"\(LIST_PATCHES\) of a list entry: host_addr \+= buffer 'buf', "
                                           r"rows \+= param 'a'"):
        record(p)
    p = Program("reserved")
    p.add(ProgramCommand(0, Opcode.EMUL, {}, params=(Param("reserved", "x"),), note="r"))
    with pytest.raises(ProgramError, match=r"field 'reserved' \(bits .*\) cannot be patched"):
        record(p)


def test_program_params_bind_and_validate():
    p = Program("params")
    p.add_buffer(BufferSpec("a", 256, role="input"))
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, dict(rows=1, row_bytes=8, planes=1, local_addr=(1 << 20) - 1),
                         (Reloc("host_addr", "a", 16),),
                         params=(Param("host_addr", "off"), Param("local_addr", "row"))))
    d = decode(p.bind({"a": 0x1000}, params={"off": 0x40, "row": 3})[0][0])
    assert d["host_addr"] == 0x1050 and d["local_addr"] == 2          # mod 2**20
    assert p.params == ["off", "row"]
    for params, match in ((None, "parameter 'off' is not given"),
                          ({"off": 1, "row": 1, "zz": 0}, "unknown parameter 'zz'"),
                          ({"off": 1.0, "row": 1}, "parameter 'off' = 1.0: must be an int"),
                          ({"off": True, "row": 1}, "must be an int"),
                          ({"off": 1 << 32, "row": 1}, "must be an int in 0..4294967295")):
        with pytest.raises(ProgramError, match=match):
            p.bind({"a": 0x1000}, params=params)
    p.add(ProgramCommand(0, Opcode.NOP, params=(Param("host_addr", "off"),), note="nop"))
    with pytest.raises(ProgramError, match=r"command 1 \(nop\): NOP has no field 'host_addr' \(parameter 'off'\)"):
        p.validate()
    s = Program("s")
    s.add(ProgramCommand(1, Opcode.DMA_LOAD, dict(rows=1), params=(Param("rows", "n"),)))
    assert s.serialized().commands[0].params == (Param("rows", "n"),)


# ============================================================================ the model's time
def test_list_time_event_driven_equals_stepping(image):
    """Lists on the model that skips idle steps and on one that does every tick in full (as
    tests/test_chip_model.py checks the rings): the same firmware MMIO accesses at the same steps
    and the same state at the end, through launches, an item failure, a reset and a malformed
    EXEC_LIST the firmware fails."""
    s = _seed(3)
    runs = []
    for fast in (True, False):
        chip = golden_chip(8, host_bytes=HOST_BASE + HOST_BYTES, seed=s)
        if not fast:
            stepped(chip)

        async def body(dev, chip=chip):
            log = log_mmio(chip)            # after the boot: the scenarios' accesses
            env = _env(s)
            await S.param_moves_load(dev, env)
            await S.item_failure_halts_one_queue(dev, env)
            await S.malformed_exec_list(dev, env, "flags reserved bit")
            return log
        log = _run_on(chip, image, body)
        state = dict(now=chip.now, instret=chip.iss.instret, pc=chip.iss.pc, host=bytes(chip.host),
                     csrs={name: chip.read(reg) for name, reg in R.REGISTERS.items()})
        runs.append((log, state))
    (log, state), (ref_log, ref_state) = runs
    assert len(log) == len(ref_log) > 10 and log == ref_log
    assert state == ref_state


def test_sync_facade_record_and_launch(image):
    """The synchronous facade passes command lists through (record, launch with params, free)."""
    from driver.sync import SyncDevice
    rng = np.random.default_rng(_seed(4))
    chip = golden_chip(8, host_bytes=HOST_BASE + HOST_BYTES, seed=SEED)
    dev = SyncDevice.open(GoldenBackend(chip), firmware=image, host_base=HOST_BASE, host_bytes=HOST_BYTES)
    data = rng.integers(0, 256, 4 * 2 * 8, dtype=np.uint8)
    src, dst = dev.upload(data), dev.alloc(2 * 8)
    cl = dev.record(S.copy_program(8, 2, param=True))
    recs = dev.launch(cl, {"src": src, "dst": dst}, params={"off": 16})
    assert recs[0][0]["opcode"] == Opcode.EXEC_LIST
    assert np.array_equal(dst.read(), data[16:32])
    cl.free()
