"""The command line: Typer commands (commands.py) over the one error ladder (app.py); output.py
is the only module that prints."""

from wgmesh.cli.commands import app, main

__all__ = ["app", "main"]
