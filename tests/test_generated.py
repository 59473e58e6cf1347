"""The committed generated files (rtl/, register and descriptor definitions, docs) are up to date."""
from hdl_gen import generate


def test_generated_files_are_current():
    stale = generate.stale(generate.artifacts())
    assert not stale, f"stale generated files (run `make rtl` and commit): {stale}"


def test_generation_is_deterministic():
    # No absolute paths or timestamps: two generations are identical and mention no local path.
    a = generate.registers_py() + generate.descriptors_header() + generate.regs_markdown()
    b = generate.registers_py() + generate.descriptors_header() + generate.regs_markdown()
    assert a == b
    assert str(generate.REPO) not in a
