"""Issue unit: queue heads to the engines, events and barriers, completion requests in queue order.

The hardware half of docs/queues.md "Issue unit": it takes the work that used to cost the
control core's firmware ~150 instructions per command. Per queue it keeps the **window** of
descriptors popped and without a completion request (indices ``R <= i < H``, at most
``config.inflight``), each with its opcode, flags and tag (a small memory per queue), a done bit
and a status. Each cycle:

* **Issue** (one queue, round-robin among those whose head can act): an engine command goes to
  the dispatcher with the engine tag ``(q << 14) | H`` (its window position) when fewer than
  ``fifo_depth`` commands of its engine are issued and not retired (so the engine FIFO never
  overflows and a retire FIFO never fills); NOP completes at once; BARRIER and SIGNAL_EVENT when
  the window is empty (SIGNAL_EVENT then sets its event counter); WAIT_EVENT once its event has
  reached the value (wrap-safe; the compare is registered, so the head goes a cycle after the
  event and the head it compared stood still for a cycle). Any other head (unknown opcode, reserved flag bits, a malformed
  event payload) is left to the firmware: ``fw_ready`` (``WORK.QREADY``). A firmware ``fw_pop``
  pops such a head into the window, done with ``fw_status``. The end of a command list
  (``EXEC_LIST`` marked ``end`` by the queue controller) completes at once, like NOP. Once an
  item of a list has failed, the list's remaining items are popped without running (done OK).
* **Lists**: a list item leaves the window without a completion request; the first one to leave
  with a status other than OK fails the list: the list end's request carries that status and
  ``cpl_item`` = 1 + the item's position in the list (docs/queues.md "Command lists").
* **Retire**: one engine retirement per cycle (round-robin over the per-engine retire FIFOs)
  marks its window entry done with the engine's status; a status other than OK fails the queue
  (it issues nothing more until its reset).
* **Complete**: one queue per cycle (round-robin), while the completion writer takes requests:
  the oldest window entry, once done, becomes the queue's completion request and ``R`` advances.
* **Watchdog**: ``hung[e]`` once engine e has held issued commands ``watchdog`` cycles without a
  retirement (the firmware decides to reset it; the reset's WATCHDOG retirement arrives through
  the retire FIFO like any other).

Parameters
----------
config : KakiConfig
    ``queues``, ``events``, ``fifo_depth``, ``retire_depth``, ``inflight``.

Ports
-----
enable : In(1)
    ``ISSUE.ENABLE``: issue nothing while 0 (retirements and completions go on).
q : Out(IssueQueueSignature()).array(queues)
    Per queue, see :class:`IssueQueueSignature`.
fw_status : In(8)
    The ``ErrorCode`` of the firmware's pops (``Q_POP.STATUS``).
desc : Out(256), submit : Out(1), submit_queue : Out(qbits)
    The command handed to the dispatcher (tag replaced by the engine tag) and its queue.
retire : In(RetireSignature()).array(engines)
    The dispatcher's retire events (``done`` pulse, ``error``, ``tag``; the others unused).
cpl_valid : Out(1), cpl_ready : In(1), cpl_queue, cpl_irq, cpl_halt, cpl_flags, cpl_status,
cpl_opcode, cpl_tag, cpl_item : Out
    One completion request per cycle with ``cpl_valid & cpl_ready`` (queue controller's ``cpl_*``).
events : Out(ArrayLayout(32, events))
    The event counters (``EVENT[e]``).
watchdog : In(32), engine_reset : In(engines), hung : Out(engines)
    ``WATCHDOG.CYCLES``; the firmware's engine resets; ``WORK.HUNG``.
hold : In(1)
    The control core is held: the event counters restart at 0 (windows and retirements go on).
ext_event : In(valid, index, value)
    Set event counter ``index`` to ``value`` (a one-cycle ``valid``; an index outside the counters
    is ignored): the link receiver's WRITE_SIGNAL packets (docs/cluster_hw.md).
"""
from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import KakiConfig
from .formal import Rules, contract_for, implies, past
from .descriptor import COMMANDS, DESCRIPTOR_BITS, Descriptor, ErrorCode, engine_opcodes
from .dispatcher import ENGINES, RetireSignature
from .round_robin import round_robin

__all__ = ["IssueUnit", "IssueQueueSignature", "TAG_QUEUE_SHIFT", "CONTROL_COMMANDS"]

#: Engine tag = (queue << TAG_QUEUE_SHIFT) | the descriptor's window position H (mod 2 * inflight).
TAG_QUEUE_SHIFT = 14
#: The commands without an engine, all of which the issue unit runs itself (EXEC_LIST: the end
#: of a list the queue controller expanded, docs/queues.md "Command lists").
CONTROL_COMMANDS = ("NOP", "BARRIER", "SIGNAL_EVENT", "WAIT_EVENT", "EXEC_LIST")


class IssueQueueSignature(wiring.Signature):
    """One queue's connection to the issue unit, seen from the unit.

    In: ``head`` [256] the prefetch FIFO's head, ``valid`` the FIFO is not empty, ``item`` /
    ``end`` the head is a command-list item / the end of a list, ``active`` the
    queue is active (queue controller), ``fw_pop``
    the firmware's ``Q_POP`` bit, ``cleared`` the queue's reset completes this cycle.
    Out: ``pop`` drop the head, ``fw_ready`` the head needs the firmware (``WORK.QREADY``),
    ``waiting`` the head is a WAIT_EVENT not yet reached (``Q_STATUS.WAITING``), ``drained``
    the window is empty (a reset may complete).
    """

    def __init__(self):
        super().__init__({"head": In(DESCRIPTOR_BITS), "valid": In(1), "item": In(1),
                          "end": In(1), "active": In(1),
                          "fw_pop": In(1), "cleared": In(1),
                          "pop": Out(1), "fw_ready": Out(1), "waiting": Out(1), "drained": Out(1)})


class _Head:
    """What queue ``q``'s head is and whether it can act (comb signals)."""

    def __init__(self, m, q, port, events, n_events):
        desc = Descriptor(port.head)
        self.desc = desc
        op = desc.opcode.as_value()
        flags_ok = desc.flags.reserved == 0
        ev = desc.payload.event
        ev_ok = (ev.reserved0 == 0) & (ev.reserved == 0) & (ev.event < n_events)
        self.engine = [Signal(name=f"q{q}_head_{e.name.lower()}") for e in ENGINES]
        for sig, e in zip(self.engine, ENGINES):
            m.d.comb += sig.eq(op.matches(*engine_opcodes(e)) & flags_ok)
        named = {c.name: c.opcode for c in COMMANDS}
        self.nop, self.barrier, self.signal, self.wait, self.end = (
            Signal(name=f"q{q}_head_{n.lower()}") for n in CONTROL_COMMANDS)
        self.item = port.item
        m.d.comb += [self.nop.eq((op == named["NOP"]) & flags_ok),
                     self.end.eq((op == named["EXEC_LIST"]) & port.end & flags_ok),
                     self.barrier.eq((op == named["BARRIER"]) & flags_ok),
                     self.signal.eq((op == named["SIGNAL_EVENT"]) & flags_ok & ev_ok),
                     self.wait.eq((op == named["WAIT_EVENT"]) & flags_ok & ev_ok)]
        self.firmware = Signal(name=f"q{q}_head_firmware")
        m.d.comb += self.firmware.eq(~Cat(*self.engine, self.nop, self.barrier, self.signal,
                                           self.wait, self.end).any())
        self.event = ev.event[:max(1, (n_events - 1).bit_length())]
        self.value = ev.value
        # the compare is registered (the 16-way event select and 32-bit subtract limited the issue
        # unit to 39.7 MHz routed): ``reached`` is last cycle's compare, used only while the head
        # and the events are the ones it was made of (IssueUnit.elaborate keeps ``fresh``)
        self.reached_now = Signal(name=f"q{q}_wait_reached_now")
        self.reached = Signal(name=f"q{q}_wait_reached")
        self.fresh = Signal(name=f"q{q}_wait_fresh")
        was = Signal(name=f"q{q}_wait_reached_r")
        diff = Signal(32, name=f"q{q}_wait_diff")
        m.d.comb += [diff.eq(Array(events)[self.event] - ev.value), self.reached_now.eq(~diff[31]),
                     self.reached.eq(was & self.fresh)]
        m.d.sync += was.eq(self.reached_now)


class IssueUnit(wiring.Component):
    __doc__ = __doc__

    def __init__(self, config=KakiConfig()):
        if not isinstance(config, KakiConfig):
            raise TypeError(f"config must be a KakiConfig, not {type(config).__name__}")
        unknown = [c.name for c in COMMANDS if c.engine is None and c.name not in CONTROL_COMMANDS]
        if unknown:
            raise ValueError(f"the issue unit does not implement the control commands {unknown}")
        if config.queues > 1 << (16 - TAG_QUEUE_SHIFT):
            raise ValueError(f"{config.queues} queues do not fit the engine tag")
        self.config = config
        self.qbits = max(1, (config.queues - 1).bit_length())
        self.slot_bits = (config.inflight - 1).bit_length()
        n_eng = len(ENGINES)
        super().__init__({
            "enable": In(1), "q": Out(IssueQueueSignature()).array(config.queues),
            "fw_status": In(8),
            "desc": Out(DESCRIPTOR_BITS), "submit": Out(1), "submit_queue": Out(self.qbits),
            "retire": In(RetireSignature()).array(n_eng),
            "cpl_valid": Out(1), "cpl_ready": In(1), "cpl_queue": Out(self.qbits),
            "cpl_irq": Out(1), "cpl_halt": Out(1), "cpl_flags": Out(8), "cpl_status": Out(8),
            "cpl_opcode": Out(8), "cpl_tag": Out(16), "cpl_item": Out(16),
            "events": Out(data.ArrayLayout(32, config.events)),
            "watchdog": In(32), "engine_reset": In(n_eng), "hung": Out(n_eng), "hold": In(1),
            "ext_event": In(data.StructLayout({"valid": 1, "index": 8, "value": 32})),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        n, W, sb = cfg.queues, cfg.inflight, self.slot_bits
        events = [self.events[e] for e in range(cfg.events)]
        heads = [_Head(m, i, self.q[i], events, cfg.events) for i in range(n)]

        # ---- window state per queue: H, R (mod 2W), done and status per slot, failed ----------
        H = [Signal(sb + 1, name=f"q{i}_h") for i in range(n)]
        R = [Signal(sb + 1, name=f"q{i}_r") for i in range(n)]
        done = [Signal(W, name=f"q{i}_done") for i in range(n)]
        status = [[Signal(8, name=f"q{i}_status{k}") for k in range(W)] for i in range(n)]
        failed = [Signal(name=f"q{i}_failed") for i in range(n)]
        count = [Signal(sb + 1, name=f"q{i}_count") for i in range(n)]
        full = [Signal(name=f"q{i}_full") for i in range(n)]
        for i in range(n):
            m.d.comb += [count[i].eq(H[i] - R[i]), full[i].eq(count[i] == W),
                         self.q[i].drained.eq(count[i] == 0)]
        # opcode, flags and tag of each entry (the record's) and whether it is a list item or a
        # list's end, one small memory per queue
        ITEM, END = 32, 33
        info = []
        for i in range(n):
            mem = Memory(shape=34, depth=W, init=[])
            m.submodules[f"q{i}_info"] = mem
            info.append((mem.write_port(), mem.read_port(domain="comb")))

        # ---- engine bookkeeping: issued and not retired, watchdog ----------------------------
        n_eng = len(ENGINES)
        outstanding = [Signal(range(cfg.fifo_depth + 1), name=f"{e.name.lower()}_outstanding")
                       for e in ENGINES]

        # ---- list errors: the first failing item of a list, reported by the list's end ---------
        list_err = [Signal(8, name=f"q{i}_list_err") for i in range(n)]
        list_item = [Signal(16, name=f"q{i}_list_item") for i in range(n)]   # 1 + its position
        list_done = [Signal(16, name=f"q{i}_list_done") for i in range(n)]   # items left the window
        skipping = [Signal(name=f"q{i}_skipping") for i in range(n)]  # drops the failed list's rest

        # ---- issue -----------------------------------------------------------------------------
        can = []
        fw_take = []                # the firmware's pop of queue i is taken this cycle
        for i, h in enumerate(heads):
            qp = self.q[i]
            live = Signal(name=f"q{i}_live")
            m.d.comb += [live.eq(self.enable & qp.active & qp.valid & ~failed[i] & ~full[i]),
                         skipping[i].eq(self.enable & qp.active & qp.valid & ~full[i]
                                        & (list_err[i] != 0) & (h.item | h.end))]
            room = Cat(*[h.engine[e] & (outstanding[e] < cfg.fifo_depth) for e in range(n_eng)]).any()
            c = Signal(name=f"q{i}_can_issue")
            m.d.comb += [
                c.eq((live & (room | h.nop | h.end | ((h.barrier | h.signal) & (count[i] == 0))
                              | (h.wait & h.reached))) | skipping[i]),
                qp.fw_ready.eq(live & h.firmware),
                qp.waiting.eq(live & h.wait & ~h.reached),
            ]
            can.append(c)
            t = Signal(name=f"q{i}_fw_take")
            m.d.comb += t.eq(qp.fw_pop & qp.valid & h.firmware & ~full[i])
            fw_take.append(t)
        rr_last = Signal(self.qbits, name="issue_rr_last", init=n - 1)
        go, sel = round_robin(m, can, rr_last, "issue_rr")
        sel_head = Array(h.desc for h in heads)[sel]
        sel_h = Array(H)[sel]
        tag = Cat(sel_h, Const(0, TAG_QUEUE_SHIFT - len(sel_h)), sel)
        m.d.comb += [self.desc.eq(Cat(sel_head.as_value()[:16], tag,
                                      sel_head.as_value()[32:])),
                     self.submit_queue.eq(sel)]
        issued_to = [Signal(name=f"{e.name.lower()}_issued") for e in ENGINES]
        signals = []                # a SIGNAL_EVENT writes an event this cycle
        with m.If(go):
            m.d.sync += rr_last.eq(sel)
        for e in range(len(ENGINES)):
            m.d.comb += issued_to[e].eq(go & Array(h.engine[e] & ~skipping[i]
                                                   for i, h in enumerate(heads))[sel])
        for i, h in enumerate(heads):
            qp = self.q[i]
            mine = Signal(name=f"q{i}_issue")
            m.d.comb += mine.eq(go & (sel == i))
            wp = info[i][0]
            d = h.desc
            m.d.comb += [qp.pop.eq(mine | fw_take[i]),
                         wp.addr.eq(H[i][:sb]), wp.en.eq(mine | fw_take[i]),
                         wp.data.eq(Cat(d.opcode, d.flags, d.tag, h.item, h.end))]
            is_engine = Cat(*h.engine).any() & ~skipping[i]
            with m.If(mine & ~skipping[i]):
                m.d.comb += self.submit.eq(is_engine)
            signals.append(mine & ~skipping[i] & h.signal)
            slot = H[i][:sb]
            with m.If(mine | fw_take[i]):
                m.d.sync += [H[i].eq(H[i] + 1),
                             Array(done[i])[slot].eq(~(mine & is_engine)),
                             Array(status[i])[slot].eq(Mux(mine, ErrorCode.OK, self.fw_status))]
            with m.If(fw_take[i] & (self.fw_status != ErrorCode.OK)):
                m.d.sync += failed[i].eq(1)

        # a SIGNAL_EVENT's event is written the cycle after it issues, from a register (the issue
        # select driving 16 x 32 event registers was the block's critical path, 44.9 MHz routed)
        sig_pending = Signal(name="issue_signal_pending")
        sig_event = Signal(len(heads[0].event), name="issue_signal_event")
        sig_value = Signal(32, name="issue_signal_value")
        m.d.sync += [sig_pending.eq(Cat(*signals).any()),
                     sig_event.eq(Array(h.event for h in heads)[sel]),
                     sig_value.eq(Array(h.value for h in heads)[sel])]
        # an event set from outside (the link's receiver: a peer's DMA_PEER with signal); a
        # SIGNAL_EVENT of the same cycle on the same counter wins (written after it)
        ext = self.ext_event
        with m.If(ext.valid & (ext.index < cfg.events)):
            m.d.sync += Array(events)[ext.index[:len(sig_event)]].eq(ext.value)
        with m.If(sig_pending):
            m.d.sync += Array(events)[sig_event].eq(sig_value)
        # a head's registered WAIT compare holds next cycle if neither the head nor an event changes
        ev_write = Signal(name="issue_event_write")
        m.d.comb += ev_write.eq(sig_pending | self.hold | ext.valid)
        for i, h in enumerate(heads):
            qp = self.q[i]
            m.d.sync += h.fresh.eq(qp.valid & ~qp.pop & ~qp.cleared & ~ev_write)

        # ---- retire ----------------------------------------------------------------------------
        retire_valid = []
        retire_data = []
        retire_pop = []
        for e, engine in enumerate(ENGINES):
            rf = fifo.SyncFIFOBuffered(width=24, depth=cfg.retire_depth)
            m.submodules[f"{engine.name.lower()}_retire"] = rf
            r = self.retire[e]
            m.d.comb += [rf.w_en.eq(r.done), rf.w_data.eq(Cat(r.error, r.tag))]
            retire_valid.append(rf.r_rdy)
            retire_data.append(rf.r_data)
            retire_pop.append(rf.r_en)
        ret_last = Signal(range(max(2, n_eng)), name="retire_rr_last", init=n_eng - 1)
        ret_go, ret_sel = round_robin(m, retire_valid, ret_last, "retire_rr")
        ret = Array(retire_data)[ret_sel]
        ret_error, ret_tag = ret[:8], ret[8:24]
        ret_q = ret_tag[TAG_QUEUE_SHIFT:TAG_QUEUE_SHIFT + self.qbits]
        ret_slot = ret_tag[:sb]
        drained = [Signal(name=f"{e.name.lower()}_retired") for e in ENGINES]
        with m.If(ret_go):
            m.d.sync += ret_last.eq(ret_sel)
        for e in range(n_eng):
            m.d.comb += [retire_pop[e].eq(ret_go & (ret_sel == e)), drained[e].eq(retire_pop[e])]
            # Issued and retired in one cycle leave the count as it is.
            with m.If(issued_to[e] & ~drained[e]):
                m.d.sync += outstanding[e].eq(outstanding[e] + 1)
            with m.Elif(drained[e] & ~issued_to[e] & (outstanding[e] != 0)):
                m.d.sync += outstanding[e].eq(outstanding[e] - 1)
        for i in range(n):
            # Only an entry of the window waiting for its engine: a retirement of a command
            # issued before the unit was reset (the core held with work in flight) is dropped.
            inside = ((ret_slot - R[i][:sb])[:sb] < count[i]) & ~Array(done[i])[ret_slot]
            with m.If(ret_go & (ret_q == i) & inside):
                m.d.sync += [Array(done[i])[ret_slot].eq(1), Array(status[i])[ret_slot].eq(ret_error)]
                with m.If(ret_error != ErrorCode.OK):
                    m.d.sync += failed[i].eq(1)

        # ---- complete --------------------------------------------------------------------------
        ready = []
        silent = []                 # the oldest entry is a list item: it leaves without a record
        final = []                  # the status of the oldest entry's record
        for i in range(n):
            oldest_done = (count[i] != 0) & Array(done[i])[R[i][:sb]]
            oldest = info[i][1].data
            st_i = Array(status[i])[R[i][:sb]]
            rdy = Signal(name=f"q{i}_cpl_ready")
            quiet = Signal(name=f"q{i}_silent")
            fin = Signal(8, name=f"q{i}_cpl_status")
            m.d.comb += [info[i][1].addr.eq(R[i][:sb]),
                         quiet.eq(oldest_done & oldest[ITEM]),
                         rdy.eq(oldest_done & ~oldest[ITEM]),
                         fin.eq(Mux(oldest[END] & (list_err[i] != 0), list_err[i], st_i))]
            ready.append(rdy)
            silent.append(quiet)
            final.append(fin)
            with m.If(quiet):
                m.d.sync += list_done[i].eq(list_done[i] + 1)
                with m.If((st_i != ErrorCode.OK) & (list_err[i] == 0)):
                    m.d.sync += [list_err[i].eq(st_i), list_item[i].eq(list_done[i] + 1)]
        cpl_last = Signal(self.qbits, name="cpl_rr_last", init=n - 1)
        cpl_any, cpl_sel = round_robin(m, ready, cpl_last, "cpl_rr")
        rec = Array(info[i][1].data for i in range(n))[cpl_sel]
        st = Array(final)[cpl_sel]
        m.d.comb += [self.cpl_valid.eq(cpl_any), self.cpl_queue.eq(cpl_sel),
                     self.cpl_item.eq(Mux(rec[END], Array(list_item)[cpl_sel], 0)),
                     self.cpl_opcode.eq(rec[:8]), self.cpl_flags.eq(rec[8:16]),
                     self.cpl_irq.eq(rec[8]), self.cpl_tag.eq(rec[16:32]),
                     self.cpl_status.eq(st), self.cpl_halt.eq(st != ErrorCode.OK)]
        with m.If(cpl_any & self.cpl_ready):
            m.d.sync += cpl_last.eq(cpl_sel)
        for i in range(n):
            taken = cpl_any & self.cpl_ready & (cpl_sel == i)
            with m.If(silent[i] | taken):
                m.d.sync += R[i].eq(R[i] + 1)
            with m.If(taken & rec[END]):         # the list is over: the next one starts clean
                m.d.sync += [list_err[i].eq(0), list_item[i].eq(0), list_done[i].eq(0)]

        # ---- queue reset, core held -----------------------------------------------------------
        with m.If(self.hold):
            m.d.sync += [ev.eq(0) for ev in events]
        for i in range(n):
            with m.If(self.q[i].cleared):       # after the rest: the reset wins
                m.d.sync += [H[i].eq(0), R[i].eq(0), failed[i].eq(0), list_err[i].eq(0),
                             list_item[i].eq(0), list_done[i].eq(0)]

        # ---- watchdog -------------------------------------------------------------------------
        for e, engine in enumerate(ENGINES):
            since = Signal(32, name=f"{engine.name.lower()}_since")
            idle = outstanding[e] == 0
            with m.If(idle | drained[e] | self.engine_reset[e]):
                m.d.sync += since.eq(0)
            with m.Elif(~since.all()):
                m.d.sync += since.eq(since + 1)
            m.d.comb += self.hung[e].eq(~idle & (since >= self.watchdog))
        if contract_for(platform, self):
            self._formal_contract(m, platform, heads=heads, count=count, failed=failed, done=done,
                                  R=R, silent=silent, skipping=skipping, list_err=list_err,
                                  outstanding=outstanding, issued_to=issued_to,
                                  drained=drained, fw_take=fw_take,
                                  retire_fifos=[m.submodules[f"{e.name.lower()}_retire"]
                                                for e in ENGINES])
        return m

    def _formal_contract(self, m, platform, *, heads, count, failed, done, R, silent, skipping,
                         list_err, outstanding,
                         issued_to, drained, fw_take, retire_fifos):
        """The issue unit's contract (docs/formal.md).

        * ``window.*``: a queue's window never holds more than ``inflight`` descriptors;
          ``drained`` is exactly an empty window; a queue reset (``cleared``) empties it and
          clears the failed flag;
        * ``issue.*``: a pop only takes a head that is there; the unit pops a head only while
          enabled, the queue active and not failed (but the items and end of a list that
          failed, which ``issue.skip`` pops without running, only after a failure), with room in
          the window; BARRIER and SIGNAL_EVENT only with the window empty, WAIT_EVENT only once
          reached; a head it does
          not serve leaves only by the firmware's pop; an engine gets a command only with fewer
          than ``fifo_depth`` issued and not retired;
        * ``retire.*``: a retire FIFO never overflows (an engine retires only what was issued);
        * ``cpl.*``: a completion request names a queue whose oldest window entry is done and
          halts exactly when its status is not OK; ``cpl.order``: the descriptor popped at any
          chosen moment leaves the window behind exactly the ones popped before it: with a
          completion request carrying its own opcode, flags and tag, or silently, which exactly
          a list item does (``cpl.silent``: never both at once).

        The environment: a head stays until popped or its queue is cleared; a reset clears only a
        drained queue; each engine retires only commands issued to it.
        """
        from amaranth.asserts import AnySeq
        n, W = self.config.queues, self.config.inflight
        rules = Rules(m, platform, "issue")
        started = past(m, Const(1), "formal_started")
        for e in range(len(ENGINES)):
            # the engine (dispatcher) side: issued and not yet retired by it
            held = Signal(range(self.config.fifo_depth + 2), name=f"formal_eng{e}_held")
            m.d.sync += held.eq(held + issued_to[e] - self.retire[e].done)
            rules.rely("env.retire", implies(self.retire[e].done, held != 0))
            rules.guarantee("retire.fifo", outstanding[e] == held + retire_fifos[e].level)
            rules.guarantee("retire.fifo", implies(retire_fifos[e].w_en, retire_fifos[e].w_rdy))
            rules.guarantee("issue.room", (outstanding[e] <= self.config.fifo_depth)
                            & implies(issued_to[e], outstanding[e] < self.config.fifo_depth))
        for i, h in enumerate(heads):
            qp = self.q[i]
            kept = past(m, qp.valid & ~qp.pop & ~qp.cleared, f"formal_q{i}_kept")
            rules.rely("env.head", implies(started & kept, qp.valid
                                           & (qp.head == past(m, qp.head, f"formal_q{i}_head"))))
            rules.rely("env.reset", implies(qp.cleared, qp.drained))
            rules.guarantee("window.bound", count[i] <= W)
            rules.guarantee("window.drained", qp.drained == (count[i] == 0))
            rules.guarantee("window.cleared", implies(past(m, qp.cleared, f"formal_q{i}_cleared"),
                                                      (count[i] == 0) & ~failed[i]))
            hw = qp.pop & ~fw_take[i]
            rules.guarantee("issue.pop", implies(qp.pop, qp.valid & (count[i] < W)))
            rules.guarantee("issue.gate", implies(hw, self.enable & qp.active
                                                  & (~failed[i] | (h.item | h.end))))
            run = hw & ~skipping[i]
            rules.guarantee("issue.order", implies(run & (h.barrier | h.signal), count[i] == 0))
            rules.guarantee("issue.wait", implies(run & h.wait, h.reached_now))
            rules.guarantee("issue.wait", implies(h.reached, h.reached_now))   # the register is exact
            rules.guarantee("issue.skip", implies(list_err[i] != 0, failed[i]))
            rules.guarantee("issue.firmware", implies(qp.pop & h.firmware & ~skipping[i], qp.fw_pop))
            rules.cover("issue.full", count[i] == W)
        oldest = Array(Array(done[i])[R[i][:self.slot_bits]] & (count[i] != 0) for i in range(n))
        rules.guarantee("cpl.done", implies(self.cpl_valid, oldest[self.cpl_queue]))
        rules.guarantee("cpl.status", self.cpl_halt == (self.cpl_status != ErrorCode.OK))
        # cpl.order: one descriptor of queue 0, picked when popped, is followed to its request
        q0, h0 = self.q[0], heads[0]
        armed = Signal(name="formal_armed")
        ahead = Signal(range(W + 1), name="formal_ahead")
        want = Signal(32, name="formal_want")
        want_item = Signal(name="formal_want_item")
        pick = AnySeq(1)
        req0 = self.cpl_valid & self.cpl_ready & (self.cpl_queue == 0)
        adv0 = req0 | silent[0]                 # queue 0's oldest entry leaves the window
        rules.guarantee("cpl.silent", implies(silent[0], ~(self.cpl_valid & (self.cpl_queue == 0))))
        with m.If(q0.cleared):
            m.d.sync += armed.eq(0)
        with m.Elif(~armed & q0.pop & pick):
            m.d.sync += [armed.eq(1), ahead.eq(count[0] - adv0), want_item.eq(h0.item),
                         want.eq(Cat(h0.desc.opcode, h0.desc.flags, h0.desc.tag))]
        with m.Elif(armed & adv0):
            with m.If(ahead == 0):
                m.d.sync += armed.eq(0)
            with m.Else():
                m.d.sync += ahead.eq(ahead - 1)
        mine = armed & adv0 & (ahead == 0)
        rules.guarantee("cpl.order", implies(armed, ahead < count[0]))
        rules.guarantee("cpl.order", implies(mine & req0, Cat(self.cpl_opcode, self.cpl_flags,
                                                               self.cpl_tag) == want))
        rules.guarantee("cpl.order", implies(mine & silent[0], want_item))
        rules.cover("cpl.order", mine & req0 & past(m, armed, "formal_was_armed"))
        rules.cover("cpl.silent", mine & silent[0])
