"""The virtual-time loop: fast-forwarding, ordering with SimPy, and failing loudly instead of hanging."""

from __future__ import annotations

import asyncio
import textwrap

import pytest
import simpy

from bench import vtime
from bench.vtime import PS_PER_S, LeakedTasks, VirtualTimeDeadlock, s_to_ps

HOURS_325_S = 325 * 3600


def test_325_hours_of_sleep_return_in_well_under_a_second() -> None:
    async def main() -> float:
        await asyncio.sleep(HOURS_325_S)
        return asyncio.get_running_loop().time()

    wall0 = vtime.wall_clock_s()
    assert vtime.run(main()) == pytest.approx(HOURS_325_S, abs=1e-6)
    assert vtime.wall_clock_s() - wall0 < 0.2


def test_simpy_processes_and_asyncio_tasks_interleave_in_timestamp_order() -> None:
    env = simpy.Environment()
    seen: list[tuple[int, str]] = []

    def physics(env: simpy.Environment):
        for _ in range(6):
            yield env.timeout(s_to_ps(0.3))
            seen.append((env.now, "simpy"))

    async def stack() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(5):
            await asyncio.sleep(0.4)
            seen.append((round(loop.time() * PS_PER_S), "asyncio"))

    env.process(physics(env))
    vtime.run(stack(), env)
    times = [t for t, _ in seen]
    assert times == sorted(times)
    assert [who for _, who in seen].count("simpy") == 6
    # 1.2 s is due on both sides: physics first, then the stack observes it.
    at_1_2 = [who for t, who in seen if t == s_to_ps(1.2)]
    assert at_1_2 == ["simpy", "asyncio"]


def test_simpy_event_wakes_an_awaiting_coroutine_at_its_timestamp() -> None:
    env = simpy.Environment()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        env.timeout(1_234_567).callbacks.append(lambda _: fut.set_result(env.now))
        return await fut

    assert vtime.run(main(), env) == 1_234_567


def test_exception_in_background_task_fails_the_run_at_once() -> None:
    async def broken() -> None:
        await asyncio.sleep(5)
        raise ValueError("detector rack on fire")

    async def ticker() -> None:  # keeps virtual time busy: the run would spin forever, not deadlock
        while True:
            await asyncio.sleep(1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        background = [loop.create_task(broken(), name="broken"), loop.create_task(ticker(), name="ticker")]
        await asyncio.Event().wait()
        del background

    wall0 = vtime.wall_clock_s()
    with pytest.raises(ValueError, match="detector rack on fire") as info:
        vtime.run(main())
    assert any("broken" in note for note in info.value.__notes__)
    assert vtime.wall_clock_s() - wall0 < 1.0


def test_exception_in_a_simpy_process_fails_the_run() -> None:
    env = simpy.Environment()

    def physics(env: simpy.Environment):
        yield env.timeout(10)
        raise RuntimeError("emulator bug")

    env.process(physics(env))

    async def main() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(RuntimeError, match="emulator bug"):
        vtime.run(main(), env)


def test_an_awaited_task_exception_is_the_awaiters_business() -> None:
    async def fails() -> None:
        await asyncio.sleep(1)
        raise KeyError("handled")

    async def main() -> str:
        task = asyncio.get_running_loop().create_task(fails())
        try:
            await task
        except KeyError:
            return "recovered"
        return "no error"

    assert vtime.run(main()) == "recovered"


def test_taskgroup_failure_propagates() -> None:
    async def fails() -> None:
        await asyncio.sleep(2)
        raise OSError("wire cut")

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(fails())
            tg.create_task(asyncio.sleep(3600))

    with pytest.raises(ExceptionGroup) as info:
        vtime.run(main())
    assert info.group_contains(OSError, match="wire cut")


def test_nothing_left_to_wait_for_is_a_deadlock_not_a_hang() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()  # nobody will ever resolve it

    with pytest.raises(VirtualTimeDeadlock, match="would hang"):
        vtime.run(main(), idle_timeout_s=0.05)


def test_a_thread_can_still_finish_while_virtual_time_is_idle() -> None:
    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(None, sum, range(1000))

    assert vtime.run(main()) == 499500


def test_leaked_task_fails_the_run() -> None:
    async def main() -> None:
        asyncio.get_running_loop().create_task(asyncio.sleep(60), name="forgotten-poller")

    with pytest.raises(LeakedTasks, match="forgotten-poller"):
        vtime.run(main())


def test_a_test_that_leaves_a_task_running_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(textwrap.dedent("""
        import asyncio
        from bench import vtime

        def test_leaks():
            async def main():
                asyncio.get_running_loop().create_task(asyncio.sleep(10), name="leaky")
            vtime.run(main())

        def test_clean():
            async def main():
                await asyncio.sleep(10)
            vtime.run(main())
    """))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*LeakedTasks*leaky*"])


def test_the_same_coroutine_runs_on_the_wall_clock() -> None:
    async def control_loop() -> list[float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        marks = []
        for _ in range(3):
            await asyncio.sleep(0.05)
            marks.append(loop.time() - start)
        return marks

    wall0 = vtime.wall_clock_s()
    wall_marks = vtime.run(control_loop(), virtual=False)
    wall_s = vtime.wall_clock_s() - wall0
    virtual_marks = vtime.run(control_loop())
    assert wall_s >= 0.15
    assert virtual_marks == pytest.approx([0.05, 0.10, 0.15], abs=1e-9)
    assert wall_marks == pytest.approx([0.05, 0.10, 0.15], abs=0.05)


def test_virtual_loop_needs_integer_picoseconds() -> None:
    with pytest.raises(TypeError, match="integer picoseconds"):
        vtime.VirtualTimeLoop(simpy.Environment(initial_time=0.0))
