"""report.html from run folders written as medfed writes them (the files, by hand, so that
each case — regression, DP, failures, a personalised column, an incomplete run — is exact)."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from medfed.errors import UsageError
from medfed.reporting.html_report import render_report, t_interval, write_report
from medfed.reporting.run_folder import read_run

SITES = ("north", "south", "east")


class Page(HTMLParser):
    """The parts of a report a test looks at: sections' text, images, links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: list[str] = []
        self.links: list[str] = []  # every src and href
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
            self.sections[str(self._section)] = ""
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.links.append(str(a[key]))
        if tag == "img":
            self.images.append(str(a.get("src")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._section is not None:
            self.sections[self._section] += data


def assert_self_contained(page: Page) -> None:
    assert page.images, "no figure"
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(link.startswith("data:") for link in page.links), page.links[:3]


def _metrics(metric: str, value: float) -> dict[str, Any]:
    return {"num_examples": 20, "loss": 0.5, metric: value}


def make_run(
    folder: Path,
    *,
    metric: str = "accuracy",
    finals: dict[str, float] | None = None,
    seed: int = 0,
    data: str = "breast-cancer",
    summary: bool = True,
    personalised: dict[str, float] | None = None,
    privacy: dict[str, Any] | None = None,
    failed: tuple[int, str] | None = None,
    rounds: int = 3,
) -> Path:
    finals = finals or {"north": 0.9, "south": 0.7, "east": 0.8}
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(
        f'rounds = {rounds}\nseed = {seed}\n\n[data]\nname = "{data}"\nharmonise = "none"\n'
    )
    (folder / "status.json").write_text(
        json.dumps({"status": "complete" if summary else "running", "rounds_done": rounds})
    )
    rows = []
    for r in range(1, rounds + 1):
        for site in SITES:
            error = "site crashed" if failed == (r, site) else None
            train = {"round": r, "phase": "train", "site": site, "loss": 1.0 / r, "error": error}
            rows.append(train if error is None else {**train, "loss": None})
            if error is None:
                value = finals[site] * r / rounds
                rows.append({"round": r, "phase": "evaluate", "site": site, metric: value})
        rows.append({"round": r, "phase": "evaluate", "site": "all", metric: 0.5})
    text = "".join(json.dumps(row) + "\n" for row in rows)
    (folder / "metrics.jsonl").write_text(text + '{"round": 4, "pha')  # a line cut short
    if summary:
        out: dict[str, Any] = {
            "dataset": data,
            "sites": list(SITES),
            "rounds_done": rounds,
            "final": _metrics(metric, 0.5),
            "final_per_site": {s: _metrics(metric, v) for s, v in finals.items()},
            "comparison": [
                {
                    "site": s,
                    "num_test": 20,
                    "federated": _metrics(metric, v),
                    "local_only": _metrics(metric, v - 0.1),
                    "pooled": _metrics(metric, v + 0.05),
                }
                for s, v in finals.items()
            ],
        }
        if personalised is not None:
            out["personalised_per_site"] = {s: _metrics(metric, v) for s, v in personalised.items()}
        if privacy is not None:
            out["privacy"] = privacy
        (folder / "summary.json").write_text(json.dumps(out))
    return folder


def _page(*folders: Path) -> Page:
    return Page(render_report([read_run(f) for f in folders]))


def test_one_run_has_every_section_and_embeds_its_figures(tmp_path: Path) -> None:
    page = _page(make_run(tmp_path / "run"))
    assert list(page.sections) == [
        "curves",
        "comparison",
        "worst-site",
        "calibration",
        "participation",
        "traffic",
        "privacy",
    ]
    assert_self_contained(page)
    assert "Worst site: south" in page.sections["worst-site"]
    assert "accuracy 0.700" in page.sections["worst-site"]
    comparison = page.sections["comparison"]
    assert "personalised" not in comparison  # absent from summary.json: no column
    assert "local-only" in comparison and "pooled" in comparison and "0.750" in comparison
    assert "Not recorded" in page.sections["traffic"]
    assert "Not recorded" in page.sections["calibration"]  # no calibration.json
    assert "No differential privacy" in page.sections["privacy"]
    assert "No site failed" in page.sections["participation"]


def test_regression_calls_the_highest_error_the_worst(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", metric="rmse", finals={"north": 50, "south": 70, "east": 60})
    page = _page(run)
    assert "Worst site: south" in page.sections["worst-site"]
    assert "RMSE 70.000 (highest" in page.sections["worst-site"]
    assert "lower is better" in page.sections["comparison"]
    assert "Not applicable" in page.sections["calibration"]


@pytest.mark.parametrize("metric", ["c_index", "dice"])
def test_survival_and_segmentation_call_the_lowest_the_worst(tmp_path: Path, metric: str) -> None:
    page = _page(make_run(tmp_path / "r", metric=metric))
    assert "Worst site: south" in page.sections["worst-site"]
    assert "(lowest of 3 sites)" in page.sections["worst-site"]
    assert_self_contained(page)


def test_the_personalised_column_is_shown_when_the_summary_has_it(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", personalised={"north": 0.95, "south": 0.66, "east": 0.81})
    comparison = _page(run).sections["comparison"]
    assert "personalised" in comparison and "0.950" in comparison and "0.660" in comparison


def test_several_seeds_show_the_mean_and_a_t_interval_with_n(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", seed=1, finals={"north": 0.9, "south": 0.6, "east": 0.8})
    b = make_run(tmp_path / "b", seed=2, finals={"north": 0.8, "south": 0.7, "east": 0.8})
    page = _page(a, b)
    # south: mean 0.65, sd 0.0707…, t(0.975, 1) = 12.706 → half-width 0.635
    assert "0.650 [0.015, 1.285] (n=2)" in page.sections["comparison"]
    assert "n = 2 runs" in page.sections["comparison"]
    assert "Worst site: south" in page.sections["worst-site"]
    assert "mean of 2 runs" in page.sections["worst-site"]
    assert len(page.images) == 2 + 2  # curves, comparison; a timeline per run


def test_t_interval_by_hand() -> None:
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    # sd 1, t(0.975, 2) = 4.302653, /√3
    assert mean == 2.0 and lo == pytest.approx(2 - 2.4841377) and hi == pytest.approx(4.4841377)
    assert t_interval([0.5]) == (0.5, None, None)


def test_failures_are_marked_on_the_timeline_and_listed(tmp_path: Path) -> None:
    page = _page(make_run(tmp_path / "r", failed=(2, "east")))
    text = page.sections["participation"]
    assert "site crashed" in text and "east" in text and "No site failed" not in text


def test_privacy_spent_per_site_under_dp(tmp_path: Path) -> None:
    client = {"epsilon": 4.2, "delta": 1e-5, "noise_multiplier": 1.1, "clip_norm": 1.0}
    privacy = {"client_level": client, "sample_level_epsilon": {"north": 3.5, "south": 6.25}}
    text = _page(make_run(tmp_path / "r", privacy=privacy)).sections["privacy"]
    assert "client-level" in text and "4.2" in text and "1e-05" in text
    assert "north (sample-level DP-SGD)" in text and "6.25" in text


def test_calibration_is_drawn_from_calibration_json(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    bins = [
        {"lower": i / 10, "upper": (i + 1) / 10, "count": 0, "mean_predicted": None}
        | {"observed": None}
        for i in range(10)
    ]
    bins[2] = {"lower": 0.2, "upper": 0.3, "count": 4, "mean_predicted": 0.25, "observed": 0.5}
    sites = {s: {"num_test": 4, "ece": 0.25, "bins": bins} for s in SITES}
    (run / "calibration.json").write_text(json.dumps({"n_bins": 10, "sites": sites}))
    page = _page(run)
    assert "0.250" in page.sections["calibration"] and "ECE" in page.sections["calibration"]
    assert len(page.images) == 4  # curves, comparison, reliability, timeline


def test_an_incomplete_run_still_shows_what_it_recorded(tmp_path: Path) -> None:
    path = write_report([make_run(tmp_path / "r", summary=False)])
    assert path == tmp_path / "r" / "report.html"
    text = path.read_text()
    assert "incomplete" in text and "no summary.json" in text
    page = Page(text)
    assert_self_contained(page)
    assert "latest evaluated round" in page.sections["comparison"]
    assert "Worst site: south" in page.sections["worst-site"]


def test_runs_of_different_data_sets_are_refused(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", data="diabetes", metric="rmse")
    with pytest.raises(UsageError, match="breast-cancer"):
        write_report([a, b])


def test_a_folder_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a run folder"):
        read_run(tmp_path)
    with pytest.raises(UsageError, match="not a folder"):
        read_run(tmp_path / "missing")


def test_import_medfed_does_not_load_matplotlib() -> None:
    code = (
        "import sys, medfed, medfed.reporting.html_report, medfed.cli.main\n"
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
