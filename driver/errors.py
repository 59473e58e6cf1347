"""Typed exceptions of the host driver API (driver/device.py). Every message names the offending
value (a register value, address, size, index or error code)."""

__all__ = ["DeviceError", "DeviceTimeout", "QueueError", "DriverMisuse", "OutOfMemory"]


class DeviceError(RuntimeError):
    """The device is not what the driver expects or reported a fault (wrong ID magic, firmware
    that faulted or never became READY, ...)."""


class DeviceTimeout(DeviceError):
    """A wait on the device exceeded its budget; ``what`` says what was awaited and ``state`` is a
    summary of the device state read at the timeout."""

    def __init__(self, what, cycles, state):
        super().__init__(f"timed out after {cycles} cycles waiting for {what}; device state: {state}")
        self.what, self.cycles, self.state = what, cycles, state


class QueueError(DeviceError):
    """A queue halted: ``code`` (an ErrorCode) from Q_ERROR, ``index`` from Q_ERROR_INDEX (the
    descriptor index, free-running), ``record`` the failed descriptor's completion record as a
    dict (None when the error has no record, e.g. RING_OVERFLOW or a failed descriptor fetch);
    ``detail`` what the driver knows beyond that (e.g. the command-list item that failed)."""

    def __init__(self, queue, code, index, record=None, detail=None):
        from spec.descriptors import ErrorCode
        try:
            code = ErrorCode(code)
            name = code.name
        except ValueError:
            name = f"unknown error code {code}"
        msg = f"queue {queue} halted with {name} at descriptor index {index}"
        if record is not None:
            msg += (f" (record: opcode {record.get('opcode')}, status {record.get('status')}, "
                    f"tag {record.get('tag')})")
        if detail:
            msg += f"; {detail}"
        super().__init__(msg + "; reset the queue to use it again")
        self.queue, self.code, self.index, self.record = queue, code, index, record
        self.detail = detail


class DriverMisuse(ValueError):
    """The caller used the API wrongly (bad size, alignment, out-of-bounds access, double free,
    missing buffer binding, resource exhausted, ...)."""


class OutOfMemory(DriverMisuse):
    """No free host memory region of the requested size and alignment (a caller may free
    something and retry)."""
