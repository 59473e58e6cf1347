"""Reference model of the chip-to-chip link and its packets (hdl_gen/chip_link.py,
docs/cluster_link.md): pure functions, no simulator.

* :func:`pack_header` / :func:`unpack_header`: a :class:`~hdl_gen.chip_link.LinkHeader` as an
  integer, field positions read from the Struct (any field value, malformed ones included);
* :func:`packet_beats`: the beats ``LinkTx`` sends for a header and its rows;
* :func:`receive`: what ``LinkRx`` must do with the beats that reach it (with their ``corrupt``
  flags): the row writes in order, the event signals (each with the number of writes that precede
  it), the errors in order. Written as a packet parser, independently of the RTL's state machine;
* :func:`round_trip`, :func:`link_rate`: the credit loop's round trip and the beats per cycle a
  link of that latency and buffer depth sustains when its consumer never stalls.
"""
from dataclasses import dataclass, field

from amaranth.lib import data

from hdl_gen.chip_link import (HEADER_BITS, LinkError, LinkHeader, LinkKind, header_beats,
                               row_beats)

#: {field: (lsb, width)} of the header
FIELDS = {name: (f.offset, f.width) for name, f in data.Layout.cast(LinkHeader)}
RESERVED = tuple(n for n in FIELDS if n.startswith("reserved"))


def pack_header(**values):
    """The header's bits as an integer; fields not given are 0. Values are truncated to their
    field (so any value, also a malformed one, can be sent)."""
    bits = 0
    for name, v in values.items():
        lsb, width = FIELDS[name]
        bits |= (int(v) & ((1 << width) - 1)) << lsb
    return bits


def unpack_header(bits):
    """{field: value} of a header's bits."""
    return {name: (bits >> lsb) & ((1 << width) - 1) for name, (lsb, width) in FIELDS.items()}


def round_trip(latency):
    """Cycles from spending a credit to spending it again: the beat's wire, one cycle in the
    receiver's buffer, the credit's wire back (a credit is usable in the cycle it arrives)."""
    return 2 * latency + 1


def link_rate(latency, depth):
    """Beats per cycle a link sustains with a consumer that never stalls."""
    return min(1.0, depth / round_trip(latency))


def _chunks(value, nbeats, nbytes):
    w = 8 * nbytes
    return [(value >> (k * w)) & ((1 << w) - 1) for k in range(nbeats)]


def packet_beats(header, rows, nbytes, mem_widths):
    """[(data, first)] of one packet as ``LinkTx`` sends it: the header (an int, or a dict of
    fields) in ``header_beats`` beats, then each of ``rows`` (ints) cut to its memory's width in
    ``row_beats`` beats. A header naming no memory sends rows of memory 0's width."""
    if isinstance(header, dict):
        header = pack_header(**header)
    fields = unpack_header(header)
    mem = fields["mem"] if fields["mem"] < len(mem_widths) else 0
    width = mem_widths[mem]
    if len(rows) != fields["rows"]:
        raise ValueError(f"header says {fields['rows']} rows, {len(rows)} given")
    beats = [(d, k == 0) for k, d in enumerate(_chunks(header, header_beats(nbytes), nbytes))]
    for r in rows:
        beats += [(d, False) for d in _chunks(r & ((1 << width) - 1), row_beats(width, nbytes),
                                              nbytes)]
    return beats


def header_error(fields, *, chip_id, mems, events):
    """The :class:`LinkError` of a header (``NONE`` when well formed): the lowest failing check."""
    kinds = (LinkKind.WRITE.value, LinkKind.WRITE_SIGNAL.value)
    mem_ok = fields["mem"] < len(mems)
    checks = [
        (LinkError.BAD_KIND, fields["kind"] not in kinds),
        (LinkError.BAD_DEST, fields["dest"] != chip_id),
        (LinkError.BAD_MEM, not mem_ok),
        (LinkError.ZERO_LENGTH, fields["rows"] == 0),
        (LinkError.RANGE, mem_ok and fields["addr"] + fields["rows"] > mems[fields["mem"]][0]),
        (LinkError.BAD_EVENT, fields["kind"] == LinkKind.WRITE_SIGNAL.value
         and fields["event"] >= events),
        (LinkError.RESERVED, any(fields[n] for n in RESERVED)),
    ]
    return next((err for err, bad in checks if bad), LinkError.NONE)


@dataclass
class Received:
    """What ``LinkRx`` does with a beat sequence."""
    writes: list = field(default_factory=list)     # (mem, row, data), in order
    events: list = field(default_factory=list)     # (index, value, writes before it)
    errors: list = field(default_factory=list)     # LinkError, in order
    packets: int = 0                               # packets written completely


def receive(beats, *, nbytes, mems, events, chip_id):
    """What ``LinkRx`` (``mems``: ``(rows, width)`` per memory) must do with ``beats``
    [(data, first, corrupt)] in arrival order; see :class:`Received`."""
    out = Received()
    hb = header_beats(nbytes)
    w = 8 * nbytes
    mode, hdr, pkt, row = "header", [], None, []
    i = 0
    while i < len(beats):
        d, first, corrupt = beats[i]
        if corrupt:                         # whatever it was: drop up to the next first beat
            out.errors.append(LinkError.CORRUPT)
            mode, hdr, row = "drop", [], []
            i += 1
            continue
        if mode == "drop":
            if not first:
                i += 1
                continue
            mode = "header"
        if mode == "header":
            if first != (not hdr):
                out.errors.append(LinkError.FRAMING)
                if first:                   # a new packet cut this header short: start over
                    hdr = []
                else:                       # a beat outside any packet
                    mode = "drop"
                    i += 1
                continue
            hdr.append(d)
            i += 1
            if len(hdr) == hb:
                fields = unpack_header(sum(x << (k * w) for k, x in enumerate(hdr))
                                       & ((1 << HEADER_BITS) - 1))
                hdr = []
                err = header_error(fields, chip_id=chip_id, mems=mems, events=events)
                if err != LinkError.NONE:
                    out.errors.append(err)
                    mode = "drop"
                else:
                    mode, pkt, row = "payload", dict(fields), []
            continue
        # payload
        if first:                           # cut short by the next packet's header
            out.errors.append(LinkError.FRAMING)
            mode, row = "header", []
            continue
        row.append(d)
        i += 1
        width = mems[pkt["mem"]][1]
        if len(row) == row_beats(width, nbytes):
            value = sum(x << (k * w) for k, x in enumerate(row)) & ((1 << width) - 1)
            out.writes.append((pkt["mem"], pkt["addr"], value))
            pkt["addr"] += 1
            pkt["rows"] -= 1
            row = []
            if pkt["rows"] == 0:
                out.packets += 1
                if pkt["kind"] == LinkKind.WRITE_SIGNAL.value:
                    out.events.append((pkt["event"], pkt["value"], len(out.writes)))
                mode = "header"
    return out
