"""The student filters, one row each: the function that makes the views, the configuration
keys its arguments come from, and how the report names it.

Torch-free, so that the configuration's choices of ``method.filter``, the workflow and the
report read the names from here; the functions themselves (``folk.filters``) are imported
only when a view is made. Adding a filter is its function (in ``folk/filters.py`` or a
module of its own) plus one row of :data:`FILTERS`; docs/extending.md, "How to add a filter".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from folk.errors import ConfigError
from folk.utils.keys import config_value
from folk.utils.text import fmt_number

# Keys at this value hold for views of filter.mfm_radius_ref_size px: a radius or a patch
# side stated for 224 px images means proportionally less at 32 px
REF_SIZE_KEY = "filter.mfm_radius_ref_size"


def scaled_radius(cfg: dict, size: int | None = None) -> float:
    """MFM's radius for views of ``size`` px (default ``model.img_size``)."""
    f = cfg["filter"]
    return f["mfm_radius"] * (size or cfg["model"]["img_size"]) / f["mfm_radius_ref_size"]


def scaled_patch(cfg: dict, size: int | None = None) -> int:
    """The pixel-masking patch side for views of ``size`` px (default ``model.img_size``)."""
    f = cfg["filter"]
    side = f["patch_mask_size"] * (size or cfg["model"]["img_size"]) / f["mfm_radius_ref_size"]
    return max(1, round(side))


@dataclass(frozen=True)
class Argument:
    """One keyword argument of a filter: the configuration keys it is read from and its value
    for views of a given size (in px) under a resolved configuration."""

    keys: tuple[str, ...]
    value: Callable[[dict, int | None], Any]


def key(path: str) -> Argument:
    """The argument is the configuration value at ``path``, whatever the view size."""
    return Argument((path,), lambda cfg, size: config_value(cfg, path))


def listed(path: str) -> Argument:
    """As :func:`key`, as a fresh list (the filter may keep it)."""
    return Argument((path,), lambda cfg, size: list(config_value(cfg, path)))


RADIUS = Argument(("filter.mfm_radius", REF_SIZE_KEY, "model.img_size"), scaled_radius)
PATCH_SIDE = Argument(("filter.patch_mask_size", REF_SIZE_KEY, "model.img_size"), scaled_patch)


def _com_rcom_label(cfg: dict) -> str:
    p = cfg["method"]["p_com"]
    if p == 1.0:
        return "Com only"
    if p == 0.0:
        return "RCom only"
    return f"Com/RCom (p_com={fmt_number(p)})"


@dataclass(frozen=True)
class FilterSpec:
    """``function`` (``"module:attribute"``) is called as
    ``f(x, generator=generator, **arguments)`` and returns ``(x_filtered, mask)``
    (folk/filters.py, the module docstring)."""

    function: str
    arguments: dict[str, Argument] = field(default_factory=dict)
    label: Callable[[dict], str] = lambda cfg: ""

    @property
    def config_keys(self) -> tuple[str, ...]:
        """Every configuration key the filter's arguments read, in order, once."""
        return tuple(dict.fromkeys(k for a in self.arguments.values() for k in a.keys))

    def kwargs(self, cfg: dict, size: int | None = None) -> dict[str, Any]:
        """The arguments for views of ``size`` px (default ``model.img_size``)."""
        return {name: arg.value(cfg, size) for name, arg in self.arguments.items()}

    def load(self) -> Callable:
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)


FILTERS: dict[str, FilterSpec] = {
    "com_rcom": FilterSpec(
        "folk.filters:com_rcom",
        {
            "portions": listed("filter.portions"),
            "p_com": key("method.p_com"),
            "per_channel": key("filter.per_channel"),
            "clamp": key("filter.clamp"),
        },
        _com_rcom_label,
    ),
    "mfm": FilterSpec(
        "folk.filters:mfm",
        {"radius": RADIUS, "p_low": key("filter.mfm_p_low"), "clamp": key("filter.clamp")},
        lambda cfg: (
            f"MFM low/high-pass (r={fmt_number(cfg['filter']['mfm_radius'])}"
            f"@{cfg['filter']['mfm_radius_ref_size']}px)"
        ),
    ),
    "random_frequency": FilterSpec(
        "folk.filters:random_frequency",
        {"rho": key("filter.random_rho"), "clamp": key("filter.clamp")},
        lambda cfg: f"random frequency (rho={fmt_number(cfg['filter']['random_rho'])})",
    ),
    "random_patch": FilterSpec(
        "folk.filters:random_patch",
        {
            "patch_ratio": key("filter.patch_mask_ratio"),
            "patch_size": PATCH_SIDE,
            "clamp": key("filter.clamp"),
        },
        lambda cfg: (
            f"random patch ({fmt_number(cfg['filter']['patch_mask_ratio'] * 100)}%, "
            f"{cfg['filter']['patch_mask_size']}px)"
        ),
    ),
    "none": FilterSpec("folk.filters:unmasked", {}, lambda cfg: "none (unmasked views)"),
}


def filter_spec(name: str) -> FilterSpec:
    """The row of ``name``; a ConfigError naming the choices when there is none."""
    if name not in FILTERS:
        raise ConfigError(
            f"method.filter: unknown filter {name!r}; choose one of {', '.join(FILTERS)}"
        )
    return FILTERS[name]
