"""The documentation stands on its own: no tracked file points outside the repository, and every relative link in
README.md and docs/*.md reaches a file that exists and, for a `#anchor` into a markdown file, a heading that exists."""

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs").glob("*/*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
OUTSIDE = re.compile(r"specs/|\.\./shared")


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def anchor(heading):
    """GitHub's anchor of a heading: lowercase, punctuation other than '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page):
    """Every anchor a markdown page offers; a repeated heading gets -1, -2, ... as on GitHub. Code blocks are skipped."""
    seen, found, fenced = {}, set(), False
    for line in page.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = anchor(match.group(1))
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


def links(page):
    """(line number, target) of every markdown link outside code blocks and inline code."""
    fenced = False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                yield number, target


def test_anchor_rule_follows_github():
    assert anchor("`iql.py`") == "iqlpy" and anchor("`dvdn_gt.py`") == "dvdn_gtpy"
    assert anchor("MPE: Spread, Tag and Adversary (mpe2 1.1.1), partially observable") == (
        "mpe-spread-tag-and-adversary-mpe2-111-partially-observable")
    assert anchor("2.8 How an episode ends") == "28-how-an-episode-ends"


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # images, films, binary records
            continue
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, f"references outside the repository (specs/ or ../shared): {offenders}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_a_heading(page):
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):  # http:, https:, mailto: ...
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.exists():
            broken.append(f"line {number}: {target} (no such file)")
        elif fragment and file.suffix == ".md" and unquote(fragment) not in anchors(file):
            broken.append(f"line {number}: {target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_script_headers_point_at_readme_sections():
    """Each training script's first line names its README section; the README keeps those headings."""
    offered = anchors(ROOT / "README.md")
    for script in ["iql.py", "iql_ps.py", "vdn.py", "vdn_ps.py", "dvdn.py", "dvdn_gt.py"]:
        first = (ROOT / script).read_text().splitlines()[0]
        match = re.search(r"README\.md#([\w-]+)", first)
        assert match and match.group(1) in offered, f"{script}: {first}"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; move detail to docs/"
    text = "\n".join(lines)
    assert "pip install -r requirements.txt && python -m pytest -n 2 tests" in text  # the line .ci/run runs
    assert not re.search(r"\bas of \d{4}-\d\d-\d\d|issue[- ]\d+|#\d+\b", text), "no dated notes or issue numbers here"
