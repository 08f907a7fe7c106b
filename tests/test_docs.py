"""The documentation says what the code does: the README's subjects table is the table
of `shared/subjects.py`, every setting is in docs/configuration.md, and every link and
every docs/ page the code points at exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dcodex.shared.service.config import Settings, env_var, flag
from dcodex.shared.subjects import DEFAULT_PREFIX, SUBJECTS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def table_rows(markdown: str, header: str) -> list[list[str]]:
    """The cells of the table whose header row starts with `header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def test_the_readme_subjects_table_is_the_table_of_subjects() -> None:
    rows = table_rows((ROOT / "README.md").read_text(), "| subject | served by |")
    documented = {row[0]: (row[1], row[2], row[3]) for row in rows}
    for subject in SUBJECTS:
        request = subject.request.__name__ if subject.request else "empty"
        expected = (subject.service.name, request, subject.reply.__name__)
        assert documented.get(subject.on(DEFAULT_PREFIX)) == expected, subject.key
    per_execution = {
        f"{DEFAULT_PREFIX}.output.<execution_id>",
        f"{DEFAULT_PREFIX}.input.<execution_id>",
    }
    assert set(documented) == {s.on(DEFAULT_PREFIX) for s in SUBJECTS} | per_execution


def test_the_readme_names_each_subjects_tenant_form() -> None:
    """A subject served per tenant (docs/tenancy.md) is named in its tenant form too."""
    readme = (ROOT / "README.md").read_text()
    for subject in SUBJECTS:
        tenant_form = f"`{subject.on(DEFAULT_PREFIX)}.<tenant>`"
        assert (tenant_form in readme) == subject.per_tenant, tenant_form


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_in_the_configuration_page(name: str) -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert f"`{flag(name)}`" in page and f"`{env_var(name)}`" in page, name


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().replace("`", "").lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_link_between_the_pages_leads_somewhere(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in anchors(linked.read_text()), f"{page.name}: {target}"


def test_every_docs_page_the_code_points_at_exists() -> None:
    pointed = {
        match
        for tree in ("shared", "services", "tests", "deploy")
        for source in (ROOT / tree).rglob("*")
        if source.is_file() and source.suffix in {".py", ".toml", ".c", ".env", ".yaml"}
        for match in re.findall(r"docs/[\w-]+\.md", source.read_text(errors="replace"))
    }
    assert pointed, "the code points at no docs page at all"
    missing = sorted(page for page in pointed if not (ROOT / page).exists())
    assert not missing


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_points_at_documents_outside_the_repository(page: Path) -> None:
    text = page.read_text()
    for outside in ("DESIGN.md", "DESIGN §", "the seed's", "../shared/"):
        assert outside not in text, f"{page.name} mentions {outside!r}"
