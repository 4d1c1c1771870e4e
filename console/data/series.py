"""The recent history of the figures the console plots: per name, (time, value) points over the
last minutes, at most one a second (a newer value in the same second replaces the older)."""

from __future__ import annotations

from collections import deque

MAX_AGE_S = 900.0  # the longest window the plots offer
WINDOWS_S = (60.0, 300.0, 900.0)  # the windows the plots offer ("w" cycles them)
STEP_S = 1.0


class SeriesBook:
    def __init__(self, max_age_s: float = MAX_AGE_S, step_s: float = STEP_S) -> None:
        self.max_age_s = max_age_s
        self.step_s = step_s
        self.points: dict[str, deque[tuple[float, float]]] = {}

    def add(self, name: str, t: float, value: float) -> None:
        d = self.points.get(name)
        if d is None:
            d = self.points[name] = deque()
        if d and t - d[-1][0] < self.step_s:
            d[-1] = (d[-1][0], value)
        else:
            d.append((t, value))
        while d and d[0][0] < t - self.max_age_s:
            d.popleft()

    def drop_older(self, now: float) -> None:
        """Forget what is older than the longest window, and names with nothing left."""
        for name in list(self.points):
            d = self.points[name]
            while d and d[0][0] < now - self.max_age_s:
                d.popleft()
            if not d:
                del self.points[name]

    def snapshot(self) -> dict[str, list[tuple[float, float]]]:
        return {name: list(d) for name, d in self.points.items()}
