"""Golden device model: every error class is reported with its code and changes nothing."""
import numpy as np
import pytest

from spec import chip
from spec.capabilities import Capabilities
from spec.commands import encode
from spec.descriptors import ErrorCode, Opcode
from golden.device_model import DeviceModel
from hdl_gen.config import KakiConfig

CAPS = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=64, acc_bank_rows=64))
DMA = dict(host_addr=0x100, host_row_stride=4, host_plane_stride=0, row_bytes=4, rows=2, planes=1,
           local_row_stride=1)
GEMM = dict(m=2, k_tiles=1, n_tiles=1, a_addr=0, b_addr=8, c_addr=0)
VEC = dict(src_addr=0, dst_addr=20, rows=2, mult_addr=10, shift_addr=11)

BAD = [
    ("reserved flag bit", encode(Opcode.GEMM, **GEMM), ErrorCode.RESERVED_BITS, (0, 1 << 9)),
    ("reserved payload bit", encode(Opcode.GEMM, reserved=1, **GEMM), ErrorCode.RESERVED_BITS, None),
    ("unknown opcode", encode(Opcode.NOP), ErrorCode.BAD_OPCODE, (0, 0x7F)),
    ("zero rows", encode(Opcode.DMA_LOAD, **{**DMA, "rows": 0}), ErrorCode.BAD_SHAPE, None),
    ("row too long", encode(Opcode.DMA_LOAD, **{**DMA, "row_bytes": 3, "col_offset": 2}),
     ErrorCode.BAD_SHAPE, None),
    ("local range", encode(Opcode.DMA_LOAD, **{**DMA, "local_addr": CAPS.spad_rows - 1}),
     ErrorCode.LOCAL_RANGE, None),
    ("host range", encode(Opcode.DMA_STORE, **{**DMA, "host_addr": (1 << 32) - 4}),
     ErrorCode.HOST_RANGE, None),
    ("gemm m=0", encode(Opcode.GEMM, **{**GEMM, "m": 0}), ErrorCode.BAD_SHAPE, None),
    ("gemm C out of range", encode(Opcode.GEMM, **{**GEMM, "c_addr": CAPS.acc_rows - 1}),
     ErrorCode.LOCAL_RANGE, None),
    ("vector dst out of range", encode(Opcode.VECTOR, **{**VEC, "dst_addr": CAPS.spad_rows - 1}),
     ErrorCode.LOCAL_RANGE, None),
    ("bad shift", encode(Opcode.VECTOR, **VEC), ErrorCode.BAD_SHIFT, "shift64"),
]


@pytest.mark.parametrize("name,words,code,patch", BAD, ids=[b[0] for b in BAD])
def test_error_is_reported_and_changes_nothing(name, words, code, patch):
    dev = DeviceModel(CAPS, host_bytes=1 << 16)
    rng = np.random.default_rng(7)
    dev.host[:] = rng.integers(0, 256, dev.host.size, dtype=np.uint8)
    dev.spad[:] = rng.integers(-128, 128, dev.spad.shape, dtype=np.int8)
    dev.acc[:] = rng.integers(-2**31, 2**31, dev.acc.shape, dtype=np.int32)
    dev.acc[11] = 5
    if patch == "shift64":
        dev.acc[11, 2] = 64
    elif patch:
        words = list(words)
        words[patch[0]] |= patch[1]
    before = (dev.host.copy(), dev.spad.copy(), dev.acc.copy())
    assert dev.submit(words) == code
    assert dev.retired[-1].error == code
    for a, b in zip(before, (dev.host, dev.spad, dev.acc)):
        np.testing.assert_array_equal(a, b)


def test_zero_byte_load_writes_zero_rows():
    dev = DeviceModel(CAPS, host_bytes=1 << 12)
    dev.spad[:] = 5
    assert dev.submit(encode(Opcode.DMA_LOAD, **{**DMA, "row_bytes": 0, "local_addr": 3})) == ErrorCode.OK
    assert (dev.spad[3:5] == 0).all() and (dev.spad[5] == 5).all() and (dev.spad[2] == 5).all()


WINDOW = (0x100, 0x40)     # DMA may touch host bytes 0x100..0x13F


@pytest.mark.parametrize("name,fields,window,code", [
    ("inside", {}, WINDOW, ErrorCode.OK),
    ("exactly the window", {"host_addr": 0x138, "host_row_stride": 4}, WINDOW, ErrorCode.OK),
    ("one byte below", {"host_addr": 0xFF}, WINDOW, ErrorCode.WINDOW),
    ("one byte above", {"host_addr": 0x139}, WINDOW, ErrorCode.WINDOW),
    ("plane stride leaves it", {"planes": 2, "host_plane_stride": 0x40}, WINDOW, ErrorCode.WINDOW),
    ("zero-byte rows are not checked", {"host_addr": 0, "row_bytes": 0}, WINDOW, ErrorCode.OK),
    ("direct submission is not windowed", {"host_addr": 0x800}, None, ErrorCode.OK),
    ("LOCAL_RANGE first", {"host_addr": 0, "local_addr": CAPS.spad_rows - 1}, WINDOW,
     ErrorCode.LOCAL_RANGE),
    ("HOST_RANGE first", {"host_addr": (1 << 32) - 4}, WINDOW, ErrorCode.HOST_RANGE),
    ("WINDOW before DECERR", {"host_addr": 0x2000}, (0x1000, 0x800), ErrorCode.WINDOW),
    ("DECERR inside the window", {"host_addr": 0x2000}, (0x1000, 0x2000), ErrorCode.AXI_DECERR),
])
@pytest.mark.parametrize("opcode", [Opcode.DMA_LOAD, Opcode.DMA_STORE])
def test_dma_window_check_order(name, fields, window, code, opcode):
    dev = DeviceModel(CAPS, host_bytes=0x2000)
    dev.host[:] = 0xAB
    before = (dev.host.copy(), dev.spad.copy())
    assert dev.submit(encode(opcode, **{**DMA, **fields}), window=window) == code
    if code != ErrorCode.OK:
        np.testing.assert_array_equal(before[0], dev.host)
        np.testing.assert_array_equal(before[1], dev.spad)


HOLE = (0x1004, 0x1005)     # one byte that never answers: its bus beat is 0x1000..0x1007


@pytest.mark.parametrize("name,fields,window,code", [
    ("a row in the hole's beat", {"host_addr": 0x0FFC}, None, ErrorCode.BUS_TIMEOUT),
    ("a row sharing the beat, not the byte", {"host_addr": 0x1000, "row_bytes": 2, "rows": 1},
     None, ErrorCode.BUS_TIMEOUT),
    ("the next beat", {"host_addr": 0x1008}, None, ErrorCode.OK),
    ("rows around it", {"host_addr": 0x0FF8, "host_row_stride": 16}, None, ErrorCode.OK),
    ("the second plane", {"host_addr": 0x0F00, "planes": 2, "host_plane_stride": 0x100}, None,
     ErrorCode.BUS_TIMEOUT),
    ("zero-byte rows touch nothing", {"host_addr": 0x1004, "row_bytes": 0}, None, ErrorCode.OK),
    ("HOST_RANGE first", {"host_addr": (1 << 32) - 4}, None, ErrorCode.HOST_RANGE),
    ("WINDOW first", {"host_addr": 0x1004}, (0x0, 0x1000), ErrorCode.WINDOW),
    ("inside the window", {"host_addr": 0x1004}, (0x1000, 0x100), ErrorCode.BUS_TIMEOUT),
])
@pytest.mark.parametrize("opcode", [Opcode.DMA_LOAD, Opcode.DMA_STORE])
def test_blackhole(name, fields, window, code, opcode):
    """Host memory that never answers: a DMA command whose rows' bus beats overlap it fails with
    BUS_TIMEOUT (after HOST_RANGE and WINDOW), changes nothing, and ``reaches_blackhole`` says so
    without executing it."""
    dev = DeviceModel(CAPS, host_bytes=0x2000, blackhole=HOLE)
    dev.host[:] = np.arange(dev.host.size, dtype=np.uint8)
    dev.spad[:] = 7
    words = encode(opcode, **{**DMA, **fields})
    before = (dev.host.copy(), dev.spad.copy())
    assert dev.reaches_blackhole(words, window) == (code == ErrorCode.BUS_TIMEOUT)
    np.testing.assert_array_equal(before[1], dev.spad)
    assert dev.submit(words, window=window) == code
    if code != ErrorCode.OK:
        np.testing.assert_array_equal(before[0], dev.host)
        np.testing.assert_array_equal(before[1], dev.spad)
    dev.blackhole = None
    assert dev.submit(words, window=window) == (ErrorCode.OK if code == ErrorCode.BUS_TIMEOUT else code)


@pytest.mark.parametrize("opcode", [Opcode.SIGNAL_EVENT, Opcode.WAIT_EVENT, Opcode.BARRIER])
def test_queue_level_opcodes_are_bad_opcode_when_submitted_directly(opcode):
    """The firmware runs them from queues; the dispatcher behind CMD_SUBMIT only knows engines."""
    dev = DeviceModel(CAPS, host_bytes=1 << 12)
    assert dev.submit(encode(opcode)) == ErrorCode.BAD_OPCODE


def _gemm_tile_by_tile(spad, acc, d, dim):
    """The GemmCmd docstring literally: one dim x dim k-tile product at a time, wrapping int32."""
    acc = acc.astype(np.int64)
    for n in range(d["n_tiles"]):
        c0 = d["c_addr"] + n * d["c_nt_stride"]
        for k in range(d["k_tiles"]):
            a0 = d["a_addr"] + k * d["a_kt_stride"]
            b0 = d["b_addr"] + n * d["b_nt_stride"] + k * dim
            prod = spad[a0:a0 + d["m"]].astype(np.int64) @ spad[b0:b0 + dim].astype(np.int64)
            base = acc[c0:c0 + d["m"]] if k or d["accumulate"] else 0
            acc[c0:c0 + d["m"]] = (base + prod + 2**31) % 2**32 - 2**31
    return acc.astype(np.int32)


def test_gemm_equals_tile_by_tile_products():
    """Random GEMMs, including C tiles that overlap (c_nt_stride < m) and int32 wrap-around:
    the model's one product per C tile equals k-tile by k-tile accumulation."""
    rng = np.random.default_rng(11)
    dev = DeviceModel(CAPS, host_bytes=1 << 12)
    dim, done = CAPS.dim, 0
    while done < 200:
        d = dict(m=int(rng.integers(1, 12)), k_tiles=int(rng.integers(1, 4)),
                 n_tiles=int(rng.integers(1, 4)), a_addr=int(rng.integers(0, 40)),
                 b_addr=int(rng.integers(0, 40)), c_addr=int(rng.integers(0, 40)),
                 a_kt_stride=int(rng.integers(0, 12)), b_nt_stride=int(rng.integers(0, 16)),
                 c_nt_stride=int(rng.integers(0, 12)), accumulate=int(rng.integers(0, 2)))
        dev.spad[:] = rng.integers(-128, 128, dev.spad.shape, dtype=np.int8)
        dev.acc[:] = rng.integers(-2**31, 2**31, dev.acc.shape, dtype=np.int64).astype(np.int32)
        want = _gemm_tile_by_tile(dev.spad, dev.acc, d, dim)
        code = dev.submit(encode(Opcode.GEMM, **d))
        if code == ErrorCode.LOCAL_RANGE:
            continue
        assert code == ErrorCode.OK
        np.testing.assert_array_equal(dev.acc, want, err_msg=str(d))
        done += 1


def _gemm_reference(spad, acc, d, dim):
    """GEMM through golden.ops.gemm, one C tile after the other, every operand gathered row by row
    (the device model's strided views and one product for disjoint C tiles must equal it)."""
    from golden import ops
    acc = acc.copy()
    m, kt, nt = d["m"], d["k_tiles"], d["n_tiles"]
    for h in range(d.get("batches_m1", 0) + 1):
        a0, b0 = d["a_addr"] + h * d.get("a_batch_stride", 0), d["b_addr"] + h * d.get("b_batch_stride", 0)
        c0 = d["c_addr"] + h * d.get("c_batch_stride", 0)
        a = np.concatenate([spad[a0 + t * d["a_kt_stride"] + np.arange(m)] for t in range(kt)], axis=1)
        for n in range(nt):
            if d.get("b_transpose"):
                b = np.concatenate([spad[b0 + t * d["b_nt_stride"] + n * dim + np.arange(dim)].T
                                    for t in range(kt)], axis=0)
            else:
                b = spad[b0 + n * d["b_nt_stride"] + np.arange(kt * dim)]
            c = c0 + n * d["c_nt_stride"]
            acc[c:c + m] = ops.gemm(a, b, acc[c:c + m] if d["accumulate"] else None)
    return acc


def test_gemm_transposed_batched_equals_reference():
    """Random GEMMs with B transposed or not, batches, zero and overlapping strides."""
    rng = np.random.default_rng(12)
    dev = DeviceModel(CAPS, host_bytes=1 << 12)
    done = 0
    while done < 150:
        d = dict(m=int(rng.integers(1, 10)), k_tiles=int(rng.integers(1, 4)),
                 n_tiles=int(rng.integers(1, 4)), a_addr=int(rng.integers(0, 30)),
                 b_addr=int(rng.integers(0, 30)), c_addr=int(rng.integers(0, 30)),
                 a_kt_stride=int(rng.integers(0, 12)), b_nt_stride=int(rng.integers(0, 16)),
                 c_nt_stride=int(rng.integers(0, 12)), accumulate=int(rng.integers(0, 2)),
                 b_transpose=int(rng.integers(0, 2)), batches_m1=int(rng.integers(0, 3)),
                 a_batch_stride=int(rng.integers(0, 10)), b_batch_stride=int(rng.integers(0, 10)),
                 c_batch_stride=int(rng.integers(0, 20)))
        dev.spad[:] = rng.integers(-128, 128, dev.spad.shape, dtype=np.int8)
        dev.acc[:] = rng.integers(-2**31, 2**31, dev.acc.shape, dtype=np.int64).astype(np.int32)
        want = _gemm_reference(dev.spad, dev.acc, d, CAPS.dim)
        code = dev.submit(encode(Opcode.GEMM, **d))
        if code == ErrorCode.LOCAL_RANGE:
            continue
        assert code == ErrorCode.OK
        np.testing.assert_array_equal(dev.acc, want, err_msg=str(d))
        done += 1


def test_dma_equals_reference_functions():
    """Random DMA loads and stores (zero and overlapping strides, column offsets, both local
    memories) equal golden.ops.dma_load / dma_store written into the local rows / host memory."""
    from golden import ops
    rng = np.random.default_rng(13)
    dev = DeviceModel(CAPS, host_bytes=1 << 10)
    done = 0
    while done < 300:
        acc = int(rng.integers(0, 2))
        lrb = CAPS.dim * (4 if acc else 1)
        rb = int(rng.integers(0, lrb + 1))
        d = dict(host_addr=int(rng.integers(0, 600)), host_row_stride=int(rng.integers(0, 24)),
                 host_plane_stride=int(rng.integers(0, 64)), row_bytes=rb,
                 col_offset=int(rng.integers(0, lrb - rb + 1)), rows=int(rng.integers(1, 6)),
                 planes=int(rng.integers(1, 4)), local_addr=int(rng.integers(0, 40)),
                 local_row_stride=int(rng.integers(0, 4)), local_plane_stride=int(rng.integers(0, 12)),
                 acc=acc)
        op = (Opcode.DMA_LOAD, Opcode.DMA_STORE)[int(rng.integers(0, 2))]
        dev.host[:] = rng.integers(0, 256, dev.host.size, dtype=np.uint8)
        dev.spad[:] = rng.integers(-128, 128, dev.spad.shape, dtype=np.int8)
        dev.acc[:] = rng.integers(-2**31, 2**31, dev.acc.shape, dtype=np.int64).astype(np.int32)
        mem = dev.acc if acc else dev.spad
        view = mem.copy().view(np.uint8).reshape(mem.shape[0], lrb)
        host = dev.host.copy()
        local = (d["local_addr"] + np.arange(d["planes"])[:, None] * d["local_plane_stride"]
                 + np.arange(d["rows"])[None, :] * d["local_row_stride"]).ravel()
        fields = {k: d[k] for k in ("host_addr", "host_row_stride", "host_plane_stride",
                                    "row_bytes", "col_offset", "rows", "planes")}
        code = dev.submit(encode(op, **d))
        if code in (ErrorCode.LOCAL_RANGE, ErrorCode.AXI_DECERR):
            continue
        assert code == ErrorCode.OK, d
        if op == Opcode.DMA_LOAD:
            view[local] = ops.dma_load(host, local_row_bytes=lrb, **fields) if rb else 0
        elif rb:
            host = ops.dma_store(host, view[local], **fields)
        np.testing.assert_array_equal(dev.host, host, err_msg=str(d))
        np.testing.assert_array_equal(mem.view(np.uint8).reshape(mem.shape[0], lrb), view,
                                      err_msg=str(d))
        done += 1


def test_gemm_beyond_float32_exact_k_equals_reference():
    """K > ops.F32_EXACT_K (k-tiles read again through zero strides) takes the int64 product;
    K <= it the float32 one: both equal golden.ops.gemm, with all operands -128 (the largest
    sums) and at random."""
    from golden import ops
    rng = np.random.default_rng(14)
    dev = DeviceModel(CAPS, host_bytes=1 << 12)
    dim = CAPS.dim
    for kt in (ops.F32_EXACT_K // dim, ops.F32_EXACT_K // dim + 1, 700):
        for fill in (None, -128):
            d = dict(m=3, k_tiles=kt, n_tiles=2, a_addr=0, b_addr=16, c_addr=0, a_kt_stride=0,
                     b_nt_stride=0, c_nt_stride=3, accumulate=1, b_transpose=1)
            dev.spad[:] = (rng.integers(-128, 128, dev.spad.shape, dtype=np.int8) if fill is None
                           else fill)
            dev.acc[:] = rng.integers(-2**31, 2**31, dev.acc.shape, dtype=np.int64).astype(np.int32)
            want = _gemm_reference(dev.spad, dev.acc, d, dim)
            assert dev.submit(encode(Opcode.GEMM, **d)) == ErrorCode.OK
            np.testing.assert_array_equal(dev.acc, want, err_msg=str((kt, fill)))


def _sfu_reference(spad, acc, op, d, dim):
    """An SFU command through the argument-checking golden.special_functions references, its
    rows gathered and scattered with index arrays (a later row wins where segments overlap)."""
    from golden import special_functions as sf
    spad = spad.copy()
    rows, length = d["rows"], d["length"]
    segs = -(-length // dim)

    def idx(base):
        return base + d["seg_stride"] * np.arange(segs)[None, :] + np.arange(rows)[:, None]

    def logical(base):
        return spad[idx(base)].reshape(rows, -1)[:, :length]

    def params(base):
        return acc[base:base + segs].reshape(-1)[:length].astype(np.int32)

    def i8(v):
        return v - 256 if v & 0x80 else v
    if op == Opcode.SOFTMAX:
        y = sf.softmax(logical(d["src_addr"]), mult=d["mult"], causal=bool(d["causal"]),
                       mask_offset=d["mask_offset"])
    else:
        kw = dict(eps=(d["eps_mant"], d["eps_exp"]), shift=d["shift"],
                  in_zero_point=i8(d["in_zero_point"]), out_zero_point=i8(d["out_zero_point"]))
        x = logical(d["src_addr"])
        y = (sf.rms_norm(x, params(d["gamma_addr"]), **kw) if op == Opcode.RMSNORM else
             sf.layer_norm(x, params(d["gamma_addr"]), params(d["beta_addr"]), **kw))
    out = np.zeros((rows, segs * dim), np.int8)
    out[:, :length] = y
    spad[idx(d["dst_addr"])] = out.reshape(rows, segs, dim)
    return spad


def test_sfu_equals_reference_functions():
    """Random SOFTMAX, LAYERNORM and RMSNORM commands (segment strides below, at and above the
    row count: overlapping, in-place and disjoint operands) equal the reference functions: the
    device model's strided views, tabulated exponential and all-rows normalization."""
    rng = np.random.default_rng(15)
    dev = DeviceModel(CAPS, host_bytes=1 << 10)
    done = 0
    while done < 300:
        op = (Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.RMSNORM)[int(rng.integers(0, 3))]
        rows = int(rng.integers(1, 9))
        d = dict(rows=rows, length=int(rng.integers(1, 23)), seg_stride=int(rng.integers(0, 12)),
                 src_addr=int(rng.integers(0, 60)), dst_addr=int(rng.integers(0, 60)))
        if op == Opcode.SOFTMAX:
            d.update(mult=int(rng.integers(0, 2**16)), causal=int(rng.integers(0, 2)),
                     mask_offset=int(rng.integers(0, 6)))
        else:
            d.update(gamma_addr=int(rng.integers(0, 60)), shift=int(rng.integers(0, 64)),
                     in_zero_point=int(rng.integers(0, 256)), out_zero_point=int(rng.integers(0, 256)),
                     eps_mant=int(rng.integers(0, 2**16)), eps_exp=int(rng.integers(0, 64)))
            if op == Opcode.LAYERNORM:
                d["beta_addr"] = int(rng.integers(0, 60))
        dev.spad[:] = rng.integers(-128, 128, dev.spad.shape, dtype=np.int8)
        if rng.integers(0, 4) == 0:
            dev.spad[:] = dev.spad[:, :1]           # constant rows: D = 0, equal maxima
        dev.acc[:] = rng.integers(-2**31, 2**31, dev.acc.shape, dtype=np.int64).astype(np.int32)
        want = _sfu_reference(dev.spad, dev.acc, op, d, CAPS.dim)
        code = dev.submit(encode(op, **d))
        if code == ErrorCode.LOCAL_RANGE:
            continue
        assert code == ErrorCode.OK, d
        np.testing.assert_array_equal(dev.spad, want, err_msg=str((op, d)))
        done += 1


def _linked_pair():
    """Two golden chips in a ring of two (chip 0 -> chip 1 -> chip 0)."""
    a, b = DeviceModel(CAPS, host_bytes=1 << 16, chip_id=0), DeviceModel(CAPS, host_bytes=1 << 16, chip_id=1)
    a.peer, b.peer = b, a
    return a, b


def test_dma_peer_writes_the_next_chip_and_sets_its_event():
    a, b = _linked_pair()
    rng = np.random.default_rng(3)
    a.spad[:] = rng.integers(-128, 128, a.spad.shape)
    a.acc[:] = rng.integers(-2**31, 2**31, a.acc.shape)
    events = {}
    b.on_event = events.__setitem__
    assert a.submit(encode(Opcode.DMA_PEER, local_addr=3, peer_addr=10, rows=5, dest=1)) == ErrorCode.OK
    assert np.array_equal(b.spad[10:15], a.spad[3:8]) and not b.spad[:10].any()
    assert a.submit(encode(Opcode.DMA_PEER, local_addr=0, peer_addr=CAPS.acc_rows - 4, rows=4, acc=1,
                           dest=1, signal=1, event=5, value=0xFFFF_FFFF)) == ErrorCode.OK
    assert np.array_equal(b.acc[-4:], a.acc[:4])
    assert b.rx_events == [(5, 0xFFFF_FFFF)] and events == {5: 0xFFFF_FFFF}
    # and back around the ring
    assert b.submit(encode(Opcode.DMA_PEER, local_addr=10, peer_addr=40, rows=5, dest=0)) == ErrorCode.OK
    assert np.array_equal(a.spad[40:45], a.spad[3:8])


PEER = dict(local_addr=0, peer_addr=0, rows=2, dest=1)
PEER_BAD = [
    ("reserved0", dict(PEER, reserved0=1), ErrorCode.RESERVED_BITS),
    ("add without acc", dict(PEER, add=1), ErrorCode.BAD_SHAPE),
    ("reserved", dict(PEER, reserved=1), ErrorCode.RESERVED_BITS),
    ("zero rows", dict(PEER, rows=0), ErrorCode.BAD_SHAPE),
    ("local range", dict(PEER, local_addr=CAPS.spad_rows - 1), ErrorCode.LOCAL_RANGE),
    ("peer range", dict(PEER, peer_addr=CAPS.spad_rows - 1), ErrorCode.LOCAL_RANGE),
    ("acc range", dict(PEER, acc=1, peer_addr=CAPS.acc_rows - 1), ErrorCode.LOCAL_RANGE),
    ("event", dict(PEER, signal=1, event=16), ErrorCode.BAD_EVENT),
    ("range before event", dict(PEER, rows=0, signal=1, event=16), ErrorCode.BAD_SHAPE),
]


@pytest.mark.parametrize("name,fields,code", PEER_BAD, ids=[b[0] for b in PEER_BAD])
def test_dma_peer_errors_send_nothing(name, fields, code):
    a, b = _linked_pair()
    a.spad[:] = 1
    assert a.submit(encode(Opcode.DMA_PEER, **fields)) == code
    assert not b.spad.any() and not b.rx_events and not b.rx_errors


def test_dma_peer_link_errors():
    a, b = _linked_pair()
    a.spad[:] = 1
    # no link at all (a single chip), or a failed link: LINK_TIMEOUT, nothing arrives
    alone = DeviceModel(CAPS, host_bytes=1 << 16)
    assert alone.submit(encode(Opcode.DMA_PEER, **PEER)) == ErrorCode.LINK_TIMEOUT
    a.link_failed = True
    assert a.submit(encode(Opcode.DMA_PEER, **PEER)) == ErrorCode.LINK_TIMEOUT
    assert not b.spad.any()
    # a packet for another chip leaves (the sender cannot know) and is refused whole: BAD_DEST
    a.link_failed = False
    assert a.submit(encode(Opcode.DMA_PEER, **dict(PEER, dest=3))) == ErrorCode.OK
    assert not b.spad.any() and b.rx_errors == [chip.LINK_ERRORS["BAD_DEST"]]


def test_dma_peer_add_wraps_int32():
    a, b = _linked_pair()
    rng = np.random.default_rng(5)
    a.acc[:] = rng.integers(-2**31, 2**31, a.acc.shape)
    b.acc[:] = rng.integers(-2**31, 2**31, b.acc.shape)
    before = b.acc.copy()
    assert a.submit(encode(Opcode.DMA_PEER, local_addr=2, peer_addr=7, rows=6, acc=1, add=1,
                           dest=1, signal=1, event=1, value=9)) == ErrorCode.OK
    want = ((before[7:13].astype(np.int64) + a.acc[2:8]) & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    assert np.array_equal(b.acc[7:13], want)
    assert np.array_equal(b.acc[:7], before[:7]) and np.array_equal(b.acc[13:], before[13:])
    assert b.rx_events == [(1, 9)]
    # add needs the accumulator
    assert a.submit(encode(Opcode.DMA_PEER, local_addr=0, peer_addr=0, rows=1, add=1, dest=1)) \
        == ErrorCode.BAD_SHAPE
