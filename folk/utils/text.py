"""How configuration values are written for people: labels, table cells, run names."""

from __future__ import annotations


def fmt_number(value: float) -> str:
    """Compact text of a configuration number: 0.5, 1, 0.005."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    return f"{value:g}"
