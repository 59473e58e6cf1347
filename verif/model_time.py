"""Observing the golden chip model's time (golden/chip_model.py "How time advances"): a model
made to take every step in full, the reference for its event-driven time, and a log of the
firmware's MMIO accesses with the step each happens at, to compare the two."""

__all__ = ["stepped", "log_mmio"]


def stepped(chip):
    """``chip`` made to do every tick in full, skipping nothing."""
    chip._next_event = lambda timer_on: 0
    return chip


def log_mmio(chip):
    """Every firmware MMIO access of ``chip`` from now on, with its step, as a list of
    (step, write, address, data) that grows as the model runs."""
    log, regs = [], chip.regs
    read, write = regs.read, regs.write

    def logged_read(addr):
        v = read(addr)
        log.append((chip.now, 0, addr, v))
        return v

    def logged_write(addr, value, wstrb):
        log.append((chip.now, 1, addr, value))
        write(addr, value, wstrb)
    regs.read, regs.write = logged_read, logged_write
    return log
