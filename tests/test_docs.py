"""The documentation stays true to the code and self-contained.

- every configuration key that docs/METHOD.md names exists in folk/config/defaults.yaml;
- every relative link of README.md and docs/*.md points to a file of the repository;
- no tracked file refers to material outside the repository;
- README.md links to docs/METHOD.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
METHOD = REPO / "docs" / "METHOD.md"
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
    return {key for span in code_spans(text) for key in KEY.findall(span)}


def has_key(tree: dict, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def relative_links(text: str) -> list[str]:
    """Link targets outside code, without web addresses and in-page anchors."""
    prose = INLINE_CODE.sub("", FENCE.sub("", text))
    out = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "//")):
            continue
        out.append(target)
    return out


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# ------------------------------------------------------------------------ helpers' own tests


def test_key_pattern_finds_keys_and_skips_paths():
    text = (
        "`pretrain.base_lr` and `eval.linear.n_last_blocks` in `--set model.arch=vit`; "
        "not `folk/data.py`, `folk.data.transforms`, `config.yaml` nor plain data.root\n"
        "```bash\nfolk config --set augment.preset=mfm\n```\n"
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
    assert relative_links(text) == ["docs/METHOD.md", "../folk/x.py#L3", "fig.png"]


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
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in relative_links(doc.read_text()):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if not path:
            continue
        resolved = (doc.parent / path).resolve()
        inside = resolved == REPO or REPO in resolved.parents
        if not inside or not resolved.exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links to missing files {broken}"


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
    targets = [t.split("#", 1)[0] for t in relative_links((REPO / "README.md").read_text())]
    assert any(
        (REPO / t).resolve() == METHOD.resolve() for t in targets
    ), "README.md has no link to docs/METHOD.md"
