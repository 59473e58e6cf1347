"""cocotb side of test_chip_link: lanes LinkTx -> ChipLink -> LinkRx driven in the same cycles,
every lane checked against the reference model (verif/link_model.py).

* ``link_random``: random packets (a quarter malformed: every kind of bad header), random row
  gaps, random write denials at the receiver (backpressure through the buffer and the credits),
  single bits flipped on the wire now and then; the writes, events (and how many writes precede
  each) and errors must be exactly the model's, the link never fails, credits all come back.
* ``link_throughput``: one long packet per lane, nothing stalled: beats per cycle measured at the
  sender against the credit loop's prediction (one a cycle where the buffer covers the round trip).
* ``link_down``: the wire goes down mid-packet: the sender fails exactly ``timeout`` cycles into
  its wait for a credit, then discards the rest of the packet (never hangs); nothing wrong is
  written; after a retrain the next packet reports the cut one (``FRAMING``) and arrives whole.
  With the timeout off the sender waits; setting the timeout then fails it at once.
"""
import json
import os
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hdl_gen.chip_link import LinkError, LinkKind, header_beats, row_beats
from verif import link_model as LM

LANES = json.loads(os.environ["KAKI_LINK_LANES"])
EVENTS = int(os.environ["KAKI_LINK_EVENTS"])
LONG = os.environ.get("KAKI_REGRESS_LONG") == "1"

ST_CMD, ST_ROWS, ST_SENT, ST_STALL, ST_FAILED, ST_BUSY, ST_EVENT, ST_ERROR = range(8)
ST_WR = 8
WRITE, WRITE_SIGNAL = LinkKind.WRITE.value, LinkKind.WRITE_SIGNAL.value
MALFORMED = ("kind", "dest", "mem", "zero", "range", "event", "reserved")


def _seed():
    seed = int(os.environ["KAKI_SEED"])
    cocotb.log.info(f"SEED={seed}")
    return seed


class Lane:
    """One lane of the bench: drives its packet streams, grants and faults, samples its outputs."""

    def __init__(self, dut, k, cfg, rng):
        self.k, self.rng = k, rng
        self.latency, self.nbytes, self.depth = cfg["latency"], cfg["nbytes"], cfg["depth"]
        self.mems = [tuple(x) for x in cfg["mems"]]
        self.widths = [w for _, w in self.mems]
        h = lambda name: getattr(dut, f"l{k}_{name}")
        self.h_cmd_valid, self.h_cmd = h("cmd__valid"), h("cmd__payload")
        self.h_rows_valid, self.h_rows = h("rows__valid"), h("rows__payload")
        self.h_timeout, self.h_retrain, self.h_down = h("timeout"), h("retrain"), h("down")
        self.h_flip, self.h_chip, self.h_gnt = h("flip"), h("chip_id"), h("gnt")
        self.h_status, self.h_credits = h("status"), h("credits")
        self.h_ev_index, self.h_ev_value, self.h_err = h("ev_index"), h("ev_value"), h("err_code")
        self.h_wr = [(h(f"wr{i}_addr"), h(f"wr{i}_data")) for i in range(len(self.mems))]
        self.chip_id = rng.randrange(16)
        self.reset_state()

    # -------------------------------------------------------------------------------- set-up
    def reset_state(self):
        self.cmds, self.rows = deque(), deque()
        self.cmd_on = self.rows_on = False      # an item is offered
        self.cmd_pin = self.rows_pin = 0          # the valid pins as driven
        self.beats = []                          # every beat queued, in send order: (data, first)
        self.packets = []                        # (fault or None, first beat, end beat)
        self.sent = 0                            # beats that entered the wire
        self.sent_cycles = []
        self.corrupt = set()                     # indices of beats sent with a bit flipped
        self.writes, self.events, self.errors = [], [], []
        self.p_gnt = self.p_rows = self.p_cmd = 1.0
        self.p_flip, self.flips_left, self.flip = 0.0, 0, 0
        self.status = 0
        self.failed_at = None                    # cycle the sender failed
        self.stall_run = 0                       # consecutive cycles waiting for a credit, so far
        self.failed_after = None                 # stall_run when it failed
        self.cycle = 0

    def init_pins(self, timeout):
        for hd in (self.h_cmd_valid, self.h_rows_valid, self.h_retrain, self.h_down, self.h_flip,
                   self.h_gnt):
            hd.value = 0
        self.h_timeout.value = timeout
        self.h_chip.value = self.chip_id

    def queue(self, header, rows, what=None):
        """Queue a packet (``what``: the fault of a malformed header)."""
        beats = LM.packet_beats(header, rows, self.nbytes, self.widths)
        self.packets.append((what, len(self.beats), len(self.beats) + len(beats)))
        self.cmds.append(LM.pack_header(**header))
        self.rows.extend(rows)
        self.beats += beats

    def random_rows(self, mem, n):
        width = self.widths[mem if mem < len(self.widths) else 0]
        return [self.rng.getrandbits(width) for _ in range(n)]

    def good_header(self, rows_max=6):
        r = self.rng
        mem = r.randrange(len(self.mems))
        n = r.randint(1, min(rows_max, self.mems[mem][0]))
        return {"kind": r.choice((WRITE, WRITE_SIGNAL)), "dest": self.chip_id, "mem": mem,
                "rows": n, "addr": r.randint(0, self.mems[mem][0] - n),
                "event": r.randrange(EVENTS), "value": r.getrandbits(32)}

    def malformed_header(self, what):
        """A header with exactly one fault ``what`` (one of MALFORMED)."""
        r = self.rng
        h = self.good_header()
        if what == "kind":
            h["kind"] = r.choice([0, *range(3, 16)])
        elif what == "dest":
            h["dest"] = r.choice([d for d in range(16) if d != self.chip_id])
        elif what == "mem":
            h["mem"] = r.randrange(len(self.mems), 4)
            h["addr"] = r.randrange(8)
        elif what == "zero":
            h["rows"] = 0
        elif what == "range":
            rows = self.mems[h["mem"]][0]
            h["rows"] = r.randint(1, 4)
            h["addr"] = r.randint(rows - h["rows"] + 1, rows + 3)
        elif what == "event":
            h["kind"], h["event"] = WRITE_SIGNAL, r.randrange(EVENTS, 256)
        elif what == "reserved":
            name = r.choice(LM.RESERVED)
            h[name] = 1 << r.randrange(LM.FIELDS[name][1])
        return h

    # -------------------------------------------------------------------------------- per cycle
    def drive(self):
        r = self.rng
        if not self.cmd_on and self.cmds and r.random() < self.p_cmd:
            self.h_cmd.value = self.cmds[0]
            self.cmd_on = True
        if self.cmd_pin != self.cmd_on:
            self.h_cmd_valid.value = self.cmd_pin = int(self.cmd_on)
        if not self.rows_on and self.rows and r.random() < self.p_rows:
            self.h_rows.value = self.rows[0]
            self.rows_on = True
        if self.rows_pin != self.rows_on:
            self.h_rows_valid.value = self.rows_pin = int(self.rows_on)
        if self.p_gnt >= 1.0:
            gnt = (1 << len(self.mems)) - 1
        else:
            gnt = sum((r.random() < self.p_gnt) << i for i in range(len(self.mems)))
        self.gnt = gnt
        self.h_gnt.value = gnt
        flip = 0
        if self.flips_left and r.random() < self.p_flip:
            flip = 1 << r.randrange(8 * self.nbytes + 1)
        if flip or self.flip:
            self.h_flip.value = flip
        self.flip = flip

    def sample(self):
        st = self.status = int(self.h_status.value)
        if self.cmd_on and st >> ST_CMD & 1:
            self.cmds.popleft()
            self.cmd_on = False
        if self.rows_on and st >> ST_ROWS & 1:
            self.rows.popleft()
            self.rows_on = False
        if st >> ST_SENT & 1:
            if self.flip:
                self.corrupt.add(self.sent)
                self.flips_left -= 1
            self.sent += 1
            self.sent_cycles.append(self.cycle)
        if st >> ST_EVENT & 1:                  # before this cycle's writes: it follows their grant
            self.events.append((int(self.h_ev_index.value), int(self.h_ev_value.value),
                                len(self.writes)))
        for i, (ha, hd) in enumerate(self.h_wr):
            if st >> (ST_WR + i) & 1 and self.gnt >> i & 1:
                self.writes.append((i, int(ha.value), int(hd.value)))
        if st >> ST_ERROR & 1:
            self.errors.append(LinkError(int(self.h_err.value)))
        failed = st >> ST_FAILED & 1
        if failed and self.failed_at is None:
            self.failed_at, self.failed_after = self.cycle, self.stall_run
        self.stall_run = self.stall_run + 1 if st >> ST_STALL & 1 else 0
        self.cycle += 1

    def idle(self):
        return (not self.cmds and not self.rows and not self.cmd_on and not self.rows_on
                and not self.status >> ST_BUSY & 1)

    # -------------------------------------------------------------------------------- checks
    def expected(self, beats=None):
        beats = self.beats if beats is None else beats
        return LM.receive([(d, f, i in self.corrupt) for i, (d, f) in enumerate(beats)],
                          nbytes=self.nbytes, mems=self.mems, events=EVENTS, chip_id=self.chip_id)

    def check(self, exp, what):
        tag = f"lane {self.k} (latency {self.latency}, {self.nbytes} B, depth {self.depth}) {what}"
        for name, got, want in (("writes", self.writes, exp.writes),
                                ("events", self.events, exp.events),
                                ("errors", self.errors, exp.errors)):
            if got != want:
                first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                             min(len(got), len(want)))
                raise AssertionError(
                    f"{tag}: {name} differ at #{first}: got {got[first:first + 3]}, model "
                    f"{want[first:first + 3]} ({len(got)} vs {len(want)})")

    def describe(self):
        return f"lane {self.k} (latency {self.latency}, {self.nbytes} B/beat, depth {self.depth})"


async def start(dut, seed, timeout=4000):
    rng = random.Random(seed)
    lanes = [Lane(dut, k, cfg, random.Random(rng.getrandbits(64))) for k, cfg in enumerate(LANES)]
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for ln in lanes:
        ln.init_pins(timeout)
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    return rng, lanes


async def step(dut, lanes, cycles=1, until=None):
    """Run ``cycles`` cycles (or until ``until()``); returns the cycles run."""
    for n in range(cycles):
        if until is not None and until():
            return n
        for ln in lanes:
            ln.drive()
        await ReadOnly()
        for ln in lanes:
            ln.sample()
        await RisingEdge(dut.clk)
    return cycles


async def drain(dut, lanes, limit, what):
    """Run until every lane sent everything and its link is empty (all credits back, no write
    pending)."""
    done = lambda: all(ln.idle() and int(ln.h_credits.value) == ln.depth
                       and not ln.status >> ST_WR & ((1 << len(ln.mems)) - 1) for ln in lanes)
    ran = await step(dut, lanes, limit, until=done)
    await step(dut, lanes, 4)          # the last event pulse comes after the last grant
    assert ran < limit, f"{what}: not drained after {limit} cycles: " + "; ".join(
        f"{ln.describe()} cmds {len(ln.cmds)} rows {len(ln.rows)} status {ln.status:#x} "
        f"credits {int(ln.h_credits.value)}" for ln in lanes)


@cocotb.test()
async def link_random(dut):
    """Random packets, a quarter malformed, random backpressure, a few flipped bits: every lane's
    writes, events and errors exactly as the model predicts."""
    seed = _seed()
    rng, lanes = await start(dut, seed)
    packets = 240 if LONG else 80
    for ln in lanes:
        ln.p_gnt = rng.choice((0.3, 0.6, 0.9))
        ln.p_rows = rng.choice((0.5, 0.9, 1.0))
        ln.p_cmd = rng.choice((0.3, 1.0))
        ln.p_flip, ln.flips_left = 0.01, 3
        kinds = list(MALFORMED)
        for n in range(packets):
            if n % 4 == 3:
                what = kinds.pop(rng.randrange(len(kinds))) if kinds else rng.choice(MALFORMED)
                h = ln.malformed_header(what)
            else:
                what, h = None, ln.good_header()
            ln.queue(h, ln.random_rows(h["mem"], h["rows"]), what)
    await drain(dut, lanes, 40000 if LONG else 12000, "link_random")
    for ln in lanes:
        exp = ln.expected()
        ln.check(exp, "link_random")
        assert ln.failed_at is None, f"{ln.describe()}: the link failed at cycle {ln.failed_at}"
        assert ln.sent == len(ln.beats), f"{ln.describe()}: {ln.sent} of {len(ln.beats)} beats sent"
        codes = sorted({e.name for e in exp.errors})
        dut._log.info(f"{ln.describe()}: {len(ln.beats)} beats, {len(ln.writes)} rows written, "
                      f"{len(ln.events)} events, {exp.packets} packets whole, errors {codes}, "
                      f"{len(ln.corrupt)} beats corrupted, p_gnt {ln.p_gnt}")
        # the stimulus reached every header check: each malformed header whose header beats
        # arrived intact was reported (and, the writes being the model's, wrote nothing)
        hb = header_beats(ln.nbytes)
        names = dict(zip(MALFORMED, ("BAD_KIND", "BAD_DEST", "BAD_MEM", "ZERO_LENGTH", "RANGE",
                                     "BAD_EVENT", "RESERVED")))
        for what, b0, _ in ln.packets:
            if what and not any(b0 <= i < b0 + hb for i in ln.corrupt):
                assert names[what] in codes, f"{ln.describe()}: no {names[what]} reported"


@cocotb.test()
async def link_throughput(dut):
    """One long WRITE per lane, no stall anywhere: the measured beats per cycle at the sender are
    the credit loop's (one a cycle where the buffer covers the round trip)."""
    seed = _seed()
    rng, lanes = await start(dut, seed)
    for ln in lanes:
        bpr = row_beats(ln.widths[0], ln.nbytes)
        rows = min(ln.mems[0][0], max(8, (600 if LONG else 160) // bpr))
        h = {"kind": WRITE, "dest": ln.chip_id, "mem": 0, "rows": rows, "addr": 0}
        ln.queue(h, ln.random_rows(0, rows))
    await drain(dut, lanes, 20000, "link_throughput")
    for ln in lanes:
        ln.check(ln.expected(), "link_throughput")
        span = ln.sent_cycles[-1] - ln.sent_cycles[0] + 1
        rate = ln.sent / span
        want = LM.link_rate(ln.latency, ln.depth)
        rtt = LM.round_trip(ln.latency)
        dut._log.info(f"THROUGHPUT {ln.describe()}: round trip {rtt}, {ln.sent} beats in {span} "
                      f"cycles = {rate:.3f} beats/cycle ({rate * ln.nbytes:.2f} B/cycle), "
                      f"predicted {want:.3f}")
        if ln.depth >= rtt:
            assert rate >= 1.0, f"{ln.describe()}: {rate:.3f} beats/cycle with depth >= round trip"
        else:
            assert rate < 1.0 and abs(rate - want) <= 0.05 * want, \
                f"{ln.describe()}: {rate:.3f} beats/cycle, credit loop predicts {want:.3f}"


@cocotb.test()
async def link_down(dut):
    """The wire goes down mid-packet: failure exactly ``timeout`` cycles into the sender's wait,
    the rest of the packet discarded, nothing wrong written; a retrain recovers the link."""
    seed = _seed()
    rng, lanes = await start(dut, seed)
    timeouts = {}
    for ln in lanes:
        t = timeouts[ln.k] = rng.randint(12, 40)
        ln.h_timeout.value = t
        bpr = row_beats(ln.widths[0], ln.nbytes)
        need = ln.depth + LM.round_trip(ln.latency) + header_beats(ln.nbytes) + 8
        rows = min(ln.mems[0][0], -(-need // bpr) + 4)
        h = {"kind": WRITE_SIGNAL, "dest": ln.chip_id, "mem": 0, "rows": rows, "addr": 0,
             "event": rng.randrange(EVENTS), "value": rng.getrandbits(32)}
        ln.queue(h, ln.random_rows(0, rows))
        ln.cut = header_beats(ln.nbytes) + rng.randint(1, bpr + 1)   # beats through before down
    # down after `cut` beats
    down_at = {}
    for _ in range(4000):
        await step(dut, lanes, 1)
        for ln in lanes:
            if ln.k not in down_at and ln.sent >= ln.cut:
                ln.h_down.value = 1
                down_at[ln.k] = ln.sent
        if all(ln.failed_at is not None and ln.idle() for ln in lanes):
            break
    for ln in lanes:
        t = timeouts[ln.k]
        assert ln.k in down_at, f"{ln.describe()}: only {ln.sent} of {ln.cut} beats sent"
        assert ln.failed_at is not None, f"{ln.describe()}: never failed"
        assert ln.failed_after == t, (f"{ln.describe()}: failed after {ln.failed_after} cycles "
                                      f"waiting for a credit, timeout {t}")
        assert ln.idle(), f"{ln.describe()}: the sender still holds its packet after failing"
        # what got through is the first beats: their rows exactly, no event, no error
        arrived = ln.beats[:down_at[ln.k]]
        exp = ln.expected(arrived)
        ln.check(exp, "link_down (before the retrain)")
        assert int(ln.h_credits.value) < ln.depth
        ln.arrived = arrived
        dut._log.info(f"{ln.describe()}: down after {down_at[ln.k]} beats, failed after "
                      f"{ln.failed_after} cycles waiting (timeout {t}), {len(ln.writes)} rows "
                      f"written, rest of the packet discarded")
    # retrain with the wire up: the next packet reports the cut one and arrives whole
    for ln in lanes:
        ln.h_down.value = 0
        ln.h_retrain.value = 1
    await step(dut, lanes, 1)
    for ln in lanes:
        ln.h_retrain.value = 0
    await step(dut, lanes, 1)
    for ln in lanes:
        assert not ln.status >> ST_FAILED & 1 and int(ln.h_credits.value) == ln.depth, \
            f"{ln.describe()}: retrain left failed={ln.status >> ST_FAILED & 1} credits " \
            f"{int(ln.h_credits.value)}"
        h = ln.good_header()
        h["kind"] = WRITE_SIGNAL
        rows = ln.random_rows(h["mem"], h["rows"])
        first = len(ln.beats)
        ln.queue(h, rows)
        ln.after = ln.beats[first:]
    await drain(dut, lanes, 2000, "link_down recovery")
    for ln in lanes:
        ln.corrupt = set()
        exp = ln.expected(ln.arrived + ln.after)
        ln.check(exp, "link_down (after the retrain)")
        assert exp.errors == [LinkError.FRAMING] and exp.events, exp
    # timeout off: the sender waits for ever; a timeout set then fails it at once
    for ln in lanes:
        ln.h_timeout.value = 0
        ln.h_down.value = 1
        ln.failed_at = None
        bpr = row_beats(ln.widths[0], ln.nbytes)
        rows = min(ln.mems[0][0], -(-(ln.depth + 4) // bpr))   # more beats than credits
        h = {"kind": WRITE, "dest": ln.chip_id, "mem": 0, "rows": rows, "addr": 0}
        ln.queue(h, ln.random_rows(0, rows))
        ln.long = len(ln.writes)
    wait = 4 * max(timeouts.values()) + 2 * max(ln.depth for ln in lanes)
    await step(dut, lanes, wait)
    for ln in lanes:
        assert ln.failed_at is None and ln.status >> ST_STALL & 1, \
            f"{ln.describe()}: timeout 0 yet failed={ln.failed_at} stall={ln.status >> ST_STALL & 1}"
        ln.h_timeout.value = timeouts[ln.k]
    await step(dut, lanes, 3)
    for ln in lanes:
        assert ln.failed_at is not None, f"{ln.describe()}: a timeout set while waiting did not fail"
    await step(dut, lanes, 200, until=lambda: all(ln.idle() for ln in lanes))
    for ln in lanes:
        assert ln.idle(), f"{ln.describe()}: the failed sender did not discard its packet"
        assert len(ln.writes) == ln.long and not ln.status >> ST_WR & 3, \
            f"{ln.describe()}: a write through a down wire"
