"""driver/forensics.py on the golden chip model with the real firmware: a cross-queue wait that a
queued SIGNAL will release, a wait nothing queued can release (deadlock), descriptors around the
head; a scenario that runs out of budget carries the report."""
import pytest

from spec.capabilities import Capabilities
from spec.commands import encode
from spec.descriptors import Opcode
from spec.firmware_image import FirmwareImage
from driver.forensics import hang_report
from driver.ops import run_sync
from firmware import build as fw_build
from verif import chip_scenarios as S
from verif.queue_host import ScenarioTimeout, configure
from verif.ring_layout import QueueConfig, reg
from golden.chip_model import ChipModel
from hdl_gen.config import KakiConfig

CAPS = Capabilities.from_config(KakiConfig(dim=4, spad_bank_rows=128, acc_bank_rows=128))
RINGS = {0: (0x1000, 0x2000), 1: (0x3000, 0x4000), 2: (0x5000, 0x6000)}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return FirmwareImage.from_elf(fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf"))


def submit(chip, q, *descs):
    ring, _ = RINGS[q]
    for i, words in enumerate(descs):
        chip.host_write(ring + 32 * i, b"".join(w.to_bytes(4, "little") for w in words))
    chip.write(reg("Q_DOORBELL", q), len(descs))


@pytest.fixture
def stuck(image):
    """Queue 0 waits on EVENT3 >= 5, which queue 1's SIGNAL (index 1) would set; queue 1 waits
    first on EVENT4 >= 1, which nothing queued sets."""
    chip = ChipModel(CAPS, host_bytes=1 << 20, firmware=image, seed=1)
    for q, (ring, cpl) in list(RINGS.items())[:2]:
        run_sync(configure(q, QueueConfig(ring, 3, cpl, 0x20000, 0x10000)), chip)
    submit(chip, 0, encode(Opcode.NOP, tag=1), encode(Opcode.WAIT_EVENT, event=3, value=5),
           encode(Opcode.NOP, tag=2))
    submit(chip, 1, encode(Opcode.WAIT_EVENT, event=4, value=1), encode(Opcode.SIGNAL_EVENT, event=3, value=7))
    chip.run(3000)
    return chip


def test_report_names_waits_and_who_would_release_them(stuck):
    rep = run_sync(hang_report(), stuck)
    q0, q1 = rep.queues
    assert (q0.producer, q0.consumer, q0.waits_on, q0.released_by) == (3, 1, (1, 3, 5, 0), [(1, 1)])
    assert (q1.producer, q1.consumer, q1.waits_on, q1.released_by) == (2, 0, (0, 4, 1, 0), [])
    assert rep.firmware["STATE"] == 2 and not any(rep.engines.values())
    text = str(rep)
    for line in ("firmware: READY", "queue 0: P=3 F=3 C=1 (2/8 queued) status=ACTIVE,WAITING",
                 "index 1 waits on EVENT3 >= 5 (now 0); released by: queue 1 index 1",
                 "index 0 waits on EVENT4 >= 1 (now 0); released by: no queued SIGNAL_EVENT",
                 "[     0] retired NOP tag=1", "[     1] head    WAIT_EVENT tag=0 event=3 value=5",
                 "[     2] queued  NOP tag=2", "[     1] queued  SIGNAL_EVENT tag=0 event=3 value=7"):
        assert line in text, f"{line!r} not in\n{text}"


def test_released_waits_leave_the_report(stuck):
    run_sync(configure(2, QueueConfig(*RINGS[2][:1], 3, RINGS[2][1], 0x20000, 0x10000)), stuck)
    submit(stuck, 2, encode(Opcode.SIGNAL_EVENT, event=4, value=1))   # releases queue 1, then 0
    stuck.run(5000)
    rep = run_sync(hang_report(), stuck)
    assert all(q.waits_on is None for q in rep.queues) and rep.events[3:5] == [7, 1]
    assert [q.consumer for q in rep.queues] == [3, 2, 1]


def test_scenario_timeout_carries_the_report(image):
    chip = ChipModel(CAPS, host_bytes=1 << 20, firmware=image, seed=2)
    with pytest.raises(ScenarioTimeout) as e:
        run_sync(S.dag_scenario(CAPS, 2, host_bytes=1 << 20, jobs=30, budget=500), chip)
    assert "hang report at TIMESTAMP=" in str(e.value) and "queue 0: P=" in str(e.value)
