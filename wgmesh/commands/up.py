"""up: terraform apply of a stack, outputs → inventory, keys, render, push, start, verify."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wgmesh import inventory as invmod
from wgmesh import stacks, store
from wgmesh import validate as v
from wgmesh.commands import HostsOutcome
from wgmesh.commands.genconfig import write_configs
from wgmesh.commands.push import PushResult, push_configs
from wgmesh.commands.verify import VerifyResult, run_verify
from wgmesh.errors import BadInput, Interrupted, Refused, TerraformFailed, WgmeshError
from wgmesh.executor import DEFAULT_PARALLEL
from wgmesh.model import Inventory, Peer
from wgmesh.progress import Reporter
from wgmesh.remote.host import Connector, ssh_pool
from wgmesh.workspace import Workspace

if TYPE_CHECKING:  # python_terraform is loaded only by the commands that run Terraform
    from wgmesh.adapters.terraform import TerraformRunner


@dataclass(frozen=True)
class UpOptions:
    stack: str | None = None  # default: the inventory's, else lab
    var_pairs: tuple[str, ...] = ()  # KEY=VALUE, remembered in the inventory
    pool_cidr: str | None = None  # only when the inventory is created
    pool6_cidr: str | None = None  # the IPv6 pool of a dual-stack mesh: a CIDR, "auto" (a ULA /64), or None
    mtu: int | None = None  # every peer's wg0 MTU (remembered in the inventory)
    parallel: int = DEFAULT_PARALLEL
    verify: bool = True
    push: bool = True
    wait_ssh: float = 0.0


@dataclass
class UpResult(HostsOutcome):
    inventory: Inventory
    new_keys: list[str]
    push: PushResult
    verify: VerifyResult | None
    timings: dict[str, float]
    pushed: bool = True  # False with --no-push: configs rendered to output_dir only
    output_dir: Path | None = None

    @property
    def ok(self) -> bool:
        # push.ok: a revocation still pending on some host counts, as it does for `push`
        return self.push.ok and (self.verify is None or self.verify.ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "inventory": self.inventory.name,
            "peers": list(self.inventory.names),
            "new_keys": self.new_keys,
            "push": self.push.to_json() if self.pushed else None,
            "verify": self.verify.to_json() if self.verify else None,
            "timings": self.timings,
        }


def terraform_for(
    ws: Workspace, stack: str, variables: dict[str, str], reporter: Reporter
) -> tuple[TerraformRunner, dict[str, Any]]:
    """The runner for this inventory's working directory, and the root module to write there
    (after every check that can refuse the variables)."""
    from wgmesh.adapters.terraform import TerraformRunner

    if not ws.stacks_dir.is_dir():
        raise BadInput(
            "--stack", stack, f"no Terraform stacks at {ws.stacks_dir}",
            hint="set WGMESH_STACKS to a directory of stacks (a checkout's terraform/), or reinstall wgmesh",
        )
    st = stacks.load_stack(ws.stacks_dir, stack)
    stacks.check_vars(st, variables)
    runner = TerraformRunner(ws.tf_dir, on_line=reporter.line)
    runner.refuse_errored_state()  # Terraform's last run could not save its state: no run on a fork of it
    if ws.backend is None:
        return runner, stacks.root_module(st, ws.tf_dir, variables)
    if runner.has_state():  # a state file here: a shared inventory must not run on (or abandon) it
        raise Refused(
            f"{ws.tf_dir / 'terraform.tfstate'} holds resources, but inventory {ws.name!r} lives in {ws.backend}, "
            "whose state is in the bucket: refusing to run Terraform on either",
            hint="if that local state is the mesh's, move the inventory back first: wgmesh migrate --backend local",
        )
    return runner, stacks.root_module(st, ws.tf_dir, variables, backend=ws.backend.terraform_backend())


def init_mode(ws: Workspace) -> str:
    """A shared backend's block follows the environment (its endpoint options): taken as it is."""
    return "reconfigure" if ws.backend is not None else ""


def parse_vars(pairs: list[str]) -> dict[str, str]:
    out = {}
    for item in pairs:
        if "=" not in item:
            raise BadInput("--var", item, "expected KEY=VALUE")
        k, val = item.split("=", 1)
        if not k or not k.replace("_", "a").replace("-", "a").isalnum():
            raise BadInput("--var", item, "the key must be a Terraform variable name")
        out[k] = val
    return out


def _inventory(ws: Workspace, opts: UpOptions) -> Inventory:
    """The inventory as `up` will use it: created if new, with the stack and --var values."""
    inv = store.load_if_exists(ws) or invmod.new_inventory(ws.name, stack=opts.stack or "lab")
    if opts.pool_cidr is not None:
        new_pool = v.network("--pool", opts.pool_cidr)
        if inv.peers and new_pool != inv.mesh.pool:
            raise BadInput(
                "--pool", opts.pool_cidr, f"the inventory's peers already have addresses in {inv.mesh.pool}",
                hint="a pool is chosen when an inventory is created",
            )
        inv = replace(inv, mesh=replace(inv.mesh, pool=new_pool))
    if opts.pool6_cidr is not None:
        if inv.mesh.pool.version == 6:
            raise BadInput("--pool6", opts.pool6_cidr, f"the mesh pool {inv.mesh.pool} is IPv6 already: one pool")
        pool6 = invmod.ula_pool(inv.name) if opts.pool6_cidr == "auto" else invmod.pool6_network(
            "--pool6", opts.pool6_cidr)
        if inv.mesh.pool6 is not None and pool6 != inv.mesh.pool6 and any(p.address6 for p in inv.peers):
            raise BadInput("--pool6", opts.pool6_cidr,
                           f"the inventory's peers already have addresses in {inv.mesh.pool6}",
                           hint="a pool is chosen when it is first needed")
        inv = replace(inv, mesh=replace(inv.mesh, pool6=pool6))
    if opts.mtu is not None:
        inv = replace(inv, mesh=replace(inv.mesh, mtu=v.mtu("--mtu", opts.mtu)))
    stack = opts.stack or inv.stack or "lab"
    v.name("--stack", stack)
    variables = dict(inv.vars)
    variables.update(parse_vars(list(opts.var_pairs)))
    inv = replace(inv, stack=stack, vars=tuple(sorted(variables.items())))
    invmod.check(inv)
    return inv


def check(ws: Workspace, opts: UpOptions) -> None:
    """Everything `up` can refuse before it writes anything (the plan is checked later, still
    before anything is created)."""
    inv = _inventory(ws, opts)
    terraform_for(ws, inv.stack or "lab", dict(inv.vars), Reporter())  # unknown stack or variables
    store.keystore(ws).load()  # a keystore others can read is refused now, not after terraform apply


def _provision(ws: Workspace, inv: Inventory, reporter: Reporter) -> Inventory:
    """terraform plan (checked as a mesh before anything is created), apply, outputs → inventory."""
    stack = inv.stack or "lab"
    tf, root = terraform_for(ws, stack, dict(inv.vars), reporter)
    tf.prepare(root)
    reporter.phase(f"terraform plan ({stack})")
    ws.private_state_dir()
    tf.init(init_mode(ws))
    planned = tf.plan().get("peers")
    if isinstance(planned, dict):
        # The planned peers, as far as the plan knows them, must make a valid mesh (pool large
        # enough, no overlaps, no cut management links).
        invmod.merge_terraform(inv, invmod.peers_from_outputs(invmod.known_part(planned)))
    reporter.phase(f"terraform apply ({stack})")
    try:
        tf.apply()
    except (TerraformFailed, Interrupted):
        # Keep the inventory true to what Terraform holds, and the stack and variables it ran with;
        # then report the failure or the interrupt.
        try:
            merged = invmod.merge_terraform(inv, invmod.peers_from_outputs(tf.outputs().get("peers") or {}))
        except WgmeshError:  # no outputs to trust (e.g. Terraform could not save its state): peers as they were
            merged = inv
        try:
            store.save(ws, merged)
            store.ensure_keys(ws, merged)
        except WgmeshError:
            pass
        raise
    outputs = tf.outputs()
    if "peers" not in outputs:
        raise TerraformFailed(f"the stack {stack!r} has no 'peers' output (see the output contract in the README)")
    return refresh(ws, inv, invmod.peers_from_outputs(outputs["peers"]))


def refresh(ws: Workspace, inv: Inventory, terraform_peers: list[Peer]) -> Inventory:
    """The inventory with Terraform's peers as its outputs now list them, saved. Peers gone from
    them are forgotten: keys purged, a pending revocation on every managed host still trusting them."""
    merged = invmod.merge_terraform(inv, terraform_peers)
    store.forget_peers(ws, merged, [n for n in inv.names if n not in merged.names])
    store.save(ws, merged)
    return merged


def up(ws: Workspace, opts: UpOptions, reporter: Reporter, connect: Connector = ssh_pool) -> UpResult:
    timings: dict[str, float] = {}
    t = time.monotonic()
    inv = _provision(ws, _inventory(ws, opts), reporter)
    timings["terraform"] = round(time.monotonic() - t, 2)
    keys, made = store.ensure_keys(ws, inv)
    if not opts.push:
        local = ws.backend is None  # else the keys stay in the secret store: no config with a key on this disk
        if local:
            write_configs(ws, inv, keys)
        return UpResult(inv, made, PushResult({}), None, timings, pushed=False,
                        output_dir=ws.output_dir if local else None)

    t = time.monotonic()
    reporter.phase(f"push to {len(inv.peers)} peers")
    reporter.expect(len(inv.peers), "push")
    with connect(ws, inv, opts.wait_ssh) as pool:
        pushed = push_configs(ws, inv, keys, pool, reporter=reporter, parallel=opts.parallel)
        timings["push"] = round(time.monotonic() - t, 2)
        result = None
        if opts.verify:
            t = time.monotonic()
            reporter.phase("verify")
            result = run_verify(inv, keys, pool, opts.parallel)
            timings["verify"] = round(time.monotonic() - t, 2)
    return UpResult(inv, made, pushed, result, timings, output_dir=ws.output_dir)
