"""asyncio on SimPy's virtual time, and the same supervision on the wall clock.

A :class:`VirtualTimeLoop` is an ordinary selector event loop whose clock is a SimPy environment counting
integer picoseconds. Whenever no callback is ready, the loop's selector, instead of blocking, jumps the
clock to the earlier of the next asyncio timer and the next SimPy event and processes the SimPy events
due at that instant; SimPy processes and asyncio tasks therefore interleave in timestamp order (at equal
timestamps the SimPy events run first: physics happens, then the stack observes it). A 325 h
``asyncio.sleep`` costs a handful of loop iterations.

:func:`run` drives a main coroutine on either clock with the same rules (after the looptime and
ophyd-async lessons): a task that dies with an exception nobody retrieves fails the run at once, a run
with nothing left to wait for fails instead of hanging, and tasks still running when ``main`` returns are
cancelled and reported as a leak.

SimPy time is int ps so that emulator timestamps keep picosecond resolution for any duration; asyncio
sees float seconds (``loop.time()``), which is precise to ~0.2 ns after 325 h — ample for control loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import selectors
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import simpy

PS_PER_S = 1_000_000_000_000

T = TypeVar("T")


class VirtualTimeDeadlock(RuntimeError):
    """Nothing is scheduled in virtual time and no real I/O arrived: the run would hang forever."""


class LeakedTasks(RuntimeError):
    """Tasks were still running when the main coroutine returned."""


def s_to_ps(seconds: float) -> int:
    """Seconds → integer picoseconds (rounded to nearest)."""
    return round(seconds * PS_PER_S)


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector; where it would block, advances the SimPy clock instead."""

    def __init__(self, env: simpy.Environment, idle_timeout_s: float) -> None:
        self.env = env
        self.idle_timeout_s = idle_timeout_s
        self._real = selectors.DefaultSelector()

    def register(self, fileobj, events, data=None):  # type: ignore[no-untyped-def]
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):  # type: ignore[no-untyped-def]
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):  # type: ignore[no-untyped-def]
        return self._real.modify(fileobj, events, data)

    def get_map(self):  # type: ignore[no-untyped-def]
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        env = self.env
        now = env.now
        deadline = math.inf if timeout is None else now + max(1, round(timeout * PS_PER_S))
        next_sim = env.peek()
        if deadline == math.inf and next_sim == math.inf:
            # Nothing in virtual time: only real I/O (a thread, a socket) can still wake us.
            ready = self._real.select(self.idle_timeout_s)
            if ready:
                return ready
            raise VirtualTimeDeadlock(
                f"virtual time is idle at t={now / PS_PER_S:.6f} s: no asyncio timer, no SimPy event and "
                f"no I/O within {self.idle_timeout_s:g} s of wall time; the run would hang"
            )
        if next_sim <= deadline:
            while env.peek() == next_sim:
                env.step()
        else:
            env.timeout(deadline - now)
            env.step()
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """Selector event loop whose ``time()`` is ``env.now`` (int ps) in seconds."""

    def __init__(self, env: simpy.Environment | None = None, *, idle_timeout_s: float = 2.0) -> None:
        self.env = env if env is not None else simpy.Environment()
        super().__init__(_VirtualSelector(self.env, idle_timeout_s))
        self._clock_resolution = 1e-9
        if not isinstance(self.env.now, int):
            self.close()
            raise TypeError("the SimPy environment of a VirtualTimeLoop must count integer picoseconds")

    def time(self) -> float:
        return self.env.now / PS_PER_S

    def now_ps(self) -> int:
        return int(self.env.now)


class _Supervisor:
    """Fails the run on the first unretrieved task exception or callback error."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.error: BaseException | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        loop.set_task_factory(self._task_factory)
        loop.set_exception_handler(self._exception_handler)

    def _task_factory(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any):
        task = asyncio.Task(coro, loop=loop, **kwargs)
        self.tasks.append(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        # Whoever awaits the task is woken by a callback scheduled alongside this one; look one
        # iteration later whether anybody retrieved the exception (asyncio's own _log_traceback flag).
        if not task.cancelled():
            self.loop.call_soon(self._check_retrieved, task)

    def _check_retrieved(self, task: asyncio.Task[Any]) -> None:
        if getattr(task, "_log_traceback", False):
            exc = task.exception()
            assert exc is not None
            exc.add_note(f"raised in task {task.get_name()!r}, which nobody awaited")
            self._fail(exc)

    def _exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is None:
            exc = RuntimeError(context.get("message", "unhandled error in event loop"))
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.loop.stop()

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        main_task = self.loop.create_task(main, name="main")
        try:
            result = self.loop.run_until_complete(main_task)
        except RuntimeError:
            if self.error is None:
                raise
            main_task.cancel()
            self._drain()
            raise self.error from None
        if self.error is not None:
            raise self.error
        leaked = [t for t in self.tasks if not t.done()]
        if leaked:
            for t in leaked:
                t.cancel()
            self._drain()
            names = ", ".join(t.get_name() for t in leaked)
            raise LeakedTasks(f"{len(leaked)} task(s) still running when main returned: {names}")
        return result

    def _drain(self) -> None:
        pending = [t for t in self.tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


PACE_S = 0.002  # on the wall clock, how often the SimPy environment is brought up to the present


async def _paced(main: Coroutine[Any, Any, T], env: simpy.Environment) -> T:
    """``main`` on the wall clock with ``env`` kept in step: every ``PACE_S`` the SimPy events due by now run
    (emulated devices then answer in real time, late by at most ``PACE_S`` plus the loop's own latency)."""
    loop = asyncio.get_running_loop()
    t0_s, t0_ps = loop.time(), env.now

    async def pace() -> None:
        while True:
            now_ps = t0_ps + s_to_ps(loop.time() - t0_s)
            if now_ps > env.now:
                env.run(until=now_ps)
            await asyncio.sleep(PACE_S)

    pacer = asyncio.create_task(pace(), name="simpy-pacer")
    try:
        return await main
    finally:
        pacer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pacer


def run(main: Coroutine[Any, Any, T], env: simpy.Environment | None = None, *, virtual: bool = True,
        idle_timeout_s: float = 2.0) -> T:
    """Run ``main`` to completion on virtual time (SimPy ``env``) or, with ``virtual=False``, the wall clock
    (an ``env`` is then paced to it: emulated devices run in real time, as on a bench)."""
    if virtual:
        loop: asyncio.AbstractEventLoop = VirtualTimeLoop(env, idle_timeout_s=idle_timeout_s)
    else:
        loop = asyncio.new_event_loop()
        if env is not None:
            main = _paced(main, env)
    try:
        asyncio.set_event_loop(loop)
        return _Supervisor(loop).run(main)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def wall_clock_s() -> float:
    """Wall-clock seconds for progress and speed-up figures only; never for the stack's timing."""
    return time.perf_counter()
