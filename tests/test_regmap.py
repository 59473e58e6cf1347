"""The SystemRDL register map is well formed and the CSR block exposes exactly its fields."""
from spec import registers as R
from hdl_gen import regmap
from hdl_gen.csr_block import CsrBlock


def test_no_overlaps_and_word_aligned():
    regs = regmap.load()
    addrs = [r.addr for r in regs]
    assert len(addrs) == len(set(addrs))
    for r in regs:
        assert r.addr % 4 == 0
        used = 0
        for f in r.fields:
            assert used & f.mask == 0, f"{r.ident}.{f.name} overlaps"
            assert f.lsb + f.width <= 32
            used |= f.mask


def test_generated_python_matches_rdl():
    for r in regmap.load():
        gen = R.REGISTERS[r.ident]
        assert gen.addr == r.addr
        assert [(f.name, f.lsb, f.width, f.kind) for f in gen.fields] == \
               [(f.name, f.lsb, f.width, f.kind) for f in r.fields]


def test_csr_block_ports_follow_field_kinds():
    block = CsrBlock()
    members = block.signature.members
    for r in regmap.load():
        for f in r.fields:
            name = regmap.port_name(r, f)
            if f.kind == "const":
                assert name not in members
            else:
                assert name in members, name
            assert (name + "_set" in members) == (f.kind == "w1c")


def test_identification_constants():
    assert R.ID.MAGIC.reset == int.from_bytes(b"KAKI", "big")
    assert R.CMD[0].addr + 4 * 7 == R.CMD[7].addr
