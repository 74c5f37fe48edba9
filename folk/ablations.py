"""Ablations as data: ``workflow.ablations`` maps a name to the configuration key (or keys)
one of its values sets, and the values; each value is one more pre-training run of
``workflow.ablation_variant``, named ``<ablation_variant>-<name><value>``. The workflow
makes the runs from it, the configuration is validated with it and the report builds the
ablation's table from it (``title``, and ``labels`` for the columns of the set keys).

An entry::

    loss_weights:
      set: [pretrain.lambda_rec, pretrain.lambda_kd]   # or one key: set: filter.p_com
      values: [[1.0, 0.5], [0.5, 1.0]]                 # with one key, each value is its value
      title: "Ablation: loss weights"
      labels: [λ_rec, λ_kd]

A params file may give a list for an entry that exists already: it replaces that entry's
``values`` (``p_com: [0.25]``), which keeps the short form of earlier params files working.
Torch-free: the workflow imports it.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import jsonschema

from folk.errors import ConfigError

SECTION = "workflow.ablations"
ENTRY_KEYS = ("set", "values", "title", "labels")
# keys that do not change what pre-training computes: an ablation of them is the same run
NOT_RUN_DEFINING = ("experiment.", "workflow.", "launch.", "slurm.", "eval.")


@dataclass(frozen=True)
class Ablation:
    """One validated entry of ``workflow.ablations``."""

    name: str
    keys: tuple[str, ...]
    values: tuple
    title: str
    labels: tuple[str, ...]
    one_key: bool  # `set` names one key, and each value is that key's value

    def settings(self, value: Any) -> tuple:
        """The value of each set key, in the order of ``keys``."""
        return (value,) if self.one_key else tuple(value)

    def sets(self, value: Any) -> list[str]:
        """The ``--set`` items that make the run of ``value``."""
        return [f"{k}={json.dumps(v)}" for k, v in zip(self.keys, self.settings(value))]

    def run_name(self, base_variant: str, value: Any) -> str:
        return f"{base_variant}-{self.name}{value_label(value)}"


def value_label(value: Any) -> str:
    """``[0.005, 0.01]`` -> ``0.005_0.01``; ``100`` -> ``100`` (run names are directory names)."""
    items = value if isinstance(value, list) else [value]
    return "_".join(format(v, "g") if isinstance(v, float) else str(v) for v in items)


def merge_entries(entries: dict, update: Any, source: str, origins: dict | None = None) -> None:
    """Merge a params file's ``workflow.ablations`` into ``entries`` in place: a mapping
    updates (or adds) an entry key by key, a list replaces the ``values`` of an existing
    entry. The result is checked by :func:`check_ablations`."""
    if not isinstance(update, dict):
        raise ConfigError(
            f"{source}: key '{SECTION}' must be a mapping of ablation names to "
            f"entries, got {update!r}",
            key=SECTION,
            source=source,
        )
    for name, entry in update.items():
        path = f"{SECTION}.{name}"
        if isinstance(entry, list) and isinstance(entries.get(name), dict):
            entries[name] = {**entries[name], "values": entry}
        elif isinstance(entry, dict) and isinstance(entries.get(name), dict):
            entries[name] = {**entries[name], **entry}
        elif isinstance(entry, dict):
            entries[name] = dict(entry)
        else:
            raise ConfigError(
                f"{source}: key '{path}' must be a mapping with 'set' and 'values' (a list of "
                f"values alone only changes an ablation that exists), got {entry!r}",
                key=path,
                source=source,
            )
        if origins is not None:
            origins[path] = source


def check_ablations(
    cfg: dict, source: str, leaf_keys: Iterable[str], key_schema: Callable[[str], dict]
) -> dict[str, Ablation]:
    """Every entry of ``workflow.ablations``, checked: its set keys exist and define the
    run, each value has one item per key and is valid for its key (``key_schema(key)``:
    the JSON schema of that key). Returns the entries in order."""
    known = set(leaf_keys)
    out = {}
    for name, entry in cfg["workflow"]["ablations"].items():
        out[name] = _check_entry(str(name), entry, source, known, key_schema)
    return out


def ablations(cfg: dict) -> dict[str, Ablation]:
    """The entries of a configuration that has been validated (``load_config``)."""
    return {name: _entry(name, entry) for name, entry in cfg["workflow"]["ablations"].items()}


def _entry(name: str, entry: dict) -> Ablation:
    one_key = isinstance(entry["set"], str)
    keys = (entry["set"],) if one_key else tuple(entry["set"])
    labels = entry.get("labels") or list(keys)
    return Ablation(
        name,
        keys,
        tuple(entry["values"]),
        entry.get("title") or f"Ablation: {name}",
        tuple(labels),
        one_key,
    )


def _check_entry(
    name: str, entry: Any, source: str, known: set[str], key_schema: Callable[[str], dict]
) -> Ablation:
    path = f"{SECTION}.{name}"

    def bad(message: str, where: str = path) -> ConfigError:
        return ConfigError(f"{source}: key '{where}' {message}", key=where, source=source)

    if not isinstance(entry, dict):
        raise bad(f"must be a mapping with 'set' and 'values', got {entry!r}")
    for k in entry:
        if k not in ENTRY_KEYS:
            raise bad(f"is not one of {', '.join(ENTRY_KEYS)}", f"{path}.{k}")
    for k in ("set", "values"):
        if k not in entry:
            raise bad(
                f"needs '{k}'"
                + (
                    ": the configuration key (or list of keys) a value gives"
                    if k == "set"
                    else ": the list of values"
                )
            )
    keys = entry["set"]
    if isinstance(keys, str):
        keys = [keys]
    elif not (isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)):
        raise bad(
            f"must be a configuration key or a non-empty list of them, got {keys!r}", f"{path}.set"
        )
    for k in keys:
        if k not in known:
            hint = difflib.get_close_matches(k, sorted(known), n=1)
            raise bad(
                f"names unknown key {k!r}" + (f" (did you mean '{hint[0]}'?)" if hint else ""),
                f"{path}.set",
            )
        if k.startswith(NOT_RUN_DEFINING):
            raise bad(
                f"names {k!r}, which does not change what pre-training computes", f"{path}.set"
            )
    if len(set(keys)) != len(keys):
        raise bad(f"names a key twice: {keys}", f"{path}.set")
    for k, want in (("title", str), ("labels", list)):
        if entry.get(k) is not None and not isinstance(entry[k], want):
            raise bad(
                f"must be a {'string' if want is str else 'list'}, got {entry[k]!r}", f"{path}.{k}"
            )
    if entry.get("labels") is not None and len(entry["labels"]) != len(keys):
        raise bad(
            f"needs one label per set key ({len(keys)}), got {entry['labels']!r}", f"{path}.labels"
        )
    values = entry["values"]
    if not isinstance(values, list):
        raise bad(f"must be a list, got {values!r}", f"{path}.values")
    ablation = _entry(name, entry)
    validators = [jsonschema.Draft202012Validator(key_schema(k)) for k in keys]
    for value in values:
        if not ablation.one_key and not (isinstance(value, list) and len(value) == len(keys)):
            raise bad(
                f"has {value!r}: each value is a list of {len(keys)} item(s), one per "
                f"key of 'set' ({', '.join(keys)})",
                f"{path}.values",
            )
        for k, v, validator in zip(keys, ablation.settings(value), validators):
            error = jsonschema.exceptions.best_match(validator.iter_errors(v))
            if error is not None:
                raise bad(
                    f"has {value!r}, not a valid value of '{k}': {error.message}", f"{path}.values"
                )
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise bad(f"repeats a value: {values!r}", f"{path}.values")
    return ablation


def json_schema(defaults: dict, key_schema: Callable[[str], dict]) -> dict:
    """The schema of ``workflow.ablations``: any named entry; those of the defaults may also
    be given as their list of values, each checked against its key's schema."""

    def values_schema(keys: list[str] | None, one_key: bool) -> dict:
        if keys is None:
            return {"type": "array"}
        if one_key:
            return {"type": "array", "items": key_schema(keys[0])}
        return {
            "type": "array",
            "items": {
                "type": "array",
                "minItems": len(keys),
                "maxItems": len(keys),
                "prefixItems": [key_schema(k) for k in keys],
            },
        }

    def entry_schema(keys: list[str] | None, one_key: bool, required: list[str]) -> dict:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": required,
            "properties": {
                "set": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    ]
                },
                "values": values_schema(keys, one_key),
                "title": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}},
            },
        }

    properties = {}
    for name, entry in defaults.items():
        one_key = isinstance(entry["set"], str)
        keys = [entry["set"]] if one_key else list(entry["set"])
        properties[name] = {
            "anyOf": [values_schema(keys, one_key), entry_schema(keys, one_key, [])],
            "default": entry,
        }
    return {
        "type": "object",
        "default": defaults,
        "properties": properties,
        "additionalProperties": entry_schema(None, False, ["set", "values"]),
    }
