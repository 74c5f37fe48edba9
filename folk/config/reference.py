"""What each configuration key means, and the Markdown reference made from the schema.

A key's description is the comment beside it in ``defaults.yaml`` (with the comment lines
that continue it), so the file a user edits and the generated reference say the same thing.
Torch-free, and free of the rest of ``folk.config``, which imports it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<rest>.*)$")
_COMMENT_LINE = re.compile(r"^(?P<indent> *)#(?P<text>.*)$")


def _split_comment(rest: str) -> tuple[str, str | None, int]:
    """``rest`` of a key line as (value, comment or None, bracket depth the value leaves open);
    a ``#`` inside quotes, or not after a space, is part of the value (YAML's rule)."""
    quote = None
    depth = 0
    for i, char in enumerate(rest):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1 :].strip(), depth
    return rest.strip(), None, depth


def _bracket_depth(text: str) -> int:
    return _split_comment(text)[2]


def key_descriptions(path: str | Path) -> dict[str, str]:
    """``{dotted key: description}`` for every key of a defaults file in block style, the
    sections included; a key without a comment is absent."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings around the line
    current: tuple[str, int] | None = None  # the key whose comment may continue, its indent
    open_brackets = 0  # a flow collection that runs over several lines
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if open_brackets > 0:
            open_brackets += _bracket_depth(line)
            current = None
            continue
        comment = _COMMENT_LINE.match(line)
        if comment:
            # a comment indented past its key continues the key's; one at a key's own
            # indentation or less stands alone (a header, a note about what follows)
            if current and len(comment["indent"]) > current[1]:
                out[current[0]] = f"{out[current[0]]} {comment['text'].strip()}".strip()
            else:
                current = None
            continue
        match = _KEY_LINE.match(line)
        if not match:  # a value on a line of its own, which may open a flow collection
            open_brackets = _bracket_depth(line)
            current = None
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([k for _, k in stack] + [match["key"]])
        value, text, open_brackets = _split_comment(match["rest"])
        if text:
            out[dotted] = text
            current = (dotted, indent)
        else:
            current = None
        if not value:
            stack.append((indent, match["key"]))
    return out


# ---------------------------------------------------------------- the Markdown reference

_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def _literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _code(text: str) -> str:
    return f"`{text}`"


def _type_text(node: dict) -> str:
    kinds = node.get("type")
    if kinds is None:
        return "any"
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    words = []
    for kind in kinds:
        items = node.get("items")
        if kind == "array" and isinstance(items, dict) and "type" in items:
            words.append(f"array of {_type_text(items)}")
        elif kind == "object":
            words.append("mapping")
        else:
            words.append(kind)
    return " or ".join(words)


def _range_text(node: dict) -> str:
    low = ("[", node["minimum"]) if "minimum" in node else None
    if "exclusiveMinimum" in node:
        low = ("(", node["exclusiveMinimum"])
    high = (node["maximum"], "]") if "maximum" in node else None
    if "exclusiveMaximum" in node:
        high = (node["exclusiveMaximum"], ")")
    if low and high:
        return f"{low[0]}{_literal(low[1])}, {_literal(high[0])}{high[1]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {_literal(low[1])}"
    if high:
        return f"{'<=' if high[1] == ']' else '<'} {_literal(high[0])}"
    return ""


def _allowed_text(node: dict) -> str:
    """The values the schema allows beyond the type: choices, range, length, item rules."""
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(_literal(v)) for v in node["enum"]))
    bounds = _range_text(node)
    if bounds:
        parts.append(bounds)
    low, high = node.get("minItems"), node.get("maxItems")
    if low is not None and low == high:
        parts.append(f"exactly {low} items")
    elif low is not None or high is not None:
        parts.append(
            " and ".join(
                text
                for text in (
                    f"at least {low} item{'s' * (low != 1)}" if low is not None else "",
                    f"at most {high} items" if high is not None else "",
                )
                if text
            )
        )
    items = node.get("items")
    if isinstance(items, dict):
        inner = _allowed_text(items)
        if inner:
            parts.append(f"each item {inner}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    # a pipe ends a table cell unless escaped, in code spans too (GitHub's tables)
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(text: str) -> str:
    """A comment as Markdown text: outside its code spans, ``<name>`` would be read as an
    HTML tag and ``*`` as emphasis."""
    parts = re.split(r"(`[^`]*`)", text)
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace("*", "\\*")
    return "".join(parts)


_LONG_DEFAULT = 60  # characters of JSON: a longer default of a free-form key is a YAML block


def _rows(node: dict, path: str, free_form: set[str]) -> tuple[list, list, list]:
    """The table rows of a mapping's own keys, the sub-mappings that get tables of their own,
    and the (key, default) of the free-form keys whose default is shown under the table."""
    rows, sections, blocks = [], [], []
    for name, child in node.get("properties", {}).items():
        dotted = f"{path}.{name}" if path else name
        if child.get("type") == "object" and "properties" in child and dotted not in free_form:
            sections.append((dotted, child))
            continue
        default = _literal(child.get("default"))
        if dotted in free_form and len(default) > _LONG_DEFAULT:
            blocks.append((dotted, child["default"]))
            default_text = "below the table"
        else:
            default_text = _code(default)
        rows.append(
            [
                _code(dotted),
                _type_text(child),
                default_text,
                _allowed_text(child),
                _prose(child.get("description", "")),
            ]
        )
    return rows, sections, blocks


def markdown_reference(schema: dict, free_form: set[str], command: str) -> str:
    """The configuration reference: one table per section of ``schema`` (a generated
    configuration schema with descriptions), one row per key; ``free_form`` keys are one row
    whatever they hold; ``command`` is the command that writes the page again."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the configuration schema by `{command}`; do not edit it by hand.",
        "",
        "A description is the comment beside its key in "
        "[`folk/config/defaults.yaml`](../folk/config/defaults.yaml), and the ranges and "
        "choices come from [`folk/config/constraints.py`](../folk/config/constraints.py): "
        "change those, then run the command again.",
        "",
        "Every key is listed with its type, its default (at paper scale, written as JSON, "
        "which YAML reads too) and the values it accepts beyond its type. A params file "
        "lists only the keys it changes, and `--set KEY=VALUE` changes one on the command "
        "line; [the API page](api.md#configuration) says how the layers combine and what is "
        "checked. A `null` default is filled in when the configuration is resolved (from the "
        "variant, its recipes or the architecture), and the run's `config.yaml` records the "
        "value used.",
        "",
    ]

    def section(path: str, node: dict, level: int) -> None:
        lines.append(f"{'#' * level} `{path}`")
        lines.append("")
        if node.get("description"):
            lines.extend([_prose(node["description"]), ""])
        rows, subsections, blocks = _rows(node, path, free_form)
        if rows:
            lines.append("| key | type | default | allowed | description |")
            lines.append("|---|---|---|---|---|")
            lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
            lines.append("")
        for key, default in blocks:
            text = yaml.safe_dump(
                {key.rpartition(".")[2]: default},
                sort_keys=False,
                default_flow_style=None,
                allow_unicode=True,
            )
            lines.extend([f"The default of `{key}`:", "", "```yaml", text.rstrip("\n"), "```", ""])
        for sub_path, sub in subsections:
            section(sub_path, sub, min(level + 1, 4))

    # GitHub's anchor of a heading `name` is the name itself: sections are plain words
    lines.append("Sections: " + " · ".join(f"[`{n}`](#{n})" for n in schema["properties"]))
    lines.append("")
    for name, node in schema["properties"].items():
        section(name, node, 2)
    return "\n".join(lines).rstrip("\n") + "\n"
