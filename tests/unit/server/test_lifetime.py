import asyncio

import pytest

from server.answers import all_or_nothing
from server.routes.lifetime import ClientDisconnectedError, until_disconnect


async def _slow(cancelled: list) -> str:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        cancelled.append(True)
        raise
    return "done"


def test_the_first_failing_choice_cancels_its_siblings():
    cancelled: list = []

    async def failing():
        await asyncio.sleep(0.01)
        raise ValueError("choice 1 failed")

    async def main():
        await all_or_nothing([_slow(cancelled), failing(), _slow(cancelled)])

    with pytest.raises(ValueError, match="choice 1"):
        asyncio.run(main())
    assert cancelled == [True, True]


def test_choices_that_all_succeed_come_back_in_order():
    async def value(v, delay):
        await asyncio.sleep(delay)
        return v

    assert asyncio.run(all_or_nothing([value("a", 0.02), value("b", 0.0)])) == ["a", "b"]


class FakeRequest:
    """The ASGI receive channel of a request whose client hangs up after `after` seconds (None: never)."""

    def __init__(self, after: float | None) -> None:
        self.after = after

    async def receive(self):
        if self.after is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.after)
        return {"type": "http.disconnect"}


def test_a_hang_up_cancels_the_work_and_says_so():
    cancelled: list = []
    with pytest.raises(ClientDisconnectedError):
        asyncio.run(until_disconnect(FakeRequest(after=0.05), _slow(cancelled)))
    assert cancelled == [True]


def test_work_that_finishes_first_is_returned_and_the_watcher_stops():
    async def quick():
        return 42

    async def main():
        result = await until_disconnect(FakeRequest(after=None), quick())
        await asyncio.sleep(0)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return result, pending

    result, pending = asyncio.run(main())
    assert result == 42 and all(t.cancelled() or t.done() or t.cancelling() for t in pending)
