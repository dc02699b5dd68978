"""CLI commands of this area (registered by cspon_rs.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's subcommands to ``app``."""
