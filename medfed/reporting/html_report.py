"""``report.html``: one self-contained page about one run, or several seeds of one run.

Everything comes from the run folders (:mod:`medfed.reporting.run_folder`); figures are PNGs
embedded as ``data:`` URIs (:mod:`medfed.reporting.figures`), so the page needs no other
file and loads nothing from anywhere. What a folder does not record is said to be "not
recorded", never estimated. Several runs (seeds of one data set) are shown as the mean and a
95 % t-interval across runs, with n, site by site.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfed.errors import UsageError
from medfed.reporting import figures
from medfed.reporting.run_folder import RunFolder, check_same_data, primary_metric, read_run
from medfed.reporting.summary import _LABELS
from medfed.serde import atomic_write

__all__ = ["REPORT_FILE", "render_report", "t_interval", "write_report"]

REPORT_FILE = "report.html"
_MODELS = (
    ("federated", "federated"),
    ("personalised", "personalised"),
    ("local_only", "local-only"),
    ("pooled", "pooled"),
)
_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
    "padding:.2em .6em;text-align:right}td:first-child,th:first-child{text-align:left}"
    ".note{color:#555}.warn{background:#fff3cd;padding:.5em 1em;border-left:4px solid #e0a800}"
    "img{max-width:100%}"
)


def t_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean and two-sided 95 % Student-t interval (``mean ± t₀.₉₇₅,ₙ₋₁ · s/√n``); the
    interval is None for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return mean, None, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def _e(text: object) -> str:
    return html.escape(str(text))


def _fmt(value: tuple[float, float | None, float | None] | None, n: int) -> str:
    if value is None:
        return "—"
    mean, lo, hi = value
    if lo is None or hi is None:
        return f"{mean:.3f}"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}] (n={n})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _sites(runs: Sequence[RunFolder]) -> list[str]:
    out: list[str] = []
    for run in runs:
        out += [s for s in run.sites if s not in out]
    return out


# --- sections ---------------------------------------------------------------------------------


def _curves(runs: Sequence[RunFolder], metric: str | None) -> str:
    names = [metric] if metric else []
    panels = []
    for name in [*names, "loss"]:
        phase = "evaluate" if name != "loss" else "train"
        per: dict[str, dict[int, list[float]]] = {}
        for run in runs:
            for row in run.rows:
                if row.get("phase") == phase and row.get(name) is not None:
                    per.setdefault(str(row["site"]), {}).setdefault(int(row["round"]), [])
                    per[str(row["site"])][int(row["round"])].append(float(row[name]))
        series = {s: [(r, sum(v) / len(v)) for r, v in rs.items()] for s, rs in per.items()}
        if series:
            label = _LABELS.get(name, name) + (" (held-out)" if phase == "evaluate" else " (train)")
            panels.append((label, series))
    if not panels:
        return '<p class="note">No metric rows recorded (metrics.jsonl is empty).</p>'
    note = f" Mean over the {len(runs)} runs at each round." if len(runs) > 1 else ""
    return (
        _img(figures.curves_figure(panels), "metric curves per site")
        + f'<p class="note">Each site on its own test patients, every evaluated round; '
        f"training loss as each site reported it.{note}</p>"
    )


def _per_site_values(runs: Sequence[RunFolder], metric: str) -> dict[str, dict[str, list[float]]]:
    """``{model: {site: [value per run]}}`` of the final models, federated from the
    comparison (or final_per_site without baselines)."""
    out: dict[str, dict[str, list[float]]] = {key: {} for key, _ in _MODELS}

    def add(model: str, site: str, metrics: dict[str, Any] | None) -> None:
        if metrics and metrics.get(metric) is not None:
            out[model].setdefault(site, []).append(float(metrics[metric]))

    for run in runs:
        s = run.summary or {}
        final = s.get("final_per_site") if run.summary is not None else _last_evaluated(run)
        for site, m in (final or {}).items():
            add("federated", site, m)
        for site, m in (s.get("personalised_per_site") or {}).items():
            add("personalised", site, m)
        for c in s.get("comparison") or []:
            add("local_only", c["site"], c.get("local_only"))
            add("pooled", c["site"], c.get("pooled"))
    return out


def _last_evaluated(run: RunFolder) -> dict[str, dict[str, Any]]:
    """Each site's latest evaluation in metrics.jsonl (a run without summary.json)."""
    out: dict[str, dict[str, Any]] = {}
    for row in sorted(run.rows, key=lambda r: int(r["round"])):
        if row.get("phase") == "evaluate" and row["site"] != "all" and not row.get("error"):
            out[str(row["site"])] = row
    return out


def _comparison(runs: Sequence[RunFolder], metric: str | None, lower: bool) -> tuple[str, str, str]:
    """The comparison section's title and body, and the worst-site section."""
    if metric is None:
        text = '<p class="note">Not available: no metric recorded.</p>'
        return "Federated per site", text, text
    values = _per_site_values(runs, metric)
    models = [(k, label) for k, label in _MODELS if values[k]]
    sites = [s for s in _sites(runs) if any(s in values[k] for k, _ in models)]
    stats = {k: {s: t_interval(v) for s, v in values[k].items()} for k, _ in models}
    n = len(runs)
    label = _LABELS.get(metric, metric)
    rows = [
        [s, *(_fmt(stats[k].get(s), len(values[k].get(s, []))) for k, _ in models)] for s in sites
    ]
    columns = {lab: [stats[k].get(s) for s in sites] for k, lab in models}
    body = _table(["site", *(lab for _, lab in models)], rows)
    figure = figures.comparison_figure(sites, columns, label, unit_interval=not lower)
    body += _img(figure, f"{label} per site and model")
    note = f"{label} of each final model on each site's own held-out test patients"
    if n > 1:
        note += f"; mean and 95 % t-interval across n = {n} runs (seeds)"
    if lower:
        note += f"; {label} is an error: lower is better"
    if any(r.summary is None for r in runs):
        note += "; a run without summary.json: its latest evaluated round from metrics.jsonl"
    if not values["local_only"] and not values["pooled"]:
        note += "; no local-only or pooled baselines in this run (medfed simulate --baselines)"
    body += f'<p class="note">{_e(note)}.</p>'
    title = " vs ".join(lab for _, lab in models).capitalize() + ", per site"
    fed = stats.get("federated", {})
    if not fed:
        return title, body, '<p class="note">Not available: no federated per-site figures.</p>'
    pick = max if lower else min
    worst = pick(fed, key=lambda s: fed[s][0])
    best = (min if lower else max)(fed, key=lambda s: fed[s][0])
    word = "highest" if lower else "lowest"
    callout = (
        f'<p class="warn"><strong>Worst site: {_e(worst)}</strong> — federated {_e(label)} '
        f"{fed[worst][0]:.3f} ({word} of {len(fed)} sites"
        + (f", mean of {n} runs" if n > 1 else "")
        + f"); best: {_e(best)} {fed[best][0]:.3f}.</p>"
    )
    return title, body, callout


def _calibration(runs: Sequence[RunFolder], metric: str | None) -> str:
    have = [r for r in runs if r.calibration]
    if not have and metric not in (None, "accuracy", "auroc"):
        return (
            '<p class="note">Not applicable: a reliability diagram is for binary '
            f"classification, and this run measures {_e(_LABELS.get(metric, metric))}.</p>"
        )
    if not have:
        return (
            '<p class="note">Not recorded: no calibration.json in the run folder '
            "(medfed simulate writes it at the end of a binary classification run).</p>"
        )
    pooled: dict[str, list[dict[str, Any]]] = {}
    eces: dict[str, list[float]] = {}
    for run in have:
        assert run.calibration is not None
        for site, entry in run.calibration.get("sites", {}).items():
            if entry.get("ece") is not None:
                eces.setdefault(site, []).append(float(entry["ece"]))
            merged = pooled.setdefault(site, [])
            for i, b in enumerate(entry.get("bins", [])):
                if i == len(merged):
                    merged.append({"count": 0, "sp": 0.0, "so": 0.0})
                if b["count"]:
                    merged[i]["count"] += b["count"]
                    merged[i]["sp"] += b["count"] * b["mean_predicted"]
                    merged[i]["so"] += b["count"] * b["observed"]
    diagrams = {
        site: [
            {"count": b["count"], "mean_predicted": b["sp"] / b["count"] if b["count"] else None}
            | {"observed": b["so"] / b["count"] if b["count"] else None}
            for b in bins
        ]
        for site, bins in pooled.items()
    }
    n = len(have)
    rows = [[s, _fmt(t_interval(v), len(v))] for s, v in eces.items()]
    note = (
        "The final global model on each site's test patients: 10 equal-width bins of "
        "predicted probability; marker area ∝ patients in the bin; ECE = Σ (bin share) · "
        "|observed − predicted|."
    )
    if n > 1:
        note += f" Bins pooled over n = {n} runs; ECE as mean and 95 % t-interval."
    return (
        _img(figures.reliability_figure(diagrams), "reliability diagram per site")
        + _table(["site", "ECE"], rows)
        + f'<p class="note">{_e(note)}</p>'
    )


def _participation(runs: Sequence[RunFolder]) -> str:
    parts = []
    for run in runs:
        cells: dict[tuple[str, int], str] = {}
        failures = []
        for row in run.rows:
            site, rnd = str(row["site"]), int(row["round"])
            if site == "all":
                continue
            if row.get("phase") == "train":
                cells[(site, rnd)] = "failed" if row.get("error") else "trained"
            if row.get("error"):
                failures.append([str(rnd), site, str(row.get("phase")), str(row["error"])])
                if row.get("phase") == "evaluate" and cells.get((site, rnd)) == "trained":
                    cells[(site, rnd)] = "evaluation failed"
        rounds = list(range(1, max((r for _, r in cells), default=0) + 1))
        title = f"<h3>{_e(run.path.name)}</h3>" if len(runs) > 1 else ""
        if not rounds:
            parts.append(title + '<p class="note">No rounds recorded.</p>')
            continue
        sites = run.sites  # a site never sampled stays on the chart, blank
        parts.append(title + _img(figures.participation_figure(sites, rounds, cells), "timeline"))
        if failures:
            parts.append(_table(["round", "site", "phase", "error"], failures))
        else:
            parts.append('<p class="note">No site failed.</p>')
    return "".join(parts)


def _traffic(runs: Sequence[RunFolder]) -> str:
    totals: list[list[str]] = []
    for run in runs:
        per_round: dict[int, float] = {}
        for row in run.rows:
            for key, value in row.items():
                if "bytes" in key and isinstance(value, int | float) and row["site"] != "all":
                    per_round[int(row["round"])] = per_round.get(int(row["round"]), 0) + value
        totals += [[run.path.name, str(r), f"{b:,.0f}"] for r, b in sorted(per_round.items())]
    if not totals:
        return (
            '<p class="note">Not recorded: the run folder holds no byte counts '
            "(neither metrics.jsonl nor summary.json records the traffic per round).</p>"
        )
    return _table(["run", "round", "bytes (sum over sites)"], totals)


def _privacy(runs: Sequence[RunFolder]) -> str:
    rows = []
    for run in runs:
        p = (run.summary or {}).get("privacy") or {}
        client = p.get("client_level") or {}
        sample = p.get("sample_level_epsilon") or {}
        if client:
            eps, delta = client.get("epsilon"), client.get("delta")
            rows.append([run.path.name, "every site (client-level DP)", f"{eps:.3g}", f"{delta:g}"])
        delta = (run.config.get("privacy") or {}).get("delta")
        for site, eps in sorted(sample.items()):
            shown = "—" if delta is None else f"{delta:g}"
            rows.append([run.path.name, f"{site} (sample-level DP-SGD)", f"{eps:.3g}", shown])
    if not rows:
        return '<p class="note">No differential privacy in this run: no privacy spent.</p>'
    return _table(["run", "who", "ε spent", "δ"], rows) + (
        '<p class="note">Client-level ε holds for every site (one accountant at the '
        "coordinator); sample-level ε is each site's own DP-SGD accountant, never averaged.</p>"
    )


# --- the page ---------------------------------------------------------------------------------


def _incomplete(run: RunFolder) -> str:
    status = run.status.get("status", "unknown")
    why = f"{status}: {run.status['reason']}" if run.status.get("reason") else status
    missing = "" if run.summary else "no summary.json; "
    return (
        f'<p class="warn">The run {_e(run.path.name)} is incomplete ({missing}status '
        f"{_e(why)}): shown is what it recorded, {run.rounds_done} round(s).</p>"
    )


def render_report(runs: Sequence[RunFolder]) -> str:
    """The whole page as a string. Raises UsageError for runs of different data sets."""
    if not runs:
        raise UsageError("give at least one run folder")
    check_same_data(runs)
    metric, lower = primary_metric(runs)
    dataset = runs[0].dataset
    listing = _table(
        ["run", "seed", "status", "rounds done"],
        [
            [str(r.path), str(r.seed), str(r.status.get("status", "?")), str(r.rounds_done)]
            for r in runs
        ],
    )
    banner = "".join(_incomplete(r) for r in runs if not r.complete)
    title, comparison, worst = _comparison(runs, metric, lower)
    sections = [
        _section("curves", "Metric curves per site", _curves(runs, metric)),
        _section("comparison", title, comparison),
        _section("worst-site", "Worst site", worst),
        _section("calibration", "Calibration (binary classification)", _calibration(runs, metric)),
        _section("participation", "Participation and failures", _participation(runs)),
        _section("traffic", "Bytes moved per round", _traffic(runs)),
        _section("privacy", "Privacy spent", _privacy(runs)),
    ]
    headline = _LABELS.get(metric, metric) if metric else "none recorded"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>medfed run report — {_e(dataset)}</title><style>{_CSS}</style></head><body>"
        f"<h1>medfed run report — {_e(dataset)}</h1>{listing}"
        f'<p class="note">Headline metric: {_e(headline)}'
        + (" (lower is better)" if lower else "")
        + f"; {len(runs)} run(s).</p>"
        + banner
        + "".join(sections)
        + "</body></html>\n"
    )


def write_report(runs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Render the report of ``runs`` into ``out`` (default: the run's own report.html; for
    several runs, report.html in the current folder) and return its path."""
    folders = [read_run(p) for p in runs]
    page = render_report(folders)
    if out is None:
        out = folders[0].path / REPORT_FILE if len(folders) == 1 else Path(REPORT_FILE)
    path = Path(out)
    try:
        atomic_write(path, page)
    except OSError as exc:
        raise UsageError(
            f"cannot write {path}: {exc.strerror or exc}; choose another --out"
        ) from None
    return path
