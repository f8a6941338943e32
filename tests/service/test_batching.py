"""Concurrent small requests share one model call, and each gets its own answers back."""

from __future__ import annotations

import asyncio

import pytest

from service.batching import SMALL_REQUEST, MicroBatcher


def doubled(calls: list[list[int]]):
    def predict(rows: list[int]) -> list[float]:
        calls.append(list(rows))
        return [2.0 * r for r in rows]

    return predict


def test_calls_in_one_turn_of_the_loop_share_a_model_call_and_get_their_own_rows():
    calls: list[list[int]] = []
    batcher = MicroBatcher(doubled(calls))

    async def main():
        return await asyncio.gather(batcher([1]), batcher([2, 3]), batcher([4]))

    assert asyncio.run(main()) == [[2.0], [4.0, 6.0], [8.0]]
    assert calls == [[1, 2, 3, 4]]


def test_a_lone_call_is_priced_without_waiting_for_company():
    calls: list[list[int]] = []
    batcher = MicroBatcher(doubled(calls))

    async def main():
        first = await batcher([5])
        second = await batcher([6])
        return first, second

    assert asyncio.run(main()) == ([10.0], [12.0])
    assert calls == [[5], [6]]


def test_a_failed_model_call_fails_every_request_in_it_and_the_next_batch_works():
    def predict(rows: list[int]) -> list[float]:
        if 0 in rows:
            raise ValueError("model failed")
        return [float(r) for r in rows]

    batcher = MicroBatcher(predict)

    async def main():
        results = await asyncio.gather(batcher([0]), batcher([1]), return_exceptions=True)
        return results, await batcher([7])

    results, after = asyncio.run(main())
    assert [type(r) for r in results] == [ValueError, ValueError]
    assert after == [7.0]


def test_a_request_cancelled_while_waiting_does_not_break_the_others():
    batcher = MicroBatcher(doubled([]))

    async def main():
        gone = asyncio.ensure_future(batcher([1]))
        kept = asyncio.ensure_future(batcher([2]))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(main()) == [4.0]


def test_a_large_request_is_priced_alone_at_once():
    calls: list[list[int]] = []
    batcher = MicroBatcher(doubled(calls))
    large = list(range(SMALL_REQUEST))

    async def main():
        return await asyncio.gather(batcher([100]), batcher(large))

    small, priced = asyncio.run(main())
    assert (small, priced) == ([200.0], [2.0 * r for r in large])
    assert calls == [large, [100]]
