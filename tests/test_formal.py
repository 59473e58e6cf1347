"""Formal proofs of the block contracts (tools/formal.py, docs/formal.md).

Every proof runs at its ``make test`` depth and must pass, its Cover statements all reached;
``make regress`` (KAKI_REGRESS=1) reruns them deeper. A deliberately broken contract (one
assumption of the queue controller's firmware dropped) must fail with a counterexample VCD that
names the failed property and shows the broken assumption. Contracts stay out of the RTL.
"""
import os

import pytest
from amaranth.back import rtlil

from vcd.reader import TokenKind, tokenize

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


#: proofs whose make-test depth costs a minute of solver time: make regress runs them (at their
#: regress depth too); the rest of their block's contract is proven in make test
SLOW_PROOFS = {"arbiter_axi", "guard_write", "fifo_buffered8", "banked_memory_data",
               "banked_memory_data_registered", "banked_memory_data_registered_ports"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_PROOFS
                                  else n for n in formal.PROOFS])
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


def _parse_vcd(path):
    """The trace read by pyvcd's reader (a full parse: header, comments, every change):
    returns (comments, {full signal name: id code}, {id code: [(time, value)]})."""
    comments, names, changes, scope, t = [], {}, {}, [], 0
    with open(path, "rb") as f:
        for tok in tokenize(f):
            if tok.kind is TokenKind.COMMENT:
                comments.append(tok.comment)
            elif tok.kind is TokenKind.SCOPE:
                scope.append(tok.scope.ident)
            elif tok.kind is TokenKind.UPSCOPE:
                scope.pop()
            elif tok.kind is TokenKind.VAR:
                names[".".join(scope + [tok.var.reference])] = tok.var.id_code
            elif tok.kind is TokenKind.CHANGE_TIME:
                t = tok.time_change
            elif tok.kind in (TokenKind.CHANGE_SCALAR, TokenKind.CHANGE_VECTOR):
                change = tok.scalar_change if tok.kind is TokenKind.CHANGE_SCALAR else tok.vector_change
                value = int(change.value) if change.value in ("0", "1") else change.value
                changes.setdefault(change.id_code, []).append((t, value))
    return comments, names, changes


def test_broken_contract_gives_a_counterexample():
    """Drop the firmware rule "a completion is requested only for a popped descriptor": the
    queue controller's bookkeeping (F - C = prefetched + popped + pending) must fail, with a
    counterexample VCD that names the failed rule and shows the firmware requesting a
    completion it does not owe."""
    p = formal.PROOFS["queue_controller"]
    r = formal.run(p, 6, relax={"fw.retire"}, tag="_broken", cover=False)
    assert r.status == "FAIL" and r.failed == ["ring.count"], _explain(r)
    vcd = formal.REPO / r.trace
    assert vcd.is_file() and time_bounds(vcd), r.trace
    comments, names, changes = _parse_vcd(vcd)
    # the trace names the failed property: in its header, and as a signal rising in the step
    # that breaks it (the trace's last step)
    assert any("failed: ring.count" in c for c in comments), comments
    marker = changes[names["formal_failed.ring_count"]]
    last = time_bounds(vcd)[1] - 10
    assert marker[0] == (0, 0) and marker[-1] == (last, 1) and last > 0, marker

    def at(signal, t):
        values = changes[names[f"top.{signal}"]]
        return max((v for v in values if v[0] <= t), key=lambda v: v[0])[1]

    for signal in ("cpl_queue", "q__0__consumer", "formal_q1_owed"):
        assert f"top.{signal}" in names, (signal, r.trace)
    # the broken assumption is visible: a request while nothing is owed
    steps = range(0, last + 1, 10)
    assert any(at("cpl_valid", t) and at(f"formal_q{at('cpl_queue', t)}_owed", t) == 0
               for t in steps), f"no unowed completion request in {r.trace}"


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
