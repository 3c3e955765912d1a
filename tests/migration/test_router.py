"""Dual-serve router: shadow path isolation (live latency), drops, timeouts, warm-up, HTTP agents."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from deploysignal._exceptions import InputError
from deploysignal.migration import AgentAnswer, DualServeRouter, http_agent


def _run(coro):  # a hang fails the test after 60 s instead of stalling CI
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _fast(q: str) -> str:
    await asyncio.sleep(0.002)
    return f"select '{q}'"


async def _slow(q: str) -> str:
    await asyncio.sleep(0.25)
    return f"select '{q}'"


async def _hang(q: str) -> str:
    await asyncio.sleep(3600)
    return "never"


async def _live_latencies(shadow: float, challenger, n: int = 300) -> tuple[np.ndarray, DualServeRouter]:
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    async with DualServeRouter(_fast, challenger, shadow_sample=shadow, queue_size=8, shadow_workers=2,
                               shadow_timeout_s=1.0, seed=1) as router:
        async def one(i: int) -> None:
            t0 = loop.time()
            ans = await router.handle(f"q{i}", "simple")
            lat.append(loop.time() - t0)
            assert ans.error is None

        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.001)
        await asyncio.gather(*tasks)
    return np.array(lat), router


def test_slow_challenger_does_not_delay_live_traffic() -> None:
    """Live latency with a 0.25 s challenger in shadow against a run without shadow, back to back on the
    same machine. Each run lasts ~0.3 s, so one stall of the host (another VM) of a few tens of ms puts
    either run's p99 off (it failed so once in CI: 6.8 vs 34.5 ms); a shadow path that delayed live
    answers would do so in every attempt (by up to 0.25 s), so the comparison is made up to three times
    and must hold in one, with the same bounds."""

    async def main() -> None:
        tried = []
        for _attempt in range(3):
            base, _ = await _live_latencies(0.0, _slow)
            with_shadow, router = await _live_latencies(1.0, _slow)
            # robust comparison against a no-shadow run on the same machine, not absolute times
            p99_base, p99_shadow = np.quantile(base, 0.99), np.quantile(with_shadow, 0.99)
            tried.append((p99_base, p99_shadow))
            if p99_shadow <= 1.5 * p99_base + 0.005 and np.median(with_shadow) <= 1.5 * np.median(base) + 0.002:
                break
        else:
            raise AssertionError(f"live p99 with shadow above 1.5x the run without in three attempts: {tried}")
        # a 0.25 s challenger behind 2 workers cannot keep up with 300 requests: most are dropped, counted
        s = router.stats
        assert s.shadow_dropped > 100
        assert s.shadow_sampled == 300 and s.shadow_completed >= 1
        assert s.shadow_completed + s.shadow_dropped <= 300
        assert s.live_requests == 300 and s.live_errors == 0

    _run(main())


def test_hanging_challenger_times_out_and_pairs_are_delivered() -> None:
    pairs: list[tuple[AgentAnswer, AgentAnswer]] = []

    async def main() -> DualServeRouter:
        async with DualServeRouter(_fast, _hang, shadow_sample={"simple": 1.0}, shadow_timeout_s=0.05,
                                   on_pair=lambda q, t, i, c, served: pairs.append((i, c))) as router:
            for i in range(5):
                await router.handle(f"q{i}", "simple")
            await router.handle("not sampled", "multi_step")
            await router.drain()
        return router

    router = _run(main())
    assert router.stats.shadow_timeouts == 5 and len(pairs) == 5
    assert all(c.error == "timeout" and i.output is not None for i, c in pairs)
    assert router.stats.shadow_sampled == 5


def test_exposure_routes_live_to_challenger_and_pairs_incumbent_in_shadow() -> None:
    served: list[bool] = []

    async def chal(q: str) -> str:
        return "challenger"

    async def inc(q: str) -> str:
        return "incumbent"

    async def main() -> None:
        async with DualServeRouter(inc, chal, on_pair=lambda q, t, i, c, s: served.append(
                (i.output, c.output, s) == ("incumbent", "challenger", s))) as router:
            router.set_exposure(1.0)
            assert (await router.handle("q")).output == "challenger"
            router.set_exposure(0.0)  # rollback: effective for the next request
            assert (await router.handle("q")).output == "incumbent"
            await router.drain()
            with pytest.raises(InputError):
                router.set_exposure(1.5)

    _run(main())
    assert served == [True, True]


def test_warm_up_runs_history_through_the_challenger_without_pairs() -> None:
    seen: list[str] = []

    async def chal(q: str) -> str:
        seen.append(q)
        return q

    async def main() -> DualServeRouter:
        async with DualServeRouter(_fast, chal, on_pair=lambda *a: pytest.fail("no pairs during warm-up")) as r:
            assert await r.warm_up([f"h{i}" for i in range(20)]) == 20
        return r

    r = _run(main())
    assert r.stats.warmup_completed == 20 and sorted(seen) == sorted(f"h{i}" for i in range(20))


def test_http_agent_with_mock_transport() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        q = json.loads(request.content)["query"]
        if q == "bad":
            return httpx.Response(200, json={"nope": 1})
        if q == "boom":
            return httpx.Response(500)
        return httpx.Response(200, json={"output": f"SELECT 1 -- {q}"})

    async def main() -> list[AgentAnswer]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            agent = http_agent("http://challenger/answer", client)
            async with DualServeRouter(agent, agent, shadow_sample=0.0) as router:
                return [await router.handle(q) for q in ("ok", "bad", "boom")]

    ok, bad, boom = _run(main())
    assert ok.output == "SELECT 1 -- ok" and ok.error is None
    assert bad.output is None and "InputError" in (bad.error or "")
    assert boom.output is None and "HTTPStatusError" in (boom.error or "")


def test_router_rejects_bad_settings() -> None:
    with pytest.raises(InputError):
        DualServeRouter(_fast, _fast, shadow_sample=1.5)
    with pytest.raises(InputError):
        DualServeRouter(_fast, _fast, queue_size=0)
