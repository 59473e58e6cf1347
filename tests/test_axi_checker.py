"""The AXI4 / AXI4-Lite protocol checker (verif/axi_checker.py) without a simulator: clean traffic
passes and gives its transactions; each rule's violation is caught with a message naming the bus,
the channel and the cycle. (tests/test_bus_agents.py has more cases of the same cores as the
chip's pin agents use them.)"""
import pytest

from verif.axi_checker import (DECERR, EXOKAY, OKAY, SLVERR, Axi4Checker, AxiLiteChecker,
                               ProtocolError)

DB = 8


def run(core, cycles, start=1):
    """Feed ``cycles``: each a dict channel -> (valid, ready, payload); absent channels idle."""
    for n, chans in enumerate(cycles, start):
        for name in core.CHANNELS:
            valid, ready, payload = chans.get(name, (False, False, None))
            core.step(n, name, valid, ready, payload)


def axi(**cfg):
    out = []
    return Axi4Checker(out.append, DB, **cfg), out


def aw(id=0, addr=0x1000, len=0, size=3, burst=1):
    return (id, addr, len, size, burst)


ar = aw


def w(data=0, strb=0xFF, last=1):
    return (data, strb, last)


def b(id=0, resp=OKAY):
    return (id, resp)


def r(id=0, data=0, resp=OKAY, last=1):
    return (id, data, resp, last)


def fire(**chans):
    """One cycle with a handshake on each given channel."""
    return {k: (True, True, v) for k, v in chans.items()}


# ---------------------------------------------------------------------------- clean traffic
def test_clean_traffic_passes_with_counts_and_listeners():
    core, out = axi(max_reads=2, max_writes=2, full_width=True, aligned=True, max_beats=4,
                    ids={0, 1, 2})
    seen = []
    core.listeners.append(lambda cycle, ch, f: seen.append((cycle, ch)))
    run(core, [
        # W ahead of its AW, then the AW (stalled one cycle)
        fire(w=w(1, 0xFF, 0)),
        {"w": (True, True, w(2, 0xFF, 1)), "aw": (True, False, aw(1, 0x1000, 1))},
        {"aw": (True, True, aw(1, 0x1000, 1)), "ar": (True, True, ar(2, 0x2000, 1))},
        fire(ar=ar(0, 0x3000, 0)),
        # reads of different IDs interleave; per ID in order
        fire(r=r(0, 0xAA, OKAY, 1)),
        fire(r=r(2, 0xBB, OKAY, 0), b=b(1, OKAY)),
        fire(r=r(2, 0xCC, SLVERR, 1)),
    ])
    core.finish()
    assert [(t.kind, t.id, t.resp) for t in out] == [("read", 0, OKAY), ("write", 1, OKAY),
                                                     ("read", 2, SLVERR)]
    assert out[1].data == (1).to_bytes(8, "little") + (2).to_bytes(8, "little")
    assert (core.ar_count, core.aw_count, core.max_reads_seen, core.max_writes_seen) == (2, 1, 2, 1)
    assert core.channels["aw"].stalls == 1 and core.channels["w"].handshakes == 2
    assert ("w", "aw") == (seen[0][1], seen[2][1]) and len(seen) == 9


def test_narrow_and_unaligned_beats_with_their_lanes_pass():
    core, out = axi()
    run(core, [fire(aw=aw(0, 0x1005, 1, 1)),          # 2-byte beats from 0x1005: lanes 5, then 6-7
               fire(w=w(0, 0x20, 0)), fire(w=w(0, 0xC0, 1)),
               fire(aw=aw(0, 0x1003, 1, 3)),          # full width, unaligned start: lanes 3-7, 0-7
               fire(w=w(0, 0xF8, 0)), fire(w=w(0, 0xFF, 1)),
               fire(b=b()), fire(b=b())])
    core.finish()
    assert len(out) == 2


# ---------------------------------------------------------------------------- handshake rules
@pytest.mark.parametrize("ch,payload", [("ar", ar()), ("aw", aw()), ("w", w()), ("r", r()),
                                        ("b", b())])
def test_valid_dropped_before_ready_on_every_channel(ch, payload):
    core, _ = axi()
    with pytest.raises(ProtocolError, match=rf"^mem {ch.upper()}: VALID dropped before READY at cycle 2"):
        run(core, [{ch: (True, False, payload)}, {}])


@pytest.mark.parametrize("ch,a,b_", [("ar", ar(addr=0x1000), ar(addr=0x1040)),
                                     ("w", w(strb=0xFF), w(strb=0x0F)),
                                     ("r", r(data=1), r(data=2))])
def test_payload_changed_while_stalled(ch, a, b_):
    core, _ = axi()
    with pytest.raises(ProtocolError, match=rf"^mem {ch.upper()}: \w+ changed from .* while VALID && "
                                            r"!READY at cycle 2"):
        run(core, [{ch: (True, False, a)}, {ch: (True, True, b_)}])


# ---------------------------------------------------------------------------- burst rules
@pytest.mark.parametrize("cfg,ch,req,msg", [
    ({}, "ar", ar(burst=0), r"burst type 0 is not INCR"),
    ({}, "aw", aw(burst=2), r"burst type 2 is not INCR"),
    ({}, "ar", ar(size=4), r"size 4 wider than the 8-byte bus"),
    ({"full_width": True}, "aw", aw(size=2), r"size 2 is not the full 8-byte bus"),
    ({}, "ar", ar(len=255, addr=0), None),                       # 256 beats, 2 KiB: legal
    ({"max_beats": 4}, "aw", aw(len=4), r"5 beats, more than 4"),
    ({"aligned": True}, "ar", ar(addr=0x1004), r"address not aligned to the 8-byte beat"),
    ({}, "aw", aw(addr=0x1FF8, len=1), r"burst crosses a 4 KiB boundary: bytes 0x1ff8..0x2007"),
    ({}, "ar", ar(addr=0x1F00, len=31), None),                   # ends on the boundary
    ({"ids": {0, 1}}, "ar", ar(id=2), r"id 0x2 not one of \[0, 1\]"),
])
def test_request_rules(cfg, ch, req, msg):
    core, _ = axi(**cfg)
    if msg is None:
        run(core, [fire(**{ch: req})])
        return
    with pytest.raises(ProtocolError, match=rf"^mem {ch.upper()}: {msg}.* at cycle 1$"):
        run(core, [fire(**{ch: req})])


def test_wlast_early_and_late():
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem W: WLAST=1 on beat 0 of a 2-beat burst .* at cycle 2"):
        run(core, [fire(aw=aw(len=1)), fire(w=w(last=1))])
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem W: WLAST=0 on beat 1 of a 2-beat burst"):
        run(core, [fire(aw=aw(len=1)), fire(w=w(last=0)), fire(w=w(last=0))])


def test_w_ahead_of_aw_with_the_wrong_beat_count():
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem W: 1 beats up to WLAST for a 3-beat burst .* at cycle 2"):
        run(core, [fire(w=w(last=1)), fire(aw=aw(len=2))])


@pytest.mark.parametrize("req,beats,msg", [
    (aw(addr=0x1004, size=2), [0xF0, 0xF0], r"WSTRB 0xf0 on beat 1 enables bytes outside its lanes 0xf\b"),
    (aw(addr=0x1003), [0xFF], r"WSTRB 0xff on beat 0 enables bytes outside its lanes 0xf8"),
    (aw(addr=0x1000, size=0), [0x02], r"WSTRB 0x2 on beat 0 enables bytes outside its lanes 0x1"),
])
def test_strobes_outside_the_beat_lanes(req, beats, msg):
    core, _ = axi()
    req = req[:2] + (len(beats) - 1,) + req[3:]
    cycles = [fire(aw=req)] + [fire(w=w(0, s, int(i == len(beats) - 1))) for i, s in enumerate(beats)]
    with pytest.raises(ProtocolError, match=rf"^mem W: {msg}"):
        run(core, cycles)
    # the same strobes checked when W runs ahead of its AW
    core, _ = axi()
    with pytest.raises(ProtocolError, match=rf"^mem W: {msg}"):
        run(core, cycles[1:] + cycles[:1])


def test_rlast_early_and_missing():
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem R: RLAST=1 on beat 0 of a 2-beat burst"):
        run(core, [fire(ar=ar(len=1)), fire(r=r(last=1))])
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem R: RLAST=0 on beat 0 of a 1-beat burst"):
        run(core, [fire(ar=ar(len=0)), fire(r=r(last=0))])


def test_responses_need_a_request_of_their_id():
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem B: response for id 3 with no write burst"):
        run(core, [fire(aw=aw(id=1)), fire(w=w()), fire(b=b(id=3))])
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem B: response for id 0 with no write burst"):
        run(core, [fire(aw=aw(len=1)), fire(w=w(last=0)), fire(b=b())])    # data not complete
    core, _ = axi()
    with pytest.raises(ProtocolError, match=r"^mem R: beat for id 2 with no read of that ID"):
        run(core, [fire(ar=ar(id=1)), fire(r=r(id=2))])


@pytest.mark.parametrize("ch", ["b", "r"])
def test_response_codes(ch):
    req = [fire(aw=aw()), fire(w=w())] if ch == "b" else [fire(ar=ar())]
    resp = (lambda c: fire(b=b(resp=c))) if ch == "b" else (lambda c: fire(r=r(resp=c)))
    core, _ = axi()
    with pytest.raises(ProtocolError, match=rf"^mem {ch.upper()}: response 1 \(EXOKAY\) not allowed"):
        run(core, req + [resp(EXOKAY)])
    core, _ = axi(resp=(OKAY,))
    with pytest.raises(ProtocolError, match=r"response 3 \(DECERR\) not allowed here \(allowed OKAY\)"):
        run(core, req + [resp(DECERR)])


def test_outstanding_limits():
    core, _ = axi(max_reads=2)
    run(core, [fire(ar=ar(id=0)), fire(ar=ar(id=1)), fire(r=r(id=0)), fire(ar=ar(id=2))])
    with pytest.raises(ProtocolError, match=r"^mem AR: 3 read bursts outstanding, more than 2 at cycle 5"):
        run(core, [fire(ar=ar(id=3))], start=5)
    core, _ = axi(max_writes=1)
    with pytest.raises(ProtocolError, match=r"^mem AW: 2 write bursts outstanding, more than 1"):
        run(core, [fire(aw=aw()), fire(w=w()), fire(aw=aw())])


def test_finish_names_what_is_left_open():
    core, _ = axi()
    run(core, [fire(aw=aw(len=1)), fire(w=w(last=0)), fire(ar=ar())])
    with pytest.raises(ProtocolError, match=r"^mem: bursts open at the end: 1 AW without all their W "
                                            r"beats .*; 1 reads without RLAST"):
        core.finish()


# ---------------------------------------------------------------------------- AXI4-Lite
def test_lite_exokay_and_clean_access():
    out = []
    core = AxiLiteChecker(out.append)
    run(core, [fire(aw=(0x48,), w=(5, 0xF)), fire(b=(OKAY,)), fire(ar=(0x44,)), fire(r=(7, SLVERR))])
    core.finish()
    assert [(t.kind, t.addr, t.data, t.resp) for t in out] == [("write", 0x48, 5, OKAY),
                                                              ("read", 0x44, 7, SLVERR)]
    with pytest.raises(ProtocolError, match=r"^csr R: response 1 \(EXOKAY\) not allowed"):
        run(core, [fire(ar=(0x44,)), fire(r=(0, EXOKAY))])
