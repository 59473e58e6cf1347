"""cocotb side of the LLM serving runs on the RTL chip (cocotb_tests/test_llm_rtl.py and ``make
sim MODEL=llm``, tools/sim_llm.py): the serving engine over the chip executor, with the driver
talking to the RTL through ChipTB, every request's tokens checked against the NumPy reference
and every step's logits against the golden chip model (verif/llm_serving.py).

Environment: ``KAKI_FW_ELF`` (the firmware), ``KAKI_LLM_PROMPTS`` (how many of
``verif.llm_serving.PROMPTS``, default 4), ``KAKI_LLM_TOKENS`` (max tokens per request,
default 32). Writes ``report.json`` (tokens, text, per-step cycles and work, the checks).
"""
import json
import os
import time

import cocotb

from compiler import llm_model
from driver.device import Device
from serving.chip_executor import ChipExecutor, PerfProbe
from spec.firmware_image import FirmwareImage
from verif import llm_serving as LS
from verif.chip_tb import ChipTB
from verif.model_run import HOST_BASE, HOST_BYTES, PERF


@cocotb.test()
async def llm_serving(dut):
    tb = ChipTB(dut)
    await tb.reset()
    image = FirmwareImage.from_elf(os.environ["KAKI_FW_ELF"])
    dev = await Device.open(tb, host_base=HOST_BASE, host_bytes=HOST_BYTES, firmware=image)
    pack = llm_model.load()
    prompts = LS.PROMPTS[:int(os.environ.get("KAKI_LLM_PROMPTS", "4"))]
    cfg = LS.ServeConfig(max_tokens=int(os.environ.get("KAKI_LLM_TOKENS", "32")))
    ex = await ChipExecutor.open(dev, pack, num_blocks=cfg.num_blocks, max_batch=cfg.max_batch,
                                 max_step_tokens=cfg.max_step_tokens, max_chunk=cfg.max_chunk,
                                 probe=PerfProbe(tb, PERF))
    streamed = [[] for _ in prompts]

    def on_token(i, tok):            # each token as it streams: the request's text so far
        streamed[i].append(tok)
        print(f"[request {i}] {prompts[i] + pack.vocab.decode(streamed[i])!r}", flush=True)

    t0 = time.monotonic()
    rtl = await LS.serve(ex, pack, prompts, cfg, on_token=on_token)
    wall = time.monotonic() - t0
    tb.log.info(f"served {len(prompts)} requests x {cfg.max_tokens} tokens on RTL in {wall:.0f} s")
    reference = LS.reference_tokens(pack, prompts, cfg)
    golden = LS.golden_serve(pack, prompts, cfg, image, host_base=HOST_BASE,
                             host_bytes=HOST_BYTES, seed=tb.seed)
    problems = LS.check(rtl, reference, golden)
    report = LS.report(ex, rtl, prompts, cfg, problems, streamed, wall=wall, seed=tb.seed)
    with open("report.json", "w") as f:
        json.dump(report, f, indent=1)
    assert streamed == rtl.tokens, "the streams did not deliver the tokens in order exactly once"
    assert not problems, "; ".join(problems)
