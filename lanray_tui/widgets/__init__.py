"""Reusable parts of the TUI's screens."""
