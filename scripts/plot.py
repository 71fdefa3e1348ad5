#!/usr/bin/env python3
"""Throughput against p99 latency, one line per system, as a hand-written SVG.

usage: scripts/plot.py bench/results/latest-raw.jsonl bench/results/latest.svg

Reads the rows scripts/bench.sh wrote (one JSON object per run, the load
generator's --json object under "result"), takes every chat run of each
system (its offered rates in order) and the echo ceiling's open-loop runs,
and draws achieved messages per second (x, log scale) against p99
send->delivered latency (y, log scale; for the echo: the round trip). Each
point is labelled with its offered rate. Standard library only.
"""

import json
import math
import sys

COLORS = {
    "kefu": "#d62728",
    "mosquitto": "#1f77b4",
    "nats": "#2ca02c",
    "jetstream": "#9467bd",
    "tcp-echo": "#7f7f7f",
}
W, H = 900, 560
LEFT, RIGHT, TOP, BOTTOM = 90, 190, 50, 70


def series(rows):
    out = {}
    for row in rows:
        res = row.get("result")
        if not res:
            continue
        name = row["scenario"]
        chat = name.startswith("chat-")
        echo = name.startswith("echo-") and row.get("offered", 0) > 0
        if not (chat or echo):
            continue
        x, y = res.get("msgs_per_sec"), res.get("deliver_p99_us")
        if not x or not y:
            continue
        out.setdefault(row["system"], []).append((row.get("offered", 0), x, y))
    for pts in out.values():
        pts.sort()
    return out


def log_scale(lo, hi, a, b):
    lo, hi = math.log10(lo), math.log10(hi)
    return lambda v: a + (math.log10(v) - lo) / (hi - lo) * (b - a)


def decades(lo, hi):
    d = math.floor(math.log10(lo))
    while 10**d <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10**d
            if lo <= v <= hi:
                yield v, m == 1
        d += 1


def fmt(v, unit=""):
    if v >= 1e6:
        return f"{v / 1e6:g}M{unit}"
    if v >= 1e3:
        return f"{v / 1e3:g}k{unit}"
    return f"{v:g}{unit}"


def fmt_us(v):
    if v >= 1e6:
        return f"{v / 1e6:g} s"
    if v >= 1e3:
        return f"{v / 1e3:g} ms"
    return f"{v:g} µs"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    data = series(rows)
    xs = [p[1] for pts in data.values() for p in pts] or [1000, 100000]
    ys = [p[2] for pts in data.values() for p in pts] or [100, 100000]
    xlo = 10 ** math.floor(math.log10(min(xs)))
    xhi = 10 ** math.ceil(math.log10(max(xs) * 1.05))
    ylo = 10 ** math.floor(math.log10(min(ys)))
    yhi = 10 ** math.ceil(math.log10(max(ys) * 1.05))
    sx = log_scale(xlo, xhi, LEFT, W - RIGHT)
    sy = log_scale(ylo, yhi, H - BOTTOM, TOP)
    loads = sorted({r.get("load", "") for r in rows if r.get("load")})
    when = f"load average during the runs: {loads[0]} … {loads[-1]}" if loads else ""
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT}" y="24" font-size="16" font-weight="bold">'
        "Throughput against p99 send→delivered (chat, offered rates labelled)</text>",
        f'<text x="{LEFT}" y="40" fill="#555">{when}</text>',
    ]
    for v, major in decades(xlo, xhi):
        x = sx(v)
        svg.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" '
            f'stroke="{"#ccc" if major else "#eee"}"/>'
        )
        svg.append(
            f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{fmt(v)}</text>'
        )
    for v, major in decades(ylo, yhi):
        y = sy(v)
        svg.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" '
            f'stroke="{"#ccc" if major else "#eee"}"/>'
        )
        svg.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt_us(v)}</text>'
        )
    svg.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" '
        f'height="{H - TOP - BOTTOM}" fill="none" stroke="#333"/>'
    )
    svg.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 24}" text-anchor="middle">'
        "messages per second acked and delivered (log)</text>"
    )
    svg.append(
        f'<text transform="translate(22 {(TOP + H - BOTTOM) / 2}) rotate(-90)" '
        'text-anchor="middle">p99 send→delivered (log; echo: round trip)</text>'
    )
    for i, (system, pts) in enumerate(sorted(data.items())):
        color = COLORS.get(system, "#000")
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for _, x, y in pts)
        svg.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
        )
        for offered, x, y in pts:
            svg.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{color}"/>')
            svg.append(
                f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 6:.1f}" fill="{color}" '
                f'font-size="10">{fmt(offered)}</text>'
            )
        ly = TOP + 20 + 22 * i
        svg.append(
            f'<line x1="{W - RIGHT + 20}" y1="{ly}" x2="{W - RIGHT + 44}" y2="{ly}" '
            f'stroke="{color}" stroke-width="3"/>'
        )
        svg.append(f'<text x="{W - RIGHT + 50}" y="{ly + 4}">{system}</text>')
    svg.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
