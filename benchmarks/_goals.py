"""The performance goals of trioquic's qh3 engine, judged at the end of a
benchmark run: each goal is a figure of that run (a same-run ratio, a rate,
a fraction), a target, and a verdict: ``met``, ``not met``, ``n/a`` (not
measured in this run, with the reason) or ``reported`` (a figure with no
target, such as the fraction of an in-memory ceiling).

The goals (same run, idle machine):

* HTTP/3 bulk download served to ``gtlsclient`` (50 MB): trioquic+qh3 >= 2.5x
  trioquic+aioquic, and >= 100 MB/s (``h3_bulk.py``);
* 1 KB HTTP/3 requests/s, 4 connections (native client): >= 2x
  (``h3_requests.py``);
* handshakes/s, 16 concurrent: >= 2x (``handshakes.py``);
* memory per idle HTTP/3 connection: <= trioquic+aioquic's
  (``idle_memory.py``);
* against qh3's own asyncio layer, wherever one is measured: >= 1.2x;
* the fraction of the in-memory qh3 ceiling trioquic+qh3 reaches, reported as
  for aioquic (``h3_bulk.py`` with ``ceiling.py``).

Every script prints its goals with :func:`print_goals`, whose lines start
with ``goal [met]``, ``goal [not met]``, ``goal [n/a]`` or ``goal [reported]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

#: trioquic+qh3 over trioquic+aioquic, per goal.
BULK_SPEEDUP = 2.5
BULK_MB_PER_S = 100.0
REQUESTS_SPEEDUP = 2.0
HANDSHAKES_SPEEDUP = 2.0
#: trioquic+qh3 over qh3's own asyncio layer.
OVER_QH3_ASYNCIO = 1.2


@dataclass(frozen=True)
class Goal:
    """One goal, judged on one figure of the run."""

    what: str
    #: The figure (None: not measured; ``note`` says why).
    figure: float | None
    #: The target, or None for a figure that is only reported.
    target: float | None = None
    #: True: the figure must be at most the target (memory); else at least.
    at_most: bool = False
    #: How the figure is printed: "x" (a ratio), or a unit such as "MB/s".
    unit: str = "x"
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.figure is None:
            return "n/a"
        if self.target is None:
            return "reported"
        met = self.figure <= self.target if self.at_most else self.figure >= self.target
        return "met" if met else "not met"

    def line(self) -> str:
        def show(value: float) -> str:
            return f"{value:.2f}x" if self.unit == "x" else f"{value:.1f} {self.unit}"

        text = f"goal [{self.verdict}] {self.what}: "
        text += "n/a" if self.figure is None else show(self.figure)
        if self.target is not None:
            text += f" (goal {'<=' if self.at_most else '>='} {show(self.target)})"
        if self.note:
            text += f" ({self.note})" if self.figure is None else f"; {self.note}"
        return text


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is not positive."""
    if a is None or b is None or b <= 0:
        return None
    return a / b


#: What the columns of the engine benchmarks are.
ENGINE_LEGEND = (
    "same run; trioquic = its aioquic engine, the default; "
    "trioquic+qh3 = its qh3 engine; qh3-asyncio = qh3's own asyncio layer"
)


def print_goals(
    goals: Sequence[Goal],
    title: str = "goals of the qh3 engine",
    legend: str = ENGINE_LEGEND,
) -> list[dict[str, Any]]:
    """Print one line per goal under ``title`` (``legend`` in parentheses);
    return them for JSON."""
    print()
    print(f"{title} ({legend}):")
    for goal in goals:
        print("  " + goal.line())
    return [{**asdict(goal), "verdict": goal.verdict} for goal in goals]
