"""The data-quality report as Markdown: a section of a run's report, or a file of its own.

Only what the report holds is shown (released, thresholded figures); a suppressed figure is
"—".
"""

from __future__ import annotations

from medfed.data.statistics import FEDERATION
from medfed.orchestration.quality import Flag, LabelQuality, QualityReport, RowQuality

__all__ = ["flag_cells", "label_text", "pct", "render_quality_markdown", "shown"]

_CHECKS = {"missing": "missingness", "smd": "SMD", "psi": "PSI"}


def shown(value: float | int | None, digits: int = 4) -> str:
    """A figure, or "—" when it is suppressed or does not apply."""
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def label_text(label: LabelQuality | None) -> str:
    """The outcome in one line: class fractions, a target's mean ± sd, or events and follow-up."""
    if label is None:
        return "—"
    if label.kind == "regression":
        return f"mean {shown(label.mean)}, sd {shown(label.sd)}"
    if label.kind == "survival":
        follow = shown(label.median_follow_up)
        return f"event rate {pct(label.event_rate)}, median follow-up {follow}"
    return ", ".join(f"class {k}: {pct(v)}" for k, v in label.classes.items()) or "—"


def flag_cells(flag: Flag) -> list[str]:
    """A flag's check, value and threshold as shown."""
    if flag.check == "missing":
        return [_CHECKS[flag.check], pct(flag.value), pct(flag.threshold)]
    return [_CHECKS.get(flag.check, flag.check), f"{flag.value:.3f}", f"{flag.threshold:g}"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _feature_rows(row: RowQuality, *, shift: bool) -> list[list[str]]:
    out = []
    for f in row.features.values():
        cells = [f.feature, shown(f.count), pct(f.missing_fraction), shown(f.mean), shown(f.sd)]
        cells += [shown(v) for v in f.quantiles.values()]
        if shift:
            cells += [shown(f.smd, 3), shown(f.psi, 3)]
        out.append(cells)
    return out


def render_quality_markdown(report: QualityReport, *, heading: str = "##") -> str:
    """The report as Markdown, starting with a ``heading``-level title ("##": a section)."""
    sub = heading + "#"
    t = report.thresholds
    quantiles = list(report.federation.features.values())
    qcols = [f"q{q}" for q in (quantiles[0].quantiles if quantiles else {})]
    lines = [f"{heading} Data quality", ""]
    lines.append(
        f"{len(report.sites)} site(s) shown, {report.federation.records or '—'} records in the "
        f"federation; flags: missingness > {pct(t.missing)}, SMD > {t.smd:g}, PSI > {t.psi:g}; "
        f"counts below {report.min_count} suppressed."
    )
    lines += ["", f"{sub} Flags", ""]
    if report.flags:
        lines += _table(
            ["site", "feature", "check", "value", "threshold"],
            [[f.site, f.feature, *flag_cells(f)] for f in report.flags],
        )
    else:
        lines.append("None.")
    header = ["feature", "with a value", "missing", "mean", "sd", *qcols]
    lines += ["", f"{sub} Federation", ""]
    lines += _table(header, _feature_rows(report.federation, shift=False))
    lines += ["", f"Outcome: {label_text(report.federation.label)}."]
    if report.sites:
        lines += ["", f"{sub} Sites (shift from the federation)", ""]
        rows: list[list[str]] = []
        for name, row in report.sites.items():
            rows += [[name, shown(row.records), *r] for r in _feature_rows(row, shift=True)]
        lines += _table(["site", "records", *header, "SMD", "PSI"], rows)
        lines += ["", f"{sub} Outcome per site", ""]
        lines += _table(
            ["site", "records", "outcome"],
            [
                [n, shown(r.records), label_text(r.label)]
                for n, r in [(FEDERATION, report.federation), *report.sites.items()]
            ],
        )
    if report.not_shown:
        lines += ["", f"{sub} Not shown", ""]
        lines += [f"- {_cell(site)}: {_cell(reason)}" for site, reason in report.not_shown.items()]
    if report.notes:
        lines += [""] + [f"- {_cell(n)}" for n in report.notes]
    return "\n".join(lines) + "\n"
