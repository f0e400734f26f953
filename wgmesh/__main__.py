"""`python -m wgmesh`, and the `wgmesh` console script (pyproject.toml [project.scripts])."""

import gc


def main() -> None:
    # Start-up (imports, Typer building the commands, parsing) makes objects that live until the
    # end, and the cyclic GC would walk them again and again as they pile up (~5% of the start).
    # It stays off until the command's work begins: wgmesh.cli.app.run turns it back on.
    gc.disable()
    from wgmesh.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
