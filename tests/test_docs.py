"""The documentation stays true to the code and self-contained.

- every relative link of README.md, docs/**/*.md and results/**/*.md (when the demo wrote
  them) points to a file of the repository, and every anchor to a heading of its page;
- every configuration key that a page names exists in folk/config/defaults.yaml;
- docs/configuration.md is what `folk schema --markdown` writes now, one described row per key;
- a pointer in the code to a section of a page (`docs/api.md, "Exit codes"`) names a heading
  that page has;
- no tracked file refers to material outside the repository;
- README.md is short, links to docs/METHOD.md and holds the headline markers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
METHOD = REPO / "docs" / "METHOD.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
DEFAULTS = REPO / "folk" / "config" / "defaults.yaml"
SECTIONS = (
    "experiment",
    "data",
    "augment",
    "model",
    "filter",
    "method",
    "pretrain",
    "eval",
    "workflow",
    "launch",
    "slurm",
)
# a dotted key such as `pretrain.base_lr` or `eval.linear.n_last_blocks`, not preceded by a
# character that would make it part of a path or a module name (folk/data.py, folk.data)
KEY = re.compile(r"(?<![\w./-])(?:%s)(?:\.[A-Za-z_][A-Za-z0-9_]*)+" % "|".join(SECTIONS))
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.M)
# `README.md, "Exit codes"` or `docs/api.md, "Exit codes"` in code, comments and messages;
# results/README.md is a generated file, not one of these
POINTER = re.compile(r"(?<![\w./-])(README(?:\.md)?|docs/[\w.-]+\.md),\s+\"([^\"\n]+)\"")
DATA_SUFFIXES = (".csv", ".json", ".jsonl", ".tsv")  # data, where a project's README is a source
HEADLINE = ("<!-- headline:begin -->", "<!-- headline:end -->")
README_MAX_LINES = 200
# material outside the repository that no project file may name
OUTSIDE = ("shared/spec", "FOLK_METHOD.md", "REFERENCE_NUMBERS.md", "../shared")
THIS_FILE = "tests/test_docs.py"


def code_spans(text: str) -> list[str]:
    """Contents of fenced code blocks and of inline backticked spans."""
    spans = [m.group(0) for m in FENCE.finditer(text)]
    rest = FENCE.sub("", text)
    spans += [m.group(2) for m in INLINE_CODE.finditer(rest)]
    return spans


def documented_keys(text: str) -> set[str]:
    # Python blocks are left out: there `model.load_state_dict` is a method, not a key
    spans = [s for s in code_spans(text) if not s.startswith(("```python", "~~~python"))]
    return {key for span in spans for key in KEY.findall(span)}


def has_key(tree: dict, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def prose(text: str) -> str:
    """The text without its code: links and headings there are examples, not the page's."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def link_targets(text: str) -> list[str]:
    """Targets of the links outside code, without web addresses (in-page anchors kept)."""
    return [
        target
        for target in LINK.findall(prose(text))
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) and not target.startswith("//")
    ]


def relative_links(text: str) -> list[str]:
    """Link targets outside code, without web addresses and in-page anchors."""
    return [t for t in link_targets(text) if not t.startswith("#")]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation other than '-' and '_'
    dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts as its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a page's headings; GitHub numbers repeated ones: x, x-1, x-2."""
    seen: dict[str, int] = {}
    out = set()
    for match in HEADING.finditer(FENCE.sub("", text)):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return out


def link_problems(doc: Path, root: Path) -> list[str]:
    """The links of ``doc`` that lead nowhere: to a file outside ``root`` or missing, or to an
    anchor that the Markdown page it names does not have."""
    text = doc.read_text(encoding="utf-8")
    problems = []
    for target in link_targets(text):
        path, _, anchor = target.partition("#")
        path = unquote(path.split("?", 1)[0])
        page = doc
        if path:
            page = (doc.parent / path).resolve()
            inside = page == root or root in page.parents
            if not inside or not page.exists():
                problems.append(f"{target}: no such file in the repository")
                continue
        # anchors of other files (source lines, #L3) are the host's, not headings
        if anchor and page.suffix == ".md" and page.is_file():
            if unquote(anchor) not in anchors(page.read_text(encoding="utf-8")):
                problems.append(f"{target}: no heading with the anchor #{anchor}")
    return problems


def markdown_files() -> list[Path]:
    results = REPO / "results"
    generated = sorted(results.rglob("*.md")) if results.is_dir() else []
    return [README, *sorted((REPO / "docs").rglob("*.md")), *generated]


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no list of tracked files")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


def read_text_file(path: Path) -> str | None:
    """The file's text, or None for links, directories (submodules) and binary files."""
    if path.is_symlink() or not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def pointer_problems(text: str, root: Path) -> tuple[int, list[str]]:
    """(pointers found, those naming a page or a section that does not exist)."""
    found, problems = 0, []
    for match in POINTER.finditer(text):
        found += 1
        name, section = match.groups()
        page = root / ("README.md" if name == "README" else name)
        if not page.is_file():
            problems.append(f'{name}, "{section}": no such page')
        elif slug(section) not in anchors(page.read_text(encoding="utf-8")):
            problems.append(f'{name}, "{section}": no such heading')
    return found, problems


# ------------------------------------------------------------------------ helpers' own tests


def test_key_pattern_finds_keys_and_skips_paths():
    text = (
        "`pretrain.base_lr` and `eval.linear.n_last_blocks` in `--set model.arch=vit`; "
        "not `folk/data.py`, `folk.data.transforms`, `config.yaml` nor plain data.root\n"
        "```bash\nfolk config --set augment.preset=mfm\n```\n"
        "```python\nmodel.load_state_dict(weights)\n```\n"
    )
    assert documented_keys(text) == {
        "pretrain.base_lr",
        "eval.linear.n_last_blocks",
        "model.arch",
        "augment.preset",
    }
    tree = {"model": {"arch": "x"}, "eval": {"linear": {"n_last_blocks": None}}}
    assert has_key(tree, "eval.linear.n_last_blocks") and has_key(tree, "model.arch")
    assert not has_key(tree, "model.arch.name") and not has_key(tree, "model.nope")


def test_link_pattern():
    text = (
        "[a](docs/METHOD.md) [b](#anchor) [c](https://x.org/y) [`d`](../folk/x.py#L3) "
        '![e](fig.png "title") `[f](in/code.md)`\n```\n[g](in/block.md)\n```\n'
    )
    assert link_targets(text) == ["docs/METHOD.md", "#anchor", "../folk/x.py#L3", "fig.png"]
    assert relative_links(text) == ["docs/METHOD.md", "../folk/x.py#L3", "fig.png"]


def test_slugs_follow_githubs_rules():
    assert slug("The `folk` package API") == "the-folk-package-api"
    assert slug("1. Frequency filters") == "1-frequency-filters"
    assert slug("Augmentation presets (`augment.preset`)") == "augmentation-presets-augmentpreset"
    assert slug("Time limits, pre-emption and how to resume") == (
        "time-limits-pre-emption-and-how-to-resume"
    )
    assert slug("k-NN — DINO's [weighted](x.md) k_NN") == "k-nn--dinos-weighted-k_nn"
    page = "# Top\n## Twice\n## Twice\n```\n## Not a heading\n```\n### Closed ###\n"
    assert anchors(page) == {"top", "twice", "twice-1", "closed"}


def test_the_link_checker_finds_broken_files_and_anchors(tmp_path):
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "folk").mkdir()
    (root / "folk" / "x.py").write_text("x = 1\n")
    (root / "docs" / "a.md").write_text(
        "# Page A\n\n## A section, with `code`!\n\n## Twice\n\n## Twice\n\n"
        "```\n## In a code block\n```\n"
    )
    readme = root / "README.md"
    readme.write_text(
        "# Top heading\n\n"
        "Good: [a](docs/a.md), [section](docs/a.md#a-section-with-code), "
        "[second](docs/a.md#twice-1), [here](#top-heading), [source](folk/x.py#L1), "
        "[web](https://example.org/#x), `[in code](docs/missing.md)`.\n\n"
        "Broken: [file](docs/missing.md), [anchor](docs/a.md#no-such-section), "
        "[third](docs/a.md#twice-2), [code](docs/a.md#in-a-code-block), [here](#absent), "
        "[outside](../outside.md).\n"
    )
    (tmp_path / "outside.md").write_text("# Outside\n")
    problems = link_problems(readme, root)
    assert [p.split(":")[0] for p in problems] == [
        "docs/missing.md",
        "docs/a.md#no-such-section",
        "docs/a.md#twice-2",
        "docs/a.md#in-a-code-block",
        "#absent",
        "../outside.md",
    ]
    # a page's own links resolve from its directory
    (root / "docs" / "b.md").write_text("[up](../README.md#top-heading) [a](a.md#twice)\n")
    assert link_problems(root / "docs" / "b.md", root) == []


def test_the_pointer_checker_finds_missing_sections(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# Top\n## Exit codes\n")
    (tmp_path / "docs" / "api.md").write_text("# API\n## Released backbones\n")
    text = (
        '# README.md, "Exit codes"; README, "Exit codes"; docs/api.md, "Released backbones"\n'
        '# results/README.md, "Figures" is generated; docs/api.md, "Nope"; '
        'docs/gone.md, "Exit codes"\n'
    )
    found, problems = pointer_problems(text, tmp_path)
    assert found == 5
    assert problems == [
        'docs/api.md, "Nope": no such heading',
        'docs/gone.md, "Exit codes": no such page',
    ]


# ------------------------------------------------------------------------ the checks


def test_method_keys_exist_in_defaults():
    assert METHOD.is_file(), "docs/METHOD.md is missing"
    defaults = yaml.safe_load(DEFAULTS.read_text())
    keys = documented_keys(METHOD.read_text())
    # the page documents the method key by key: far fewer found means the pattern broke
    assert len(keys) >= 80, f"only {len(keys)} configuration keys found in docs/METHOD.md"
    missing = sorted(k for k in keys if not has_key(defaults, k))
    assert not missing, f"docs/METHOD.md names keys that folk/config/defaults.yaml lacks: {missing}"


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_key_a_page_names_exists(doc: Path):
    defaults = yaml.safe_load(DEFAULTS.read_text())
    missing = sorted(k for k in documented_keys(doc.read_text()) if not has_key(defaults, k))
    assert not missing, f"{doc.relative_to(REPO)} names keys that defaults.yaml lacks: {missing}"


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve_to_files_and_headings(doc: Path):
    problems = link_problems(doc, REPO)
    assert not problems, f"{doc.relative_to(REPO)}: broken links:\n" + "\n".join(problems)


def test_the_configuration_reference_is_generated_from_the_schema():
    from folk.config import REFERENCE_COMMAND, markdown_reference_text

    assert (
        CONFIGURATION.read_text(encoding="utf-8") == markdown_reference_text()
    ), f"docs/configuration.md is out of date: run `{REFERENCE_COMMAND}`"


def test_the_configuration_reference_describes_every_key():
    from folk.config import _leaf_keys

    rows = {}
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[4]
    keys = _leaf_keys()
    assert len(keys) > 150 and "workflow.ablations" in keys and "eval.knn.k" in keys
    missing = [k for k in keys if k not in rows]
    assert not missing, f"docs/configuration.md has no row for {missing}"
    undescribed = [k for k in keys if not rows[k]]
    assert (
        not undescribed
    ), f"keys without a description (a comment beside them in defaults.yaml): {undescribed}"


def test_every_pointer_to_a_section_names_a_heading():
    total, problems = 0, []
    for name in tracked_files():
        if name == THIS_FILE or name.endswith(DATA_SUFFIXES):
            continue
        text = read_text_file(REPO / name)
        if text is None:
            continue
        found, wrong = pointer_problems(text, REPO)
        total += found
        problems += [f"{name}: {p}" for p in wrong]
    # the code points to pages in a dozen places: far fewer means the pattern broke
    assert total >= 10, f"only {total} pointers to sections found"
    assert not problems, "pointers to sections that do not exist:\n" + "\n".join(problems)


def test_no_tracked_file_names_outside_material():
    names = tracked_files()
    assert names, "git ls-files listed nothing"
    found = []
    for name in names:
        if name == THIS_FILE:
            continue
        text = read_text_file(REPO / name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            hits = [s for s in OUTSIDE if s in line]
            if hits:
                found.append(f"{name}:{number}: {', '.join(hits)}")
    assert not found, "tracked files refer to material outside the repository:\n" + "\n".join(found)


def test_readme_links_to_method():
    targets = [t.split("#", 1)[0] for t in relative_links(README.read_text())]
    assert any(
        (REPO / t).resolve() == METHOD.resolve() for t in targets
    ), "README.md has no link to docs/METHOD.md"


def test_readme_is_short_and_holds_the_headline_block():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES, "README.md: the details go to docs/"
    lines = text.splitlines()
    begin, end = (lines.index(marker) for marker in HEADLINE)
    assert all(lines.count(marker) == 1 for marker in HEADLINE)
    section = max(i for i, line in enumerate(lines[:begin]) if line.startswith("## "))
    assert lines[section] == "## Headline result" and begin < end
    assert not any(line.startswith("#") for line in lines[section + 1 : end])
