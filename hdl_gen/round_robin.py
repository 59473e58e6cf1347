"""Round-robin choice among requesters, shared by the AXI arbiter and the queue controller."""
from amaranth import Array, Cat, Signal


def round_robin(m, valids, last, name):
    """Comb ``(any, sel)``: ``sel`` is the first index with ``valids[i]`` after ``last``, wrapping
    (so ``last`` itself has the lowest priority); ``any`` is 1 when some valid is set."""
    n = len(valids)
    sel = Signal(range(max(2, n)), name=f"{name}_sel")
    any_ = Signal(name=f"{name}_any")
    m.d.comb += any_.eq(Cat(*valids).any())
    with m.Switch(last):
        for k in range(n):
            with m.Case(k):
                # lowest priority first: the last assignment wins
                for j in reversed(range(1, n + 1)):
                    i = (k + j) % n
                    with m.If(valids[i]):
                        m.d.comb += sel.eq(i)
    return any_, sel


def round_robin_contract(m, rules, valids, last, any_, sel, granted, name="rr"):
    """Contract of :func:`round_robin` where ``last`` takes ``sel`` in every cycle ``granted``.

    ``{name}.choice``: ``any`` is the OR of the requests and ``sel`` is one of them;
    ``{name}.order``: no requester lies strictly between ``last`` and ``sel`` (cyclically), so the
    choice is the first request after the last winner (``last`` itself the lowest priority);
    ``{name}.starve``: a requester that keeps requesting sees at most ``n - 1`` grants to others
    before its own (no starvation within ``n`` grants).
    """
    n = len(valids)
    rules.guarantee(f"{name}.choice", any_ == Cat(*valids).any())
    rules.guarantee(f"{name}.choice", ~any_ | Array(valids)[sel])
    rules.guarantee(f"{name}.choice", sel < n)
    for i in range(n):
        # i lies strictly between last and sel going up from last, wrapping at n
        between = Cat(*[(last == a) & (sel == b) for a in range(n) for b in range(n)
                        if i in [(a + j) % n for j in range(1, (b - a) % n or n)]]).any()
        rules.guarantee(f"{name}.order", ~(any_ & valids[i] & between))
    for i in range(n):
        waited = Signal(range(n + 1), name=f"{name}_waited{i}")
        with m.If(~valids[i] | (granted & (sel == i))):
            m.d.sync += waited.eq(0)
        with m.Elif(granted):
            m.d.sync += waited.eq(waited + 1)
        rules.guarantee(f"{name}.starve", waited < n)
        # Why: every grant to another requester moves `last` strictly closer to i (the winner
        # lies between last and i), so the grants seen plus i's distance after `last` stay <= n.
        dist = Array([((i - a - 1) % n) + 1 for a in range(n)])[last]
        rules.guarantee(f"{name}.starve", waited + dist <= n)
        rules.cover(f"{name}.waited", valids[i] & granted & (sel == i) & (waited == n - 1))
