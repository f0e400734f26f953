"""Typer commands: parse options, call the core, render the result, exit with the contract's code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional

import typer

from wgmesh import __version__, errors
from wgmesh.executor import DEFAULT_PARALLEL

app = typer.Typer(
    name="wgmesh",
    help="Build, run and verify a WireGuard full mesh: Terraform → inventory → keys → configs → push → verify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON on stdout.")
PARALLEL_OPT = typer.Option(DEFAULT_PARALLEL, "--parallel", min=1, max=256, help="Hosts handled at once.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wgmesh {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    inventory: str = typer.Option("lab", "--inventory", "-i", help="Inventory name (inventories/NAME.json)."),
    directory: Path = typer.Option(
        None, "--dir", envvar="WGMESH_DIR", help="Project directory holding inventories/, output/ and .wgmesh/ [default: .]"
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    from wgmesh import validate
    from wgmesh.workspace import Workspace, default_stacks_dir

    def make():
        validate.name("--inventory", inventory)
        return Workspace(root=(directory or Path.cwd()).resolve(), name=inventory, stacks_dir=default_stacks_dir())

    ctx.obj = make


def _run(ctx: typer.Context, command: str, body: Callable, lock: bool = True, pre: Callable | None = None) -> None:
    """Run `pre(ws)` (checks that must pass before anything is written, even the lock file),
    then `body(ws)` under the lock; map every failure to its exit code."""
    from wgmesh import console
    from wgmesh.workspace import RunLock

    code = errors.OK
    try:
        ws = ctx.obj()
        if pre is not None:
            pre(ws)
        if lock:
            with RunLock(ws, command):
                code = body(ws) or errors.OK
        else:
            code = body(ws) or errors.OK
    except errors.WgmeshError as exc:
        console.error(exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        console.error(errors.Interrupted("interrupted"))
        code = errors.INTERRUPTED
    except OSError as exc:  # the machine said no (permissions, disk full, ...): say what, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        console.error(errors.WgmeshError(f"{exc.strerror or type(exc).__name__}{where}"))
        code = errors.OTHER
    raise typer.Exit(code)


def _need_inventory(ws) -> None:
    """Refuse a missing inventory before the lock file is made (the body loads and checks it)."""
    from wgmesh import ops

    ops.require_inventory(ws)


def _reporter(quiet: bool = False):
    from wgmesh.console import RichReporter

    return RichReporter(quiet=quiet)


@app.command()
def up(
    ctx: typer.Context,
    stack: Optional[str] = typer.Option(None, "--stack", help="Terraform stack in terraform/ [default: the inventory's, else lab]."),
    var: List[str] = typer.Option([], "--var", help="Terraform variable KEY=VALUE (repeatable; remembered in the inventory)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Mesh pool for tunnel addresses [default: 10.200.0.0/16]."),
    parallel: int = PARALLEL_OPT,
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the verification at the end."),
    no_push: bool = typer.Option(False, "--no-push", help="Provision, inventory, keys and output/ configs only: no host is touched."),
    wait_ssh: float = typer.Option(0, "--wait-ssh", min=0, help="Retry hosts that do not answer SSH yet for this many seconds (new cloud machines)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Provision with Terraform, make keys, render, push, start and verify the mesh."""

    def body(ws):
        from wgmesh import console, ops

        rep = _reporter()
        try:
            res = ops.up(ws, stack, var, rep, pool_cidr=pool, parallel=parallel, do_verify=not no_verify,
                         do_push=not no_push, wait_ssh=wait_ssh)
        finally:
            rep.close()
        failed = res.push.failed
        ok_verify = res.verify is None or res.verify.ok
        if as_json:
            console.emit_json({
                "ok": not failed and ok_verify,
                "inventory": ws.name,
                "peers": list(res.inventory.names),
                "new_keys": res.new_keys,
                "push": None if no_push else console.push_json(res.push),
                "verify": console.verify_json(res.verify) if res.verify else None,
                "timings": res.timings,
            })
        else:
            if no_push:
                console.peers_table(res.inventory)
                console.info(f"configs rendered in {ws.output_dir}; nothing was pushed")
            else:
                console.host_table("push", res.push.results)
            if res.verify:
                console.verify_table(res.verify)
            console.info("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.timings.items()))
        return errors.HOSTS_FAILED if failed or not ok_verify else errors.OK

    def pre(ws):
        from wgmesh import ops

        ops.check_up_args(ws, stack, var, pool)

    _run(ctx, "up", body, pre=pre)


@app.command()
def addpeer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Peer name: a-z, 0-9 and '-', up to 63 characters."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="Public HOST[:PORT] other peers connect to ([v6]:PORT for IPv6)."),
    address: Optional[str] = typer.Option(None, "--address", help="Tunnel address [default: next free in the mesh pool]."),
    allowedips: List[str] = typer.Option([], "--allowedips", help="A subnet behind this peer, CIDR (repeatable)."),
    listen_port: Optional[int] = typer.Option(None, "--listen-port", help="UDP port WireGuard listens on [default: 51820]."),
    keepalive: Optional[int] = typer.Option(None, "--keepalive", help="PersistentKeepalive seconds this peer sends (behind NAT)."),
    ssh: Optional[str] = typer.Option(None, "--ssh", help="USER@HOST[:PORT] wgmesh uses to manage the peer."),
    ssh_key: Optional[str] = typer.Option(None, "--ssh-key", help="Private key file for --ssh [default: ssh-agent, ~/.ssh/id_*]."),
    egress_interface: str = typer.Option("detect", "--egress-interface", help="Interface for MASQUERADE, or 'detect'."),
    private_address: Optional[str] = typer.Option(None, "--private-address", help="An address of the peer inside its subnet, probed by verify."),
    host_key: List[str] = typer.Option([], "--host-key", help="Expected SSH host key 'TYPE BASE64' (repeatable); else pinned at first contact."),
    private_key_file: Optional[str] = typer.Option(None, "--private-key-file", help="Import this peer's existing WireGuard private key (a file, never argv)."),
    public_key: Optional[str] = typer.Option(None, "--public-key", help="Its public key, checked against --private-key-file."),
    as_json: bool = JSON_OPT,
) -> None:
    """Add a peer that Terraform does not manage (another cloud, on-prem). Run 'wgmesh push' next."""

    def build(inv):
        from wgmesh import ops

        return ops.build_peer(
            inv, name, endpoint, address, allowedips, listen_port, keepalive, ssh, ssh_key,
            egress_interface, private_address, host_key, private_key_file, public_key,
        )

    def body(ws):
        from wgmesh import console, inventory, ops

        inv = ops.load(ws, must_exist=False) or inventory.new_inventory(ws.name)
        peer, addr, imported = build(inv)
        inv, peer, made = ops.addpeer(ws, inv, peer, addr, imported)
        if as_json:
            console.emit_json({"added": peer.name, "peer": inventory.peer_to_dict(peer), "new_key": made})
        else:
            console.peers_table(inv, only=[peer.name])
            console.info(f"added {peer.name} ({peer.address}); run 'wgmesh -i {ws.name} push' to apply it")

    def pre(ws):
        # In a new project, refuse bad input before the lock creates .wgmesh/ (an existing
        # inventory already has it; the body checks everything under the lock).
        from wgmesh import inventory

        if not ws.inventory_path.exists():
            inv = inventory.new_inventory(ws.name)
            peer, addr, _ = build(inv)
            inventory.add_peer(inv, peer, addr)

    _run(ctx, "addpeer", body, pre=pre)


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="A `terraform output -json` document (or its peers map)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Read Terraform peers from a saved outputs document instead of running Terraform."""

    def body(ws):
        from wgmesh import console, ops

        inv, made = ops.import_outputs(ws, file)
        if as_json:
            console.emit_json({"peers": len(inv.peers), "new_keys": len(made)})
        else:
            console.info(f"{len(inv.peers)} peers in inventory {inv.name}; {len(made)} new key pairs")

    def pre(ws):
        from wgmesh import ops

        ops.read_outputs(file)  # an unreadable or invalid document is refused before the lock

    _run(ctx, "import", body, pre=pre)


@app.command()
def delpeer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Peer to remove."),
    parallel: int = PARALLEL_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Remove a peer: stop WireGuard on it, purge its keys, push the change to every other peer."""

    def body(ws):
        from wgmesh import console, ops

        rep = _reporter(quiet=as_json)
        try:
            stop, pushed = ops.delpeer(ws, name, rep, parallel)
        finally:
            rep.close()
        if as_json:
            console.emit_json({"removed": name, "stopped": bool(stop and stop.ok), "stop_detail": stop.detail if stop else "",
                               "push": console.push_json(pushed)})
        else:
            console.host_table(f"after removing {name}", pushed.results)
            console.pending_lines(pushed)
            if stop is not None and not stop.ok:
                console.info(f"{name} was not reached: {stop.detail}")
        return errors.HOSTS_FAILED if not pushed.ok or (stop is not None and not stop.ok) else errors.OK

    _run(ctx, "delpeer", body, pre=_need_inventory)


@app.command()
def showpeers(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """List the peers of the inventory (public data only)."""

    def body(ws):
        from wgmesh import console, inventory, ops

        inv = ops.load(ws)
        if as_json:
            console.emit_json({
                "inventory": inv.name,
                "mesh": inventory.mesh_to_dict(inv.mesh),
                "peers": {p.name: inventory.peer_to_dict(p) for p in inv.peers},
            })
        else:
            console.peers_table(inv)

    _run(ctx, "showpeers", body, lock=False)


@app.command()
def genconfig(ctx: typer.Context, as_json: bool = JSON_OPT) -> None:
    """Render output/<inventory>/<peer>.conf for every peer (0600); nothing is pushed."""

    def body(ws):
        from wgmesh import console, ops

        res = ops.genconfig(ws)
        if as_json:
            console.emit_json({"directory": res.directory, "written": res.written, "unchanged": res.unchanged,
                               "removed": res.removed})
        else:
            console.gen_summary(res)

    _run(ctx, "genconfig", body, pre=_need_inventory)


@app.command()
def push(ctx: typer.Context, parallel: int = PARALLEL_OPT, as_json: bool = JSON_OPT) -> None:
    """Render and apply the configs on every peer: start, syncconf (hitless), restart or nothing."""

    def body(ws):
        from wgmesh import console, ops

        rep = _reporter(quiet=as_json)
        rep.expect(len(ops.load(ws).peers), "push")
        try:
            res = ops.push(ws, rep, parallel)
        finally:
            rep.close()
        if as_json:
            console.emit_json(console.push_json(res))
        else:
            console.host_table("push", res.results)
            console.pending_lines(res)
        return errors.OK if res.ok else errors.HOSTS_FAILED

    _run(ctx, "push", body, pre=_need_inventory)


@app.command()
def status(
    ctx: typer.Context,
    parallel: int = PARALLEL_OPT,
    watch: Optional[float] = typer.Option(None, "--watch", min=0.5, help="Refresh in place every SECONDS until Ctrl-C."),
    as_json: bool = JSON_OPT,
) -> None:
    """The mesh at a glance: handshake age for every pair, endpoints, transfer, pending revocations."""

    def body(ws):
        from wgmesh import console, ops

        if watch is not None and not as_json:
            console.watch(lambda: ops.status(ws, parallel), watch)
            return errors.OK
        res = ops.status(ws, parallel)
        if as_json:
            console.emit_json(console.status_json(res))
        else:
            console.status_table(res)
        return errors.HOSTS_FAILED if res.unreachable or res.pending else errors.OK

    _run(ctx, "status", body, lock=False, pre=_need_inventory)


@app.command()
def graph(ctx: typer.Context, parallel: int = PARALLEL_OPT, as_json: bool = JSON_OPT) -> None:
    """Draw the mesh (peers, tunnels coloured by handshake health) to output/<inventory>/mesh.svg and .png."""

    def body(ws):
        from wgmesh import console, ops

        res = ops.graph(ws, parallel)
        if as_json:
            console.emit_json({"files": res.files})
        else:
            for f in res.files:
                console.out.print(f)

    _run(ctx, "graph", body, lock=False, pre=_need_inventory)


@app.command()
def setpeer(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A peer added with addpeer."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="New public HOST[:PORT]."),
    allowedips: Optional[List[str]] = typer.Option(None, "--allowedips", help="The new full list of subnets (repeatable)."),
    listen_port: Optional[int] = typer.Option(None, "--listen-port", help="New UDP listen port."),
    keepalive: Optional[int] = typer.Option(None, "--keepalive", help="New PersistentKeepalive (0 = off)."),
    private_address: Optional[str] = typer.Option(None, "--private-address", help="New probe address in its subnet."),
    as_json: bool = JSON_OPT,
) -> None:
    """Change a hand-added peer. Run 'wgmesh push' next: the change reaches every peer hitlessly."""

    def body(ws):
        from wgmesh import console, inventory, ops

        peer = ops.setpeer(ws, name, {
            "endpoint": endpoint, "allowedips": allowedips, "listen_port": listen_port,
            "keepalive": keepalive, "private_address": private_address,
        })
        if as_json:
            console.emit_json({"updated": peer.name, "peer": inventory.peer_to_dict(peer)})
        else:
            console.info(f"updated {peer.name}; run 'wgmesh -i {ws.name} push' to apply it")

    _run(ctx, "setpeer", body, pre=_need_inventory)


@app.command("rotate-keys")
def rotate_keys(
    ctx: typer.Context,
    names: Optional[List[str]] = typer.Argument(None, help="Peers whose key pairs to replace."),
    all_: bool = typer.Option(False, "--all", help="Replace every peer's key pair."),
    parallel: int = PARALLEL_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """New key pairs (and PSKs) for some or all peers, pushed everywhere at once."""

    def pre(ws):
        from wgmesh.errors import BadInput

        _need_inventory(ws)
        if bool(names) == all_:
            raise BadInput("NAME", " ".join(names or []), "give peer names or --all (not both, not neither)")

    def body(ws):
        from wgmesh import console, ops

        rep = _reporter(quiet=as_json)
        try:
            rotated, pushed = ops.rotate_keys(ws, None if all_ else list(names), rep, parallel)
        finally:
            rep.close()
        if as_json:
            console.emit_json({"rotated": rotated, "push": console.push_json(pushed)})
        else:
            console.host_table(f"rotated {', '.join(rotated)}", pushed.results)
            console.pending_lines(pushed)
        return errors.OK if pushed.ok else errors.HOSTS_FAILED

    _run(ctx, "rotate-keys", body, pre=pre)


@app.command()
def verify(ctx: typer.Context, parallel: int = PARALLEL_OPT, as_json: bool = JSON_OPT) -> None:
    """Probe every pair (tunnel, private addresses, private instances) and check the handshakes."""

    def body(ws):
        from wgmesh import console, ops

        res = ops.verify(ws, parallel)
        if as_json:
            console.emit_json(console.verify_json(res))
        else:
            console.verify_table(res)
        return errors.OK if res.ok else errors.HOSTS_FAILED

    _run(ctx, "verify", body, lock=False)


@app.command()
def destroy(
    ctx: typer.Context,
    parallel: int = PARALLEL_OPT,
    no_stop: bool = typer.Option(False, "--no-stop", help="Do not SSH to the peers to stop WireGuard first."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stop WireGuard on the peers, terraform destroy, remove configs and pins, forget Terraform peers."""

    def body(ws):
        from wgmesh import console, ops

        rep = _reporter(quiet=as_json)
        try:
            res = ops.destroy(ws, rep, parallel, stop=not no_stop)
        finally:
            rep.close()
        if as_json:
            console.emit_json({
                "terraform": res.terraform, "removed_peers": res.removed_peers, "purged_keys": res.purged_keys,
                "kept_keys": res.kept_keys, "configs_removed": res.configs_removed,
                "stopped": {n: {"ok": r.ok, "detail": r.detail} for n, r in res.stopped.items()},
            })
        else:
            console.destroy_summary(res)
        return errors.HOSTS_FAILED if any(not r.ok for r in res.stopped.values()) else errors.OK

    _run(ctx, "destroy", body, pre=_need_inventory)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
