"""Typer commands: each is options → command (wgmesh.commands) → output → exit status.

Imports of the command modules happen inside each command: `wgmesh addpeer` must not pay for
Rich tables, paramiko or python-terraform. No `from __future__ import annotations`: Typer reads
every command's signature at each start, and string annotations would be compiled and evaluated
twice per parameter; the names only the type checker knows are quoted.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from wgmesh.cli.app import BACKEND_OPT, JSON_OPT, PARALLEL_OPT, app, need_inventory, run, start

if TYPE_CHECKING:
    from wgmesh.cli.output import RichReporter
    from wgmesh.commands import Result
    from wgmesh.remote.host import Connector
    from wgmesh.workspace import Workspace

__all__ = ["app", "main"]


@contextmanager
def reporter(quiet: bool = False) -> Iterator["RichReporter"]:
    from wgmesh.cli.output import RichReporter

    rep = RichReporter(quiet=quiet)
    try:
        yield rep
    finally:
        rep.close()


def settle_start_up() -> None:
    """What start-up made (modules, classes, Typer's commands) lives until the end: gc.freeze()
    moves it out of the cyclic GC's reach before run() turns the GC back on (wgmesh/__main__.py
    starts with it off). Else the first collection walks all of it at once: ~20000 objects, 4-5 ms
    of a 0.07 s genconfig. (For the commands whose start-up is measured against wg-meshconf; not
    when the GC was on all along, as in a test calling the app: nothing piled up there.)"""
    import gc

    if not gc.isenabled():
        gc.freeze()


STRICT_OPT = typer.Option(
    False, "--strict-host-keys", envvar="WGMESH_STRICT_HOST_KEYS",
    help="Refuse a host whose SSH host key nothing vouches for (no key from the stack, no --host-key, no pin) "
    "instead of pinning it on first use.",
)


def hosts(strict: bool) -> "Connector":
    """The SSH pool with the host-key policy: strict, or trust on first use said on stderr (also with --json)."""
    from functools import partial

    from wgmesh.cli.output import RichReporter
    from wgmesh.remote.host import ssh_pool

    def first_use(host: str, fp: str) -> None:
        RichReporter().line(f"{host}: host key pinned on first use, not verified: {fp}")

    return partial(ssh_pool, strict_host_keys=strict, on_first_use=first_use)


@app.command()
def up(
    ctx: typer.Context,
    stack: str | None = typer.Option(
        None, "--stack", help="Terraform stack in terraform/ [default: the inventory's, else lab]."
    ),
    var: list[str] = typer.Option(
        [], "--var", help="Terraform variable KEY=VALUE (repeatable; remembered in the inventory)."
    ),
    pool: str | None = typer.Option(None, "--pool", help="Mesh pool for tunnel addresses [default: 10.200.0.0/16]."),
    pool6: str | None = typer.Option(
        None, "--pool6", help="IPv6 pool of a dual-stack mesh: a CIDR, or 'auto' (a unique local /64 from the "
        "inventory's name) [default: auto as soon as a peer has an IPv6 subnet]."
    ),
    mtu: int | None = typer.Option(None, "--mtu", help="wg0 MTU of every peer (remembered) [default: 1420]."),
    parallel: int = PARALLEL_OPT,
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the verification at the end."),
    no_push: bool = typer.Option(
        False, "--no-push", help="Provision, inventory, keys and output/ configs only: no host is touched."
    ),
    wait_ssh: float = typer.Option(
        0, "--wait-ssh", min=0,
        help="Retry hosts that do not answer SSH yet for this many seconds (new cloud machines).",
    ),
    strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Provision with Terraform, make keys, render, push, start and verify the mesh."""
    from wgmesh.commands import up as cmd

    opts = cmd.UpOptions(stack=stack, var_pairs=tuple(var), pool_cidr=pool, pool6_cidr=pool6, mtu=mtu,
                         parallel=parallel,
                         verify=not no_verify, push=not no_push, wait_ssh=wait_ssh)

    def body(ws: "Workspace") -> "Result":
        with reporter() as rep:
            return cmd.up(ws, opts, rep, hosts(strict_host_keys))

    run(ctx, "up", body, as_json, pre=lambda ws: cmd.check(ws, opts))


@app.command()
def addpeer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Peer name: a-z, 0-9 and '-', up to 63 characters."),
    endpoint: str | None = typer.Option(
        None, "--endpoint", help="Public HOST[:PORT] other peers connect to ([v6]:PORT for IPv6)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Tunnel address [default: next free in the mesh pool]."
    ),
    address6: str | None = typer.Option(
        None, "--address6", help="IPv6 tunnel address of a dual-stack mesh [default: next free in its IPv6 pool]."
    ),
    allowedips: list[str] = typer.Option([], "--allowedips", help="A subnet behind this peer, CIDR (repeatable)."),
    listen_port: int | None = typer.Option(
        None, "--listen-port", help="UDP port WireGuard listens on [default: 51820]."
    ),
    keepalive: int | None = typer.Option(
        None, "--keepalive", help="PersistentKeepalive seconds this peer sends (behind NAT)."
    ),
    ssh: str | None = typer.Option(None, "--ssh", help="USER@HOST[:PORT] wgmesh uses to manage the peer."),
    ssh_key: str | None = typer.Option(
        None, "--ssh-key", help="Private key file for --ssh [default: ssh-agent, ~/.ssh/id_*]."
    ),
    egress_interface: str = typer.Option(
        "detect", "--egress-interface", help="Interface for MASQUERADE, or 'detect'."
    ),
    private_address: str | None = typer.Option(
        None, "--private-address", help="An address of the peer inside its subnet, probed by verify."
    ),
    private_address6: str | None = typer.Option(
        None, "--private-address6", help="Its IPv6 address inside its subnet, probed by verify too."
    ),
    host_key: list[str] = typer.Option(
        [], "--host-key", help="Expected SSH host key 'TYPE BASE64' (repeatable); else pinned at first contact."
    ),
    private_key_file: str | None = typer.Option(
        None, "--private-key-file", help="Import this peer's existing WireGuard private key (a file, never argv)."
    ),
    public_key: str | None = typer.Option(
        None, "--public-key", help="Its public key, checked against --private-key-file."
    ),
    mtu: int | None = typer.Option(
        None, "--mtu", help="This peer's wg0 MTU, e.g. 1380 behind PPPoE [default: the mesh's]."
    ),
    allow_unresolved: bool = typer.Option(
        False, "--allow-unresolved", help="Keep a DNS --endpoint that does not resolve now (refused otherwise)."
    ),
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Add a peer that Terraform does not manage (another cloud, on-prem). Run 'wgmesh push' next."""
    from wgmesh.commands import addpeer as cmd
    from wgmesh.peers import PeerOptions

    options = PeerOptions(
        endpoint=endpoint, address=address, subnets=allowedips, listen_port=listen_port, keepalive=keepalive,
        ssh_target=ssh, ssh_key=ssh_key, host_keys=host_key, egress_interface=egress_interface,
        private_address=private_address, mtu=mtu, address6=address6, private_address6=private_address6,
    )
    extra = cmd.KeyImport(private_key_file, public_key, allow_unresolved)
    settle_start_up()
    run(ctx, "addpeer", lambda ws: cmd.addpeer(ws, name, options, extra), as_json,
        pre=lambda ws: cmd.check(ws, name, options, extra))


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="A `terraform output -json` document (or its peers map)."),
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Read Terraform peers from a saved outputs document instead of running Terraform."""
    from wgmesh.commands import import_outputs as cmd

    def pre(ws: "Workspace") -> None:
        cmd.read_outputs(file)  # an unreadable or invalid document is refused before the lock

    run(ctx, "import", lambda ws: cmd.import_outputs(ws, file), as_json, pre=pre)


@app.command()
def delpeer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Peer to remove."),
    parallel: int = PARALLEL_OPT,
    strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Remove a peer: stop WireGuard on it, purge its keys, push the change to every other peer."""
    from wgmesh.commands import delpeer as cmd

    def body(ws: "Workspace") -> "Result":
        with reporter(quiet=as_json) as rep:
            return cmd.delpeer(ws, name, rep, parallel, hosts(strict_host_keys))

    run(ctx, "delpeer", body, as_json, pre=need_inventory)


@app.command()
def showpeers(ctx: typer.Context, backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT) -> None:
    """List the peers of the inventory (public data only)."""
    from wgmesh.commands import showpeers as cmd

    run(ctx, "showpeers", cmd.showpeers, as_json, lock=False)


@app.command()
def genconfig(ctx: typer.Context, backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT) -> None:
    """Render output/<inventory>/<peer>.conf for every peer (0600); nothing is pushed."""
    from wgmesh.commands import genconfig as cmd

    settle_start_up()
    run(ctx, "genconfig", cmd.genconfig, as_json, pre=need_inventory)


@app.command()
def push(
    ctx: typer.Context,
    parallel: int = PARALLEL_OPT,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say per host what would change and why; change nothing (exit 6 if something would)."
    ),
    strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Render and apply the configs on every peer: start, syncconf (hitless), restart, repair or nothing."""
    from wgmesh.commands import push as cmd

    def body(ws: "Workspace") -> "Result":
        with reporter(quiet=as_json) as rep:
            return cmd.push(ws, rep, parallel, hosts(strict_host_keys), dry_run=dry_run)

    # A dry run writes nothing, so it takes no lock (it may run beside another command).
    run(ctx, "push", body, as_json, lock=not dry_run, pre=need_inventory)


@app.command()
def status(
    ctx: typer.Context,
    parallel: int = PARALLEL_OPT,
    watch: float | None = typer.Option(
        None, "--watch", min=0.5, help="Refresh in place every SECONDS until Ctrl-C."
    ),
    strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """The mesh at a glance: handshake age for every pair, endpoints, transfer, pending revocations."""
    from wgmesh.commands import status as cmd

    def body(ws: "Workspace") -> "Result | None":
        if watch is not None and not as_json:
            from wgmesh.cli import statusview

            statusview.watch(lambda: cmd.status(ws, parallel, hosts(strict_host_keys)), watch)
            return None
        return cmd.status(ws, parallel, hosts(strict_host_keys))

    run(ctx, "status", body, as_json, lock=False, pre=need_inventory)


@app.command()
def graph(
    ctx: typer.Context, parallel: int = PARALLEL_OPT, strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Draw the mesh (peers, tunnels coloured by handshake health) to output/<inventory>/mesh.svg and .png."""
    from wgmesh.commands import graph as cmd

    run(ctx, "graph", lambda ws: cmd.graph(ws, parallel, hosts(strict_host_keys)), as_json, lock=False,
        pre=need_inventory)


@app.command()
def setpeer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A peer added with addpeer."),
    endpoint: str | None = typer.Option(None, "--endpoint", help="New public HOST[:PORT]."),
    allowedips: list[str] | None = typer.Option(
        None, "--allowedips", help="The new full list of subnets (repeatable)."
    ),
    listen_port: int | None = typer.Option(None, "--listen-port", help="New UDP listen port."),
    keepalive: int | None = typer.Option(None, "--keepalive", help="New PersistentKeepalive (0 = off)."),
    private_address: str | None = typer.Option(None, "--private-address", help="New probe address in its subnet."),
    private_address6: str | None = typer.Option(
        None, "--private-address6", help="New IPv6 probe address in its subnet ('' removes it)."
    ),
    mtu: int | None = typer.Option(None, "--mtu", help="New wg0 MTU of this peer (0: the mesh's)."),
    allow_unresolved: bool = typer.Option(
        False, "--allow-unresolved", help="Keep a DNS --endpoint that does not resolve now (refused otherwise)."
    ),
    host_key: list[str] = typer.Option(
        [], "--host-key", help="Its SSH host key 'TYPE BASE64' (repeatable): the new full list, verified at connection."
    ),
    ssh: str | None = typer.Option(None, "--ssh", help="New USER@HOST[:PORT] wgmesh uses to manage the peer."),
    ssh_key: str | None = typer.Option(None, "--ssh-key", help="New private key file for its SSH access."),
    egress_interface: str | None = typer.Option(
        None, "--egress-interface", help="New interface for MASQUERADE, or 'detect'."
    ),
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Change a hand-added peer. Run 'wgmesh push' next: the change reaches every peer hitlessly."""
    from wgmesh.commands import setpeer as cmd
    from wgmesh.peers import PeerOptions

    changes: PeerOptions = PeerOptions(
        endpoint=endpoint, subnets=allowedips, listen_port=listen_port, keepalive=keepalive,
        private_address=private_address, private_address6=private_address6, mtu=mtu,
        host_keys=host_key or None, ssh_target=ssh, ssh_key=ssh_key, egress_interface=egress_interface,
    )
    run(ctx, "setpeer", lambda ws: cmd.setpeer(ws, name, changes, allow_unresolved), as_json, pre=need_inventory)


@app.command("rotate-keys")
def rotate_keys(
    ctx: typer.Context,
    names: list[str] | None = typer.Argument(None, help="Peers whose key pairs to replace."),
    all_: bool = typer.Option(False, "--all", help="Replace every peer's key pair."),
    parallel: int = PARALLEL_OPT,
    strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """New key pairs (and PSKs) for some or all peers, pushed everywhere at once."""
    from wgmesh.commands import rotate_keys as cmd

    def pre(ws: "Workspace") -> None:
        from wgmesh.errors import BadInput

        need_inventory(ws)
        if bool(names) == all_:
            raise BadInput("NAME", " ".join(names or []), "give peer names or --all (not both, not neither)")

    def body(ws: "Workspace") -> "Result":
        with reporter(quiet=as_json) as rep:
            return cmd.rotate_keys(ws, None if all_ else list(names or []), rep, parallel, hosts(strict_host_keys))

    run(ctx, "rotate-keys", body, as_json, pre=pre)


@app.command()
def verify(
    ctx: typer.Context, parallel: int = PARALLEL_OPT, strict_host_keys: bool = STRICT_OPT,
    backend: str | None = BACKEND_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Probe every pair (tunnel, private addresses, private instances) and check the handshakes."""
    from wgmesh.commands import verify as cmd

    run(ctx, "verify", lambda ws: cmd.verify(ws, parallel, hosts(strict_host_keys)), as_json, lock=False)


def main() -> None:
    start()
