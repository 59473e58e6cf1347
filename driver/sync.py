"""Synchronous facade of the driver API for backends that need no simulator event loop (the
golden backend): every coroutine method runs to completion with ``asyncio.run``.

::

    chip = golden_chip(8, host_bytes=0x41000)          # golden.backend
    dev = SyncDevice.open(GoldenBackend(chip), firmware=elf, host_base=0x1000, host_bytes=0x40000)
    q = dev.queue(0)
    buf = dev.upload(np.arange(64, dtype=np.int8))
    q.submit([...]).wait()

Objects the API returns (Buffer, Queue, Submission, Event) come back wrapped the same way;
arguments may be wrapped or plain.
"""
import asyncio
import inspect

from . import device as D

__all__ = ["SyncDevice", "sync"]

_WRAPPED = (D.Device, D.Buffer, D.Queue, D.Submission, D.Event)


def _unwrap(v):
    if isinstance(v, _Sync):
        return v._obj
    if isinstance(v, dict):
        return {k: _unwrap(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(x) for x in v)
    return v


def _wrap(v):
    if isinstance(v, _WRAPPED):
        return _Sync(v)
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v


async def _await(aw):
    return await aw


class _Sync:
    """Proxy: attribute access passes through, coroutine results are run to completion."""

    def __init__(self, obj):
        object.__setattr__(self, "_obj", obj)

    def __getattr__(self, name):
        v = getattr(self._obj, name)
        if not callable(v) or isinstance(v, type):
            return _wrap(v)

        def call(*args, **kw):
            r = v(*_unwrap(args), **_unwrap(kw))
            if inspect.isawaitable(r):
                r = asyncio.run(_await(r))
            return _wrap(r)
        call.__name__ = name
        call.__doc__ = getattr(v, "__doc__", None)
        return call

    def __setattr__(self, name, value):
        setattr(self._obj, name, value)

    def __repr__(self):
        return f"sync {self._obj!r}"

    def __eq__(self, other):
        return _unwrap(other) is self._obj

    def __hash__(self):
        return id(self._obj)


def sync(obj):
    """Wrap an API object (Device, Buffer, Queue, Submission, Event) in the synchronous facade."""
    return _Sync(obj)


class SyncDevice(_Sync):
    """A :class:`driver.device.Device` whose methods block (golden backend only)."""

    @classmethod
    def open(cls, backend, **kw):
        return cls(asyncio.run(_await(D.Device.open(backend, **kw))))
