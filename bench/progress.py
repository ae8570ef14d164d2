"""Live progress of a run on the terminal: simulated time, speed-up, ETA, current QBER and key rate.

Runs as an asyncio task on the run's own loop, waking every ``tick_s`` of simulated time; the display is
refreshed at most every ``refresh_wall_s`` of wall time, so a 10^4× run is not slowed by drawing. On a
non-terminal (CI logs) it prints one plain line per tenth of the run instead of a live bar.
"""

from __future__ import annotations

import asyncio
import math

from rich.console import Console

from bench.monitor import Monitor
from bench.vtime import wall_clock_s


def _hms(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, console: Console, monitor: Monitor, duration_s: float, start_s: float = 0.0,
                 refresh_wall_s: float = 0.25) -> None:
        """``start_s``: simulated time the display starts at (a resumed run's checkpoint), s."""
        self.console = console
        self.monitor = monitor
        self.duration_s = duration_s
        self.start_s = start_s
        self.tick_s = max(duration_s / 1000, 1.0)
        self.refresh_wall_s = refresh_wall_s
        self._live = console.is_terminal
        self._next_line_fraction = math.floor(start_s / duration_s * 10 + 1) / 10

    def line(self, sim_s: float, wall_s: float) -> str:
        """The status at simulated time ``sim_s`` after ``wall_s`` of wall time since the display started."""
        speedup = (sim_s - self.start_s) / wall_s if wall_s > 0 else float("inf")
        eta = (self.duration_s - sim_s) / speedup if speedup > 0 else float("inf")
        qz = self.monitor.last("qber_z")
        skr = self.monitor.last("secret_key_rate_bps")
        return (f"sim {_hms(sim_s)} / {_hms(self.duration_s)}  ×{speedup:,.0f}  ETA {_hms(eta)}  "
                f"QBERz {qz * 100:.2f} %  SKR {skr:,.0f} bps")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start_wall = wall_clock_s()
        last_draw = start_wall
        try:
            while True:
                await asyncio.sleep(self.tick_s)
                now_wall = wall_clock_s()
                sim_s = loop.time()  # the run's simulated time: it starts at start_s
                fraction = sim_s / self.duration_s
                if self._live and now_wall - last_draw >= self.refresh_wall_s:
                    self.console.print(self.line(sim_s, now_wall - start_wall), end="\r", highlight=False)
                    last_draw = now_wall
                elif not self._live and fraction >= self._next_line_fraction:
                    self.console.print(self.line(sim_s, now_wall - start_wall), highlight=False)
                    self._next_line_fraction += 0.1
        finally:
            if self._live:
                self.console.print(" " * 100, end="\r")
