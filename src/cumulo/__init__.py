"""Cumulo: one daemon per host (cumulod) and one CLI (cumulo) for isolated compute."""

__version__ = "0.1.0"
