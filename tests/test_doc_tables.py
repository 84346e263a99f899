"""The result tables of the documentation are the committed JSON's numbers: each page's tables are regenerated
from its JSON with ``qucnn.analysis.tables`` and every generated row must stand in the page as it is; a table
row on those pages that shows an interval and was not generated is a stale number."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from qucnn.analysis.tables import compare_markdown, hardware_markdown, scaling_markdown, shots_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"
README = DOCS.parent / "README.md"
#: page -> (the JSON its tables come from, the function that writes them)
PAGES = {
    "shots.md": [("shots.json", shots_markdown)],
    "hardware.md": [("hardware.json", hardware_markdown)],
    "scaling.md": [("scaling.json", scaling_markdown), ("scaling_shots.json", scaling_markdown)],
    "training.md": [("training/metrics.json", compare_markdown), ("training/fashion.json", compare_markdown)],
}
INTERVAL = re.compile(r"\[[-+]?\d+\.\d+, [-+]?\d+\.\d+\]")


def _load(name: str) -> dict:
    return json.loads((DOCS / name).read_text())


def missing_rows(page: str, generated: str) -> list[str]:
    """The lines of ``generated`` (tables) that are not lines of ``page``."""
    lines = set(page.splitlines())
    return [row for row in generated.splitlines() if row and row not in lines]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_table_row_of_the_page_is_generated_from_its_json(page):
    text = (DOCS / page).read_text()
    generated = set()
    for name, table in PAGES[page]:
        rows = table(_load(name))
        assert rows.count("\n|") > 5 and missing_rows(text, rows) == [], f"{page}: rows not from {name}"
        generated |= set(rows.splitlines())
    stale = [line for line in text.splitlines()
             if line.startswith("|") and INTERVAL.search(line) and line not in generated]
    assert stale == [], f"{page}: table rows with intervals that no JSON generates"


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_file_the_page_links_is_committed(page):
    text = (DOCS / page).read_text()
    targets = {t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t}
    assert {"json", "png"} & {t.rsplit(".", 1)[-1] for t in targets}
    assert [t for t in targets if t and not (DOCS / t).exists()] == []


def test_a_changed_number_is_caught():
    result = _load("shots.json")
    page = (DOCS / "shots.md").read_text()
    changed = copy.deepcopy(result)
    changed["settings"][2]["vs_frozen"]["mean"] += 0.0001  # +0.01 points on one row
    assert missing_rows(page, shots_markdown(result)) == []
    assert len(missing_rows(page, shots_markdown(changed))) == 1


def test_the_readme_compare_table_is_the_json():
    metrics = _load("training/metrics.json")
    readme = README.read_text()
    for kind, by_head in metrics["compare"].items():
        cells = [f"{100 * c['summary']['mean']:.2f} +- {100 * c['summary']['std']:.2f}" for c in by_head.values()]
        row = next(line for line in readme.splitlines() if line.startswith(f"  | {kind}:"))
        assert row.endswith(" | ".join(cells) + " |"), row
