"""The docs stay true to the repository: every recipe is in docs/recipes.md and every relative link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
RECIPES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "recipes").rglob("*.yaml"))
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
EXTERNAL = ("http://", "https://", "mailto:", "#")


def relative_links(page: Path) -> list[str]:
    """Targets of the Markdown links of ``page`` that point into the repository (code blocks skipped)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [t for t in LINK.findall(text) if not t.startswith(EXTERNAL)]


def test_every_recipe_is_listed_in_the_recipes_reference():
    text = (ROOT / "docs/recipes.md").read_text(encoding="utf-8")
    assert RECIPES, "no recipes found"
    missing = [r for r in RECIPES if f"`{r}`" not in text]
    assert not missing, f"docs/recipes.md does not list {missing}"


def test_the_recipes_reference_lists_no_stale_recipe():
    text = (ROOT / "docs/recipes.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(recipes/[\w./-]+\.yaml)`", text))
    stale = sorted(r for r in listed if not (ROOT / r).is_file())
    assert not stale, f"docs/recipes.md lists recipes that do not exist: {stale}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_the_link_pattern_finds_links():
    sample = "see [a](docs/a.md), ![img](x.png \"t\") and [web](https://x.org); `[no](code.md)`"
    found = LINK.findall(re.sub(r"`[^`\n]*`", "", sample))
    assert found == ["docs/a.md", "x.png", "https://x.org"]
