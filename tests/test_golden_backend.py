"""GoldenBackend's scheduling: concurrent driver coroutines interleave one backend call at a time;
a lone coroutine runs without passing through the event loop (golden/backend.py)."""
import asyncio

from spec import registers as R
from golden.backend import GoldenBackend, golden_chip


def test_concurrent_coroutines_interleave_per_call():
    backend = GoldenBackend(golden_chip(4))
    order = []

    async def worker(name):
        for _ in range(3):
            await backend.read(R.TIMESTAMP)
            order.append(name)

    async def main():
        await asyncio.gather(worker("a"), worker("b"))
    asyncio.run(main())
    assert order == ["a", "b"] * 3


def test_lone_coroutine_does_not_yield(monkeypatch):
    backend = GoldenBackend(golden_chip(4))
    sleeps = []
    real_sleep = asyncio.sleep

    async def counting_sleep(delay, *a):
        sleeps.append(delay)
        return await real_sleep(delay, *a)
    monkeypatch.setattr(asyncio, "sleep", counting_sleep)

    async def main():
        for _ in range(5):
            await backend.write(R.IRQ_ENABLE, 0)
            await backend.read(R.TIMESTAMP)
        await backend.wait(10)
        return await backend.read(R.TIMESTAMP)
    assert asyncio.run(main()) >= 10 and sleeps == []
