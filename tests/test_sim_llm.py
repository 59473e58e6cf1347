"""`make sim MODEL=llm`'s report (tools/sim_llm.py) from a serving run on the golden chip model
(verif/llm_serving.py): the same report.json the RTL test writes, formatted and traced."""
import asyncio

import pytest

from compiler import llm_model
from driver.device import Device
from firmware import build as fw_build
from golden.backend import GoldenBackend
from golden.chip_model import ChipModel
from serving.chip_executor import ChipExecutor, PerfProbe
from spec.capabilities import Capabilities
from spec.firmware_image import FirmwareImage
from tools import sim_llm
from verif import llm_serving as LS
from verif.model_run import HOST_BASE, HOST_BYTES, PERF


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    image = FirmwareImage.from_elf(fw_build.build(tmp_path_factory.mktemp("fw") / "kaki_fw.elf"))
    pack = llm_model.load()
    prompts, cfg = LS.PROMPTS[:2], LS.ServeConfig(max_tokens=2)

    async def go():
        chip = ChipModel(Capabilities.default(8), host_bytes=HOST_BASE + HOST_BYTES, seed=1,
                         engine_delay=(1, 40))
        backend = GoldenBackend(chip)
        dev = await Device.open(backend, host_base=HOST_BASE, host_bytes=HOST_BYTES,
                                firmware=image)
        ex = await ChipExecutor.open(dev, pack, num_blocks=cfg.num_blocks,
                                     max_step_tokens=cfg.max_step_tokens,
                                     max_chunk=cfg.max_chunk, probe=PerfProbe(backend, PERF))
        streamed = [[] for _ in prompts]
        served = await LS.serve(ex, pack, prompts, cfg,
                                on_token=lambda i, t: streamed[i].append(t))
        return ex, served, streamed
    ex, served, streamed = asyncio.run(go())
    problems = LS.check(served, LS.reference_tokens(pack, prompts, cfg))
    return LS.report(ex, served, prompts, cfg, problems, streamed, wall=1.0, seed=1)


def test_report_passes_and_names_every_figure(report):
    lines, ok = sim_llm.format_report(report, 2.0)
    text = "\n".join(lines)
    assert ok, text
    for what in ("cycles per token", "tokens/s", "MBU", "PE util", "dispatch share",
                 "batch occupancy", "streamed in order, exactly once: yes", "PASS"):
        assert what in text, what
    assert report["launches"] and all(x["perf"]["cycles"] > 0 for x in report["launches"])


def test_launch_metrics_from_counters(report):
    stats = {tuple(s["key"]): s for s in report["shapes"]}
    for x in report["launches"]:
        m = sim_llm.launch_metrics(x, stats[(x["items"], x["tokens"], x["pages"])],
                                   report["layout"], 8)
        # the golden model's engine times are random delays, not the RTL's: no ranges here
        assert m["pe_util"] > 0 and m["mbu"] > 0 and m["dispatch_share"] < 1, m
        keys_bytes = sum(2 * 2 * 128 * (start + n) for _, start, n in x["work"])
        assert m["kv_bytes"] == keys_bytes


def test_trace_has_one_track_per_request(report):
    t = sim_llm.trace(report)["traceEvents"]
    names = {e["args"]["name"] for e in t if e.get("name") == "thread_name"}
    assert {"launches"} | {f"request {i}: {p[:24]!r}" for i, p in enumerate(report["prompts"])} \
        == names
    spans = [e for e in t if e["ph"] == "X" and e["tid"] >= 10]
    assert {e["tid"] - 10 for e in spans} == {0, 1}
    assert all(e["dur"] > 0 for e in spans)
