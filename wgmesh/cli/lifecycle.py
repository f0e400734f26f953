"""The commands that move a mesh's state or end it: failover (an HA site to its other gateway),
migrate and unlock (a shared backend), destroy. Registered on the app after commands.py's."""

from typing import TYPE_CHECKING

import typer

from wgmesh.cli.app import BACKEND_OPT, JSON_OPT, PARALLEL_OPT, app, need_inventory, run
from wgmesh.cli.commands import STRICT_OPT, hosts, reporter

if TYPE_CHECKING:
    from wgmesh.commands import Result
    from wgmesh.workspace import Workspace


@app.command()
def failover(
    ctx: typer.Context,
    site: str = typer.Argument(..., help="An HA site (two gateways), e.g. site2."),
    to: str | None = typer.Option(None, "--to", help="The gateway to make active [default: the standby]."),
    parallel: int = PARALLEL_OPT,
    strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Planned switch of an HA site to its other gateway (maintenance, failback); waits until every host follows."""
    from wgmesh.commands import failover as cmd

    run(ctx, "failover", lambda ws: cmd.failover(ws, site, to, parallel, hosts(strict_host_keys)), as_json,
        pre=need_inventory)


@app.command()
def destroy(
    ctx: typer.Context,
    parallel: int = PARALLEL_OPT,
    no_stop: bool = typer.Option(False, "--no-stop", help="Do not SSH to the peers to stop WireGuard first."),
    strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Stop WireGuard on the peers, terraform destroy, remove configs and pins, forget Terraform peers."""
    from wgmesh.commands import destroy as cmd

    def body(ws: "Workspace") -> "Result":
        with reporter(quiet=as_json) as rep:
            return cmd.destroy(ws, rep, parallel, stop=not no_stop, connect=hosts(strict_host_keys))

    run(ctx, "destroy", body, as_json, pre=need_inventory)


@app.command()
def migrate(
    ctx: typer.Context,
    to: str = typer.Option(
        ..., "--backend", help="Where the inventory goes: s3://BUCKET/PREFIX, or local (back into this directory)."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Move the inventory (keys, pins, revocations, Terraform state) to a shared backend or back.

    Every part is copied, read back and compared before the source copy is removed."""
    from wgmesh.commands import migrate as cmd

    def body(ws: "Workspace") -> "Result":
        with reporter(quiet=as_json) as rep:
            return cmd.migrate(ws, to, rep)

    run(ctx, "migrate", body, as_json, where_it_is=True)


@app.command()
def unlock(
    ctx: typer.Context,
    lock_id: str = typer.Argument(
        ..., metavar="LOCK_ID", help="The lock's id, as the message of the refused run names it."),
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Remove a shared inventory's run lock left by a crashed run (never done automatically)."""
    from wgmesh.commands import unlock as cmd

    run(ctx, "unlock", lambda ws: cmd.unlock(ws, lock_id), as_json, lock=False)
