"""The character LM served on the RTL chip (8x8): cocotb_tests/cocotb_llm.py. ``make test`` runs a
short serving session (2 requests x 4 tokens); ``make sim MODEL=llm`` the full one (4 x 32)."""
import pytest

from firmware.build import shared_elf as firmware_elf
from tools import simbuild
from tools.simbuild import soc_target

#: the cocotb tests this file runs (tests/test_cocotb_inventory.py)
COCOTB_RUNS = {"cocotb_tests.cocotb_llm": ("llm_serving",)}


@pytest.mark.sim
def test_llm_serving_rtl():
    """Two prompts served concurrently (chunked prefill, batched decode over the paged KV cache,
    command lists): tokens equal to the NumPy reference, every step's logits to the golden chip
    model."""
    simbuild.run(soc_target(8), "cocotb_tests.cocotb_llm", testcase="llm_serving", tag="llm",
                 extra_env={"KAKI_FW_ELF": str(firmware_elf()), "KAKI_LLM_PROMPTS": "2",
                            "KAKI_LLM_TOKENS": "4"})
