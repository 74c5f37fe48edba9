"""Dotted configuration keys (``filter.p_com``) read from a nested configuration."""

from __future__ import annotations

from typing import Any


def config_value(cfg: dict, path: str) -> Any:
    """The value at ``path`` of the nested mapping ``cfg``; KeyError when a part is absent."""
    node = cfg
    for part in path.split("."):
        node = node[part]
    return node
