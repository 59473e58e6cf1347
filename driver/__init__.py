"""Kaki host driver.

The driver API (docs/driver.md) is exported lazily so that ``import driver.registers`` and the
other low-level modules stay cheap: ``driver.Device``, ``driver.Buffer``, ``driver.Queue``,
``driver.Submission``, ``driver.Event``, ``driver.SyncDevice``, ``driver.GoldenBackend`` and the
exceptions ``driver.DeviceError``, ``DeviceTimeout``, ``QueueError``, ``DriverMisuse``.
"""

_EXPORTS = {
    "Device": "device", "Buffer": "device", "Queue": "device", "Submission": "device",
    "Event": "device", "HostAllocator": "device",
    "DeviceError": "errors", "DeviceTimeout": "errors", "QueueError": "errors", "DriverMisuse": "errors",
    "SyncDevice": "sync", "GoldenBackend": "golden_backend",
}


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'driver' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
