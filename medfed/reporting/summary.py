"""A run's summary: JSON for machines, Markdown for people, a Rich table for the terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medfed.orchestration.simulation import Comparison, SimulationResult
from medfed.records import Metrics

__all__ = ["comparison_table", "summary_dict", "summary_markdown"]

_PRIMARY = ("accuracy", "auroc", "c_index", "rmse", "mae", "dice")
"""The headline metrics in the order they are shown: accuracy and AUROC (classification), the
C-index (survival), RMSE then MAE (regression: RMSE first, as it is what the loss minimises
and it weighs the large misses a clinician cares about), Dice (segmentation)."""
_LABELS = {
    "accuracy": "accuracy",
    "auroc": "AUROC",
    "c_index": "C-index",
    "rmse": "RMSE",
    "mae": "MAE",
    "dice": "Dice",
}
_LOWER_IS_BETTER = frozenset({"rmse", "mae"})


def _metric_names(result: SimulationResult) -> list[str]:
    """The headline metrics this run measured (accuracy and AUROC, the C-index, RMSE and MAE,
    or Dice), whichever the task's kind measures."""
    last = result.history[-1].eval_summary if result.history else None
    if last is None:
        return []
    return [name for name in _PRIMARY if getattr(last, name) is not None]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _get(m: Metrics | None, name: str) -> float | None:
    return None if m is None else getattr(m, name)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def summary_dict(result: SimulationResult, *, model_sha256: str | None = None) -> dict[str, Any]:
    last = result.history[-1] if result.history else None
    out: dict[str, Any] = {
        "dataset": result.dataset,
        "sites": result.sites,
        "rounds_done": result.resumed_after + len(result.history),
        "seconds": round(result.seconds, 3),
        "model_sha256": model_sha256,
        "final": None if last is None or last.eval_summary is None else last.eval_summary.as_dict(),
        "final_per_site": {}
        if last is None
        else {s: m.as_dict() for s, m in last.eval_metrics.items()},
        # each site's own model (FedBN's norm layers, FedPer's head, fine-tuning)
        **(
            {"personalised_per_site": {s: m.as_dict() for s, m in last.personal_metrics.items()}}
            if last is not None and last.personal_metrics
            else {}
        ),
        "failures": {
            str(r.round): {s: str(f) for s, f in r.failures.items()}
            for r in result.history
            if r.failures
        },
    }
    if result.resumed_after:  # the rounds before are in metrics.jsonl
        out["resumed_after"] = result.resumed_after
    if result.harmonisation is not None:
        out["harmonisation"] = result.harmonisation.to_json()
    if result.warnings:
        out["warnings"] = list(result.warnings)
    if result.quality is not None:  # the whole report is quality.json
        out["data_quality"] = {
            "file": "quality.json",
            "flags": [f"{f.site} {f.feature}: {f.check}" for f in result.quality.flags],
        }
    elif result.quality_note:
        out["data_quality"] = {"note": result.quality_note}
    privacy = privacy_summary(result)
    if privacy:
        out["privacy"] = privacy
    if result.comparison:
        out["comparison"] = [
            {
                "site": c.site,
                "num_test": c.num_test,
                "federated": None if c.federated is None else c.federated.as_dict(),
                "local_only": None if c.local is None else c.local.as_dict(),
                "pooled": None if c.pooled is None else c.pooled.as_dict(),
                **(
                    {"personalised": c.personalised.as_dict()} if c.personalised is not None else {}
                ),
            }
            for c in result.comparison
        ]
    return out


def privacy_summary(result: SimulationResult) -> dict[str, Any]:
    """The run's privacy: client-level ε at δ from the accountant, and sites' DP-SGD ε."""
    out: dict[str, Any] = {}
    last = result.history[-1] if result.history else None
    if last is not None and last.privacy:
        out["client_level"] = dict(last.privacy)
    site_eps: dict[str, float] = {}
    for r in result.history:
        for site, report in r.reports.items():
            if report.epsilon is not None:
                site_eps[site] = max(site_eps.get(site, 0.0), report.epsilon)
    if site_eps:  # each site's own accountant (sample-level DP-SGD); never averaged
        out["sample_level_epsilon"] = site_eps
    return out


def _models(comp: list[Comparison]) -> list[tuple[str, Callable[[Comparison], Metrics | None]]]:
    """The compared models, as column tags and getters (personalised only when measured)."""
    models: list[tuple[str, Callable[[Comparison], Metrics | None]]] = [
        ("fed", lambda c: c.federated)
    ]
    if any(c.personalised is not None for c in comp):
        models.append(("pers", lambda c: c.personalised))
    models += [("local", lambda c: c.local), ("pooled", lambda c: c.pooled)]
    return models


def comparison_rows(result: SimulationResult) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per site, each metric for federated / personalised (when the run
    personalises) / local-only / pooled."""
    names = _metric_names(result)
    comp: list[Comparison] = result.comparison
    models = _models(comp)
    header = ["site", "test patients"]
    for name in names:
        header += [f"{_LABELS[name]} {tag}" for tag, _ in models]
    rows: list[list[str]] = []
    for c in comp:
        row = [c.site, str(c.num_test)]
        for name in names:
            row += [_fmt(_get(get(c), name)) for _, get in models]
        rows.append(row)
    if comp:
        row = ["mean over sites", str(sum(c.num_test for c in comp))]
        for name in names:
            row += [_fmt(_mean([_get(get(c), name) for c in comp])) for _, get in models]
        rows.append(row)
    return header, rows


def _lower_note(result: SimulationResult, before: str) -> str:
    """Say which shown metrics are errors (lower is better), if any."""
    lower = [_LABELS[n] for n in _metric_names(result) if n in _LOWER_IS_BETTER]
    if not lower:
        return ""
    return f"{before}{' and '.join(lower)}: lower is better, in the target's unit"


def comparison_table(result: SimulationResult) -> Any:
    """A Rich table of the comparison (imported lazily: rich is only needed by the CLI)."""
    from rich import box
    from rich.table import Table

    header, rows = comparison_rows(result)
    table = Table(
        title="Each hospital's own held-out patients",
        caption="fed = federated · "
        + ("pers = personalised · " if any(c.personalised for c in result.comparison) else "")
        + "local = hospital alone · pooled = all records together"
        "\nn = held-out test patients" + _lower_note(result, "\n"),
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for i, h in enumerate(header):
        if i == 0:
            table.add_column(h, no_wrap=True)
        elif i == 1:
            table.add_column("n", justify="right")
        else:
            metric, _, model = h.rpartition(" ")
            metric = {"accuracy": "acc."}.get(metric, metric)
            table.add_column(
                f"{metric}\n{model}", justify="right", style="bold" if model == "fed" else ""
            )
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 2)
    return table


def summary_markdown(
    result: SimulationResult, *, status: str = "complete", model_sha256: str | None = None
) -> str:
    lines = [
        f"# medfed run — {result.dataset}",
        "",
        f"- status: {status}",
        f"- sites: {', '.join(result.sites)}",
        f"- rounds done: {result.resumed_after + len(result.history)}"
        + (f" (resumed after round {result.resumed_after})" if result.resumed_after else ""),
        f"- wall time: {result.seconds:.1f} s",
    ]
    if model_sha256:
        lines.append(f"- global model: model.safetensors (sha256 {model_sha256})")
    last = result.history[-1] if result.history else None
    if last is not None and last.eval_summary is not None:
        final = ", ".join(
            f"{k} {v:.4g}"
            for k, v in last.eval_summary.as_dict().items()
            if v is not None and k != "num_examples"
        )
        lines.append(f"- final federated evaluation (example-weighted over sites): {final}")
    h = result.harmonisation
    if h is not None:
        lines.append(
            f"- harmonisation: {h.method} — every site standardised its {len(h.mean)} features "
            "with the federation's mean and sd (learnt by one statistics exchange before "
            "training; missing values filled with the federation's mean)"
            + ("; then its own site effects removed (ComBat)" if h.method == "combat" else "")
            + "; the figures are in summary.json"
        )
    privacy = privacy_summary(result)
    if "client_level" in privacy:
        p = privacy["client_level"]
        lines.append(
            "- privacy (client-level DP, accounted with dp-accounting): "
            f"ε = {p['epsilon']:.3g} at δ = {p['delta']:g} after "
            f"{result.resumed_after + len(result.history)} rounds "
            f"(noise multiplier {p['noise_multiplier']:.3g}, clip {p['clip_norm']:.3g})"
        )
    if "sample_level_epsilon" in privacy:
        worst = max(privacy["sample_level_epsilon"].values())
        lines.append(f"- privacy (sample-level DP-SGD): largest site ε = {worst:.3g}")
    failed = sum(len(r.failures) for r in result.history)
    if failed:
        lines.append(f"- site failures over the run: {failed} (see metrics.jsonl, column error)")
    if result.comparison:
        header, rows = comparison_rows(result)
        lines += ["", "## Federated vs local-only vs pooled, on each site's own test set", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += [
            "",
            *(
                [
                    "Personalised: each site's own model — the layers it kept (FedBN, FedPer) "
                    "and/or the federated model fine-tuned on its own training records, for "
                    "as many epochs as a validation split of them favoured. "
                ]
                if any(c.personalised for c in result.comparison)
                else []
            ),
            "Local-only: the site trains alone with the same trainer, rounds and epochs. Pooled: "
            "one model trained on all sites' training records together (not possible in practice; "
            "the reference a federation tries to reach)." + _lower_note(result, " "),
        ]
    if result.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result.warnings]
    if result.quality is not None:
        from medfed.reporting.quality import render_quality_markdown

        lines += ["", render_quality_markdown(result.quality).rstrip("\n")]
    elif result.quality_note:
        lines += ["", "## Data quality", "", result.quality_note]
    return "\n".join(lines) + "\n"
