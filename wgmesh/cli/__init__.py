"""The command line: Typer commands (commands.py, lifecycle.py) over the one error ladder (app.py);
output.py is the only module that prints."""

from wgmesh.cli import lifecycle  # registers its commands after commands.py's
from wgmesh.cli.commands import app, main

__all__ = ["app", "lifecycle", "main"]
