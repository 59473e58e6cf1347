"""Host driver API (driver/device.py) on the golden backend.

The test bodies are verif/driver_conformance.py, the same coroutines cocotb_tests/cocotb_driver.py runs
on the RTL chip; here each runs under asyncio on a fresh golden chip model with the real firmware.
Plus the synchronous facade (driver/sync.py) and the allocator.

Reproducibility: ``SEED=<n>`` in the environment (otherwise a fresh seed per process), printed
by every random test; rerun with ``SEED=<n> .venv/bin/python -m pytest tests/test_driver.py``.
"""
import asyncio
import os
import random

import numpy as np
import pytest

from verif.functional_coverage import async_probe
from verif import driver_conformance as C
from spec.commands import encode
from spec.descriptors import ErrorCode, Opcode
from driver.device import HostAllocator
from driver.errors import DriverMisuse, QueueError
from spec.firmware_image import FirmwareImage
from golden.backend import GoldenBackend, golden_chip
from driver.sync import SyncDevice
from firmware import build as fw_build

SEED = int(os.environ.get("SEED") or random.SystemRandom().randrange(1, 2**31))
HOST_BASE, HOST_BYTES = 0x1000, 0x40000


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return FirmwareImage.from_elf(fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf"))


async def _gather(*coros):
    return await asyncio.gather(*coros)


@pytest.mark.parametrize("test", C.TESTS, ids=[t.__name__ for t in C.TESTS])
def test_conformance_golden(test, image):
    print(f"[driver] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest tests/test_driver.py)")
    chip = golden_chip(8, host_bytes=HOST_BASE + HOST_BYTES + 0x2000, seed=SEED)
    ctx = C.Context(async_probe(GoldenBackend(chip), 8), image, _gather, seed=SEED,
                    host_base=HOST_BASE, host_bytes=HOST_BYTES,
                    blackhole=lambda w: chip.set_blackhole(*w) if w else chip.clear_blackhole())
    asyncio.run(test(ctx))


def test_sync_facade(image):
    print(f"[driver] SEED={SEED}")
    rng = np.random.default_rng(SEED)
    chip = golden_chip(8, host_bytes=HOST_BASE + HOST_BYTES, seed=SEED)
    dev = SyncDevice.open(GoldenBackend(chip), firmware=image, host_base=HOST_BASE, host_bytes=HOST_BYTES)
    d = dev.caps.dim
    b = rng.integers(-128, 128, (d, d), dtype=np.int8)
    prog = C.gemm_program(d, 4, b.tobytes())
    a = rng.integers(-128, 128, (4, d), dtype=np.int8)
    abuf, cbuf = dev.upload(a), dev.alloc(4 * d * 4)
    recs = dev.run(prog, {"a": abuf, "c": cbuf})
    assert len(recs[1]) == 4
    assert np.array_equal(cbuf.read(np.int32, (4, d)), a.astype(np.int32) @ b.astype(np.int32))
    q = dev.queue(2, entries=4)
    sub = q.submit([encode(Opcode.NOP, tag=k) for k in range(9)])
    assert [r["tag"] for r in sub.wait()] == list(range(9))
    sub = q.submit([[max(Opcode) + 1] + [0] * 7])           # an opcode nothing serves
    with pytest.raises(QueueError, match="BAD_OPCODE at descriptor index 9") as e:
        sub.wait()
    assert e.value.code == ErrorCode.BAD_OPCODE and e.value.queue == 2
    q.reset()
    assert len(q.submit([encode(Opcode.NOP)]).wait()) == 1
    ev = dev.event()
    v = ev.next_value()
    ev.signal_on(q, v)
    assert ev.wait(v) == v
    with pytest.raises(DriverMisuse, match="double free"):
        abuf.free()
        abuf.free()
    dev.close()


def test_allocator_first_fit_and_coalescing():
    a = HostAllocator(0x1000, 0x1000)
    x = a.alloc(100, 256)
    y = a.alloc(100, 256)
    z = a.alloc(0x100, 16)
    assert (x, y) == (0x1000, 0x1100) and z % 16 == 0 and z >= y + 100
    a.free(y)
    assert a.alloc(50, 256) == 0x1100
    with pytest.raises(DriverMisuse, match="out of host memory: no 4096 bytes"):
        a.alloc(0x1000)
    for p in list(a.allocations):
        a.free(p)
    assert a.free_bytes == 0x1000 and a.alloc(0x1000, 0x1000) == 0x1000
    with pytest.raises(DriverMisuse, match="0x2000: not allocated"):
        a.free(0x2000)
