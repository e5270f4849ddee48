"""The pure core of lanray-tui: no Textual, no Rich. The CLI and the TUI both call it."""
