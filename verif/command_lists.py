"""Command-list scenarios (docs/queues.md "Command lists", docs/driver.md "Command lists") on any
backend: each is ``async def scenario(dev, env)`` taking an open driver :class:`~driver.device.Device`
(firmware booted) and a :class:`ListEnv`, checking with plain ``assert`` statements (no pytest or
cocotb import), so tests/test_command_list.py runs them on the golden chip model and a cocotb
test can run them on the RTL chip.

Every scenario leaves the queues it used reset and working.
"""
from dataclasses import dataclass

import numpy as np

from driver.command_list import args_bytes
from driver.errors import DriverMisuse, QueueError
from driver.program import BufferSpec, Param, Program, ProgramCommand, Reloc
from spec import commands
from spec import registers as R
from spec.commands import encode, put_field
from spec.descriptors import GEMM_FIELDS, LIST_ARGS, LIST_ENTRY_FIELDS, PATCH_FIELDS, ErrorCode, Opcode

__all__ = ["ListEnv", "SCENARIOS", "MALFORMED", "model_list_matches_run", "malformed_exec_list",
           "raw_list", "patch_word", "list_descriptor", "put_list", "copy_program", "failing_program"]

ENTRY = 32
#: a GEMM's A address past any scratchpad (LOCAL_RANGE)
A_PAST = (1 << GEMM_FIELDS["a_addr"][1]) - 1


@dataclass
class ListEnv:
    """What a backend provides to the scenarios."""
    seed: int = 1
    #: a 32-byte aligned host address whose reads fail on the bus (the golden model: past its
    #: host memory, DECERR), and the queue error they cause
    unmapped: int = None
    unmapped_code: int = ErrorCode.AXI_DECERR
    log: object = print

    def rng(self, offset):
        return np.random.default_rng(self.seed + offset)


async def expect_queue_error(aw, code, index=None, match=None):
    """Await ``aw``; assert it raises QueueError with ``code`` (and ``index``, and ``match`` in
    the message); return the error."""
    try:
        await aw
    except QueueError as e:
        assert e.code == code, f"expected {ErrorCode(code).name}, got {e}"
        assert index is None or e.index == index, f"expected index {index}: {e}"
        assert match is None or match in str(e), f"{match!r} not in {e}"
        return e
    raise AssertionError(f"expected QueueError {ErrorCode(code).name}, nothing raised")


# ============================================================================ raw list building
def patch_word(pos, width, arg, reserved0=0, reserved=0):
    """A PatchWord (spec.descriptors.PATCH_FIELDS)."""
    out = 0
    for name, v in (("pos", pos), ("width_m1", width - 1), ("arg", arg), ("reserved0", reserved0),
                    ("reserved", reserved)):
        out = put_field(out, PATCH_FIELDS, name, v)
    return out


def raw_list(entries):
    """List memory from ``[(descriptor words, [patch words]), ...]``: each entry with its patch
    count in its flags, followed by its patch block when it has patches."""
    lsb, width = LIST_ENTRY_FIELDS["patches"]
    out = bytearray()
    for words, patches in entries:
        words = list(words)
        assert len(patches) < 1 << width
        words[lsb // 32] |= len(patches) << lsb % 32
        out += b"".join(w.to_bytes(4, "little") for w in words)
        if patches:
            block = list(patches) + [0] * (8 - len(patches))
            out += b"".join(w.to_bytes(4, "little") for w in block)
    return bytes(out)


def list_descriptor(list_addr, entries, args_addr, args, tag=0, irq=True, passes=1):
    return encode(Opcode.EXEC_LIST, irq=irq, tag=tag, list_addr=list_addr, entries=entries,
                  args_addr=args_addr, args=args, loops_m1=passes - 1)


async def put_list(dev, entries, args=()):
    """Write a raw list and its argument table to fresh buffers; returns (list buffer, args
    buffer, entry count)."""
    data = raw_list(entries)
    lbuf = await dev.upload(np.frombuffer(data, np.uint8))
    abuf = await dev.upload(np.frombuffer(args_bytes(list(args) or [0]), np.uint8))
    return lbuf, abuf, len(entries)


async def _queue_serves(q, tag=0x77):
    """The queue (after a reset) completes a NOP."""
    rec = await (await q.submit([encode(Opcode.NOP, tag=tag)])).wait()
    assert rec[0]["status"] == ErrorCode.OK and rec[0]["tag"] == tag


# ============================================================================ programs
def copy_program(dim, rows, *, param=False, queues=(0, 0)):
    """Load ``rows`` rows of ``dim`` bytes of ``src`` into the scratchpad, store them to ``dst``
    (load on queue ``queues[0]``, store on ``queues[1]``, an event between them when they
    differ). With ``param``: the load's ``host_addr`` += parameter ``off``."""
    p = Program("copy", events=int(queues[0] != queues[1]))
    p.add_buffer(BufferSpec("src", 4 * rows * dim, role="input"))
    p.add_buffer(BufferSpec("dst", rows * dim, role="output"))
    p.add(ProgramCommand(queues[0], Opcode.DMA_LOAD,
                         dict(host_row_stride=dim, row_bytes=dim, rows=rows, planes=1, local_addr=0,
                              local_row_stride=1),
                         (Reloc("host_addr", "src"),), note="load src",
                         params=(Param("host_addr", "off"),) if param else ()))
    if queues[0] != queues[1]:
        p.add(ProgramCommand(queues[0], Opcode.SIGNAL_EVENT, dict(event=0, value=1), note="loaded"))
        p.add(ProgramCommand(queues[1], Opcode.WAIT_EVENT, dict(event=0, value=1), note="wait load"))
    else:
        p.add(ProgramCommand(queues[0], Opcode.BARRIER, note="load before store"))
    p.add(ProgramCommand(queues[1], Opcode.DMA_STORE,
                         dict(host_row_stride=dim, row_bytes=dim, rows=rows, planes=1, local_addr=0,
                              local_row_stride=1),
                         (Reloc("host_addr", "dst"),), note="store dst"))
    return p


def failing_program(dim):
    """Queue 0: a load, a GEMM whose A lies past the scratchpad (LOCAL_RANGE), a load, a NOP."""
    p = Program("fails")
    p.add_buffer(BufferSpec("src", dim * dim, role="input"))
    load = dict(host_row_stride=dim, row_bytes=dim, rows=dim, planes=1, local_addr=0,
                local_row_stride=1)
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, load, (Reloc("host_addr", "src"),), note="load ok"))
    p.add(ProgramCommand(0, Opcode.GEMM, dict(a_addr=A_PAST, b_addr=0, c_addr=0, m=1,
                                               k_tiles=1, n_tiles=1), note="gemm past the scratchpad"))
    p.add(ProgramCommand(0, Opcode.DMA_LOAD, load, (Reloc("host_addr", "src"),), note="load again"))
    p.add(ProgramCommand(0, Opcode.NOP, note="nop"))
    return p


# ============================================================================ scenarios
async def model_list_matches_run(dev, env, cm, feeds_list, fold=False):
    """A compiled model (``cm``, compiler.compile.CompiledModel) recorded once and launched once
    per feeds of ``feeds_list``, each launch with freshly allocated input, output and scratch
    buffers (rebinding; the constants are uploaded once and shared): outputs bit-identical to
    ``Device.run`` of the same program; one record (EXEC_LIST, OK) per queue and list segment
    (``fold``: loops folded, Device.record), the consumer index advancing by as many. Returns the
    launches' outputs."""
    from verif.model_run import read_outputs

    prog = cm.program
    consts = {name: await dev.upload(np.frombuffer(spec.init, np.uint8), spec.align)
              for name, spec in prog.buffers.items() if spec.role == "const" and spec.init is not None}
    held = list(consts.values())

    async def fresh(feeds):
        packed = cm.pack_inputs(feeds)
        bufs = dict(consts)
        for name, spec in prog.buffers.items():
            if spec.role == "input":
                bufs[name] = await dev.upload(np.frombuffer(packed[name], np.uint8), spec.align)
            elif name not in bufs:
                bufs[name] = dev.alloc(spec.nbytes, spec.align)
            if name not in consts:
                held.append(bufs[name])        # held to the end: every launch gets new addresses
        return bufs

    cl = await dev.record(prog, fold=fold)
    outs = []
    try:
        for k, feeds in enumerate(feeds_list):
            run_bufs = await fresh(feeds)
            await dev.run(prog, run_bufs)
            want = await read_outputs(cm, run_bufs)
            bufs = await fresh(feeds)
            consumer = {pq: await (await dev.queue(pq)).consumer() for pq in prog.queues}
            recs = await dev.launch(cl, bufs)
            assert sorted(recs) == prog.queues, recs
            for pq, rs in recs.items():
                n = len(cl.lists[pq])
                assert [(r["opcode"], r["status"], r["index"]) for r in rs] == \
                    [(Opcode.EXEC_LIST, ErrorCode.OK, (consumer[pq] + k) & 0xFFFF_FFFF)
                     for k in range(n)], (pq, rs)
                assert await (await dev.queue(pq)).consumer() == (consumer[pq] + n) & 0xFFFF_FFFF, \
                    f"queue {pq}: items wrote records"
            got = await read_outputs(cm, bufs)
            for name in want:
                assert np.array_equal(got[name], want[name]), \
                    f"launch {k}: output {name} differs from Device.run's"
            outs.append(got)
    finally:
        cl.free()
        for b in held:
            b.free()
    return outs


async def param_moves_load(dev, env):
    """A Param on a DMA load's host_addr moves where it reads: each launch copies the rows at
    offset ``off`` of ``src``; Device.run with the same params agrees; and a list of another
    shape (load and store on two queues with an event) rebinding buffers between launches."""
    dim, rows = dev.caps.dim, 3
    rng = env.rng(11)
    src_data = rng.integers(0, 256, 4 * rows * dim, dtype=np.uint8)
    src = await dev.upload(src_data)
    for queues in ((0, 0), (1, 2)):
        prog = copy_program(dim, rows, param=True, queues=queues)
        cl = await dev.record(prog)
        for off_rows in (0, 5, 2 * rows):
            dst = dev.alloc(rows * dim)
            await dst.write(bytes(rows * dim))
            off = off_rows * dim
            recs = await dev.launch(cl, {"src": src, "dst": dst}, params={"off": off})
            assert all(r[0]["opcode"] == Opcode.EXEC_LIST for r in recs.values())
            got = await dst.read()
            assert np.array_equal(got, src_data[off:off + rows * dim]), (queues, off_rows)
            dst2 = dev.alloc(rows * dim)
            await dev.run(prog, {"src": src, "dst": dst2}, params={"off": off})
            assert np.array_equal(await dst2.read(), got)
            dst.free()
            dst2.free()
        # misuse: missing, unknown and bad parameters; wrong buffer
        dst = dev.alloc(rows * dim)
        for params, match in ((None, "parameter 'off' is not given"),
                              ({"off": 0, "x": 1}, "unknown parameter 'x'"),
                              ({"off": -1}, "parameter 'off' = -1: must be an int in 0..4294967295"),
                              ({"off": 1 << 32}, "must be an int")):
            try:
                await dev.launch(cl, {"src": src, "dst": dst}, params=params)
            except DriverMisuse as e:
                assert match in str(e), (match, str(e))
            else:
                raise AssertionError(f"launch with params {params} did not raise")
        try:
            await dev.launch(cl, {"src": src, "nope": dst}, params={"off": 0})
        except DriverMisuse as e:
            assert "has no buffer 'nope'" in str(e), str(e)
        else:
            raise AssertionError("launch with a wrong buffer name did not raise")
        dst.free()
        cl.free()
        try:
            await dev.launch(cl, {"src": src}, params={"off": 0})
        except DriverMisuse as e:
            assert "freed command list" in str(e), str(e)
        else:
            raise AssertionError("launch of a freed list did not raise")
    src.free()


async def item_failure_halts_one_queue(dev, env):
    """An item failing in an engine (a GEMM past the scratchpad: LOCAL_RANGE) fails its list:
    exactly one record, the EXEC_LIST's (its index, opcode and tag), with the item's status and
    ``item`` = 1 + its list position; the QueueError names the item; only that queue halts
    (another queue keeps serving, a list too); after a reset it serves again."""
    dim = dev.caps.dim
    prog = failing_program(dim)
    cl = await dev.record(prog)
    src = await dev.upload(np.arange(dim * dim, dtype=np.uint8))
    q0 = await dev.queue(0)
    q3 = await dev.queue(3)
    first = q0.producer
    e = await expect_queue_error(dev.launch(cl, {"src": src}), ErrorCode.LOCAL_RANGE, first,
                                 "item 1 (GEMM, 'gemm past the scratchpad') failed")
    rec = e.record
    assert rec is not None and (rec["index"], rec["opcode"], rec["status"], rec["item"]) == \
        (first, Opcode.EXEC_LIST, ErrorCode.LOCAL_RANGE, 2) and rec["flags"] & 1, rec
    await dev.backend.wait(2000)                     # whatever was in flight retires
    assert await q0.consumer() == (first + 1) & 0xFFFF_FFFF, "exactly one record"
    assert (await q0.status())["HALTED"]
    assert await dev.backend.read(R.REGISTERS["Q_ERROR_INDEX0"]) == first
    # another queue keeps serving: ring descriptors and a list
    await _queue_serves(q3)
    ok = copy_program(dim, 2, queues=(3, 3))
    ok_cl = await dev.record(ok)
    dst = dev.alloc(2 * dim)
    big = await dev.upload(np.arange(8 * dim, dtype=np.uint8))
    recs = await dev.launch(ok_cl, {"src": big, "dst": dst})
    assert recs[3][0]["status"] == ErrorCode.OK
    assert np.array_equal(await dst.read(), np.arange(2 * dim, dtype=np.uint8))
    await q0.reset()
    await _queue_serves(q0)
    # the same list, its GEMM still failing, after the reset: index 1 now (the NOP took 0)
    await expect_queue_error(dev.launch(cl, {"src": src}), ErrorCode.LOCAL_RANGE, 1, "item 1")
    await q0.reset()
    for b in (src, dst, big):
        b.free()
    cl.free()
    ok_cl.free()


async def failed_list_drops_the_rest(dev, env):
    """A failed list: its items after the failure are dropped without running (a store behind a
    BARRIER never writes, a list longer than the prefetch FIFO is drained), the record is the
    first item to leave the window failed (window order, not retirement order), and an item the
    firmware fails (reserved flag bits, an unknown opcode) fails the list the same way."""
    dim = dev.caps.dim
    q = await dev.queue(1)
    await q.reset()
    dst = await dev.upload(np.full(dim, 0x5A, np.uint8))
    bad_gemm = encode(Opcode.GEMM, a_addr=A_PAST, m=1, k_tiles=1, n_tiles=1)
    store = encode(Opcode.DMA_STORE, host_addr=0, host_row_stride=dim, row_bytes=dim, rows=1,
                   planes=1, local_addr=0, local_row_stride=1)
    cases = [
        # (what, entries, args, expected status, expected failed position)
        ("GEMM then a store behind a BARRIER, 40 NOPs",
         [(encode(Opcode.NOP), []), (bad_gemm, []), (encode(Opcode.BARRIER), []),
          (store, [patch_word(32, 32, 0)])] + [(encode(Opcode.NOP), [])] * 40,
         [dst.addr], ErrorCode.LOCAL_RANGE, 1),
        # a load outside the queue's DMA window (WINDOW) before the failing GEMM: whichever retires
        # first, the load leaves the window first
        ("load outside the window, then the GEMM",
         [(encode(Opcode.DMA_LOAD, host_addr=0, host_row_stride=dim, row_bytes=dim, rows=1,
                  planes=1, local_addr=0, local_row_stride=1), []), (bad_gemm, []),
          (encode(Opcode.NOP), [])], [], ErrorCode.WINDOW, 0),
        ("an item with a reserved flag bit", [(encode(Opcode.NOP), []), (encode(Opcode.NOP), []),
                                              (_with_flag(encode(Opcode.NOP), 15), [])],
         [], ErrorCode.RESERVED_BITS, 2),
        ("an item with an unknown opcode", [(encode(Opcode.NOP), []), ([0xFF] + [0] * 7, [])],
         [], ErrorCode.BAD_OPCODE, 1),
    ]
    for what, entries, args, code, pos in cases:
        lbuf, abuf, n = await put_list(dev, entries, args)
        first = q.producer
        sub = await q.submit([list_descriptor(lbuf.addr, n, abuf.addr, len(args), tag=0x42)])
        e = await expect_queue_error(sub.wait(), code, first)
        rec = e.record
        assert (rec["opcode"], rec["tag"], rec["status"], rec["item"]) == \
            (Opcode.EXEC_LIST, 0x42, code, pos + 1), (what, rec)
        await dev.backend.wait(2000)
        assert await q.consumer() == first + 1, what
        assert np.array_equal(await dst.read(), np.full(dim, 0x5A, np.uint8)), \
            f"{what}: a dropped store ran"
        await q.reset()
        lbuf.free()
        abuf.free()
    await _queue_serves(q)
    dst.free()


async def looped_list(dev, env):
    """A looped list (``loops_m1``, docs/queues.md "Looped lists"): 7 passes of load row t of
    ``src`` -> scratchpad row t -> store to row 6 - t of ``dst`` (a negative stride, mod 2**32),
    the arguments in two table rows (the stride table after them at the next 32-byte boundary):
    ``dst`` is ``src`` with its rows reversed, one record. Then the same body with a GEMM whose
    ``a_addr`` walks past the scratchpad in pass 2: the record's ``item`` = 1 + the run position
    (pass × entries + entry), the queue halts and serves again after a reset; and a program
    folded by the driver failing the same way: the error names the command, pass and entry."""
    dim, passes = dev.caps.dim, 7
    spad_rows = dev.caps.spad_banks * dev.caps.spad_bank_rows
    q = await dev.queue(2)
    rng = env.rng(21)
    data = rng.integers(0, 256, passes * dim, dtype=np.uint8)
    src = await dev.upload(data)
    dst = await dev.upload(np.zeros(passes * dim, np.uint8))
    layout = commands.PAYLOAD_FIELDS
    host = layout[Opcode.DMA_LOAD]["host_addr"][0]
    local = layout[Opcode.DMA_LOAD]["local_addr"]
    row = dict(host_row_stride=dim, row_bytes=dim, rows=1, planes=1, local_row_stride=1)
    body = [(encode(Opcode.DMA_LOAD, **row), [patch_word(host, 32, 0), patch_word(local[0], local[1], 1)]),
            (encode(Opcode.BARRIER), []),
            (encode(Opcode.DMA_STORE, **row), [patch_word(host, 32, 9), patch_word(local[0], local[1], 1)])]
    args = [src.addr, 0] + [0x1000 * k for k in range(2, 9)] + [dst.addr + (passes - 1) * dim]
    strides = [dim, 1] + [k for k in range(2, 9)] + [-dim & 0xFFFF_FFFF]
    lbuf = await dev.upload(np.frombuffer(raw_list(body), np.uint8))
    abuf = await dev.upload(np.frombuffer(args_bytes(args) + args_bytes(strides), np.uint8))
    first = q.producer
    recs = await (await q.submit([list_descriptor(lbuf.addr, len(body), abuf.addr, len(args),
                                                  tag=0x51, passes=passes)])).wait()
    assert [(r["status"], r["tag"], r["item"]) for r in recs] == [(ErrorCode.OK, 0x51, 0)], recs
    assert await q.consumer() == first + 1, "items wrote records"
    got = (await dst.read()).reshape(passes, dim)
    assert np.array_equal(got, data.reshape(passes, dim)[::-1]), "looped copy"
    # the GEMM's a_addr advances by 2/3 of the scratchpad per pass: pass 2 lies past it
    gemm = encode(Opcode.GEMM, m=1, k_tiles=1, n_tiles=1)
    a_lsb = layout[Opcode.GEMM]["a_addr"]
    body = [(encode(Opcode.NOP), []), (gemm, [patch_word(a_lsb[0], a_lsb[1], 0)]),
            (encode(Opcode.NOP), [])]
    lbuf2 = await dev.upload(np.frombuffer(raw_list(body), np.uint8))
    abuf2 = await dev.upload(np.frombuffer(args_bytes([0]) + args_bytes([2 * spad_rows // 3]), np.uint8))
    first = q.producer
    sub = await q.submit([list_descriptor(lbuf2.addr, 3, abuf2.addr, 1, tag=0x52, passes=5)])
    e = await expect_queue_error(sub.wait(), ErrorCode.LOCAL_RANGE, first)
    assert (e.record["tag"], e.record["item"]) == (0x52, 1 + 2 * 3 + 1), e.record
    await dev.backend.wait(2000)
    assert await q.consumer() == first + 1
    await q.reset()
    await _queue_serves(q)
    # the same failure from a recorded program folded by the driver: the error names the command,
    # its pass and its entry
    prog = Program("walk")
    for t in range(8):
        prog.add(ProgramCommand(2, Opcode.NOP, note=f"nop {t}"))
        prog.add(ProgramCommand(2, Opcode.GEMM, dict(a_addr=t * (2 * spad_rows // 3), m=1, k_tiles=1,
                                                     n_tiles=1), note=f"gemm {t}"))
        prog.add(ProgramCommand(2, Opcode.NOP, note=f"nop' {t}"))
    cl = await dev.record(prog, fold=True)
    assert [(rl.entries, rl.passes) for rl in cl.lists[2]] == [(3, 8)], cl
    await expect_queue_error(dev.launch(cl, {}), ErrorCode.LOCAL_RANGE, q.producer,
                             "item 7 (GEMM, 'gemm 2', pass 2 entry 1 of the loop) failed")
    await q.reset()
    await _queue_serves(q)
    cl.free()
    for b in (src, dst, lbuf, abuf, lbuf2, abuf2):
        b.free()


def _with_flag(words, bit):
    words = list(words)
    words[0] |= 1 << bit
    return words


async def ring_and_list_mix(dev, env):
    """Ring descriptors around an EXEC_LIST on one queue: records in ring order (the list's one
    record at its index, tag and flags its own), items silent, ring descriptors after the list
    only after it."""
    q = await dev.queue(2)
    await q.reset()
    lbuf, abuf, n = await put_list(dev, [(encode(Opcode.NOP, tag=100 + k), []) for k in range(5)])
    descs = [encode(Opcode.NOP, tag=1), list_descriptor(lbuf.addr, n, abuf.addr, 0, tag=2),
             encode(Opcode.NOP, tag=3)]
    recs = await (await q.submit(descs)).wait()
    assert [(r["index"], r["opcode"], r["tag"], r["status"]) for r in recs] == \
        [(0, Opcode.NOP, 1, 0), (1, Opcode.EXEC_LIST, 2, 0), (2, Opcode.NOP, 3, 0)], recs
    # an EXEC_LIST without irq in the middle of a batch, and lists back to back
    descs = [list_descriptor(lbuf.addr, n, abuf.addr, 0, tag=10 + k, irq=False) for k in range(3)]
    recs = await (await q.submit(descs)).wait()
    assert [r["tag"] for r in recs] == [10, 11, 12]
    assert all(r["opcode"] == Opcode.EXEC_LIST for r in recs)
    await q.reset()
    lbuf.free()
    abuf.free()


async def bad_lists(dev, env):
    """BAD_LIST halts at Q_ERROR_INDEX = the EXEC_LIST's index, without a record: every illegal
    patch and a nested EXEC_LIST (entries before it still run; the record area stays at C)."""
    q = await dev.queue(1)
    await q.reset()
    nop = encode(Opcode.NOP)
    cases = {
        "pos < 32": patch_word(16, 8, 0),
        "pos + width > 256": patch_word(224, 33, 0),
        "pos % 32 + width > 64": patch_word(40, 60, 0),
        "arg >= args": patch_word(32, 8, 2),
        "reserved0": patch_word(32, 8, 0, reserved0=1),
        "reserved": patch_word(32, 8, 0, reserved=1),
    }
    for what, pw in cases.items():
        lbuf, abuf, n = await put_list(dev, [(nop, []), (nop, [patch_word(32, 8, 0), pw]), (nop, [])],
                                        args=[1, 2])
        first = q.producer
        e = await expect_queue_error(
            (await q.submit([list_descriptor(lbuf.addr, n, abuf.addr, 2)])).wait(),
            ErrorCode.BAD_LIST, first)
        assert e.record is None, (what, e.record)
        assert await q.consumer() == first, what
        await q.reset()
        lbuf.free()
        abuf.free()
    # legal patches at the limits (a NOP ignores its payload): the last word, two words at once,
    # a field across a word boundary
    lbuf, abuf, n = await put_list(dev, [(nop, [patch_word(224, 32, 0), patch_word(32, 64, 1),
                                                 patch_word(63, 2, 0)]), (nop, [])], args=[5, 7])
    recs = await (await q.submit([list_descriptor(lbuf.addr, n, abuf.addr, 2)])).wait()
    assert recs[0]["status"] == ErrorCode.OK
    lbuf.free()
    abuf.free()
    # nested EXEC_LIST
    inner, iargs, m = await put_list(dev, [(nop, [])])
    lbuf, abuf, n = await put_list(dev, [(nop, []), (list_descriptor(inner.addr, m, iargs.addr, 0), [])])
    first = q.producer
    await expect_queue_error((await q.submit([list_descriptor(lbuf.addr, n, abuf.addr, 0)])).wait(),
                             ErrorCode.BAD_LIST, first)
    await q.reset()
    await _queue_serves(q)
    for b in (inner, iargs, lbuf, abuf):
        b.free()


async def unmapped_list(dev, env):
    """A list, argument table or patch block in memory that answers a bus error halts the queue
    with that error at the EXEC_LIST's index."""
    assert env.unmapped is not None and env.unmapped % ENTRY == 0
    q = await dev.queue(1)
    await q.reset()
    good, gargs, n = await put_list(dev, [(encode(Opcode.NOP), [])])
    for what, desc in (("entries", list_descriptor(env.unmapped, 1, gargs.addr, 1)),
                       ("argument table", list_descriptor(good.addr, n, env.unmapped, 1))):
        first = q.producer
        e = await expect_queue_error((await q.submit([desc])).wait(), env.unmapped_code, first)
        assert e.record is None, what
        await q.reset()
    await _queue_serves(q)
    good.free()
    gargs.free()


async def reset_abandons_list(dev, env):
    """A queue reset while a list is expanding (an item waits on an event nobody signals, behind
    it more items than the prefetch FIFO holds) abandons the list; the queue serves again."""
    q = await dev.queue(2)
    await q.reset()
    ev = await dev.event()
    never = ev.next_value(1000)
    entries = [(encode(Opcode.WAIT_EVENT, event=ev.index, value=never), [])]
    entries += [(encode(Opcode.NOP, tag=k), []) for k in range(40)]
    lbuf, abuf, n = await put_list(dev, entries)
    sub = await q.submit([list_descriptor(lbuf.addr, n, abuf.addr, 0)])
    await dev.backend.wait(3000)
    assert (await q.status())["WAITING"]
    assert await q.consumer() == 0
    await q.reset()
    assert await dev.backend.read(R.REGISTERS["Q_FETCH2"]) == 0
    try:
        await sub.wait()
    except DriverMisuse as e:
        assert "discarded by a queue reset" in str(e)
    else:
        raise AssertionError("a submission from before the reset did not raise")
    await _queue_serves(q)
    # the same list again, its event signalled this time: completes
    await ev.signal_on(q, never)
    recs = await (await q.submit([list_descriptor(lbuf.addr, n, abuf.addr, 0, tag=5)])).wait()
    assert recs[0]["tag"] == 5 and recs[0]["opcode"] == Opcode.EXEC_LIST
    ev.free()
    lbuf.free()
    abuf.free()


MALFORMED = {
    # what: (descriptor fields changed, flags reserved bit, expected status)
    "list_addr misaligned": (dict(list_addr=16), 0, ErrorCode.MISALIGNED),
    "args_addr misaligned": (dict(args_addr=4), 0, ErrorCode.MISALIGNED),
    "entries 0": (dict(entries=0), 0, ErrorCode.BAD_SHAPE),
    f"args {LIST_ARGS + 1}": (dict(args=LIST_ARGS + 1), 0, ErrorCode.BAD_SHAPE),
    "payload reserved bit": (dict(reserved=1), 0, ErrorCode.RESERVED_BITS),
    "flags reserved bit": ({}, 1, ErrorCode.RESERVED_BITS),
}


async def malformed_exec_list(dev, env, what):
    """A malformed EXEC_LIST (MALFORMED[what]) is not expanded: the firmware fails it with its
    status; the record names the EXEC_LIST."""
    fields, flag, code = MALFORMED[what]
    q = await dev.queue(1)
    await q.reset()
    good, gargs, n = await put_list(dev, [(encode(Opcode.NOP), [])])
    base = dict(list_addr=good.addr, entries=n, args_addr=gargs.addr, args=0)
    base.update({k: (base[k] + v if k in ("list_addr", "args_addr") else v) for k, v in fields.items()})
    desc = encode(Opcode.EXEC_LIST, tag=9, **base)
    if flag:
        desc[0] |= 1 << 15           # the top reserved flag bit (DescFlags)
    e = await expect_queue_error((await q.submit([desc])).wait(), code, 0)
    assert e.record is not None and e.record["opcode"] == Opcode.EXEC_LIST and e.record["tag"] == 9
    await q.reset()
    await _queue_serves(q)
    good.free()
    gargs.free()


async def driver_misuse(dev, env):
    """Command-list misuse: a list of another device, double free, a non-list; and a queue
    using more buffers than one argument table holds, recorded as two segments, launched."""
    dim = dev.caps.dim
    prog = copy_program(dim, 1)
    cl = await dev.record(prog)
    for bad, match in (("nope", "expected a CommandList"),):
        try:
            await dev.launch(bad, {})
        except DriverMisuse as e:
            assert match in str(e), str(e)
        else:
            raise AssertionError("launch of a non-list did not raise")
    other = await type(dev).open(dev.backend, host_base=dev.allocator.base,
                                 host_bytes=dev.allocator.size)
    try:
        await other.launch(cl, {})
    except DriverMisuse as e:
        assert "recorded on another device" in str(e), str(e)
    else:
        raise AssertionError("launch on another device did not raise")
    cl.free()
    try:
        cl.free()
    except DriverMisuse as e:
        assert "double free" in str(e)
    else:
        raise AssertionError("double free did not raise")
    many = Program("many")
    for k in range(LIST_ARGS + 1):
        many.add_buffer(BufferSpec(f"b{k}", 64, role="input"))
        many.add(ProgramCommand(0, Opcode.DMA_LOAD, dict(row_bytes=1, rows=1, planes=1),
                                (Reloc("host_addr", f"b{k}"),)))
    wide = await dev.record(many)        # more buffers than one argument table: two segments
    assert [rl.nargs for rl in wide.lists[0]] == [LIST_ARGS, 1], wide.lists[0]
    bufs = {f"b{k}": dev.alloc(64) for k in range(LIST_ARGS + 1)}
    records = await dev.launch(wide, bufs)
    assert len(records[0]) == 2, records
    wide.free()
    for b in bufs.values():
        b.free()


SCENARIOS = [param_moves_load, item_failure_halts_one_queue, failed_list_drops_the_rest,
             looped_list, ring_and_list_mix, bad_lists, unmapped_list, reset_abandons_list, driver_misuse]
