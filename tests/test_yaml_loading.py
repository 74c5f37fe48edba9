"""YAML through libyaml: the same trees, types and refusals as the pure-Python loader.

``folk.config`` parses with libyaml's C loader when PyYAML has it (``_CLoader``) and checks
the bounds of a params file on the C parser's events; the pure-Python ``_BoundedLoader``
is the reference for what a file means and for every error message.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest
import yaml

import folk.config as config
from folk.config import MAX_YAML_DEPTH, YAMLLimitError, yaml_load

from conftest import REPO

needs_libyaml = pytest.mark.skipif(config._CLoader is None, reason="PyYAML built without libyaml")


def same_tree(a, b) -> bool:
    """Equal values of equal types all the way down (1 and 1.0 and True differ; nan == nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_tree(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_tree(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def python_load(text: str):
    return yaml.load(text, Loader=config._BoundedLoader)


# YAML 1.1 scalars whose type depends on the resolver, and flow forms that --set values use
SCALARS = [
    "yes",
    "No",
    "on",
    "OFF",
    "true",
    "~",
    "null",
    "",
    "1e-4",
    "-1E+3",
    "2.5e-7",
    "1.0e-3",
    "1_000",
    "017",
    "0x1F",
    "0b101",
    "1:30",
    "190:20:30.15",
    ".inf",
    "-.Inf",
    ".nan",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "3.",
    ".5",
    "+12",
    "'1e-4'",
    '"yes"',
    "vit_small_patch16_224",
    "[0.286, 0.286, 0.286]",
    "[1, 2e-3, {a: b}]",
    "{nice: .nan, x: [1, 2]}",
    "a: 1\nb:\n  - 2\n  - c: 3\n",
    "- 1\n- [2, 3]\n",
    "key: 'it''s'\nother: \"tab\\there\"\n",
    "multi: |\n  line one\n  line two\n",
    "folded: >\n  a\n  b\n",
]


@needs_libyaml
@pytest.mark.parametrize("text", SCALARS, ids=repr)
def test_c_loader_reads_scalars_and_flow_forms_as_python_does(text):
    assert same_tree(yaml_load(text), python_load(text))


@needs_libyaml
def test_c_loader_reads_every_params_file_and_the_defaults_as_python_does():
    paths = sorted((REPO / "params").glob("*.yaml")) + [config.DEFAULTS_PATH]
    assert len(paths) > 2
    for path in paths:
        text = path.read_text()
        assert same_tree(yaml_load(text), python_load(text)), path
    text = config.DEFAULTS_PATH.read_text()
    assert same_tree(config.defaults(), yaml.load(text, Loader=config._Loader))


def _deep(levels: int) -> str:
    return (
        "slurm:\n  extra_sbatch:\n"
        + "".join("  " * (i + 2) + f"k{i}:\n" for i in range(levels))
        + "  " * (levels + 2)
        + "v: 1\n"
    )


BAD = {
    "syntax": "pretrain:\n  epochs: [1, 2\n",
    "nul": "pretrain:\n  epochs: 1\x00\n",
    "tab": "pretrain:\n\tepochs: 1\n",
    "two_documents": "a: 1\n---\nb: *x\n",
    "alias": "data:\n  mean: &m [0.5, 0.5, 0.5]\n  std: *m\n",
    "alias_key": "a: &k x\n*k : 2\n",
    "deep_flow": "x: " + "[" * 200 + "]" * 200 + "\n",
    "deep_mapping": _deep(60),
    "alias_deep": "x: " + "[" * (MAX_YAML_DEPTH + 3) + "*a" + "]" * (MAX_YAML_DEPTH + 3) + "\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_refusals_and_error_messages_are_the_python_loaders(name):
    text = BAD[name]
    with pytest.raises(yaml.YAMLError) as reference:
        python_load(text)
    with pytest.raises(yaml.YAMLError) as ours:
        yaml_load(text)
    assert type(ours.value) is type(reference.value)
    assert str(ours.value) == str(reference.value)
    assert "line " in str(ours.value) or "position " in str(ours.value)  # where it went wrong


def test_depth_limit_is_the_python_loaders_at_the_boundary():
    """MAX_YAML_DEPTH levels pass, one more is refused, in both readers."""
    ok, too_deep = _deep(MAX_YAML_DEPTH - 4), _deep(MAX_YAML_DEPTH - 3)
    assert same_tree(yaml_load(ok), python_load(ok))
    for load in (yaml_load, python_load):
        with pytest.raises(YAMLLimitError, match=f"deeper than {MAX_YAML_DEPTH}"):
            load(too_deep)


def test_without_libyaml_the_python_loader_reads(monkeypatch):
    monkeypatch.setattr(config, "_CLoader", None)
    # the params resolvers: exponent floats, only true/false as booleans
    assert same_tree(yaml_load("[1e-4, yes, true, 1:30]"), [1e-4, "yes", True, 90])
    with pytest.raises(YAMLLimitError, match="alias '\\*m' at line 3"):
        yaml_load(BAD["alias"])


def test_defaults_parsed_once_copied_out_and_reread_when_edited(tmp_path, monkeypatch):
    path = tmp_path / "defaults.yaml"
    shutil.copy(config.DEFAULTS_PATH, path)
    monkeypatch.setattr(config, "DEFAULTS_PATH", path)
    first = config.defaults()
    misses = config._parse_defaults.cache_info().misses
    first["pretrain"]["epochs"] = -5  # a caller's copy: the cache is not touched
    second = config.defaults()
    assert second["pretrain"]["epochs"] != -5 and second is not first
    assert config._parse_defaults.cache_info().misses == misses  # not parsed again
    text = path.read_text()
    edited = text.replace("\npretrain:", "\n# edited\npretrain:", 1)
    assert edited != text
    path.write_text(edited)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    config.defaults()
    assert config._parse_defaults.cache_info().misses == misses + 1  # the edit is read


@pytest.mark.parametrize("loader", ["python", "c"])
def test_only_true_and_false_are_booleans(loader):
    """YAML 1.1 reads on/off/yes/no as booleans; a params file means the words (the choices
    of augment.compile and pretrain.compile), as YAML 1.2 does."""
    if loader == "c" and config._CLoader is None:
        pytest.skip("PyYAML built without libyaml")
    text = "a: off\nb: on\nc: yes\nd: No\ne: true\nf: False\ng: TRUE\nh: 1e-4\n"
    read = python_load(text) if loader == "python" else yaml.load(text, Loader=config._CLoader)
    assert read == {
        "a": "off",
        "b": "on",
        "c": "yes",
        "d": "No",
        "e": True,
        "f": False,
        "g": True,
        "h": 1e-4,
    }
    assert yaml.safe_load("a: off") == {"a": False}  # PyYAML's own loaders are left alone


def test_on_and_off_set_on_the_command_line_are_the_words():
    cfg = config.load_config(None, ["augment.compile=off", "pretrain.compile=on"])
    assert cfg["augment"]["compile"] == "off" and cfg["pretrain"]["compile"] == "on"
    with pytest.raises(config.ConfigError, match="pretrain.deterministic.*yes"):
        config.load_config(None, ["pretrain.deterministic=yes"])
