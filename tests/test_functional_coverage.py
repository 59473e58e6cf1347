"""The functional coverage model (verif/functional_coverage.py) and its report: directed
traffic hits exactly the bins it should; the probe is transparent on a real scenario; merging
two databases adds their hits and lists the holes."""
import copy

import numpy as np
import pytest
from cocotb_coverage.coverage import coverage_db

from verif import boundary_monitor as BM
from tools import coverage as CR
from verif import functional_coverage as FC
from spec import registers as R
from spec.commands import encode
from spec.completion import RECORD_BYTES, pack_record
from spec.descriptors import ErrorCode, Opcode
from driver.ops import run_sync
from verif import chip_scenarios as S
from golden.chip_model import ChipModel

RING, CPL, LOG2 = 0x1000, 0x4000, 3
ENTRIES = 1 << LOG2


@pytest.fixture(autouse=True)
def isolated_coverage():
    """The database is process-global and exported at exit under ``make coverage``: keep these
    directed, synthetic hits out of the regression's numbers."""
    saved = {k: (copy.deepcopy(getattr(v, "_hits", None)), v._coverage) for k, v in coverage_db.items()}
    yield
    for k in list(coverage_db):
        if k not in saved:
            continue
        hits_, cov = saved[k]
        if hits_ is not None:
            coverage_db[k]._hits = hits_
        coverage_db[k]._coverage = cov


def hits(point):
    return dict(coverage_db[point].detailed_coverage)


def delta(point, before):
    return {k: v - before.get(k, 0) for k, v in hits(point).items() if v != before.get(k, 0)}


class Traffic:
    """Drives a ChipCoverage the way a host and a chip would: rings, doorbells, records."""

    def __init__(self, dim=8):
        self.cov = FC.ChipCoverage(dim)
        self.obs = BM.BoundaryObserver(self.cov)
        self.p = [0] * 4
        self.ts = 100
        for q in range(4):
            for name, v in (("Q_RING_BASE", RING + 0x100 * 8 * q), ("Q_RING_SIZE", LOG2),
                            ("Q_CPL_BASE", CPL + 0x200 * q)):
                self.obs.on_write(R.REGISTERS[f"{name}{q}"], v)

    def submit(self, q, *descs):
        for words in descs:
            slot = self.p[q] % ENTRIES
            raw = b"".join(w.to_bytes(4, "little") for w in words)
            self.obs.on_host_write(RING + 0x100 * 8 * q + 32 * slot, raw)
            self.p[q] += 1
        self.obs.on_write(R.REGISTERS[f"Q_DOORBELL{q}"], self.p[q])

    def complete(self, q, index, opcode, status=0):
        self.ts += 10
        rec = pack_record(index=index, opcode=int(opcode), status=status, queue=q, timestamp=self.ts)
        base = CPL + 0x200 * q
        self.obs.on_host_write(base + RECORD_BYTES * (1 + index % ENTRIES), rec)
        self.obs.on_host_read(base, (index + 1).to_bytes(4, "little") + bytes(RECORD_BYTES - 4)
                              + bytes(RECORD_BYTES * (index % ENTRIES)) + rec)


def test_descriptor_fields_are_classified_per_opcode():
    t = Traffic(dim=8)
    before = {p: hits(p) for p in ("kaki.desc.opcode", "kaki.dma.rows", "kaki.dma.host_stride",
                                   "kaki.gemm.m", "kaki.gemm.partial_tile", "kaki.vec.ops",
                                   "kaki.queue.occupancy")}
    t.submit(0, encode(Opcode.DMA_LOAD, rows=8, row_bytes=16, host_row_stride=32, planes=1),
             encode(Opcode.GEMM, m=12, k_tiles=2, n_tiles=1),
             encode(Opcode.VECTOR, rows=3, **{"ops.bias": 1, "ops.relu": 1}))
    assert delta("kaki.desc.opcode", before["kaki.desc.opcode"]) == {"DMA_LOAD": 1, "GEMM": 1,
                                                                      "VECTOR": 1}
    assert delta("kaki.dma.rows", before["kaki.dma.rows"]) == {("DMA_LOAD", "=dim"): 1}
    assert delta("kaki.dma.host_stride", before["kaki.dma.host_stride"]) == {("DMA_LOAD", "gapped"): 1}
    assert delta("kaki.gemm.m", before["kaki.gemm.m"]) == {"<256": 1}
    assert delta("kaki.gemm.partial_tile", before["kaki.gemm.partial_tile"]) == {"padded": 1}
    assert delta("kaki.vec.ops", before["kaki.vec.ops"]) == {"bias+relu": 1}
    assert delta("kaki.queue.occupancy", before["kaki.queue.occupancy"]) == {"25-75%": 1}


def test_occupancy_overflow_backwards_and_malformed_descriptors():
    t = Traffic()
    before = {p: hits(p) for p in ("kaki.queue.occupancy", "kaki.desc.opcode")}
    bad = encode(Opcode.NOP)
    bad[0] = (bad[0] & ~0xFF) | 0x3F                      # an opcode the chip does not know
    t.submit(1, bad)
    t.p[1] += ENTRIES                                     # producer too far ahead
    t.submit(1)
    t.p[1] -= 3                                           # producer moved backwards
    t.submit(1)
    assert delta("kaki.queue.occupancy", before["kaki.queue.occupancy"]) == {
        "1": 1, "overflow": 1, "backwards": 1}
    assert delta("kaki.desc.opcode", before["kaki.desc.opcode"])["bad"] == 1


def test_records_errors_and_interrupt_causes():
    t = Traffic()
    before = {p: hits(p) for p in ("kaki.record.status", "kaki.error.code", "kaki.irq.cause")}
    t.submit(2, encode(Opcode.DMA_STORE, rows=1, row_bytes=8), encode(Opcode.NOP))
    t.complete(2, 0, Opcode.DMA_STORE, status=int(ErrorCode.HOST_RANGE))
    t.complete(2, 0, Opcode.DMA_STORE, status=int(ErrorCode.HOST_RANGE))   # read twice: counted once
    t.complete(2, 1, Opcode.NOP)
    t.obs.on_read(R.IRQ_STATUS, R.IRQ_STATUS.QUEUE_ERROR.put(4) | R.IRQ_STATUS.QUEUE_CPL.put(4))
    assert delta("kaki.record.status", before["kaki.record.status"]) == {
        ("DMA_STORE", "error"): 1, ("NOP", "ok"): 1}
    assert delta("kaki.error.code", before["kaki.error.code"]) == {"HOST_RANGE": 1}
    assert delta("kaki.irq.cause", before["kaki.irq.cause"]) == {"QUEUE_ERROR": 1, "QUEUE_CPL": 1}


def test_direct_submissions_and_error_info():
    """CMD0..7 + CMD_SUBMIT is a direct submission (opcode and payload bins, no queue bins); a
    non-zero ERROR_INFO read is its error code; IRQ_STATUS reads give the engine-done causes."""
    t = Traffic()
    points = ("kaki.desc.opcode", "kaki.desc.queue", "kaki.dma.host_stride", "kaki.error.code",
              "kaki.irq.cause")
    before = {p: hits(p) for p in points}
    words = encode(Opcode.DMA_STORE, rows=4, row_bytes=16, host_row_stride=8, planes=1)
    for reg, w in zip(R.CMD, words):
        t.obs.on_write(reg, w)
    t.obs.on_write(R.CMD_SUBMIT, R.CMD_SUBMIT.GO.put(1))
    t.obs.on_write(R.CMD_SUBMIT, 0)                       # not a submission
    t.obs.on_read(R.ERROR_INFO, R.ERROR_INFO.CODE.put(ErrorCode.CMD_OVERFLOW) | R.ERROR_INFO.TAG.put(7))
    t.obs.on_read(R.ERROR_INFO, 0)                        # no error kept
    t.obs.on_read(R.IRQ_STATUS, R.IRQ_STATUS.ERROR.put(1) | R.IRQ_STATUS.DMA_STORE_DONE.put(1))
    assert delta("kaki.desc.opcode", before["kaki.desc.opcode"]) == {"DMA_STORE": 1}
    assert delta("kaki.desc.queue", before["kaki.desc.queue"]) == {}
    assert delta("kaki.dma.host_stride", before["kaki.dma.host_stride"]) == {("DMA_STORE", "overlap"): 1}
    assert delta("kaki.error.code", before["kaki.error.code"]) == {"CMD_OVERFLOW": 1}
    assert delta("kaki.irq.cause", before["kaki.irq.cause"]) == {"ERROR": 1, "DMA_STORE_DONE": 1}


def test_event_patterns_from_directed_streams():
    t = Traffic()
    sig = lambda e, v: encode(Opcode.SIGNAL_EVENT, event=e, value=v)       # noqa: E731
    wait = lambda e, v: encode(Opcode.WAIT_EVENT, event=e, value=v)        # noqa: E731
    t.submit(0, encode(Opcode.NOP), sig(1, 1))
    t.submit(1, encode(Opcode.NOP), wait(1, 1), sig(2, 1))
    t.submit(2, wait(1, 1), wait(2, 1))
    t.complete(1, 0, Opcode.NOP)                                          # queue 1 reaches its WAIT
    t.complete(0, 0, Opcode.NOP)
    t.complete(0, 1, Opcode.SIGNAL_EVENT)                                 # ... and the signal comes
    for q, i, op in ((1, 1, Opcode.WAIT_EVENT), (1, 2, Opcode.SIGNAL_EVENT),
                     (2, 0, Opcode.WAIT_EVENT), (2, 1, Opcode.WAIT_EVENT)):
        t.complete(q, i, op)
    found = t.cov.close()
    assert found == {"cross queue", "blocked", "already satisfied", "fan-out", "fan-in",
                     "chain over 3 queues"}
    assert t.cov.close() == set(), "a run is analysed once"


def test_probe_is_transparent_on_a_scenario():
    from spec.capabilities import Capabilities
    from spec.firmware_image import FirmwareImage
    from firmware import build as fw_build
    from hdl_gen.config import KakiConfig
    import tempfile
    from pathlib import Path

    caps = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=128, acc_bank_rows=128))
    with tempfile.TemporaryDirectory() as d:
        image = FirmwareImage.from_elf(fw_build.build(Path(d) / "fw.elf"))
    reports = []
    before = hits("kaki.desc.opcode")
    for wrap in (lambda c: c, lambda c: FC.coverage_probe(c, caps.dim)):
        chip = wrap(ChipModel(caps, host_bytes=1 << 20, firmware=image, seed=3))
        reports.append(run_sync(S.dag_scenario(caps, 3, host_bytes=1 << 20, jobs=12), chip))
        if isinstance(chip, BM.Probe):
            chip.observer.subscribers[0].close()
    assert reports[0].descriptors == reports[1].descriptors and reports[0].cycles == reports[1].cycles
    assert sum(delta("kaki.desc.opcode", before).values()) == reports[1].descriptors


def test_report_merges_and_lists_holes(tmp_path):
    Traffic().submit(3, encode(Opcode.BARRIER))
    a = FC.export(tmp_path / "a.yml")
    Traffic().submit(3, encode(Opcode.BARRIER))
    b = FC.export(tmp_path / "b.yml")
    one_a = CR.merge_functional([a], tmp_path / "one_a.yml")["kaki.desc.opcode"]["bins:_hits"]["BARRIER"]
    one_b = CR.merge_functional([b], tmp_path / "one_b.yml")["kaki.desc.opcode"]["bins:_hits"]["BARRIER"]
    db = CR.merge_functional([a, b], tmp_path / "merged.yml")
    assert one_b == one_a + 1 and db["kaki.desc.opcode"]["bins:_hits"]["BARRIER"] == one_a + one_b
    rows = CR.holes(db)
    hit, total, missing = rows["kaki.desc.opcode_x_queue"]
    assert total == len(Opcode.__members__) * 4 + 4 and hit + len(missing) == total
    assert all(" × " in m for m in missing)
    text = CR.render_functional(db, [a, b])
    assert text.startswith("# Functional coverage:") and "`kaki.event.pattern`" in text
    assert CR.main(["functional", "--dir", str(tmp_path / "none"), "--out", str(tmp_path)]) == 1
    np.testing.assert_equal(sorted(p.name for p in tmp_path.glob("*.yml")),
                            ["a.yml", "b.yml", "merged.yml", "one_a.yml", "one_b.yml"])


@pytest.mark.parametrize("used, cls", [(1, "1"), (1, "1"), (7, ">75%"), (8, "full"), (9, "overflow"),
                                       (2, "<25%")])
def test_occupancy_classes(used, cls):
    entries = 16 if cls == "<25%" else 8
    assert FC._occupancy(used, entries) == cls
