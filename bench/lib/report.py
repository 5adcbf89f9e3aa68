"""Turn a results document into targets, a Markdown report and a latency plot."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Doc = Mapping[str, Any]
NOTHING_TO_PLOT = "no latency rows to plot"
Target = dict[str, Any]


# -- looking things up --------------------------------------------------------


def scenario(doc: Doc, name: str) -> Mapping[str, Any] | None:
    found = doc.get("scenarios", {}).get(name)
    return found if found and found.get("status") == "ok" else None


def row(doc: Doc, scenario_name: str, row_name: str) -> Mapping[str, Any] | None:
    found = scenario(doc, scenario_name)
    if found is None:
        return None
    for candidate in found.get("rows", []):
        if candidate.get("name") == row_name:
            return candidate  # type: ignore[no-any-return]
    return None


def value(doc: Doc, scenario_name: str, row_name: str, key: str) -> float | None:
    found = row(doc, scenario_name, row_name)
    if found is None or found.get(key) is None:
        return None
    return float(found[key])


# -- targets ------------------------------------------------------------------


def _target(
    name: str,
    goal: str,
    measured: float | None,
    ok: Callable[[float], bool],
    shown: str,
    pending: str | None = None,
) -> Target:
    if pending is not None:
        return {"target": name, "goal": goal, "measured": None, "met": None, "note": pending}
    if measured is None:
        return {"target": name, "goal": goal, "measured": None, "met": None, "note": "not run"}
    return {"target": name, "goal": goal, "measured": measured, "met": ok(measured), "note": shown}


def evaluate_targets(doc: Doc) -> list[Target]:
    """The issue's targets, each from figures of this one run (ratios on the same machine)."""
    counters = bool(doc.get("counters_present"))
    no_counters = None if counters else "pending: needs the counter step (gateway/counters)"
    targets: list[Target] = []

    refusal = value(doc, "decision", "flag_refusal", "p50_us")
    targets.append(
        _target(
            "Flag-only refusal, in-process p50",
            "<= 5 us",
            refusal,
            lambda v: v <= 5.0,
            f"{refusal:.2f} us" if refusal is not None else "",
        )
    )
    refusal_rt = _case(doc, "flag_refusal")
    targets.append(
        _target(
            "Flag-only refusal: Redis round trips",
            "0",
            refusal_rt,
            lambda v: v == 0,
            f"{refusal_rt:g} per decision" if refusal_rt is not None else "",
        )
    )
    full_rt = _case(doc, "full_decision")
    targets.append(
        _target(
            "Full decision: Redis round trips",
            "exactly 1",
            full_rt,
            lambda v: v == 1,
            f"{full_rt:g} per decision" if full_rt is not None else "",
            pending=no_counters,
        )
    )
    accept = value(doc, "decision", "accept", "p50_us")
    evalsha = value(doc, "decision", "evalsha_trivial", "p50_us")
    evalsha_py = value(doc, "decision", "evalsha_trivial_redis_py", "p50_us")
    ratio = accept / evalsha if accept is not None and evalsha else None
    also = (
        f"; {accept / evalsha_py:.2f}x redis-py's {evalsha_py:.1f} us"
        if accept is not None and evalsha_py
        else ""
    )
    split = (scenario(doc, "decision") or {}).get("breakdown")
    if split:
        also += (
            f"; Python side after a round trip {split['python_side_us']:.1f} us, "
            f"counter script {split['script_in_redis_us']:.1f} us inside Redis"
        )
    targets.append(
        _target(
            "Full decision p50 vs bare EVALSHA p50 (same client, same loop)",
            "<= 1.3x",
            ratio,
            lambda v: v <= 1.3,
            f"{ratio:.2f}x ({accept:.1f} us vs {evalsha:.1f} us{also})" if ratio else "",
            pending=no_counters,
        )
    )

    bare_tp = value(doc, "e2e", "closed_c64_bare", "throughput_per_s")
    icpt_tp = value(doc, "e2e", "closed_c64_interceptor", "throughput_per_s")
    share = icpt_tp / bare_tp if icpt_tp and bare_tp else None
    targets.append(
        _target(
            "Interceptor throughput at concurrency 64 vs bare server",
            ">= 85%",
            share,
            lambda v: v >= 0.85,
            f"{share:.0%} ({icpt_tp:.0f}/s vs {bare_tp:.0f}/s)" if share else "",
        )
    )
    # Added latency paired round by round, against a round trip timed with it (e2e.py).
    added = (scenario(doc, "e2e") or {}).get("added_vs_rtt") or {}
    added_ratio = added.get("ratio")
    targets.append(
        _target(
            "Interceptor added p50 latency vs one Redis round trip",
            "<= 1.3x",
            added_ratio,
            lambda v: v <= 1.3,
            f"{added_ratio:.2f}x ({added['added_us']:+.0f} us vs EVALSHA {added['rtt_us']:.0f} us;"
            f" medians of {added['rounds']} rounds)"
            if added_ratio is not None
            else "",
        )
    )

    peer = scenario(doc, "peer")
    speedup = peer.get("speedup_vs_fastest_limits") if peer else None
    targets.append(
        _target(
            "Against the limits library doing the same three checks",
            ">= 3x faster per order",
            speedup,
            lambda v: v >= 3.0,
            f"{speedup:.1f}x" if speedup else "",
            pending=no_counters,
        )
    )

    small = _scale(doc, "small")
    large = _scale(doc, "large")
    scale = scenario(doc, "scale") or {}
    sizes = scale.get("sizes", {})
    drifts = scale.get("drift", {})
    drift = drifts.get("flag_refusal")
    targets.append(
        _target(
            f"Decision cost, {sizes.get('small', '10^3')} vs {sizes.get('large', '10^6')} "
            "flagged accounts (p50)",
            "within 10%",
            drift,
            lambda v: abs(v) <= 0.10,
            f"{drift:+.1%}, median of {scale.get('rounds')} paired rounds "
            f"(p50 over all rounds {small:.2f} us -> {large:.2f} us){_same_orders(scale)}"
            if drift is not None and small and large
            else "",
        )
    )

    prop = value(doc, "propagation", "propagation", "p99_us")
    targets.append(
        _target(
            "Admin change at another gateway process, p99",
            "<= 50 ms",
            prop / 1000 if prop is not None else None,
            lambda v: v <= 50.0,
            f"{prop / 1000:.1f} ms" if prop is not None else "",
        )
    )
    return targets


def _case(doc: Doc, name: str) -> float | None:
    found = scenario(doc, "roundtrips")
    if found is None:
        return None
    for case in found.get("cases", []):
        if case.get("name") == name and case.get("round_trips_per_decision") is not None:
            return float(case["round_trips_per_decision"])
    return None


def _scale(doc: Doc, which: str, figure_name: str = "flag_refusal_p50_us") -> float | None:
    found = scenario(doc, "scale")
    if found is None:
        return None
    figure = found.get(figure_name, {}).get(which)
    return float(figure) if figure is not None else None


def _same_orders(scale: Mapping[str, Any]) -> str:
    """The drift when both gateways see the very same orders (only the snapshot differs)."""
    drift = scale.get("drift", {}).get("flag_refusal_same")
    return "" if drift is None else f"; the same orders in both: {drift:+.1%}"


# -- Markdown -----------------------------------------------------------------


def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{digits}f}"
    return str(x).replace("|", "\\|")


def _table(columns: Iterable[str], rows: Iterable[Iterable[Any]], digits: int = 1) -> str:
    header = list(columns)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        lines.append("| " + " | ".join(_fmt(c, digits) for c in cells) + " |")
    return "\n".join(lines)


def markdown(doc: Doc) -> str:
    m = doc.get("machine", {})
    out = [
        f"# Benchmark results ({doc.get('mode')} run)",
        "",
        f"- When: {doc.get('started_at')} ({doc.get('duration_s')} s)",
        f"- Machine: {m.get('nproc')} CPUs ({m.get('cpu_model')}), Python {m.get('python')}, "
        f"{m.get('redis_server', 'redis-server ?')}, grpcio {m.get('grpcio')}, "
        f"uvloop {m.get('uvloop')}, load average at start {m.get('loadavg_at_start')}",
        f"- Command: `{doc.get('command')}`; {doc.get('repetitions')} repetitions per "
        "measurement; figures are medians over the repetitions",
        f"- Counter step present: {_fmt(bool(doc.get('counters_present')))}",
        "",
        "## Targets",
        "",
        _table(
            ["target", "goal", "measured", "met"],
            [
                [t["target"], t["goal"], t["note"] or "-", _met(t["met"])]
                for t in doc.get("targets", [])
            ],
        ),
    ]
    for name, sc in doc.get("scenarios", {}).items():
        out += ["", f"## {name}: {sc.get('title', '')}", ""]
        if sc.get("status") != "ok":
            out.append(f"**{sc.get('status')}**: {(sc.get('errors') or ['?'])[0]}")
            out.append("")
        rows = sc.get("rows", [])
        if rows:
            columns = ["row", "p50 us", "p99 us", "p99.9 us", "per s", "calls", "errors", "what"]
            keys = ["p50_us", "p99_us", "p999_us", "throughput_per_s", "count", "errors"]
            cells = [[r["name"], *(r.get(k) for k in keys), r.get("description", "")] for r in rows]
            out.append(_table(columns, cells, digits=2))
        for table in sc.get("tables", []) + ([sc["table"]] if sc.get("table") else []):
            out += ["", _table(table["columns"], table["rows"], digits=2)]
        for note in sc.get("notes", []):
            out += ["", f"- {note}"]
        for warning in sc.get("warnings", []):
            out += ["", f"- **warning**: {warning}"]
        out.append("")
        out.append(f"_{sc.get('duration_s', '?')} s_")
    out.append("")
    return "\n".join(out)


def _met(met: bool | None) -> str:
    return "pending" if met is None else ("yes" if met else "**no**")


# -- plot ---------------------------------------------------------------------


_TARGET_COLORS = {"bare": "tab:blue", "interceptor": "tab:orange", "proxy": "tab:green"}


def _panels(doc: Doc) -> list[tuple[str, list[tuple[Mapping[str, Any], str, str, str]]]]:
    """Each panel: a title and its curves (row, label, colour, line style)."""
    decision = [
        ("flag_refusal", "flag refusal", "tab:blue", "-"),
        ("flag_refusal_rendered", "flag refusal + rich status", "tab:cyan", "--"),
        ("accept", "accepted (full decision)", "tab:orange", "-"),
        ("evalsha_trivial", "bare EVALSHA", "tab:gray", ":"),
    ]
    loads = (("sequential", "sequential", "-"), ("closed_c64", "64 in flight", "--"))
    e2e_closed = [
        (f"{load}_{target}", f"{target}, {label}", color, style)
        for load, label, style in loads
        for target, color in _TARGET_COLORS.items()
    ]
    e2e_names = [r["name"] for r in (scenario(doc, "e2e") or {}).get("rows", [])]
    open_ids = sorted({n.rsplit("_", 1)[0] for n in e2e_names if n.startswith("open_")})
    e2e_open = [
        (f"{load}_{target}", f"{target}, {_share(load)} load", color, style)
        for load, style in zip(open_ids, ("-", "--"), strict=False)
        for target, color in _TARGET_COLORS.items()
    ]
    propagation = [
        ("propagation", "admin call at A -> enforced at B", "tab:red", "-"),
        ("admin_ack", "admin call answered by A", "tab:gray", ":"),
    ]
    panels = []
    for title, name, curves in (
        ("In-process decision", "decision", decision),
        ("End to end over gRPC (closed loop)", "e2e", e2e_closed),
        ("End to end over gRPC (open loop, from due time)", "e2e", e2e_open),
        ("Admin change propagation", "propagation", propagation),
    ):
        rows = {r["name"]: r for r in _rows_with_spectrum(doc, name, None)}
        drawn = [(rows[n], label, c, st) for n, label, c, st in curves if n in rows]
        if drawn:
            panels.append((title, drawn))
    return panels


def _share(open_id: str) -> str:
    return open_id.removeprefix("open_").replace("pct", "%")


def plot(doc: Doc, path: Any) -> str | None:
    """Percentile spectra of the latency rows; returns an error message instead of raising."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    except ImportError as exc:
        return f"matplotlib missing ({exc}); install the bench extra"

    panels = _panels(doc)
    if not panels:
        return NOTHING_TO_PLOT
    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(7.0 * columns, 4.6 * rows), squeeze=False)
    ticks = [0.0, 50.0, 90.0, 99.0, 99.9, 99.99]
    flat = [ax for line in axes for ax in line]
    for ax, (title, curves) in zip(flat, panels, strict=False):
        for r, label, color, style in curves:
            points = [(p, v) for p, v in r["spectrum_us"] if p < 100.0]
            xs = [1.0 / (1.0 - p / 100.0) for p, _ in points]
            ax.plot(xs, [v for _, v in points], style, color=color, marker=".", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator([1.0 / (1.0 - t / 100.0) for t in ticks]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(
            FuncFormatter(lambda x, _: f"{(1 - 1 / x) * 100:g}%")  # type: ignore[misc]
        )
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (us)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    m = doc.get("machine", {})
    fig.suptitle(
        f"pretrade-gateway benchmarks ({doc.get('mode')} run, {doc.get('started_at', '')[:16]}): "
        f"{m.get('nproc')} CPUs {m.get('cpu_model')}, Python {m.get('python')}; "
        "percentiles of all repetitions pooled",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _rows_with_spectrum(
    doc: Doc, name: str, prefixes: tuple[str, ...] | None
) -> list[Mapping[str, Any]]:
    found = scenario(doc, name)
    if found is None:
        return []
    return [
        r
        for r in found.get("rows", [])
        if r.get("spectrum_us") and (prefixes is None or r["name"].startswith(prefixes))
    ]
