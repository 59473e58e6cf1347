"""The command-by-command predictor (verif/predictor.py) on the golden chip model
with the real firmware: every command of random DAGs and of every error class is predicted and
matches; a wrong status or a wrong stored byte is reported as the first mismatch, naming the
queue, the index, the command and expected against actual."""
import os
import secrets

import pytest

from verif import boundary_monitor as BM
from verif.predictor import CommandPredictor, PredictionError, SyncScoreboard
from spec.capabilities import Capabilities
from spec.commands import decode
from spec.descriptors import Opcode
from spec.firmware_image import FirmwareImage
from driver.ops import run_sync
from firmware import build as fw_build
from verif import chip_scenarios as S
from verif.error_injection import ERROR_KINDS, blackhole_window
from golden.chip_model import ChipModel
from hdl_gen.config import KakiConfig

CAPS = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=128, acc_bank_rows=128))
HOST_BYTES = 1 << 20
SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return FirmwareImage.from_elf(fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf"))


def golden(image, seed):
    """A booted golden chip; its memory does not answer in the error scenarios' black hole."""
    return ChipModel(CAPS, host_bytes=HOST_BYTES, blackhole=blackhole_window(HOST_BYTES),
                     firmware=image, seed=seed)


def checked(chip, tamper=None, read=None):
    """``chip`` behind a boundary probe whose scoreboard predicts every command; ``tamper``
    (txn -> txn) edits what the scoreboard sees and ``read`` what it reads back, to play a
    faulty chip."""
    pred = CommandPredictor(CAPS, HOST_BYTES, blackhole_window(HOST_BYTES))
    board = SyncScoreboard(pred, read or chip.host_read)

    class Tampered:
        def write(self, txn):
            board.write(tamper(txn) if tamper else txn)
    return BM.Probe(chip, BM.BoundaryObserver(Tampered())), pred


def _print_seed():
    print(f"[predictor] SEED={SEED} (rerun: SEED={SEED} .venv/bin/python -m pytest tests/test_predictor.py)")


def test_random_dags_are_predicted_command_by_command(image):
    _print_seed()
    for k in range(3):
        chip = golden(image, SEED + k)
        dev, pred = checked(chip)
        rep = run_sync(S.dag_scenario(CAPS, SEED + k, host_bytes=HOST_BYTES, jobs=30), dev)
        assert pred.predicted == rep.descriptors and pred.stores_checked > 0


@pytest.mark.parametrize("kind", ERROR_KINDS)
def test_error_classes_are_predicted(image, kind):
    _print_seed()
    chip = golden(image, SEED)
    dev, pred = checked(chip)
    rep = run_sync(S.error_scenario(CAPS, SEED, kind, host_bytes=HOST_BYTES), dev)
    seen = sum(len(recs) for r in [rep, *rep.phases] for recs in r.records.values())
    assert pred.predicted == seen > 0, "every completion record was predicted"


def test_overlapping_stores_accumulate_and_residual_add_are_predicted(image):
    """The DAG with every store's rows overlapping where possible, every GEMM followed by a
    one-k-tile accumulate and compute jobs favoured: the predictor's stores (rows in order, the
    later row's bytes win) and results match the chip's."""
    _print_seed()
    chip = golden(image, SEED)
    seen = []

    class Spy:
        def write(self, txn):
            if isinstance(txn, BM.DescriptorTxn):
                seen.append(decode(list(txn.words)))
    dev, pred = checked(chip)
    dev.observer.subscribers.append(Spy())
    knobs = dict(p_overlap=1.0, p_accumulate=1.0, p_compute=0.6)
    rep = run_sync(S.dag_scenario(CAPS, SEED, host_bytes=HOST_BYTES, jobs=24, knobs=knobs), dev)
    assert pred.predicted == rep.descriptors and pred.stores_checked > 0
    stores = [d for d in seen if d["opcode"] == Opcode.DMA_STORE and d["rows"] > 1]
    assert any(d["host_row_stride"] < d["row_bytes"] for d in stores), "no overlapping store"
    assert any(d["opcode"] == Opcode.GEMM and d["accumulate"] for d in seen)


def test_wrong_status_is_the_first_mismatch(image):
    _print_seed()
    state = {"n": 0}

    def flip_status(txn):
        if isinstance(txn, BM.RecordTxn):
            state["n"] += 1
            if state["n"] == 10:
                return BM.RecordTxn(txn.queue, dict(txn.record, status=3))
        return txn
    chip = golden(image, SEED)
    dev, _ = checked(chip, flip_status)
    with pytest.raises(PredictionError, match=r"queue \d index \d+ \(\w+ tag \d+\): status expected "
                                              r"OK, got BAD_SHAPE") as e:
        run_sync(S.dag_scenario(CAPS, SEED, host_bytes=HOST_BYTES, jobs=20), dev)
    assert (e.value.what, e.value.expected, e.value.actual) == ("status", "OK", "BAD_SHAPE")


def test_wrong_stored_byte_is_reported_with_its_address(image):
    _print_seed()
    chip = golden(image, SEED)
    reads = []

    def faulty_read(addr, n):
        """The chip's memory with one wrong bit in the third store's first byte."""
        data = bytearray(chip.host_read(addr, n))
        reads.append(addr)
        if len(reads) == 3:
            data[0] ^= 0x40
        return bytes(data)
    dev, pred = checked(chip, read=faulty_read)
    with pytest.raises(PredictionError, match=r"DMA_STORE tag \d+\): host byte 0x[0-9a-f]+ "
                                              r"expected 0x[0-9a-f]{2}, got 0x[0-9a-f]{2}") as e:
        run_sync(S.dag_scenario(CAPS, SEED, host_bytes=HOST_BYTES, jobs=20), dev)
    assert e.value.what == f"host byte {reads[2]:#x}" and pred.stores_checked == 2
