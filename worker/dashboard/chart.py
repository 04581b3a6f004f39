"""Throughput over the last hour as an inline SVG drawn by the server: one stacked bar per
minute (completed, failed, cancelled). No JavaScript and no charting library."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from .html import Safe, fill, join

MINUTES = 60
WIDTH, HEIGHT, LEFT, BOTTOM = 600, 140, 34, 18
COLOURS = (("completed", "#1f7a3d"), ("failed", "#b3261e"), ("cancelled", "#9aa1ad"))


def throughput_svg(per_minute: Mapping[datetime, Mapping[str, int]], now: datetime) -> Safe:
    """`per_minute[minute][status]` = jobs that ended in that minute; `now` ends the axis."""
    end = now.replace(second=0, microsecond=0)
    minutes = [end - timedelta(minutes=MINUTES - 1 - i) for i in range(MINUTES)]
    totals = [sum(per_minute.get(m, {}).values()) for m in minutes]
    peak = max([*totals, 1])
    plot_h = HEIGHT - BOTTOM - 6
    slot = (WIDTH - LEFT) / MINUTES
    bars = []
    for i, minute in enumerate(minutes):
        counts = per_minute.get(minute, {})
        y: float = HEIGHT - BOTTOM
        for status, colour in COLOURS:
            n = counts.get(status, 0)
            if not n:
                continue
            h = n / peak * plot_h
            y -= h
            bars.append(
                fill(
                    '<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{c}">'
                    "<title>{t} UTC: {n} {s}</title></rect>",
                    x=LEFT + i * slot + 0.5,
                    y=y,
                    w=max(slot - 1, 1),
                    h=h,
                    c=colour,
                    t=minute.strftime("%H:%M"),
                    n=n,
                    s=status,
                )
            )
    labels = fill(
        '<text x="{l}" y="12" font-size="10" text-anchor="end" fill="#5d6677">{peak}</text>'
        '<text x="{l}" y="{b}" font-size="10" text-anchor="end" fill="#5d6677">0</text>'
        '<text x="{l2}" y="{t}" font-size="10" fill="#5d6677">{first}</text>'
        '<text x="{r}" y="{t}" font-size="10" text-anchor="end" fill="#5d6677">{last} UTC</text>'
        '<line x1="{l2}" y1="{b}" x2="{r}" y2="{b}" stroke="#d8dce3"/>',
        l=LEFT - 4,
        l2=LEFT,
        r=WIDTH,
        b=HEIGHT - BOTTOM,
        t=HEIGHT - 4,
        peak=f"{peak:,}",
        first=minutes[0].strftime("%H:%M"),
        last=minutes[-1].strftime("%H:%M"),
    )
    total = sum(totals)
    return fill(
        '<svg viewBox="0 0 {w} {h}" role="img" aria-label="{label}">{labels}{bars}</svg>',
        w=WIDTH,
        h=HEIGHT,
        label=f"{total:,} jobs ended in the last hour, at most {peak:,} in one minute",
        labels=labels,
        bars=join(bars),
    )
