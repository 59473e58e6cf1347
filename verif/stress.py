"""The long stress run of the command queues: thousands of random jobs per queue in one
dependency graph, far more data than host memory holds at once.

:class:`StressBuilder` is the random DAG builder of verif/dag_workload.py with host memory
recycled, so a run is as long as asked for on a chip testbench's fixed host memory:

* inputs come from a **pool** of the initial (random) host image that nothing writes, and each
  compute job takes one of :data:`PARAM_BLOCKS` parameter blocks written before the run;
* outputs go to an **arena** allocated round robin; before a job's store reuses bytes, its queue
  is ordered (BARRIER, or SIGNAL_EVENT/WAIT_EVENT across queues) after every command that last
  wrote or read them, so replaying the commands in generation order stays a legal order, and the
  scoreboard (verif/queue_scoreboard.py) can compare the whole host memory with that replay;
* the **local memories** are observable too: queue 0 first zeroes the whole scratchpad and
  accumulator (``row_bytes = 0`` loads; every other queue waits for that), and after every queue's
  last command stores them into a dump area of host memory. A stray write anywhere in a local
  memory, or a job result left different from the golden model's, shows in that dump.

:func:`stress_scenario` runs it as a device program (``driver.ops``) on the golden chip model or
the RTL, with :func:`verif.chip_scenarios.run_workload`.
"""
import numpy as np

from spec.chip import EVENTS, QUEUES
from spec.descriptors import Opcode
from driver.ops import HostWrite

from .chip_scenarios import random_host, run_workload
from .dag_workload import DagBuilder, new_workload, queue_configs
from .queue_host import event_bases
from .ring_layout import M32, Layout

#: Bytes of the input pool (read-only random data every job input is taken from).
POOL_BYTES = 0x8000
#: Parameter blocks (multiplier, shift, bias rows) the compute jobs choose from.
PARAM_BLOCKS = 32
#: Smallest output arena, in copy-job inputs (``DagBuilder.buf``): a job may read any of the
#: last 8 jobs' outputs, which must not be recycled yet.
ARENA_MIN = 16
#: Granularity of the arena's use tracking (bytes).
CHUNK = 256
#: Largest event stride: a wait must stay within 2**31 of its counter along the whole run.
EVENT_STRIDE = 1 << 18


def dump_rows(caps, budget):
    """(scratchpad rows, accumulator rows) the final dump stores: whole memories when they fit in
    ``budget`` host bytes, else the rows the builder's job regions use."""
    whole = (caps.spad_rows, caps.acc_rows)
    if caps.spad_rows * caps.dim + caps.acc_rows * 4 * caps.dim <= budget:
        return whole
    regions = QUEUES * DagBuilder.REGIONS
    return regions * DagBuilder.spad_region_rows(caps), regions * DagBuilder.ACC_REGION


class StressBuilder(DagBuilder):
    """A :class:`DagBuilder` whose host data lives in a read-only pool and a recycled output arena
    (see the module doc); ``dump``: (scratchpad rows, accumulator rows) of the final dump."""

    def __init__(self, wl, rng, queues, event_base, *, dump, **knobs):
        super().__init__(wl, rng, queues, event_base, **knobs)
        self.ev_stride = {e: int(rng.integers(1, EVENT_STRIDE)) for e in range(EVENTS)}
        d, lay = self.dim, wl.layout
        self.pool = lay.data_base
        self.alloc.next = self.pool + POOL_BYTES          # then the parameters, the dump, the arena
        self.params = [DagBuilder.fresh(self, 12 * d, self.param_data()) for _ in range(PARAM_BLOCKS)]
        self.dump_spad, self.dump_acc = dump
        self.dump_base = self.alloc.take(self.dump_spad * d + self.dump_acc * 4 * d, 64)
        self.arena = (self.alloc.next, lay.host_bytes)
        if self.arena[1] - self.arena[0] < ARENA_MIN * self.buf:
            raise ValueError(f"host memory {lay.host_bytes:#x} leaves an output arena of "
                             f"{self.arena[1] - self.arena[0]} bytes; raise host_bytes")
        self.next_out = self.arena[0]
        self.users = {}          # arena chunk -> [(lo, hi, Desc)]: commands that touched bytes there
        self.synced = {}         # (q, r) -> seq of the latest signal of queue r that q waited for

    # ------------------------------------------------------------------ host data
    def fresh(self, size, data=None):
        raise TypeError("the stress builder takes inputs from its pool and outputs from its arena")

    def input_bytes(self, size):
        if size > POOL_BYTES:
            raise ValueError(f"an input of {size} bytes does not fit the {POOL_BYTES}-byte pool")
        return self.pool + int(self.rng.integers(0, POOL_BYTES - size + 1))

    def param_rows(self):
        return self.params[int(self.rng.integers(len(self.params)))]

    def output(self, q, size):
        size = max(size, 1)
        lo, hi = self.arena
        a = self.next_out + int(self.rng.integers(0, 64))
        if a + size > hi:
            a = lo
        self.next_out = a + size
        for _, out, n, _ in self.jobs[-8:]:         # the outputs a job may still read (job())
            if a < out + n and out < a + size:
                raise ValueError("the output arena is too small for the jobs' dependency window")
        latest = {}
        for c in range(a // CHUNK, (a + size - 1) // CHUNK + 1):
            keep = []
            for lo, hi, d in self.users.get(c, ()):
                if lo < a + size and a < hi:
                    if d.seq > latest.get(d.queue, (-1, None))[0]:
                        latest[d.queue] = (d.seq, d)
                    # The bytes this output does not cover keep their users.
                    keep += [(x, y, d) for x, y in ((lo, a), (a + size, hi)) if x < y]
                else:
                    keep.append((lo, hi, d))
            self.users[c] = keep
        for _, d in latest.values():
            self.order_after(q, d)
        return a

    def _dma(self, q, opcode, host_addr, touched, **fields):
        d = super()._dma(q, opcode, host_addr, touched, **fields)
        lo, hi = max(host_addr, self.arena[0]), min(host_addr + touched, self.arena[1])
        for c in (range(lo // CHUNK, (hi - 1) // CHUNK + 1) if lo < hi else ()):
            self.users.setdefault(c, []).append((lo, hi, d))
        return d

    def order_after(self, q, last):
        r = last.queue
        if r != q and self.synced.get((q, r), -1) > last.seq:
            return None          # q already waited for a signal of r after ``last``
        sig = super().order_after(q, last)
        if sig is not None:
            self.synced[(q, r)] = max(self.synced.get((q, r), -1), sig.seq)
        return sig

    # ------------------------------------------------------------------ local memories
    def _local(self, opcode, q, host, rows, acc, row_bytes):
        fields = dict(local_addr=0, local_row_stride=1, rows=rows, planes=1, acc=int(acc),
                      host_row_stride=row_bytes, row_bytes=row_bytes)
        if row_bytes:
            return self._dma(q, opcode, host, rows * row_bytes, **fields)
        return self.add(q, opcode, host_addr=host, **fields)

    def zero_local(self, q):
        """Zero both local memories from queue ``q``; every other queue waits for it."""
        self._local(Opcode.DMA_LOAD, q, 0, self.wl.caps.spad_rows, False, 0)
        last = self._local(Opcode.DMA_LOAD, q, 0, self.wl.caps.acc_rows, True, 0)
        for r in self.queues:
            self.order_after(r, last)

    def dump_local(self, q):
        """After every queue's last command, store the dumped local rows into host memory."""
        for r in self.queues:
            self.order_after(q, self.wl.streams[r][-1])
        d = self.dim
        self._local(Opcode.DMA_STORE, q, self.dump_base, self.dump_spad, False, d)
        self._local(Opcode.DMA_STORE, q, self.dump_base + self.dump_spad * d, self.dump_acc, True, 4 * d)

    def check_events(self, event_base):
        """Every event's counter stays within 2**31 of its start over the run (wrap-safe waits)."""
        for e, v in self.ev_value.items():
            if (v - event_base[e]) & M32 >= 1 << 31:
                raise ValueError(f"event {e} advances by {(v - event_base[e]) & M32} in one run: "
                                 f"its waits would not be wrap-safe; lower EVENT_STRIDE")


def stress_knobs(rng):
    """The DagBuilder knobs of a stress run, drawn from its seed: from nearly independent queues
    (only the arena's reuse orders them) to dense dependencies; more or less compute."""
    return dict(p_dep=round(float(rng.uniform(0.0, 0.6)), 2),
                p_extra=round(float(rng.uniform(0.0, 0.3)), 2),
                p_compute=round(float(rng.uniform(0.1, 0.5)), 2))


def build_stress(caps, seed, layout, *, commands, queues=(0, 1, 2, 3), event_base=None,
                 knobs=None):
    """The stress workload: jobs on random queues until each of ``queues`` holds at least
    ``commands`` descriptors, between the local-memory zeroing and dump. ``knobs``: the
    DagBuilder's probabilities (default :func:`stress_knobs`). Returns the Workload."""
    rng = np.random.default_rng([seed, 0x57E55])
    knobs = stress_knobs(rng) if knobs is None else knobs
    base = event_base or {e: 0 for e in range(EVENTS)}
    wl = new_workload(f"stress {len(queues)}x{commands} {knobs}", caps, seed, layout, queues)
    b = StressBuilder(wl, rng, queues, base, dump=dump_rows(caps, layout.host_bytes // 2), **knobs)
    b.zero_local(queues[0])
    while True:
        short = [q for q in queues if len(wl.streams[q]) < commands]
        if not short:
            break
        b.job(short[int(rng.integers(len(short)))])
    b.dump_local(queues[0])
    b.check_events(base)
    wl.configs = queue_configs(layout, queues, rng, b.windows())
    return wl


def stress_scenario(caps, seed, *, host_bytes, commands, knobs=None, poll=400, budget=None):
    """Fill host memory with seeded random bytes, run :func:`build_stress` on all queues and check
    it (verif/queue_scoreboard.py: every record, order along queues and event edges, the whole host
    memory including the local-memory dump). ``budget``: cycles before the run counts as hung
    (default: 2000 per descriptor). Returns the Report."""
    layout = Layout(host_bytes)
    image = random_host(seed, host_bytes)
    yield HostWrite(0, image)
    wl = build_stress(caps, seed, layout, commands=commands, event_base=(yield from event_bases()),
                      knobs=knobs)
    total = sum(len(s) for s in wl.streams.values())
    return (yield from run_workload(wl, host_image=image, poll=poll,
                                    budget=budget or 2000 * total))
