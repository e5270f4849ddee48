"""Whole screens of the TUI: menu, host form, join, cluster, help."""
