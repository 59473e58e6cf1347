"""Kaki host driver. Backends implement the interface of docs/driver.md (the RTL testbench
``verif.chip_tb.ChipTB``; the golden chip model ``golden.backend.GoldenBackend``).

The driver API (docs/driver.md) is exported lazily so that ``import spec.registers`` and the
other low-level modules stay cheap: ``driver.Device``, ``driver.Buffer``, ``driver.Queue``,
``driver.Submission``, ``driver.Event``, ``driver.CommandList`` and ``driver.SyncDevice``, and the
exceptions ``driver.DeviceError``, ``DeviceTimeout``, ``QueueError``, ``DriverMisuse``.
"""

_EXPORTS = {
    "Device": "device", "Buffer": "device", "Queue": "device", "Submission": "device",
    "Event": "device", "HostAllocator": "device", "CommandList": "device",
    "DeviceError": "errors", "DeviceTimeout": "errors", "QueueError": "errors", "DriverMisuse": "errors",
    "SyncDevice": "sync",
}


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'driver' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
