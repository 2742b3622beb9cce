"""`meeting-loadtest`: many simulated clients per process, several processes, one report.

Modules: ``cli`` (options), ``runner`` (processes, progress bar), ``worker`` (one process's
event loop), ``sim`` (one simulated client on raw frames), ``scenarios``, ``metrics``,
``report`` (table, JSON, plot).
"""
from .cli import main

__all__ = ["main"]
