"""Figures of the benchmark results: each read from the JSON a benchmark writes to
``benchmarks/results/`` and written next to it as a PNG (matplotlib, Agg backend).

    python -m benchmarks.plots

redraws every figure whose JSON exists and names the ones it skipped, and why. A benchmark calls
``write_figures`` right after writing its results: a figure that cannot be drawn is reported on
stderr, never raised, so the results stay written.

Figures (``benchmarks/results/``): ``checkpointer_bytes.png`` (Redis bytes per turn, ours and the
peers), ``checkpointer_throughput.png`` (turns/s, sync and async), ``failover_drills.png``
(turn latency through each drill), ``semantic_cache.png`` (hit and false-hit rates by threshold;
also ``semantic_cache_heldout.png``), ``asgi.png`` (requests/s by setup), ``store.png`` (search
latency by number of items). Our rows are red in every figure; each names the run's date and
command at its foot.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import report

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGURE_SIZE = (8.0, 4.5)  # inches
DPI = 120
OURS = "#c8102e"  # our rows, in every figure
OURS_ALT = "#f28e2b"  # a second row of ours (another setting of the same code)
PEERS = ("#1f5f8b", "#59a14f", "#8e6bb0", "#4e9fc9", "#9c755f", "#76b7b2")
REFERENCE = "#9a9a9a"  # yardsticks such as InMemorySaver, not competitors
NOTE_COLOUR = "#444444"
NOTE_LINE_INCHES = 0.16
NOTE_WIDTH = 135  # characters of a note line at 7.5 pt across 8 inches
BYTES_WINDOW = 5  # turns per point of the bytes-per-turn line (one turn alone is jumpy)

#: A figure function: the results JSON in, the PNG written next to it out.
FigureFunction = Callable[[Path], Path]


class MissingData(Exception):
    """The results JSON lacks what a figure draws (an older run, or a part that was skipped)."""


# -- reading the results --------------------------------------------------------------------------


def load_results(json_path: Path) -> dict[str, Any]:
    data = json.loads(json_path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise MissingData(f"{json_path.name} holds no JSON object")
    return data


def section(data: dict[str, Any], json_path: Path, *path: str, why: str = "") -> Any:
    """``data[path[0]][path[1]]...``, or MissingData naming the missing part."""
    value: Any = data
    for depth, key in enumerate(path):
        if not isinstance(value, dict) or key not in value:
            missing = ".".join(path[: depth + 1])
            raise MissingData(f"{json_path.name} has no {missing}" + (f" ({why})" if why else ""))
        value = value[key]
    return value


def run_date(data: dict[str, Any], json_path: Path) -> str:
    date = data.get("date") or (data.get("machine") or {}).get("date")
    if not isinstance(date, str):
        raise MissingData(f"{json_path.name} does not name the date of its run")
    return date


def run_command(data: dict[str, Any], json_path: Path) -> str:
    """The command of the run; results written before the JSON carried it have it in the
    Markdown written with them."""
    command = data.get("command")
    if isinstance(command, str):
        return command
    markdown = json_path.with_suffix(".md")
    if markdown.exists():
        found = re.search(r"command: `([^`]+)`", markdown.read_text(encoding="utf-8"))
        if found:
            return f"{found.group(1)} (as {markdown.name} names it)"
    return "command not recorded"


def run_note(data: dict[str, Any], json_path: Path) -> str:
    return (
        f"Run {run_date(data, json_path)}: {run_command(data, json_path)}  "
        f"(benchmarks/results/{json_path.name})"
    )


# -- drawing --------------------------------------------------------------------------------------


def is_ours(label: str) -> bool:
    return "(ours" in label or label.startswith("CacheMiddleware")


def short_label(label: str, width: int = 34) -> str:
    """A label that fits a tick: the remark after ';' dropped, wrapped at ``width``."""
    label = re.sub(r";[^)]*\)", ")", label)
    return "\n".join(textwrap.wrap(label, width)) or label


def peer_colours() -> Iterator[str]:
    while True:
        yield from PEERS


def new_figure(rows: int = 1, columns: int = 1, height: float = FIGURE_SIZE[1]) -> Figure:
    import matplotlib

    matplotlib.use("Agg")  # no display: figures are files
    from matplotlib.figure import Figure

    figure = Figure(figsize=(FIGURE_SIZE[0], height), dpi=DPI, layout="constrained")
    figure.subplots(rows, columns, squeeze=False)
    return figure


def save(
    figure: Figure,
    png: Path,
    title: str,
    notes: Sequence[str],
    legend: Sequence[Artist] = (),
    legend_columns: int = 3,
    legend_marker_scale: float = 1.0,
) -> Path:
    """Title on top, the notes (the run first) in small type at the foot, above them the
    figure's ``legend`` if any (for legends shared by several panels), the PNG written."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    figure.suptitle(title, fontsize=12, fontweight="bold")
    lines = [line for note in notes for line in textwrap.wrap(note, NOTE_WIDTH)]
    height = figure.get_figheight()
    footer = (len(lines) * NOTE_LINE_INCHES + 0.08) / height
    bottom = footer
    if legend:
        figure.legend(
            handles=list(legend),
            loc="lower center",
            bbox_to_anchor=(0.5, footer),
            ncols=legend_columns,
            fontsize=7.5,
            frameon=False,
            markerscale=legend_marker_scale,
        )
        bottom += (math.ceil(len(legend) / legend_columns) * 0.2 + 0.08) / height
    engine = figure.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(rect=(0, bottom, 1, 1 - bottom))  # (left, bottom, width, height)
    figure.text(0.01, 0.02 / height, "\n".join(lines), fontsize=7.5, color=NOTE_COLOUR, va="bottom")
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=DPI)
    return png


def axes_of(figure: Figure) -> list[Axes]:
    return list(figure.axes)


def name_panel(axes: Axes, title: str, xlabel: str, ylabel: str) -> None:
    """One panel of a figure of several: its title (smaller than the figure's) and its axes."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)


def name_bars(axes: Axes, names: list[str], fontsize: float) -> None:
    """The bars' names on the y axis, first at the top; ours in red and bold."""
    axes.set_yticks(range(len(names)), [short_label(name, 30) for name in names], fontsize=fontsize)
    for tick, name in zip(axes.get_yticklabels(), names, strict=True):
        if is_ours(name):
            tick.set_color(OURS)
            tick.set_fontweight("bold")
    axes.invert_yaxis()


def style(axes: Axes) -> None:
    axes.grid(True, which="major", color="#e3e3e3", linewidth=0.8)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def thousands(value: float, _position: object = None) -> str:
    return f"{value:,.0f}"


def byte_size(value: float, _position: object = None) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:g} {unit}"
    return f"{value:g} B"


# -- 1. Redis bytes per turn: ours and the peers ---------------------------------------------------


def checkpointer_bytes_figure(json_path: Path) -> Path:
    """Bytes each turn adds to Redis over one long conversation, ours against the peers
    (``checkpointer.json``'s ``growth_by_saver``)."""
    from matplotlib.ticker import FuncFormatter

    data = load_results(json_path)
    note = run_note(data, json_path)
    growth = section(
        data, json_path, "growth_by_saver", why="a run from before the peers' bytes were measured"
    )
    measured = {label: s for label, s in growth["savers"].items() if "key_bytes" in s}
    if not measured:
        raise MissingData(f"{json_path.name}: no saver of growth_by_saver was measured")
    turns = int(growth["turns"])
    figure = new_figure(1, 2)
    per_turn, total = axes_of(figure)
    colours = peer_colours()
    for label, saver in measured.items():
        ours = is_ours(label)
        colour = OURS if ours else next(colours)
        width = 2.4 if ours else 1.5
        keys = saver["key_bytes"]
        # Mean bytes per turn over the BYTES_WINDOW turns ending at each turn; a hash that
        # changes encoding makes single turns jump, even below zero.
        ends = range(BYTES_WINDOW, len(keys))
        means = [(keys[end] - keys[end - BYTES_WINDOW]) / BYTES_WINDOW for end in ends]
        shown = [mean if mean > 0 else math.nan for mean in means]  # a log axis has no <= 0
        name = short_label(label, 40)
        per_turn.plot(ends, shown, color=colour, linewidth=width, label=name)
        used_mb = [value / 1e6 for value in saver["used_memory"]]
        total.plot(range(len(used_mb)), used_mb, color=colour, linewidth=width, label=name)
    content = growth.get("content_bytes") or []
    if content:
        per_turn.plot(
            range(1, len(content) + 1),
            content,
            color=REFERENCE,
            linestyle=":",
            linewidth=1.5,
            label="the turn's message text (UTF-8)",
        )
    per_turn.set_yscale("log")
    per_turn.yaxis.set_major_formatter(FuncFormatter(byte_size))
    name_panel(
        per_turn,
        "per turn (key bytes)",
        "turn",
        f"key bytes per turn (mean of {BYTES_WINDOW} turns, log)",
    )
    name_panel(total, "in all (used_memory)", "turn", "used_memory added since turn 0 (MB)")
    for axes in (per_turn, total):
        style(axes)
        axes.set_xlim(0, turns)
    skipped = [
        f"{label}: {s['skipped']}" for label, s in growth["savers"].items() if "skipped" in s
    ]
    return save(
        figure,
        json_path.with_name(f"{json_path.stem}_bytes.png"),
        f"Redis bytes over one {turns}-turn conversation, ours and the peers",
        [
            note,
            "Key bytes: the sum of MEMORY USAGE over the server's keys (for "
            "langgraph-checkpoint-redis, RedisJSON's own estimate; its search index is in "
            "used_memory only). The savers ran one after another, so each one's bytes are its "
            "own.",
            *(["Not measured: " + "; ".join(skipped)] if skipped else []),
        ],
        legend=per_turn.get_legend_handles_labels()[0],
    )


# -- 2. turns/s, sync and async --------------------------------------------------------------------


def saver_family(label: str) -> str:
    """A saver's name without what tells its async twin apart: ``AsyncValkeySaver
    (langgraph-checkpoint-aws, pool ≤128)`` is ``ValkeySaver (langgraph-checkpoint-aws)``."""
    label = re.sub(r"^Async", "", label)
    return re.sub(rf"(, pool {report.LE}\d+| \(pool {report.LE}\d+\))", "", label)


def checkpointer_throughput_figure(json_path: Path) -> Path:
    """Turns/s per saver, sync and async side by side (``checkpointer.json``'s ``sync`` and
    ``async``)."""
    from matplotlib.patches import Patch

    data = load_results(json_path)
    note = run_note(data, json_path)
    phases = {
        "sync": section(data, json_path, "sync", "savers"),
        "async": section(data, json_path, "async", "savers"),
    }
    families: dict[str, dict[str, float | None]] = {}
    for phase, savers in phases.items():
        for label, row in savers.items():
            values = families.setdefault(saver_family(label), {"sync": None, "async": None})
            values[phase] = row.get("turns_per_s")
    if not any(v is not None for f in families.values() for v in f.values()):
        raise MissingData(f"{json_path.name}: no saver has turns/s")
    figure = new_figure()
    [axes] = axes_of(figure)
    bar = 0.38
    longest = max((v or 0.0) for f in families.values() for v in f.values())
    for row, (family, values) in enumerate(families.items()):
        colour = OURS if is_ours(family) else REFERENCE if family.startswith("InMemory") else None
        colour = colour or PEERS[0]
        for offset, phase in ((-bar / 2, "sync"), (bar / 2, "async")):
            value = values[phase]
            y = row + offset
            if value is None:
                axes.text(longest * 0.01, y, f"no {phase} row", va="center", fontsize=7)
                continue
            async_bar = phase == "async"
            axes.barh(
                y,
                value,
                height=bar,
                color=colour,
                alpha=0.55 if async_bar else 1.0,
                hatch="///" if async_bar else None,
                edgecolor="white",
            )
            axes.text(value + longest * 0.01, y, f"{value:.0f}", va="center", fontsize=7)
    name_bars(axes, list(families), fontsize=7.5)
    axes.set_xlim(0, longest * 1.12)
    axes.set_xlabel("turns per second (higher is better)")
    style(axes)
    axes.grid(False, axis="y")
    sync, async_ = data["sync"], data["async"]
    axes.legend(
        handles=[
            Patch(
                facecolor="#555555",
                label=f"sync: {sync.get('conversations')} conversations one after another",
            ),
            Patch(
                facecolor="#555555",
                alpha=0.55,
                hatch="///",
                edgecolor="white",
                label=f"async: {async_.get('conversations')} concurrent",
            ),
        ],
        fontsize=7.5,
        loc="center right",
        frameon=False,
    )
    return save(
        figure,
        json_path.with_name(f"{json_path.stem}_throughput.png"),
        "Checkpoint savers: turns/s on one LangGraph workload",
        [
            note,
            "Best round of each saver. Red: ours; grey: InMemorySaver yardsticks; blue: SQLite, "
            "PostgreSQL and the peers on Redis. The async pools: see checkpointer.md.",
        ],
    )


# -- 3. latency through the failover drills --------------------------------------------------------


def median_by_bin(
    times: Sequence[float], values: Sequence[float], width: float
) -> tuple[list[float], list[float]]:
    """The median of ``values`` per ``width``-second bin of ``times`` (bin centres)."""
    bins: dict[int, list[float]] = {}
    for time, value in zip(times, values, strict=True):
        bins.setdefault(int(time // width), []).append(value)
    ordered = sorted(bins.items())
    return [(b + 0.5) * width for b, _ in ordered], [statistics.median(v) for _, v in ordered]


def short_drill_name(name: str) -> str:
    return name.replace(", kill -9 a primary", "").replace(", kill -9 the primary", "")


def failover_drills_figure(json_path: Path) -> Path:
    """Each turn's latency against time through the cluster and Sentinel drills, the kill, the
    end of the failover and the write-backs marked (``failover_drills.json``'s timelines)."""
    data = load_results(json_path)
    drills = section(
        data, json_path, "drills", why="a run from before the drills recorded a timeline"
    )
    timed = {name: d["timeline"] for name, d in drills.items() if "timeline" in d}
    if not timed:
        raise MissingData(
            f"{json_path.name}: no drill has a timeline (the app-kill drill has none)"
        )
    note = run_note(data, json_path)
    columns = 2 if len(timed) > 1 else 1
    rows = math.ceil(len(timed) / columns)
    figure = new_figure(rows, columns, height=FIGURE_SIZE[1] if rows == 1 else 2.6 * rows + 0.9)
    panels = axes_of(figure)
    highest = max(max(t["latency_ms"]) for t in timed.values())
    for axes, (name, line) in zip(panels, timed.items(), strict=False):
        times, latencies = line["start_s"], line["latency_ms"]
        events = line["events"]
        kill, over = events["kill_s"], events.get("failover_over_s")
        if over is not None:
            axes.axvspan(kill, over, color=OURS, alpha=0.08, label="failing over")
        axes.scatter(
            times,
            latencies,
            s=3,
            color=PEERS[0],
            alpha=0.35,
            linewidths=0,
            label="a turn",
            rasterized=True,
        )
        centres, medians = median_by_bin(times, latencies, 0.5)
        axes.plot(centres, medians, color=OURS, linewidth=1.6, label="median per 0.5 s")
        axes.axvline(kill, color="black", linestyle="--", linewidth=1.1, label="SIGKILL primary")
        if over is not None:
            axes.axvline(
                over, color="#2a9d8f", linestyle="--", linewidth=1.1, label="failover over"
            )
        write_backs = events.get("write_backs_s") or []
        if write_backs:
            axes.plot(
                write_backs,
                [highest * 1.06] * len(write_backs),
                linestyle="none",
                marker="|",
                markersize=9,
                color="#8e6bb0",
                label="a thread written back",
            )
        every = f", every {line['every']}th turn" if line["every"] > 1 else ""
        axes.set_title(f"{short_drill_name(name)} ({line['turns']} turns{every})", fontsize=9)
        axes.set_ylim(0, highest * 1.12)
        axes.set_xlabel("seconds since the conversations began", fontsize=8)
        axes.set_ylabel("turn latency (ms)", fontsize=8)
        axes.tick_params(labelsize=7.5)
        style(axes)
    for unused in panels[len(timed) :]:
        unused.set_visible(False)
    untimed = [name for name in drills if name not in timed]
    return save(
        figure,
        json_path.with_name(f"{json_path.stem}.png"),
        "Turn latency through the failover drills (AsyncRedisSaver)",
        [
            note,
            "Each point: one acknowledged turn of a concurrent conversation, at its start. The "
            "conversations' last turns wait for the failover to end.",
            *([f"No timeline: {', '.join(untimed)}"] if untimed else []),
        ],
        legend=panels[0].get_legend_handles_labels()[0],
        legend_columns=6,
        legend_marker_scale=3,
    )


# -- 4. semantic cache: hit rate against false-hit rate --------------------------------------------


def semantic_cache_figure(json_path: Path) -> Path:
    """Hit rate and false-hit rate by similarity threshold, with and without the guard
    (``semantic_cache.json``'s ``sweep``), and the one against the other."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    data = load_results(json_path)
    note = run_note(data, json_path)
    sweep = section(data, json_path, "sweep")
    variants = {
        "guard": ("ours, with the guard", OURS),
        "no_guard": ("ours, similarity alone", OURS_ALT),
    }
    if not any(sweep.get(name) for name in variants):
        raise MissingData(f"{json_path.name}: sweep has neither guard nor no_guard rows")
    figure = new_figure(1, 2)
    by_threshold, trade_off = axes_of(figure)
    for name, (label, colour) in variants.items():
        rows = sweep.get(name) or []
        thresholds = [r["threshold"] for r in rows]
        hits = [r["hit_rate"] * 100 for r in rows]
        false_hits = [r["false_hit_rate"] * 100 for r in rows]
        by_threshold.plot(
            thresholds,
            hits,
            color=colour,
            linewidth=2,
            marker="o",
            markersize=3,
        )
        by_threshold.plot(
            thresholds,
            false_hits,
            color=colour,
            linewidth=1.5,
            linestyle="--",
            marker="x",
            markersize=3,
        )
        trade_off.plot(
            false_hits, hits, color=colour, linewidth=2, marker="o", markersize=3, label=label
        )
        for row, x, y in list(zip(rows, false_hits, hits, strict=True))[::3]:
            trade_off.annotate(
                f"{row['threshold']:.2f}",
                (x, y),
                textcoords="offset points",
                xytext=(4, -9),
                fontsize=6.5,
                color=colour,
            )
    recommended = data.get("recommended_threshold")
    if isinstance(recommended, (int, float)):
        by_threshold.axvline(
            recommended,
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"recommended {recommended:.2f}",
        )
    target = data.get("target_false_hit_rate")
    if isinstance(target, (int, float)):
        trade_off.axvline(
            target * 100,
            color="black",
            linestyle=":",
            linewidth=1,
            label=f"target false-hit rate {target:.0%}",
        )
    lookups = data.get("lookups") or {}
    if "hit_rate" in lookups:
        trade_off.scatter(
            [lookups["false_hit_rate"] * 100],
            [lookups["hit_rate"] * 100],
            marker="*",
            s=90,
            color=OURS,
            edgecolor="black",
            linewidths=0.5,
            zorder=5,
            label=lookups.get("label", "real lookups"),
        )
    # Our exact-match cache is the baseline (grey); langchain-redis's cache a peer (blue).
    for peer, colour in ((data.get("exact"), REFERENCE), (data.get("langchain_redis"), PEERS[0])):
        if isinstance(peer, dict) and "hit_rate" in peer:
            trade_off.scatter(
                [peer["false_hit_rate"] * 100],
                [peer["hit_rate"] * 100],
                marker="s",
                s=30,
                color=colour,
                zorder=4,
                label=short_label(peer.get("label", "?"), 40),
            )
    name_panel(by_threshold, "by threshold", "similarity threshold", "share of the pairs (%)")
    name_panel(
        trade_off,
        "hit rate against false-hit rate",
        "false-hit rate (% of different-meaning pairs)",
        "hit rate (% of same-meaning pairs)",
    )
    for axes in (by_threshold, trade_off):
        style(axes)
        axes.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    # Colour names the variant, the line style the measure: five entries, not one per line.
    by_threshold.legend(
        handles=[
            *(
                Line2D([], [], color=colour, linewidth=2, label=label)
                for label, colour in variants.values()
            ),
            Line2D([], [], color="#555555", marker="o", markersize=3, label="hit rate"),
            Line2D(
                [],
                [],
                color="#555555",
                marker="x",
                markersize=3,
                linestyle="--",
                label="false-hit rate",
            ),
            *by_threshold.get_legend_handles_labels()[0],
        ],
        fontsize=6.5,
        frameon=False,
        loc="center left",
        bbox_to_anchor=(0.0, 0.4),
    )
    trade_off.legend(fontsize=6.5, frameon=False, loc="lower right")
    trade_off.xaxis.set_major_formatter(PercentFormatter(decimals=0))
    trade_off.set_xlim(left=-1)
    trade_off.set_ylim(-2, 102)
    by_threshold.set_ylim(-2, 102)
    dataset = data.get("dataset") or {}
    labels = dataset.get("by_label") or {}
    skipped = [
        f"{p['label']}: {p['skipped']}"
        for p in (data.get("exact"), data.get("langchain_redis"))
        if isinstance(p, dict) and "skipped" in p
    ]
    return save(
        figure,
        json_path.with_name(f"{json_path.stem}.png"),
        f"Semantic cache ({data.get('model', 'model n/a')}): hits and false hits by threshold",
        [
            note,
            f"{dataset.get('pairs', '?')} labelled question pairs ({labels.get('same', '?')} "
            f"same meaning, {labels.get('different', '?')} different). A false hit answers a "
            "different question with a stored answer. Threshold labels on every third point.",
            *(["Not measured: " + "; ".join(skipped)] if skipped else []),
        ],
    )


# -- 5. HTTP requests/s by setup -------------------------------------------------------------------


def asgi_figure(json_path: Path) -> Path:
    """Requests/s of each setup's best round (``asgi.json``'s ``best``)."""
    from matplotlib.ticker import FuncFormatter

    data = load_results(json_path)
    note = run_note(data, json_path)
    best = section(data, json_path, "best")
    rows = {name: r for name, r in best.items() if isinstance(r, dict) and "rps" in r}
    if not rows:
        raise MissingData(f"{json_path.name}: no setup in best has requests/s")
    references = ("trivial", "slow, uncached")
    figure = new_figure()
    [axes] = axes_of(figure)
    longest = max(r["rps"] for r in rows.values())
    for row, (name, result) in enumerate(rows.items()):
        colour = OURS if is_ours(name) else REFERENCE if name in references else PEERS[0]
        axes.barh(row, result["rps"], height=0.65, color=colour)
        text = f"{result['rps']:,.0f}  (p99 {result['p99_ms']:.1f} ms)"
        if str(result.get("leak", "")).startswith("LEAKS"):
            text += f"  {result['leak']}"  # the cross-user check failed
        axes.text(result["rps"] + longest * 0.01, row, text, va="center", fontsize=7)
    name_bars(axes, list(rows), fontsize=8)
    axes.set_xlim(0, longest * 1.45)
    axes.xaxis.set_major_formatter(FuncFormatter(thousands))
    axes.set_xlabel("requests per second (best round; higher is better)")
    style(axes)
    axes.grid(False, axis="y")
    args = data.get("args") or {}
    return save(
        figure,
        json_path.with_name(f"{json_path.stem}.png"),
        "ASGI response caching: requests/s on one FastAPI app",
        [
            note,
            f"{args.get('connections', '?')} keep-alive connections, {args.get('seconds', '?')} s "
            f"per setup and round, best of {args.get('rounds', '?')} rounds. Red: ours "
            "(CacheMiddleware); blue: fastapi-cache2 and cashews; grey: the app uncached.",
        ],
    )


# -- 6. store search latency against items ---------------------------------------------------------


def store_figure(json_path: Path) -> Path:
    """Vector and filtered search latency (p50 and p99) per store by number of items
    (``store.json``'s ``sizes``)."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    data = load_results(json_path)
    note = run_note(data, json_path)
    sizes = section(data, json_path, "sizes")
    if not sizes:
        raise MissingData(f"{json_path.name}: sizes is empty")
    searches = {"vector_ms": "vector search", "filtered_ms": "filtered search"}
    figure = new_figure(1, 2)
    panels = axes_of(figure)
    labels: dict[str, str] = {}
    for size in sizes:
        for key, row in size["rows"].items():
            labels.setdefault(key, row.get("label", key))
    colours = peer_colours()
    ours_seen = 0
    colour_of: dict[str, str] = {}
    for key, label in labels.items():
        if is_ours(label):
            colour_of[key] = (OURS, OURS_ALT)[min(ours_seen, 1)]
            ours_seen += 1
        else:
            colour_of[key] = next(colours)
    for axes, (field, title) in zip(panels, searches.items(), strict=True):
        for key, label in labels.items():
            points = [
                (s["items"], s["rows"][key][field])
                for s in sizes
                if field in s["rows"].get(key, {})
            ]
            if not points:
                continue
            items = [n for n, _ in points]
            width = 2.2 if is_ours(label) else 1.5
            axes.plot(
                items,
                [p["p50"] for _, p in points],
                color=colour_of[key],
                linewidth=width,
                marker="o",
                markersize=4,
                label=label,
            )
            axes.plot(
                items,
                [p["p99"] for _, p in points],
                color=colour_of[key],
                linewidth=0.9,
                linestyle="--",
                marker=".",
                markersize=3,
            )
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.xaxis.set_major_formatter(FuncFormatter(thousands))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        name_panel(axes, title, "items in the store (log)", "latency per search (ms, log)")
        style(axes)
    by_label: dict[
        str, Artist
    ] = {}  # a store missing from one panel (no vector search) is in the other
    for axes in panels:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            by_label.setdefault(label, handle)
    handles = [by_label[label] for label in labels.values() if label in by_label]
    handles += [
        Line2D([], [], color="#555555", linewidth=2, label="p50"),
        Line2D([], [], color="#555555", linewidth=0.9, linestyle="--", label="p99"),
    ]
    missing = sorted(
        {
            f"{row.get('label', key)} {searches[field]}: {row.get('vector_note', 'not measured')}"
            for s in sizes
            for key, row in s["rows"].items()
            for field in searches
            if field not in row
        }
    )
    queries = sorted({s.get("queries") for s in sizes if s.get("queries")})
    return save(
        figure,
        json_path.with_name(f"{json_path.stem}.png"),
        "Store search latency by number of items",
        [
            note,
            f"{', '.join(map(str, queries))} searches per point; solid p50, dashed p99.",
            *(["Not drawn: " + "; ".join(missing)] if missing else []),
        ],
        legend=handles,
    )


# -- running them ----------------------------------------------------------------------------------

#: The figures of each results file (``benchmarks/results/<name>.json``).
FIGURES: dict[str, tuple[FigureFunction, ...]] = {
    "checkpointer": (checkpointer_bytes_figure, checkpointer_throughput_figure),
    "failover_drills": (failover_drills_figure,),
    "semantic_cache": (semantic_cache_figure,),
    "semantic_cache_heldout": (semantic_cache_figure,),
    "asgi": (asgi_figure,),
    "store": (store_figure,),
}


def draw(function: FigureFunction, json_path: Path) -> str:
    """One figure: ``wrote <png> (run <date>)`` or ``skipped <figure>: <why>``."""
    figure_name = function.__name__.removesuffix("_figure")
    if not json_path.exists():
        return f"skipped {figure_name}: no {json_path.name} (its benchmark has not been run)"
    try:
        png = function(json_path)
    except MissingData as why:
        return f"skipped {figure_name}: {why}"
    shown = png.relative_to(report.ROOT) if png.is_relative_to(report.ROOT) else png
    return f"wrote {shown} (run {run_date(load_results(json_path), json_path)})"


def write_figures(results_name: str, *functions: FigureFunction) -> None:
    """What a benchmark calls after writing ``<results_name>.json``: its figures (``FIGURES``
    unless given), each outcome on stderr. Never raises: the results are written already."""
    json_path = report.RESULTS_DIR / f"{results_name}.json"
    for function in functions or FIGURES.get(results_name, ()):
        try:
            outcome = draw(function, json_path)
        except Exception as exc:  # a figure is a by-product: report it, keep the results
            outcome = f"failed {function.__name__}: {type(exc).__name__}: {exc}"
        report.progress(outcome)


def main(argv: Sequence[str] | None = None) -> int:
    """Redraw every figure whose JSON exists; one line per figure written or skipped."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--results", type=Path, default=report.RESULTS_DIR, help="the results directory"
    )
    args = parser.parse_args(argv)
    failed = False
    for name, functions in FIGURES.items():
        for function in functions:
            try:
                outcome = draw(function, args.results / f"{name}.json")
            except Exception as exc:  # report it and go on with the other figures
                outcome = f"failed {function.__name__}: {type(exc).__name__}: {exc}"
                failed = True
            print(outcome, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
