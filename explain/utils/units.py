"""Numbers as people read them, shared by every view (console, widgets, device plan)."""

from __future__ import annotations


def size_text(n) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 513.1 MiB, 15.0 GiB, 1.23 TiB; "?" when unknown."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB" if abs(n) < 10 else f"{n:.1f} TiB"
