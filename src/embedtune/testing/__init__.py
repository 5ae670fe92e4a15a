"""Helpers for testing and benchmarking embedtune against real HTTP: a fault-injecting embedding server;
and (``embedtune.testing.resume``) ``optimize`` killed mid-search and run again.

Names are imported lazily, so ``python -m embedtune.testing.fault_server`` runs without a warning.
"""

from __future__ import annotations

__all__ = ["FaultConfig", "FaultServer", "FaultStats"]


def __getattr__(name: str):
    if name in __all__:
        from . import fault_server

        return getattr(fault_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
