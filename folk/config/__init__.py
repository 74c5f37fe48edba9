"""Configuration: defaults, params files, ``--set`` overrides, validation, resolution.

One source of truth: ``defaults.yaml`` (every key with its default) plus the constraints in
``constraints.py``. The JSON schema that Snakemake validates with is generated from both
(``folk schema``), so the workflow and the package reject the same configurations.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.util
import itertools
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from folk import ablations, recipes
from folk.config.constraints import CONSTRAINTS, ENUM_NULLABLE
from folk.config.reference import key_descriptions, markdown_reference
from folk.errors import ConfigError
from folk.filter_registry import scaled_patch, scaled_radius  # noqa: F401  (their home for callers)
from folk.utils.io import atomic_write_text
from folk.utils.keys import config_value
from folk.variants import VARIANTS

log = logging.getLogger(__name__)

DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")


@functools.lru_cache(maxsize=4)
def _parse_defaults(path: str, mtime_ns: int, size: int) -> dict:
    # keyed by the file's identity so that an edited defaults.yaml is read again; trusted
    # text, so no bounds, but the resolvers of a params file (_Loader: 1e-4 is a number)
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=_CLoader or _Loader)


def _defaults_shared() -> dict:
    """The parsed defaults, shared by every caller: read it, never change it."""
    stat = DEFAULTS_PATH.stat()
    return _parse_defaults(str(DEFAULTS_PATH), stat.st_mtime_ns, stat.st_size)


def defaults() -> dict:
    """A fresh copy of ``defaults.yaml``, parsed once per process (again if the file changes)."""
    return copy.deepcopy(_defaults_shared())


# keys whose default is null and that resolution decides (folk/recipes.py), with a value of
# their type: a value set by the user is type-checked against it
NULLABLE = recipes.nullable_examples()


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, dict) and path not in FREE_FORM:
            keys.extend(_flat_keys(v, path + "."))
    return keys


FREE_FORM = {"slurm.extra_sbatch", ablations.SECTION}


def _merge(
    base: dict, update: dict, source: str, prefix: str = "", origins: dict | None = None
) -> None:
    """Merge ``update`` into ``base`` in place, refusing keys ``base`` does not have;
    ``origins`` records which source set each key, for error messages."""
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise _unknown_key(path, base, prefix, source)
        if path == ablations.SECTION:  # named entries: merged, or added, one by one
            ablations.merge_entries(base[key], value, source, origins)
        elif isinstance(base[key], dict) and path not in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{source}: key '{path}' must be a mapping, got {value!r}",
                    key=path,
                    source=source,
                )
            _merge(base[key], value, source, path + ".", origins)
        else:
            base[key] = value
            # leaves only: a section is not "set" by a source that sets one of its keys
            if origins is not None:
                origins[path] = source


def _unknown_key(path: str, section: dict, prefix: str, source: str) -> ConfigError:
    """``path`` is not a key of ``section`` (the keys under ``prefix``); the nearest one
    is suggested."""
    hint = difflib.get_close_matches(path, _flat_keys(section, prefix), n=1)
    extra = f" (did you mean '{hint[0]}'?)" if hint else ""
    return ConfigError(f"{source}: unknown key '{path}'{extra}", key=path, source=source)


def _params_resolvers(loader: type) -> type:
    """Two YAML 1.1 readings that params files trip over, made as YAML 1.2 reads them:
    ``1e-4`` (no dot) is a number, not a string (researchers write learning rates that way),
    and only true/false are booleans, so that ``compile: off`` is the word a key's choices
    name, not False."""
    bool_tag = "tag:yaml.org,2002:bool"
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != bool_tag]
        for first, resolvers in loader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return loader


@_params_resolvers
class _Loader(yaml.SafeLoader):
    """PyYAML's pure-Python safe loader with the params files' resolvers."""


if getattr(yaml, "CSafeLoader", None) is not None:

    @_params_resolvers
    class _CLoader(yaml.CSafeLoader):
        """libyaml's parser and composer (several times faster than _Loader) with _Loader's
        constructors and resolvers, which are Python in both: the same YAML 1.1 types."""
else:  # PyYAML built without libyaml
    _CLoader = None


# Bounds on what a params file (or a --set value) may make the reader do. A real params
# file is a few kilobytes and a few levels deep; these limits are far above that and far
# below what could exhaust memory or the interpreter's stack.
MAX_PARAMS_BYTES = 1 << 20  # 1 MiB
MAX_YAML_DEPTH = 32  # nesting of mappings and lists


class YAMLLimitError(yaml.YAMLError):
    """Input the bounded reader refuses: an alias, or nesting beyond MAX_YAML_DEPTH."""


class _BoundedLoader(_Loader):
    """Refuses YAML aliases (``*name``) outright: an alias is a reference, and a few lines of
    nested aliases ("billion laughs") expand to exponentially many nodes as soon as anything
    walks the tree (validation, deepcopy, saving config.yaml). No configuration needs them:
    write the value out. Also caps nesting, since composing is recursive (a deep ``[[[[...``
    would otherwise end in RecursionError)."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise YAMLLimitError(
                f"YAML alias '*{event.anchor}' at line "
                f"{event.start_mark.line + 1}: aliases are not accepted "
                f"(write the value out instead)"
            )
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(
                    f"nesting deeper than {MAX_YAML_DEPTH} levels at line {mark.line + 1}"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_bounds(events) -> None:
    """_BoundedLoader's two refusals, with its messages, from the parser's events: libyaml
    composes in C, where ``compose_node`` cannot be overridden. The first document only (a
    second is an error of its own, which the loader reports)."""
    open_collections = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            raise YAMLLimitError(
                f"YAML alias '*{event.anchor}' at line "
                f"{event.start_mark.line + 1}: aliases are not accepted "
                f"(write the value out instead)"
            )
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            if open_collections + 1 > MAX_YAML_DEPTH:  # the node's depth, as compose_node's
                raise YAMLLimitError(
                    f"nesting deeper than {MAX_YAML_DEPTH} levels at line "
                    f"{event.start_mark.line + 1}"
                )
            if isinstance(event, yaml.CollectionStartEvent):
                open_collections += 1
        elif isinstance(event, yaml.CollectionEndEvent):
            open_collections -= 1
        elif isinstance(event, yaml.DocumentEndEvent):
            return


def yaml_load(text_or_stream) -> Any:
    """YAML of a params file or ``--set`` value, without aliases and at most MAX_YAML_DEPTH
    levels deep (``_BoundedLoader``'s rules).

    With libyaml the text is read twice in C, once for the bounds and once to load it, both
    far faster than the pure-Python loader. Any other error sends the text to
    ``_BoundedLoader``, whose verdict and message (the line quoted, with a caret) stand."""
    text = text_or_stream if isinstance(text_or_stream, (str, bytes)) else text_or_stream.read()
    if _CLoader is not None:
        try:
            _check_bounds(yaml.parse(text, Loader=_CLoader))
            return yaml.load(text, Loader=_CLoader)
        except YAMLLimitError:
            raise
        except yaml.YAMLError:
            pass
    return yaml.load(text, Loader=_BoundedLoader)


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` with value read as YAML (``[1, 2]``, ``true``, ``1e-3``)."""
    if "=" not in item:
        raise ConfigError(f"--set: expected key=value, got '{item}'", source="--set")
    key, raw = item.split("=", 1)
    try:
        value = yaml_load(raw) if raw != "" else ""
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(
            f"--set {key}: cannot parse value '{raw}': {exc}",
            key=key.strip(),
            source=f"--set {key}",
        ) from None
    return key.strip(), value


def _nest(key: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def read_params(path: str | Path) -> dict:
    """The mapping of a params file. Reading is bounded: files above MAX_PARAMS_BYTES are
    refused unread, the text must be UTF-8, and YAML aliases and nesting deeper than
    MAX_YAML_DEPTH are refused (``_BoundedLoader``). Every refusal is a ConfigError naming
    the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", source=str(path))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PARAMS_BYTES + 1)  # never more, whatever the file claims
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}", source=str(path)) from None
    if len(raw) > MAX_PARAMS_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_PARAMS_BYTES} bytes, the limit for a "
            f"params file; is it the right file?",
            source=str(path),
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte {exc.start} is not UTF-8); a "
            f"params file is YAML text",
            source=str(path),
        ) from None
    try:
        data = yaml_load(text)
    except YAMLLimitError as exc:
        raise ConfigError(f"{path}: refused: {exc}", source=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", source=str(path)) from None
    except RecursionError:  # a limit above should catch this first; never a traceback
        raise ConfigError(f"{path}: nested too deeply to read", source=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: top level must be a mapping of configuration keys, got "
            f"{_type_name(data)}",
            source=str(path),
        )
    return data


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), base: dict | None = None
) -> dict:
    """Defaults (or ``base``), then the params file, then ``--set`` overrides; validated
    and resolved. Nothing is read but the YAML: this runs before any data or model."""
    cfg = copy.deepcopy(base) if base is not None else defaults()
    origins: dict[str, str] = {}
    if path is not None:
        log.debug("params file %s", Path(path).resolve())
        _merge(cfg, read_params(path), str(path), origins=origins)
    for item in overrides:
        key, value = parse_override(item)
        log.debug("--set %s = %r", key, value)
        _merge(cfg, _nest(key, value), f"--set {key}", origins=origins)
    source = str(path) if path is not None else "configuration"
    validate(cfg, source, origins)
    return resolve(cfg)


def merge_into(cfg: dict, update: dict, source: str) -> dict:
    out = copy.deepcopy(cfg)
    _merge(out, update, source)
    return out


# ---------------------------------------------------------------- validation


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# Key prefixes that may differ between directories of the same training (a resumed run,
# seed siblings): where the data lives and how it is read, how the run is launched and
# scheduled, how often it writes progress, and the evaluations, which read a run and never
# change it. workflow/rules/common.smk holds a copy (Snakemake parses it without folk).
RESUMABLE_CHANGES = (
    "data.root",
    "data.num_workers",
    "pretrain.checkpoint_every",
    "pretrain.log_every",
    "launch.",
    "slurm.",
    "eval.",
    "workflow.",
    "experiment.dataset_note",
)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": value}`` for every leaf of a nested configuration."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_get = config_value


def validate(cfg: dict, source: str = "configuration", origins: dict | None = None) -> None:
    """Types, choices and ranges through jsonschema (the generated schema), then the rules
    that tie keys together. Raises ConfigError naming the key and the file (or the
    ``--set`` override) that gave it its value."""
    try:
        _check_schema(cfg, source)
        resolved = resolve(cfg)
        _check_finite(resolved, source)
        ablations.check_ablations(resolved, source, _leaf_keys(), _key_schema)
        _check_seeds(resolved, source)
        _cross_checks(resolved, source)
        _check_architecture(resolved, source)
    except ConfigError as exc:
        raise _named_by_origin(exc, source, origins or {}) from None


@functools.lru_cache(maxsize=1)
def _leaf_keys() -> tuple[str, ...]:
    """Every key a value can be given for (free-form mappings are one key)."""
    return tuple(
        k
        for k in _flat_keys(_defaults_shared())
        if not isinstance(_get(_defaults_shared(), k), dict) or k in FREE_FORM
    )


def _key_schema(path: str) -> dict:
    """The generated JSON schema of one key."""
    return _schema_node(_json_schema_shared(), path)


def _schema_node(schema: dict, path: str) -> dict:
    """The node of ``schema`` (a generated configuration schema) describing key ``path``."""
    for part in path.split("."):
        schema = schema["properties"][part]
    return schema


def _named_by_origin(exc: ConfigError, source: str, origins: dict) -> ConfigError:
    """``exc`` naming the file or override that set its key in place of ``source`` (the
    params file, which may not mention the key at all)."""
    origin = _origin(origins, exc.key) if exc.key else None
    if origin is None or exc.source != source:
        return exc
    return ConfigError(origin + str(exc)[len(source) :], key=exc.key, source=origin)


# ---------------------------------------------------------------- validation: the schema


def _check_schema(cfg: dict, source: str) -> None:
    """The schema's verdict as one ConfigError. Of several wrong keys, the one reported is
    the one folk has always reported: types first (in the order of defaults.yaml), then the
    variant, then choices and ranges (in the order of CONSTRAINTS)."""
    errors = list(_schema_validator().iter_errors(cfg))
    wrong_types = _type_errors(errors)
    if wrong_types:
        raise _type_error(_first_in_defaults_order(wrong_types), source)
    _check_variant(cfg, source)
    wrong_values = [e for e in errors if e.validator in _VALUE_TEXTS]
    if wrong_values:
        raise _value_error(_first_in_constraints_order(wrong_values), source)


def _schema_validator():
    stat = DEFAULTS_PATH.stat()
    return _build_schema_validator(str(DEFAULTS_PATH), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _build_schema_validator(path: str, mtime_ns: int, size: int):
    # keyed by the defaults file's identity, as _parse_defaults is: an edited defaults.yaml
    # is a new schema
    draft = jsonschema.Draft202012Validator
    kind = jsonschema.validators.extend(
        draft,
        type_checker=draft.TYPE_CHECKER.redefine("integer", _is_integer),
        validators={
            keyword: _finite_first(draft.VALIDATORS[keyword]) for keyword in _RANGE_KEYWORDS
        },
    )
    return kind(_validation_schema())


def _is_integer(checker, value: Any) -> bool:
    # YAML tells 5 from 5.0 and folk has always refused 5.0 for an integer key; the JSON
    # schema drafts since 6 count 5.0 as an integer
    return isinstance(value, int) and not isinstance(value, bool)


_RANGE_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _finite_first(range_check):
    """The jsonschema keyword ``range_check`` refusing nan and the infinities before it
    compares: every comparison with nan is false, so a range alone lets nan through. The
    error's keyword is "finite" (a float that YAML reads from ``.nan`` or ``.inf``)."""

    def check(validator, bound, instance, schema):
        if isinstance(instance, float) and not math.isfinite(instance):
            yield jsonschema.ValidationError(f"{instance!r} is not finite", validator="finite")
            return
        yield from range_check(validator, bound, instance, schema)

    return check


def _validation_schema() -> dict:
    """json_schema() with the constraints that it leaves out added back, which folk has
    always checked: the range of an ENUM_NULLABLE key (only its types and choices are
    generated) and the item rules of a list whose default is empty (no item schema is
    generated for it). The workflow's schema stays as it is generated."""
    schema = json_schema()
    for path, rule in CONSTRAINTS.items():
        _add_missing_rules(_schema_node(schema, path), rule)
    return schema


def _add_missing_rules(node: dict, rule: dict) -> None:
    for keyword, value in rule.items():
        if keyword == "nullable":  # the generated types and choices have null already
            continue
        if keyword == "items" and isinstance(node.get("items"), dict):
            _add_missing_rules(node["items"], value)
        else:
            node.setdefault(keyword, copy.deepcopy(value))


def _split_path(error) -> tuple[str, tuple[int, ...]]:
    """The dotted key of a jsonschema error and the list indices below it."""
    parts = list(error.absolute_path)
    names = list(itertools.takewhile(lambda part: isinstance(part, str), parts))
    return ".".join(names), tuple(parts[len(names) :])


def _type_errors(errors: list) -> list:
    """The type errors, unknown keys included. An ENUM_NULLABLE key is the exception: a
    value that is not one of its choices has always been reported as such, whatever its type."""
    refused_choices = {tuple(e.absolute_path) for e in errors if e.validator == "enum"}
    return [
        e
        for e in errors
        if e.validator in ("type", "additionalProperties")
        and not (_split_path(e)[0] in ENUM_NULLABLE and tuple(e.absolute_path) in refused_choices)
    ]


def _first_in_defaults_order(errors: list):
    """By key as defaults.yaml lists them (a section before its keys), then by list item."""
    positions = {path: i for i, path in enumerate(_flat_keys(_defaults_shared()))}

    def order(error) -> tuple:
        key, indices = _split_path(error)
        return positions.get(key, -1), indices

    return min(errors, key=order)


_TYPE_WORDS = {
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
}


def _type_error(error, source: str) -> ConfigError:
    key, indices = _split_path(error)
    if error.validator == "additionalProperties":
        extra = next(name for name in error.instance if name not in error.schema["properties"])
        section = _get(_defaults_shared(), key) if key else _defaults_shared()
        return _unknown_key(
            f"{key}.{extra}" if key else extra, section, f"{key}." if key else "", source
        )
    types = (
        error.validator_value
        if isinstance(error.validator_value, list)
        else [error.validator_value]
    )
    want = _TYPE_WORDS[next(t for t in types if t != "null")]
    path = key + "".join(f"[{i}]" for i in indices)
    return ConfigError(
        f"{source}: key '{path}' must be {want}, got {error.instance!r} "
        f"({_type_name(error.instance)})",
        key=key,
        source=source,
    )


# the checks of one value (a key's, or an item's of a list) in the order they have always
# run: its choices, its length, its items, then its range
_VALUE_KEYWORDS = ("enum", "minItems", "maxItems", "items", "finite", *_RANGE_KEYWORDS)

_VALUE_TEXTS = {
    "enum": "is not one of {}",
    "minItems": "needs at least {} item(s)",
    "maxItems": "allows at most {} item(s)",
    "finite": "must be finite",
    "minimum": "must be >= {}",
    "maximum": "must be <= {}",
    "exclusiveMinimum": "must be > {}",
    "exclusiveMaximum": "must be < {}",
}


def _first_in_constraints_order(errors: list):
    """By key as CONSTRAINTS lists them, then as the checks of one value run
    (_VALUE_KEYWORDS), an item's checks in the place of "items"."""
    positions = {path: i for i, path in enumerate(CONSTRAINTS)}
    items = _VALUE_KEYWORDS.index("items")

    def order(error) -> tuple:
        key, indices = _split_path(error)
        descent = [step for i in indices for step in (items, i)]
        return (
            positions.get(key, len(positions)),
            *descent,
            _VALUE_KEYWORDS.index(error.validator),
        )

    return min(errors, key=order)


def _value_error(error, source: str) -> ConfigError:
    """The message names the key, not the item (``a.b``, not ``a.b[0]``), with the item's
    value and the choices as CONSTRAINTS states them (the schema adds null to some)."""
    key, indices = _split_path(error)
    bound = error.validator_value
    if error.validator == "enum":
        rule = CONSTRAINTS.get(key, {})
        for _ in indices:
            rule = rule.get("items", {})
        bound = rule.get("enum", bound)
    text = _VALUE_TEXTS[error.validator].format(bound)
    return ConfigError(f"{source}: key '{key}' = {error.instance!r} {text}", key=key, source=source)


# ---------------------------------------------------------------- validation: cross-key rules


def _check_finite(node: Any, source: str, path: str = "") -> None:
    """nan and inf are floats to YAML (``.nan``, ``.inf``) and pass every type check, and a
    range check cannot catch nan (every comparison with it is false); no key of folk means
    anything by them, so every float of the resolved configuration must be finite, free-form
    mappings and list items included."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, source, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, source, f"{path}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(
            f"{source}: key '{path}' = {node!r} must be a finite number",
            key=path.split("[", 1)[0],
            source=source,
        )


# numpy's legacy seeding (np.random.seed, used with experiment.seed) takes 0 <= seed < 2**32
SEED_RANGE = (0, 2**32)


def _check_seeds(cfg: dict, source: str) -> None:
    """Here rather than in CONSTRAINTS, so that the generated workflow schema is unchanged;
    a seed out of numpy's range would otherwise fail only when training starts."""
    lo, hi = SEED_RANGE
    seeds = [("experiment.seed", cfg["experiment"]["seed"])]
    seeds += [(f"workflow.seeds[{i}]", s) for i, s in enumerate(cfg["workflow"]["seeds"])]
    seeds += [
        (f"eval.fewshot.seeds[{i}]", s) for i, s in enumerate(cfg["eval"]["fewshot"]["seeds"])
    ]
    for key, seed in seeds:
        if isinstance(seed, int) and not lo <= seed < hi:
            raise ConfigError(
                f"{source}: key '{key}' = {seed!r} must be between {lo} and "
                f"2**32 - 1 (the seeds numpy accepts)",
                key=key.split("[", 1)[0],
                source=source,
            )


def _check_architecture(cfg: dict, source: str) -> None:
    """model.arch must be a timm model, and the ViT the configuration describes must be
    buildable: checked now, before any data is read, not when training starts."""
    m = cfg["model"]
    arch = m["arch"]
    known = _timm_architectures()
    name = arch.split(".", 1)[0]  # timm accepts "name.pretrained_tag"
    if known and name not in known:
        hint = difflib.get_close_matches(name, sorted(known), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(
            f"{source}: key 'model.arch' = {arch!r} is not a timm architecture{extra}",
            key="model.arch",
            source=source,
        )
    if recipes.is_resnet(arch):
        return
    own = dict(_arch_defaults(known.get(name, "")))
    embed_dim = m["embed_dim"] or own.get("embed_dim", 0)
    num_heads = m["num_heads"] or own.get("num_heads", 0)
    if (m["embed_dim"] or m["num_heads"]) and num_heads and embed_dim % num_heads != 0:
        mark = lambda key: "" if m[key] else f" ({arch}'s own)"  # noqa: E731
        raise ConfigError(
            f"{source}: key 'model.embed_dim' = {embed_dim}{mark('embed_dim')} "
            f"is not divisible by model.num_heads = {num_heads}"
            f"{mark('num_heads')}: attention splits the width across heads",
            key="model.embed_dim",
            source=source,
        )
    patch = m["patch_size"]
    crop = cfg["eval"]["segmentation"]["crop_size"]
    if crop % patch != 0:
        raise ConfigError(
            f"{source}: key 'eval.segmentation.crop_size' = {crop} is not a "
            f"multiple of model.patch_size = {patch}",
            key="eval.segmentation.crop_size",
            source=source,
        )


@functools.lru_cache(maxsize=1)
def _timm_architectures() -> dict[str, str]:
    """timm's architecture names, each with the source of its entry point ("" for a
    deprecated alias); empty when timm is not installed (nothing to check against).

    Read from timm's source files, not its registry: importing timm imports torch, which
    would cost ``folk config`` seconds. The names are those of ``@register_model``
    functions and of ``register_model_deprecations`` tables, which is how timm registers
    them; when timm is imported already, its registry is used instead."""
    if "timm" in sys.modules:
        from timm.models import _registry  # noqa: PLC0415  torch-free: timm only when loaded

        names = {n: "" for n in sys.modules["timm"].list_models()}
        names.update({n: "" for n in getattr(_registry, "_deprecated_models", {})})
        # the entry points' source still gives the default shapes
        return {**names, **{n: src for n, src in _scan_timm().items() if n in names}}
    if importlib.util.find_spec("timm") is None:
        return {}
    return _scan_timm()


def _scan_timm() -> dict[str, str]:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    names: dict[str, str] = {}
    for path in sorted(Path(spec.submodule_search_locations[0], "models").glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        starts = [
            (m.start(), m.group(1))
            for m in re.finditer(r"^@register_model\s*\ndef (\w+)\(", text, re.M)
        ]
        for i, (start, name) in enumerate(starts):
            end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
            names[name] = text[start:end]
        for table in re.finditer(
            r"register_model_deprecations\(\s*__name__\s*,\s*\{(.*?)\}", text, re.S
        ):
            for old in re.findall(r"['\"]([\w.-]+)['\"]\s*:", table.group(1)):
                names.setdefault(old, "")
    return names


def _arch_defaults(entry_source: str) -> tuple[tuple[str, int], ...]:
    """embed_dim and num_heads an entry point passes to its ViT (``model_args = dict(...)``
    in timm); what it does not state plainly is left out, and then not checked."""
    found = []
    for key in ("embed_dim", "num_heads"):
        match = re.search(rf"\b{key}=(\d+)\b", entry_source)
        if match:
            found.append((key, int(match.group(1))))
    return tuple(found)


def _origin(origins: dict, key: str) -> str | None:
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return None


def _check_variant(cfg: dict, source: str) -> None:
    """The variant first: resolution, which the other checks see, starts from it."""
    variant = cfg["pretrain"]["variant"]
    if variant not in VARIANTS:
        raise ConfigError(
            f"{source}: key 'pretrain.variant' = {variant!r} is not one of {sorted(VARIANTS)}",
            key="pretrain.variant",
            source=source,
        )


def _cross_checks(cfg: dict, source: str) -> None:
    m, f = cfg["model"], cfg["filter"]
    p = cfg["pretrain"]
    for v in cfg["workflow"]["variants"]:
        if v not in VARIANTS:
            raise ConfigError(
                f"{source}: key 'workflow.variants' has unknown variant {v!r}; "
                f"known: {sorted(VARIANTS)}",
                key="workflow.variants",
                source=source,
            )
    size = m["img_size"]
    radius = scaled_radius(cfg)
    if radius >= size / 2:
        raise ConfigError(
            f"{source}: key 'filter.mfm_radius' = {f['mfm_radius']} gives radius {radius:.2f} px "
            f"at img_size {size}, larger than the image (must be < {size / 2})",
            key="filter.mfm_radius",
            source=source,
        )
    if not recipes.is_resnet(m["arch"]) and size % m["patch_size"] != 0:
        raise ConfigError(
            f"{source}: key 'model.patch_size' = {m['patch_size']} does not divide "
            f"model.img_size = {size}",
            key="model.patch_size",
            source=source,
        )
    if (
        len(cfg["data"]["mean"]) != cfg["data"]["in_chans"]
        or len(cfg["data"]["std"]) != cfg["data"]["in_chans"]
    ):
        # two keys at fault and no one of them to blame: the params file stays the source
        raise ConfigError(
            f"{source}: keys 'data.mean'/'data.std' need data.in_chans = "
            f"{cfg['data']['in_chans']} values",
            source=source,
        )
    if p["batch_size"] % p["accum_steps"] != 0:
        raise ConfigError(
            f"{source}: key 'pretrain.batch_size' = {p['batch_size']} is not a "
            f"multiple of pretrain.accum_steps = {p['accum_steps']}",
            key="pretrain.batch_size",
            source=source,
        )
    if cfg["data"]["on_device"] and cfg["augment"]["photometric"] != "device":
        raise ConfigError(
            f"{source}: key 'data.on_device' = true needs augment.photometric = "
            f"'device' (got {cfg['augment']['photometric']!r}): the views are "
            f"made on the device",
            key="data.on_device",
            source=source,
        )
    for path in ("augment.crop_scale", "augment.local_crops_scale"):
        lo, hi = _get(cfg, path)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(
                f"{source}: key '{path}' = {[lo, hi]} must satisfy 0 < lo <= hi <= 1",
                key=path,
                source=source,
            )


def check_filter_radii(cfg: dict, source: str = "configuration") -> None:
    """Each robustness radius must give its own low-pass mask at ``model.img_size``: a radius
    of 1 px or less keeps only the zero frequency, and two radii with no frequency between
    them give the same filtered images (two identical columns). Checked by the robustness
    evaluation and by the workflow when it runs one, not for every configuration: the
    defaults are stated for 224 px."""
    size, ref = cfg["model"]["img_size"], cfg["filter"]["mfm_radius_ref_size"]
    half = [v * v for v in range(-(size // 2), size - size // 2)]
    distances = sorted({a + b for a in set(half) for b in set(half)})
    masks: dict[int, float] = {}
    for r in cfg["eval"]["robustness"]["filter_radii"]:
        px = r * size / ref
        if px <= 1:
            raise ConfigError(
                f"{source}: key 'eval.robustness.filter_radii' has {r:g} (stated at {ref:g} px), "
                f"{px:.2f} px at model.img_size = {size}: its low-pass keeps only the zero "
                f"frequency; give radii above {ref / size:.3g} at {ref:g} px",
                key="eval.robustness.filter_radii",
                source=source,
            )
        kept = sum(1 for d in distances if d < px * px)
        if kept in masks:
            raise ConfigError(
                f"{source}: key 'eval.robustness.filter_radii': {masks[kept]:g} and {r:g} (at "
                f"{ref:g} px) give the same filter at model.img_size = {size} (no frequency "
                f"lies between {masks[kept] * size / ref:.2f} and {px:.2f} px)",
                key="eval.robustness.filter_radii",
                source=source,
            )
        masks[kept] = r


# ---------------------------------------------------------------- resolution


def _set_if_null(cfg: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = _get(cfg, ".".join(parents))
    if node[leaf] is None:
        node[leaf] = copy.deepcopy(value)


SUBSET_SPLITS = ("train", "test")  # the splits of data.*_subset and eval.*_subset


def resolve(cfg: dict) -> dict:
    """Fill every null key from what decides it, so that the saved ``config.yaml`` says
    everything the run did: ``method.*`` from the variant, ``augment.*`` from the
    augmentation preset, the optimisation keys from the optimisation recipe (both the
    variant's source under ``auto``; folk/recipes.py), and the per-architecture choices.
    Keys already set are kept, so resolving a resolved configuration changes nothing."""
    cfg = copy.deepcopy(cfg)
    spec = VARIANTS[cfg["pretrain"]["variant"]]
    method = cfg["method"]
    for key in method:
        if method[key] is None and key in spec:
            method[key] = spec[key]
    if method["p_com"] is None:
        method["p_com"] = cfg["filter"]["p_com"]

    a = cfg["augment"]
    if a["preset"] == "auto":
        a["preset"] = spec["augment"]
    for key, value in recipes.augment_values(a["preset"], a["local_crops_number"]).items():
        _set_if_null(cfg, f"augment.{key}", value)

    p = cfg["pretrain"]
    if p["optim_recipe"] == "auto":
        p["optim_recipe"] = spec["optim"]
    for path, value in recipes.OPTIM_RECIPES[p["optim_recipe"]].items():
        _set_if_null(cfg, path, value)
    for path, value in recipes.arch_values(cfg["model"]["arch"], cfg["model"]["depth"]).items():
        _set_if_null(cfg, path, value)
    for split in SUBSET_SPLITS:
        _set_if_null(cfg, f"eval.{split}_subset", cfg["data"][f"{split}_subset"])
    return cfg


def evaluated_subset(cfg: dict, split: str) -> int:
    """How many images of ``split`` the evaluations see (0: the whole split):
    ``eval.<split>_subset``, or ``data.<split>_subset`` (the pre-training images') while it
    is null. The one place that decides it: eval_config gives it to the evaluations as their
    ``data.<split>_subset``, the report reads it from a run's configuration."""
    value = cfg.get("eval", {}).get(f"{split}_subset")
    return cfg["data"][f"{split}_subset"] if value is None else value


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a value shared by two keys out twice: read_params refuses aliases, and a
    run's config.yaml must read back."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump_config(cfg: dict) -> str:
    return yaml.dump(cfg, Dumper=_NoAliasDumper, sort_keys=False)


def save_config(cfg: dict, path: str | Path) -> None:
    atomic_write_text(Path(path), dump_config(cfg))


def load_run_config(run_dir: str | Path) -> dict:
    """The resolved ``config.yaml`` of a run directory, re-validated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory not found: {run_dir}", source=str(run_dir))
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: no config.yaml; is this a folk run directory?", source=str(run_dir)
        )
    return load_config(path)


# keys an evaluation may change in a run's configuration; the rest define the run itself
EVAL_OVERRIDABLE = ("eval.", "data.root", "data.num_workers", "experiment.run_name")


def eval_config(run_dir: Path, params: str | None, overrides: list[str]) -> dict:
    """A run's configuration as one of its evaluations reads it: the run's ``config.yaml``,
    then the ``eval`` section of ``params``, then ``overrides`` (``EVAL_OVERRIDABLE`` keys
    only: a ConfigError names any other), validated and resolved; its ``data.*_subset`` are
    the evaluations' (``evaluated_subset``), not the pre-training's."""
    cfg = load_run_config(run_dir)
    if params:
        data = read_params(params)
        if "eval" in data:
            cfg = merge_into(cfg, {"eval": data["eval"]}, params)
    for item in overrides:
        key, value = parse_override(item)
        if not key.startswith(EVAL_OVERRIDABLE):
            raise ConfigError(
                f"--set {key}: an evaluation may only change "
                f"{', '.join(EVAL_OVERRIDABLE)}; '{key}' belongs to the run",
                key=key,
                source=f"--set {key}",
            )
        cfg = merge_into(cfg, _nest(key, value), f"--set {key}")
    validate(cfg, params or str(Path(run_dir) / "config.yaml"))
    cfg = resolve(cfg)
    # every evaluation draws its images through data.*_subset (folk.data.build_dataset), and
    # its feature cache is keyed by the data section: both then follow eval.*_subset
    for split in SUBSET_SPLITS:
        cfg["data"][f"{split}_subset"] = evaluated_subset(cfg, split)
    return cfg


# ---------------------------------------------------------------- JSON schema


@functools.lru_cache(maxsize=1)
def _json_schema_shared() -> dict:
    return json_schema()


def json_schema() -> dict:
    """JSON schema (draft 2020-12) of the whole configuration, with defaults, for Snakemake."""

    def node(path: str, default: Any, decided: bool = False) -> dict:
        rule = {k: v for k, v in CONSTRAINTS.get(path, {}).items() if k != "nullable"}
        if path in ENUM_NULLABLE:
            out = {"type": ENUM_NULLABLE[path] + ["null"]}
            if "enum" in rule:
                out["enum"] = rule["enum"] + [None]
            return {**out, "default": default}
        if path in NULLABLE and not decided:  # null: resolution decides (folk/recipes.py)
            out = node(path, NULLABLE[path], decided=True)
            if "enum" in out:
                out["enum"] = out["enum"] + [None]
            return {**out, "type": [out["type"], "null"], "default": None}
        if isinstance(default, dict) and path not in FREE_FORM:
            return {
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    k: node(f"{path}.{k}" if path else k, v) for k, v in default.items()
                },
            }
        if isinstance(default, dict):
            return {"type": "object", "default": default}
        if isinstance(default, bool):
            out = {"type": "boolean"}
        elif isinstance(default, int):
            out = {"type": "integer"}
        elif isinstance(default, float):
            out = {"type": "number"}
        elif isinstance(default, str):
            out = {"type": "string"}
        elif isinstance(default, list):
            out = {"type": "array"}
            if default:
                item = node(path + "[]", default[0])
                item.pop("default", None)
                out["items"] = item
        else:
            out = {}
        item_rule = rule.pop("items", None)
        if item_rule and "items" in out:
            _merge_rule(out["items"], item_rule)
        out.update(rule)
        out["default"] = default
        return out

    schema = node("", defaults())
    section, _, name = ablations.SECTION.rpartition(".")
    entries = schema["properties"][section]["properties"]

    def key_schema(path: str) -> dict:
        return {k: v for k, v in _schema_node(schema, path).items() if k != "default"}

    entries[name] = ablations.json_schema(defaults()[section][name], key_schema)
    # the comments of defaults.yaml; a free-form mapping's entries are its default, not keys
    known = set(_flat_keys(_defaults_shared()))
    for path, text in key_descriptions(DEFAULTS_PATH).items():
        if path in known:
            _schema_node(schema, path)["description"] = text
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "folk-repro configuration (generated by `folk schema`; do not edit)"
    return schema


def _merge_rule(schema: dict, rule: dict) -> None:
    """Add a constraint to a generated schema node, descending into nested ``items`` so that
    the generated item types are kept."""
    for key, value in rule.items():
        if key == "items" and isinstance(schema.get("items"), dict):
            _merge_rule(schema["items"], value)
        else:
            schema[key] = value


def json_schema_yaml() -> str:
    return yaml.safe_dump(json_schema(), sort_keys=False)


REFERENCE_COMMAND = "folk schema --markdown --out docs/configuration.md"


def markdown_reference_text() -> str:
    """The Markdown configuration reference (docs/configuration.md), from the schema."""
    return markdown_reference(json_schema(), FREE_FORM, REFERENCE_COMMAND)
