"""Formal proofs of the block contracts (tools/formal.py, docs/formal.md).

Every proof runs at its ``make test`` depth and must pass, its Cover statements all reached;
``make regress`` (KAKI_REGRESS=1) reruns them deeper. A deliberately broken contract (one
assumption of the queue controller's firmware dropped) must fail with a counterexample VCD that
shows the broken assumption and the failing property's signals. Contracts stay out of the RTL.
"""
import os

import pytest
from amaranth.back import rtlil

from hdl_gen.axi_arbiter import Axi4Arbiter
from hdl_gen.formal import FormalPlatform
from tools import formal
from tools.waves import time_bounds

REGRESS = os.environ.get("KAKI_REGRESS", "0") not in ("", "0")


def _explain(r):
    return (f"{r.proof}: {r.status} (cover {r.cover}) in {r.seconds} s"
            + (f"; failed {r.failed}" if r.failed else "")
            + (f"; unreached covers {r.unreached}" if r.unreached else "")
            + (f"; counterexample {r.trace}" if r.trace else "")
            + f" (rerun: .venv/bin/python -m tools.formal {r.proof})\n{r.log}")


def _check(r):
    assert r.status == "PASS" and r.cover in ("PASS", "-"), _explain(r)


@pytest.mark.parametrize("name", list(formal.PROOFS))
def test_proof(name):
    r = formal.run(formal.PROOFS[name])
    formal.write_report()
    _check(r)


@pytest.mark.slow
@pytest.mark.skipif(not REGRESS, reason="longer depths: make regress (KAKI_REGRESS=1) only")
@pytest.mark.parametrize("name", list(formal.PROOFS))
def test_proof_regress_depth(name):
    p = formal.PROOFS[name]
    r = formal.run(p, p.regress_depth, tag="_regress")
    formal.write_report()
    _check(r)


def test_broken_contract_gives_a_counterexample():
    """Drop the firmware rule "a completion is requested only for a popped descriptor": the
    queue controller's bookkeeping (F - C = prefetched + popped + pending) must fail, with a
    trace in which the firmware requests a completion it does not owe."""
    p = formal.PROOFS["queue_controller"]
    r = formal.run(p, 6, relax={"fw.retire"}, tag="_broken", cover=False)
    assert r.status == "FAIL" and "ring.count" in r.failed, _explain(r)
    vcd = formal.REPO / r.trace
    assert vcd.is_file() and time_bounds(vcd), r.trace
    names = formal.vcd_signals(vcd)
    for signal in ("cpl_valid", "cpl_queue", "q__0__fetch", "q__0__consumer", "formal_q0_owed"):
        assert any(n.split(".")[-1].split("[")[0] == signal for n in names), (signal, r.trace)
    # the broken assumption is visible: a request while nothing is owed
    valid = dict(formal.vcd_values(vcd, "top.cpl_valid"))
    owed = [dict(formal.vcd_values(vcd, f"top.formal_q{q}_owed")) for q in range(2)]
    queue = dict(formal.vcd_values(vcd, "top.cpl_queue"))

    def at(changes, t):
        return int(changes[max(k for k in changes if k <= t)], 2)

    assert any(at(valid, t) and at(owed[at(queue, t)], t) == 0 for t in sorted(valid)), \
        f"no unowed completion request in {r.trace}"


def test_contract_only_in_its_target():
    """No property reaches a build that is not the contract's proof: plain conversion (make rtl)
    and a formal build targeting another block."""
    for platform in (None, FormalPlatform(target=object())):
        text = rtlil.convert(Axi4Arbiter(2, 13, 8, 1, 4), platform=platform, emit_src=False)
        assert "$check" not in text


def test_witness_names_map_to_rules():
    """A failing check is reported by its rule name, for the top module and a flattened one."""
    il = "\n".join([
        "module \\top", "  cell $check $14", '    parameter \\FORMAT "ring.count"',
        '    parameter \\FLAVOR "assert"', "  end", "end",
        "module \\top.formal_axi", "  cell $check $7", '    parameter \\FORMAT "w.last"',
        '    parameter \\FLAVOR "assert"', "  end", "end"])
    names = formal.property_names(il)
    assert formal.rule_of("top._witness_.check_14", names) == "ring.count"
    assert formal.rule_of("top._witness_.check_flatten_formal_axi__7", names) == "w.last"
