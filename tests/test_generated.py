"""The committed generated files (rtl/, register and descriptor definitions, docs) are up to date."""
import pytest

from hdl_gen import generate
from hdl_gen.config import ARRAY_SIZES


# one test per chip, so pytest-xdist generates them in parallel
@pytest.mark.parametrize("part", ["definitions", *ARRAY_SIZES])
def test_generated_files_are_current(part):
    files = generate.definitions() if part == "definitions" else generate.chip_rtl(part)
    stale = generate.stale(files)
    assert not stale, f"stale generated files (run `make rtl` and commit): {stale}"


def test_generation_is_deterministic():
    # No absolute paths or timestamps: two generations are identical and mention no local path.
    a = generate.registers_py() + generate.descriptors_header() + generate.regs_markdown()
    b = generate.registers_py() + generate.descriptors_header() + generate.regs_markdown()
    assert a == b
    assert str(generate.REPO) not in a
