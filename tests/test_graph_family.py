"""The random graph family of make bench's cost-model validation (verif/graph_family.py): the
same members from the same seed, every template in a family, every member compiles for the 8x8
chip, fits the testbench's host memory and has non-degenerate outputs; a few members run
bit-exactly on the reference executor. The validation seed always; another family from
``SEED`` (printed; random when unset)."""
import os
import secrets

import numpy as np
import pytest

from compiler.compile import compile_graph
from compiler.graph import interpret
from compiler.models import degenerate
from compiler.refexec import execute
from hdl_gen.config import KakiConfig
from spec.capabilities import Capabilities
from verif import graph_family as gf
from verif.model_run import HOST_BYTES

SEED = int(os.environ.get("SEED") or secrets.randbelow(2**31))
RERUN = f"SEED={SEED} .venv/bin/python -m pytest tests/test_graph_family.py"
CAPS = Capabilities.from_config(KakiConfig(dim=8))


@pytest.fixture(autouse=True)
def _say_seed():
    print(f"[graph family] SEED={SEED} (rerun: {RERUN})")


def _same(a, b):
    return (a.name == b.name and a.shape == b.shape and a.graph.dump() == b.graph.dump()
            and a.feeds.keys() == b.feeds.keys()
            and all(np.array_equal(a.feeds[k], b.feeds[k]) for k in a.feeds))


def test_deterministic_from_the_seed():
    one, two = gf.family(SEED, 4), gf.family(SEED, 4)
    assert all(_same(a, b) for a, b in zip(one, two))
    assert _same(gf.member(SEED, 3), one[3])               # a member does not depend on count
    assert not _same(gf.member(SEED + 1, 0), one[0])
    assert [m.template for m in gf.family(SEED, len(gf.TEMPLATES))] == list(gf.TEMPLATES)


def test_family_seed_honours_SEED(monkeypatch):
    monkeypatch.setenv("SEED", "77")
    assert gf.family_seed() == 77
    monkeypatch.delenv("SEED")
    assert gf.family_seed() == gf.VALIDATION_SEED


def _check(members):
    shapes = []
    for m in members:
        cm = compile_graph(m.graph, CAPS)
        # the driver's rings and completion areas share the region: keep a quarter of it free
        assert gf.host_bytes(cm.program) < 0.75 * HOST_BYTES, (m.name, RERUN)
        for name, out in interpret(m.graph, m.feeds).items():
            assert degenerate(out) is None, (m.name, name, degenerate(out), RERUN)
        shapes.append(m.graph.inputs[0].shape)
    return shapes


def test_validation_family_compiles_and_fits():
    members = gf.family(gf.VALIDATION_SEED)
    assert len(members) >= 20
    shapes = _check(members)
    widths = [s[-1] for s in shapes]
    assert sum(w % 8 != 0 for w in widths) >= len(widths) // 2     # mostly odd shapes
    rows = [int(np.prod(s[:-1])) for s in shapes]
    assert min(rows) <= 4 and max(rows) >= 200                      # M from a few to hundreds


def test_random_family_compiles_and_runs_bit_exact():
    members = gf.family(SEED, len(gf.TEMPLATES))
    _check(members)
    small = sorted(members, key=lambda m: sum(v.size for v in m.feeds.values()))[:3]
    for m in small:
        cm = compile_graph(m.graph, CAPS)
        model, addrs = execute(cm.program, CAPS, cm.pack_inputs(m.feeds), seed=SEED)
        got = cm.unpack_outputs(lambda n, nb: model.host[addrs[n]:addrs[n] + nb].tobytes())
        for name, want in interpret(m.graph, m.feeds).items():
            assert np.array_equal(got[name], want), (m.name, name, RERUN)
