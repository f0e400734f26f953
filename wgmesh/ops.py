"""The commands' work: each function is one slice of the pipeline.

No printing and no exiting here: progress goes to a Reporter, results come back as
values, and failures as WgmeshError subclasses that carry their exit code.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from wgmesh import inventory as invmod
from wgmesh import keys as keymod
from wgmesh import plan as planmod
from wgmesh import revocations as revmod
from wgmesh import stacks
from wgmesh import status as statmod
from wgmesh import validate as v
from wgmesh.errors import BadInput, TerraformFailed, WgmeshError
from wgmesh.executor import DEFAULT_PARALLEL, fan_out
from wgmesh.fsutil import BACKUPS, ensure_private_dir, write_atomic
from wgmesh.model import HostResult, Inventory, KeyPair, Peer, SshTarget
from wgmesh.render import Renderer
from wgmesh.workspace import Workspace

APPLY_TIMEOUT = 90.0
PROBE_TIMEOUT = 20.0

if TYPE_CHECKING:  # the adapters are imported where they are used: addpeer and genconfig stay fast
    from wgmesh.adapters import ssh
    from wgmesh.adapters.terraform import TerraformRunner
    from wgmesh.hosts import HostPool


def _pool(ws: Workspace, inv: Inventory, wait_ssh: float = 0.0) -> "HostPool":
    from wgmesh.adapters.ssh import Pins
    from wgmesh.hosts import HostPool

    return HostPool(Pins(ws.pins_path), inv, wait_ssh=wait_ssh)


class Reporter:
    """Progress events. The CLI's console implements these; the default ignores them."""

    def phase(self, text: str) -> None: ...

    def line(self, text: str) -> None: ...

    def expect(self, total: int, what: str) -> None: ...

    def host_start(self, name: str) -> None: ...

    def host_done(self, result: HostResult) -> None: ...


# ---------------------------------------------------------------- inventory and keys


def require_inventory(ws: Workspace) -> None:
    if not ws.inventory_path.is_file():
        raise BadInput(
            "--inventory", ws.name, f"no inventory at {ws.inventory_path}",
            hint="run 'wgmesh up' or 'wgmesh addpeer' first",
        )


def load(ws: Workspace, must_exist: bool = True) -> Inventory | None:
    try:
        text = ws.inventory_path.read_text()
    except FileNotFoundError:
        if must_exist:
            require_inventory(ws)
        return None
    return invmod.from_document(text, str(ws.inventory_path))


def save(ws: Workspace, inv: Inventory) -> bool:
    return write_atomic(ws.inventory_path, invmod.to_document(inv), 0o644, backups=BACKUPS)


def keystore(ws: Workspace) -> keymod.Keystore:
    return keymod.Keystore(ws.keys_dir)


def ensure_keys(ws: Workspace, inv: Inventory) -> tuple[keymod.Keys, list[str]]:
    store = keystore(ws)
    current = store.load()
    updated, made = keymod.ensure(current, inv.names)
    if made or not current.psk_secret:
        ws.private_state_dir()
        store.save(updated)
    return updated, made


def public_keys(keys: keymod.Keys, inv: Inventory) -> dict[str, str]:
    return {n: keys.public(n) for n in inv.names if n in keys.pairs}


# ---------------------------------------------------------------- genconfig


@dataclass
class GenResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    directory: str = ""


_RENDERER: Renderer | None = None  # handed to forked workers (copy-on-write), see _write_slice


def _write_slice(args: tuple[list[str], str]) -> tuple[list[str], list[str]]:
    names, out_dir = args
    written, unchanged = [], []
    for name in names:
        changed = write_atomic(Path(out_dir) / f"{name}.conf", _RENDERER.text(name), 0o600, durable=False)
        (written if changed else unchanged).append(name)
    return written, unchanged


def write_configs(
    ws: Workspace, inv: Inventory, keys: keymod.Keys, workers: int = 1, renderer: Renderer | None = None
) -> GenResult:
    """output/<inventory>/<peer>.conf for every peer, one file at a time (0600 in 0700).

    With workers > 1 (genconfig on a large mesh), forked processes render and write slices of
    the peers in parallel; each holds one file at a time.
    """
    global _RENDERER
    out_dir = ws.output_dir
    ensure_private_dir(out_dir.parent)
    ensure_private_dir(out_dir)
    res = GenResult(directory=str(out_dir))
    names = list(inv.names)
    _RENDERER = renderer or Renderer(inv, keys)
    try:
        if workers > 1 and len(names) >= 2 * workers:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers) as procs:
                parts = procs.map(_write_slice, [(names[i::workers], str(out_dir)) for i in range(workers)])
        else:
            parts = [_write_slice((names, str(out_dir)))]
    finally:
        _RENDERER = None
    res.written = sorted(n for w, _ in parts for n in w)
    res.unchanged = sorted(n for _, u in parts for n in u)
    wanted = set(names)
    for f in sorted(out_dir.glob("*.conf")):
        if f.stem not in wanted:
            f.unlink()
            res.removed.append(f.stem)
    return res


def genconfig(ws: Workspace) -> GenResult:
    inv = load(ws)
    keys, _ = ensure_keys(ws, inv)
    # Large meshes with PSKs: render on every core (N² sections, each with its own derived PSK).
    # Without PSKs every file is a slice of one joined string: a single process is faster.
    workers = min(os.cpu_count() or 1, 8) if inv.mesh.psk and len(inv.peers) >= 200 else 1
    return write_configs(ws, inv, keys, workers)


# ---------------------------------------------------------------- addpeer / delpeer


def build_peer(
    inv: Inventory,
    name: str,
    endpoint: str | None,
    address: str | None,
    allowedips: list[str],
    listen_port: int | None,
    keepalive: int | None,
    ssh_target: str | None,
    ssh_key: str | None,
    egress_interface: str | None,
    private_address: str | None,
    host_keys: list[str],
    private_key_file: str | None = None,
    public_key: str | None = None,
) -> tuple[Peer, ipaddress.IPv4Address | ipaddress.IPv6Address | None, KeyPair | None]:
    """Parse addpeer's options into a Peer (and an imported key pair). Raises BadInput naming
    the option and value; key material is never echoed."""
    if not isinstance(name, str):
        raise BadInput("name", name, "a peer name is required")
    for p in inv.peers:
        if p.name == name.strip().lower():
            raise BadInput("name", name, f"a peer named {p.name!r} already exists")
    name = v.name("name", name)
    lp = v.port("--listen-port", listen_port) if listen_port is not None else inv.mesh.listen_port
    ep_host = ep_port = None
    if endpoint is not None:
        ep_host, ep_port = v.host_port("--endpoint", endpoint, lp)
    addr = None
    if address is not None:
        addr = v.address("--address", address.split("/")[0] if address.endswith(("/32", "/128")) else address)
    ssh_t = None
    if ssh_target is not None:
        user, host, port = v.ssh_target("--ssh", ssh_target)
        if ssh_key is not None and (not ssh_key or "\n" in ssh_key or not Path(ssh_key).is_file()):
            raise BadInput("--ssh-key", ssh_key, "no such key file")
        ssh_t = SshTarget(user=user, host=host, port=port, key=str(Path(ssh_key).resolve()) if ssh_key else None)
    elif ssh_key is not None:
        raise BadInput("--ssh-key", ssh_key, "only makes sense with --ssh USER@HOST")
    peer = Peer(
        name=name,
        address=ipaddress.ip_address("0.0.0.0"),
        endpoint_host=ep_host,
        endpoint_port=ep_port,
        subnets=tuple(v.network("--allowedips", s) for s in allowedips),
        listen_port=lp,
        keepalive=v.keepalive("--keepalive", keepalive),
        ssh=ssh_t,
        host_keys=tuple(v.host_key("--host-key", k) for k in host_keys),
        egress_interface=v.egress("--egress-interface", egress_interface),
        private_address=v.address("--private-address", private_address) if private_address else None,
        source=invmod.MANUAL,
    )
    return peer, addr, _imported_key(private_key_file, public_key)


def _imported_key(private_key_file: str | None, public_key: str | None) -> KeyPair | None:
    if private_key_file is None:
        if public_key is not None:
            raise BadInput("--public-key", "(given)", "only checks an imported key: give --private-key-file too")
        return None
    try:
        text = Path(private_key_file).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput("--private-key-file", private_key_file, f"cannot be read ({type(exc).__name__})") from None
    keymod.decode_key("--private-key-file", text)
    derived = keymod.public_key(text)
    if public_key is not None:
        keymod.decode_key("--public-key", public_key)
        if public_key != derived:
            raise BadInput("--public-key", public_key, "does not match the private key in --private-key-file")
    return KeyPair(private=text, public=derived)


def addpeer(ws: Workspace, inv: Inventory, peer: Peer, address, imported: KeyPair | None = None) -> tuple[Inventory, Peer, bool]:
    new_inv = invmod.add_peer(inv, peer, address)
    store = keystore(ws)
    current = store.load()
    if imported is not None:
        if imported.public in {kp.public for kp in current.pairs.values()}:
            raise BadInput("--private-key-file", "(hidden)", "this key already belongs to another peer")
        current = keymod.Keys(pairs={**current.pairs, peer.name: imported}, psk_secret=current.psk_secret)
    keys, made = keymod.ensure(current, new_inv.names)
    ws.private_state_dir()
    store.save(keys)
    save(ws, new_inv)
    return new_inv, new_inv.peer(peer.name), bool(made)


# ---------------------------------------------------------------- push


@dataclass
class PushResult:
    results: dict[str, HostResult]
    pending: list[revmod.Revocation] = field(default_factory=list)  # still trusted somewhere

    @property
    def failed(self) -> list[str]:
        return [n for n, r in self.results.items() if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending


def _push_host(pool: HostPool, inv: Inventory, peer: Peer, text: str, peer_keys: frozenset[str]) -> HostResult:
    wait_boot = int(pool.wait_ssh)
    t0 = time.monotonic()
    if peer.ssh is None:
        return HostResult(peer.name, True, "skipped", "no SSH access: install its config from the output directory")
    conn = pool.get(peer)
    iface = inv.mesh.interface
    rc, out, err = conn.run(
        planmod.wrap(planmod.probe_script(iface, wait_boot), peer.ssh.user), timeout=PROBE_TIMEOUT + wait_boot
    )
    if rc != 0:
        return HostResult(peer.name, False, "failed", _remote_reason("probe", rc, err))
    try:
        state = planmod.parse_probe(out)
    except ValueError as exc:
        return HostResult(peer.name, False, "failed", str(exc))
    p = planmod.decide(text, peer_keys, state)
    if p.action == planmod.UNCHANGED:
        return HostResult(peer.name, True, p.action, p.reason, round(time.monotonic() - t0, 3))
    script = planmod.apply_script(p, iface, state.systemd)
    rc, out, err = conn.run(
        planmod.wrap(script, peer.ssh.user), stdin=text.encode() if p.write else None, timeout=APPLY_TIMEOUT
    )
    if rc != 0:
        what = {42: "wg-quick up failed, previous config restored", 43: "wg syncconf failed"}.get(rc, "apply")
        return HostResult(peer.name, False, "failed", _remote_reason(what, rc, err))
    return HostResult(peer.name, True, p.action, p.reason, round(time.monotonic() - t0, 3))


def _remote_reason(what: str, rc: int, err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and "wireguard-go" not in ln and "│" not in ln]
    tail = "; ".join(lines[-3:])
    if "sudo" in err and "password" in err:
        return "sudo needs a password: give the SSH user passwordless sudo (sudo -n is used)"
    return f"{what} (exit {rc})" + (f": {tail}" if tail else "")


def push_configs(
    ws: Workspace, inv: Inventory, keys: keymod.Keys, pool: HostPool, reporter: Reporter, parallel: int
) -> PushResult:
    renderer = Renderer(inv, keys)  # each host's text is rendered by its own worker: memory stays flat
    write_configs(ws, inv, keys, renderer=renderer)
    pubs = public_keys(keys, inv)
    everyone = frozenset(pubs.values())
    results = fan_out(
        inv.peers,
        key=lambda p: p.name,
        work=lambda p: _push_host(pool, inv, p, renderer.text(p.name), everyone - {pubs[p.name]}),
        parallel=parallel,
        on_start=reporter.host_start,
        on_done=reporter.host_done,
    )
    pending = settle_revocations(ws, inv, [n for n, r in results.items() if r.ok and r.action != "skipped"])
    return PushResult(results, pending)


def forget_peers(ws: Workspace, remaining: Inventory, gone: list[str], done_hosts: list[str] = ()) -> None:
    """Peers that left the inventory (e.g. gone from Terraform's outputs): their keys are
    purged, and every managed host that has not yet dropped them has a pending revocation."""
    if not gone:
        return
    store = keystore(ws)
    keys = store.load()
    revs = revmod.load(ws.revocations_path)
    now = int(time.time())
    hosts = [h for h in managed(remaining) if h not in set(done_hosts)]
    for name in gone:
        for kp in ([keys.pairs[name]] if name in keys.pairs else []) + keys.retired.get(name, []):
            revs = revmod.add(revs, name, kp.public, revmod.REMOVED, hosts, now)
    revs, _ = revmod.settle(revs, done_hosts, managed(remaining))
    revmod.save(ws.revocations_path, revs)
    store.save(keymod.purge(keys, gone))
    keymod.drop_backups(store)


def managed(inv: Inventory) -> list[str]:
    return [p.name for p in inv.peers if p.ssh is not None]


def settle_revocations(ws: Workspace, inv: Inventory, done_hosts: list[str]) -> list[revmod.Revocation]:
    """Hosts that now run the full config no longer trust any revoked key; purge retired keys
    once no host trusts them."""
    revs = revmod.load(ws.revocations_path)
    if not revs:
        return []
    pending, finished = revmod.settle(revs, done_hosts, managed(inv))
    rotated = [r.key for r in finished if r.why == revmod.ROTATED]
    if rotated:
        store = keystore(ws)
        store.save(keymod.purge_retired(store.load(), rotated))
        keymod.drop_backups(store)
    revmod.save(ws.revocations_path, pending)
    return pending


def push(ws: Workspace, reporter: Reporter, parallel: int = DEFAULT_PARALLEL) -> PushResult:
    inv = load(ws)
    keys, _ = ensure_keys(ws, inv)
    with _pool(ws, inv) as pool:
        return push_configs(ws, inv, keys, pool, reporter, parallel)


# ---------------------------------------------------------------- status


@dataclass
class StatusResult:
    links: list[statmod.Link]
    unreachable: dict[str, str]  # peer → reason
    foreign_keys: dict[str, list[str]]  # peer → public keys configured there that no inventory peer has
    peers: list[Peer] = field(default_factory=list)
    pending: list[revmod.Revocation] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)  # peers without SSH access: no view of their own


def collect_status(inv: Inventory, keys: keymod.Keys, pool: HostPool, parallel: int) -> StatusResult:
    dumps: dict[str, statmod.InterfaceStatus | None] = {}
    reasons: dict[str, str] = {}
    down: set[str] = set()

    def one(peer: Peer) -> HostResult:
        if peer.ssh is None:  # not managed by wgmesh: seen only through the others' views
            dumps[peer.name] = None
            return HostResult(peer.name, True, "skipped", "no SSH access")
        rc, out, err = pool.get(peer).run(
            planmod.wrap(statmod.dump_script(inv.mesh.interface), peer.ssh.user), timeout=PROBE_TIMEOUT
        )
        if rc != 0 or not out.strip():
            dumps[peer.name] = None
            if "No such device" in err or "Unable to access interface" in err:
                down.add(peer.name)
                return HostResult(peer.name, False, "down", f"interface {inv.mesh.interface} is not up")
            return HostResult(peer.name, False, "failed", _remote_reason("wg show", rc, err))
        dumps[peer.name] = statmod.parse_dump(out)
        return HostResult(peer.name, True, "ok")

    results = fan_out(inv.peers, key=lambda p: p.name, work=one, parallel=parallel)
    for name, r in results.items():
        if not r.ok:
            reasons[name] = r.detail
            dumps.setdefault(name, None)
    pubs = public_keys(keys, inv)
    foreign = {n: statmod.unknown_keys(pubs, d) for n, d in dumps.items() if d is not None}
    links = statmod.matrix(inv, pubs, dumps, int(time.time()), down)
    unmanaged = sorted(p.name for p in inv.peers if p.ssh is None)
    return StatusResult(links, reasons, {n: k for n, k in foreign.items() if k}, list(inv.peers), unmanaged=unmanaged)


def status(ws: Workspace, parallel: int = DEFAULT_PARALLEL) -> StatusResult:
    inv = load(ws)
    keys = keystore(ws).load()
    with _pool(ws, inv) as pool:
        res = collect_status(inv, keys, pool, parallel)
    res.pending = revmod.load(ws.revocations_path)
    return res


# ---------------------------------------------------------------- verify


@dataclass(frozen=True)
class Probe:
    src: str  # peer name, or "peer/instance"
    dst: str  # peer name, or "peer/instance"
    kind: str  # "tunnel" / "private" / "instance"
    address: str
    ok: bool
    rtt_ms: float | None = None
    detail: str = ""


@dataclass
class VerifyResult:
    probes: list[Probe]
    handshakes: list[statmod.Link]
    unreachable: dict[str, str]
    seconds: float = 0.0

    @property
    def failures(self) -> list[str]:
        out = [f"{p.src} → {p.dst} ({p.kind} {p.address}): {p.detail or 'no reply'}" for p in self.probes if not p.ok]
        out += [
            f"{l.src} → {l.dst}: handshake {l.state}" for l in self.handshakes if l.state not in (statmod.FRESH,)
            and l.state != statmod.UNKNOWN
        ]
        out += [f"{n}: {r}" for n, r in sorted(self.unreachable.items())]
        return out

    @property
    def ok(self) -> bool:
        return not self.failures


def _ping_from(conn: ssh.Connection, user: str, targets: list[str]) -> dict[str, float | None]:
    if not targets:
        return {}
    rc, out, err = conn.run(planmod.wrap(statmod.ping_script(targets), user), timeout=PROBE_TIMEOUT + 10)
    got = statmod.parse_pings(out)
    if not got:  # nothing probed at all (sudo refused, no ping): a host failure, not "no reply"
        from wgmesh.adapters.ssh import SshError

        raise SshError(_remote_reason("probe", rc, err))
    return got


def run_verify(inv: Inventory, keys: keymod.Keys, pool: HostPool, parallel: int) -> VerifyResult:
    t0 = time.monotonic()
    managed = [p for p in inv.peers if p.ssh is not None]
    names = inv.names
    order = {n: i for i, n in enumerate(names)}
    probes: list[Probe] = []
    unreachable: dict[str, str] = {}

    # 1. One direction per pair first, so two peers never start a handshake with each other at once.
    def prime(peer: Peer) -> HostResult:
        later = [str(o.address) for o in inv.peers if order[o.name] > order[peer.name]]
        _ping_from(pool.get(peer), peer.ssh.user, later)
        return HostResult(peer.name, True, "primed")

    for name, r in fan_out(managed, key=lambda p: p.name, work=prime, parallel=parallel).items():
        if not r.ok:
            unreachable[name] = r.detail

    # 2. Every gateway → every other peer's tunnel and private address.
    def full(peer: Peer) -> HostResult:
        targets: list[tuple[str, str, str]] = []
        for o in inv.peers:
            if o.name == peer.name:
                continue
            targets.append((o.name, "tunnel", str(o.address)))
            if o.private_address is not None:
                targets.append((o.name, "private", str(o.private_address)))
        got = _ping_from(pool.get(peer), peer.ssh.user, sorted({t[2] for t in targets}))
        for dst, kind, addr in targets:
            rtt = got.get(addr)
            probes.append(Probe(peer.name, dst, kind, addr, rtt is not None, rtt))
        return HostResult(peer.name, True, "probed")

    reachable = [p for p in managed if p.name not in unreachable]
    for name, r in fan_out(reachable, key=lambda p: p.name, work=full, parallel=parallel).items():
        if not r.ok:
            unreachable[name] = r.detail

    # 3. Private instance → every other peer's private instances, through the gateway as a jump host.
    all_instances = [(p, i) for p in inv.peers for i in p.instances]

    def from_instance(item) -> HostResult:
        peer, inst = item
        conn = pool.get_instance(peer, inst)
        targets = [(o, oi) for o, oi in all_instances if o.name != peer.name]
        got = _ping_from(conn, inst.ssh_user, sorted({str(oi.address) for _, oi in targets}))
        for o, oi in targets:
            rtt = got.get(str(oi.address))
            probes.append(
                Probe(f"{peer.name}/{inst.name}", f"{o.name}/{oi.name}", "instance", str(oi.address), rtt is not None, rtt)
            )
        return HostResult(f"{peer.name}/{inst.name}", True, "probed")

    with_instances = [(p, i) for p, i in all_instances if p.ssh is not None and p.name not in unreachable]
    for name, r in fan_out(with_instances, key=lambda x: f"{x[0].name}/{x[1].name}", work=from_instance,
                           parallel=parallel).items():
        if not r.ok:
            unreachable[name] = r.detail

    # 4. Handshakes: every reachable peer has a fresh one with every other peer.
    st = collect_status(inv, keys, pool, parallel)
    for name, reason in st.unreachable.items():
        if any(p.name == name for p in managed):
            unreachable.setdefault(name, reason)
    handshakes = [l for l in st.links if l.src not in unreachable and any(p.name == l.src for p in managed)]
    probes.sort(key=lambda p: (p.src, p.dst, p.kind))
    return VerifyResult(probes, handshakes, unreachable, round(time.monotonic() - t0, 2))


def verify(ws: Workspace, parallel: int = DEFAULT_PARALLEL) -> VerifyResult:
    inv = load(ws)
    keys = keystore(ws).load()
    with _pool(ws, inv) as pool:
        return run_verify(inv, keys, pool, parallel)


# ---------------------------------------------------------------- up / destroy


@dataclass
class UpResult:
    inventory: Inventory
    new_keys: list[str]
    push: PushResult
    verify: VerifyResult | None
    timings: dict[str, float]


def _terraform(ws: Workspace, stack: str, variables: dict[str, str], reporter: Reporter) -> tuple[TerraformRunner, dict]:
    """The runner for this inventory's working directory, and the root module to write there
    (after every check that can refuse the variables)."""
    from wgmesh.adapters.terraform import TerraformRunner

    st = stacks.load_stack(ws.stacks_dir, stack)
    stacks.check_vars(st, variables)
    return TerraformRunner(ws.tf_dir, on_line=reporter.line), stacks.root_module(st, ws.tf_dir, variables)


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


def read_outputs(path: str) -> list[Peer]:
    """The Terraform peers of a saved `terraform output -json` document (or its peers map)."""
    import json

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BadInput("FILE", path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:
        raise BadInput("FILE", path, f"not JSON ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("peers"), dict) and "value" in doc["peers"]:
        doc = doc["peers"]["value"]  # terraform output -json
    elif isinstance(doc, dict) and isinstance(doc.get("peers"), dict):
        doc = doc["peers"]
    return invmod.peers_from_outputs(doc)


def import_outputs(ws: Workspace, path: str) -> tuple[Inventory, list[str]]:
    """Terraform peers from a saved `terraform output -json` document (Terraform run elsewhere,
    e.g. by CI): refreshed into the inventory as `up` would, keys made for new peers."""
    inv = load(ws, must_exist=False) or invmod.new_inventory(ws.name)
    merged = invmod.merge_terraform(inv, read_outputs(path))
    keys, made = ensure_keys(ws, merged)
    save(ws, merged)
    return merged, made


def _up_inventory(ws: Workspace, stack: str | None, var_pairs: list[str], pool_cidr: str | None) -> Inventory:
    inv = load(ws, must_exist=False) or invmod.new_inventory(ws.name, stack=stack or "lab")
    if pool_cidr is not None:
        new_pool = v.network("--pool", pool_cidr)
        if inv.peers and new_pool != inv.mesh.pool:
            raise BadInput(
                "--pool", pool_cidr, f"the inventory's peers already have addresses in {inv.mesh.pool}",
                hint="a pool is chosen when an inventory is created",
            )
        inv = replace(inv, mesh=replace(inv.mesh, pool=new_pool))
    stack = stack or inv.stack or "lab"
    v.name("--stack", stack)
    variables = dict(inv.vars)
    variables.update(parse_vars(var_pairs))
    inv = replace(inv, stack=stack, vars=tuple(sorted(variables.items())))
    invmod.check(inv)
    return inv


def check_up_args(ws: Workspace, stack: str | None, var_pairs: list[str], pool_cidr: str | None) -> None:
    """Everything `up` can refuse before it writes anything (the plan is checked later, still
    before anything is created)."""
    inv = _up_inventory(ws, stack, var_pairs, pool_cidr)
    _terraform(ws, inv.stack, dict(inv.vars), Reporter())  # unknown stack or variables
    keystore(ws).load()  # a keystore others can read is refused now, not after terraform apply


def up(
    ws: Workspace,
    stack: str | None,
    var_pairs: list[str],
    reporter: Reporter,
    pool_cidr: str | None = None,
    parallel: int = DEFAULT_PARALLEL,
    do_verify: bool = True,
    do_push: bool = True,
    wait_ssh: float = 0.0,
) -> UpResult:
    timings: dict[str, float] = {}
    t = time.monotonic()
    inv = _up_inventory(ws, stack, var_pairs, pool_cidr)
    stack = inv.stack
    variables = dict(inv.vars)
    tf, root = _terraform(ws, stack, variables, reporter)
    tf.prepare(root)

    reporter.phase(f"terraform plan ({stack})")
    ws.private_state_dir()
    tf.init()
    planned = tf.plan().get("peers")
    if isinstance(planned, dict):
        # Refuse before anything is created: the planned peers, as far as the plan knows them,
        # must make a valid mesh (pool large enough, no overlaps, no cut management links).
        invmod.merge_terraform(inv, invmod.peers_from_outputs(invmod.known_part(planned)))
    reporter.phase(f"terraform apply ({stack})")
    try:
        tf.apply()
    except TerraformFailed:
        # Keep the inventory true to what Terraform holds, then report the failure.
        try:
            merged = invmod.merge_terraform(inv, invmod.peers_from_outputs(tf.outputs().get("peers") or {}))
            save(ws, merged)
            ensure_keys(ws, merged)
        except WgmeshError:
            pass
        raise
    outputs = tf.outputs()
    timings["terraform"] = round(time.monotonic() - t, 2)
    if "peers" not in outputs:
        raise TerraformFailed(f"the stack {stack!r} has no 'peers' output (see the output contract in DESIGN.md)")
    merged = invmod.merge_terraform(inv, invmod.peers_from_outputs(outputs["peers"]))
    forget_peers(ws, merged, [n for n in inv.names if n not in merged.names])
    inv = merged
    save(ws, inv)
    keys, made = ensure_keys(ws, inv)
    if not do_push:
        write_configs(ws, inv, keys)
        return UpResult(inv, made, PushResult({}), None, timings)

    t = time.monotonic()
    reporter.phase(f"push to {len(inv.peers)} peers")
    reporter.expect(len(inv.peers), "push")
    with _pool(ws, inv, wait_ssh) as pool:
        pushed = push_configs(ws, inv, keys, pool, reporter, parallel)
        timings["push"] = round(time.monotonic() - t, 2)
        result = None
        if do_verify:
            t = time.monotonic()
            reporter.phase("verify")
            result = run_verify(inv, keys, pool, parallel)
            timings["verify"] = round(time.monotonic() - t, 2)
    return UpResult(inv, made, pushed, result, timings)


@dataclass
class DestroyResult:
    stopped: dict[str, HostResult]
    terraform: str  # "destroyed" / "no state" / "no stack"
    removed_peers: list[str]
    purged_keys: list[str]
    kept_keys: list[str]
    configs_removed: int
    pins_forgotten: bool


def stop_everywhere(inv: Inventory, pool: HostPool, reporter: Reporter, parallel: int, names=None) -> dict[str, HostResult]:
    def one(peer: Peer) -> HostResult:
        if peer.ssh is None:
            return HostResult(peer.name, True, "skipped", "no SSH access")
        rc, out, err = pool.get(peer).run(
            planmod.wrap(planmod.stop_script(inv.mesh.interface), peer.ssh.user), timeout=APPLY_TIMEOUT
        )
        if rc != 0:
            return HostResult(peer.name, False, "failed", _remote_reason("stop", rc, err))
        return HostResult(peer.name, True, "stopped")

    peers = [p for p in inv.peers if names is None or p.name in names]
    return fan_out(peers, key=lambda p: p.name, work=one, parallel=parallel,
                   on_start=reporter.host_start, on_done=reporter.host_done)


def destroy(ws: Workspace, reporter: Reporter, parallel: int = DEFAULT_PARALLEL, stop: bool = True) -> DestroyResult:
    inv = load(ws, must_exist=False)
    stack = inv.stack if inv is not None else None
    # Every refusal (stack gone, variables no longer valid, keystore) before any host is touched.
    tf, root = _terraform(ws, stack, dict(inv.vars), reporter) if stack else (None, None)
    keystore(ws).load()
    stopped: dict[str, HostResult] = {}
    if stop and inv is not None and inv.peers:
        reporter.phase("stop WireGuard on the peers")
        with _pool(ws, inv) as pool:
            stopped = stop_everywhere(inv, pool, reporter, parallel)
    tf_state = "no stack"
    if stack:
        if tf.has_state():
            reporter.phase(f"terraform destroy ({stack})")
            tf.prepare(root)
            tf.init()
            tf.destroy()
            tf_state = "destroyed"
        else:
            tf_state = "no state"
    removed, purged, kept = [], [], []
    if inv is not None:
        removed = [p.name for p in inv.peers if p.source == invmod.TERRAFORM]
        remaining = invmod.forget_terraform(inv)
        before = keystore(ws).load()
        purged = sorted(n for n in before.pairs if n not in remaining.names)
        kept = sorted(n for n in before.pairs if n in remaining.names)
        stopped_ok = [n for n, r in stopped.items() if r.ok and r.action == "stopped"]
        # Hand-added peers that were not stopped still trust the destroyed peers' keys: pending.
        forget_peers(ws, remaining, purged, done_hosts=stopped_ok)
        save(ws, remaining)
    count = 0
    if ws.output_dir.is_dir():
        for f in ws.output_dir.glob("*.conf"):
            f.unlink()
            count += 1
        for f in ws.output_dir.glob("mesh.*"):  # what `graph` drew
            f.unlink()
        if not any(ws.output_dir.iterdir()):
            ws.output_dir.rmdir()
    pins = ws.pins_path.exists()
    ws.pins_path.unlink(missing_ok=True)
    ws.pins_path.with_name(ws.pins_path.name + ".lock").unlink(missing_ok=True)
    return DestroyResult(stopped, tf_state, removed, purged, kept, count, pins)


def delpeer(ws: Workspace, name: str, reporter: Reporter, parallel: int = DEFAULT_PARALLEL) -> tuple[HostResult | None, PushResult]:
    inv = load(ws)
    if name not in inv.names:
        raise BadInput("name", name, "no such peer in this inventory", hint="peers: " + ", ".join(inv.names))
    removed = inv.peer(name)
    remaining = invmod.remove_peer(inv, name)
    with _pool(ws, inv) as pool:
        stop = None
        if removed.ssh is not None:
            stop = stop_everywhere(inv, pool, reporter, parallel, names={name}).get(name)
        store = keystore(ws)
        current = store.load()
        revs = revmod.load(ws.revocations_path)
        for kp in [current.pairs[name]] if name in current.pairs else []:
            revs = revmod.add(revs, name, kp.public, revmod.REMOVED, managed(remaining), int(time.time()))
        for kp in current.retired.get(name, []):
            revs = revmod.add(revs, name, kp.public, revmod.REMOVED, managed(remaining), int(time.time()))
        revmod.save(ws.revocations_path, revs)
        save(ws, remaining)
        keys = keymod.purge(current, [name])
        store.save(keys)
        keymod.drop_backups(store)
        pushed = push_configs(ws, remaining, keys, pool, reporter, parallel)
    return stop, pushed


def rotate_keys(ws: Workspace, names: list[str] | None, reporter: Reporter, parallel: int = DEFAULT_PARALLEL) -> tuple[list[str], PushResult]:
    """New key pairs (and so new PSKs) for `names` (None = all), pushed to every peer at once.

    The old public keys are pending revocations until every managed host runs the new configs;
    the retired key pairs are purged then.
    """
    inv = load(ws)
    chosen = list(inv.names) if names is None else names
    for n in chosen:
        if n not in inv.names:
            raise BadInput("NAME", n, "no such peer in this inventory", hint="peers: " + ", ".join(inv.names))
    store = keystore(ws)
    current, _ = keymod.ensure(store.load(), inv.names)
    keys, old = keymod.rotate(current, chosen)
    revs = revmod.load(ws.revocations_path)
    now = int(time.time())
    for n, pub in old.items():
        revs = revmod.add(revs, n, pub, revmod.ROTATED, managed(inv), now)
    ws.private_state_dir()
    store.save(keys)
    revmod.save(ws.revocations_path, revs)
    reporter.expect(len(inv.peers), "push")
    with _pool(ws, inv) as pool:
        pushed = push_configs(ws, inv, keys, pool, reporter, parallel)
    return sorted(old), pushed


def setpeer(ws: Workspace, name: str, changes: dict) -> Peer:
    """Change a hand-added peer: endpoint, subnets, keepalive, listen port, private address, SSH."""
    inv = load(ws)
    if name not in inv.names:
        raise BadInput("name", name, "no such peer in this inventory", hint="peers: " + ", ".join(inv.names))
    peer = inv.peer(name)
    if peer.source == invmod.TERRAFORM:
        raise BadInput("name", name, "is managed by Terraform: change the stack and run 'wgmesh up'")
    upd: dict = {}
    lp = v.port("--listen-port", changes["listen_port"]) if changes.get("listen_port") is not None else peer.listen_port
    if changes.get("listen_port") is not None:
        upd["listen_port"] = lp
        if peer.endpoint_host is not None and peer.endpoint_port == peer.listen_port:
            upd["endpoint_port"] = lp  # the endpoint followed the old listen port: keep it so
    if changes.get("endpoint") is not None:
        upd["endpoint_host"], upd["endpoint_port"] = v.host_port("--endpoint", changes["endpoint"], lp)
    if changes.get("allowedips") is not None:
        upd["subnets"] = tuple(v.network("--allowedips", s) for s in changes["allowedips"])
    if changes.get("keepalive") is not None:
        upd["keepalive"] = v.keepalive("--keepalive", changes["keepalive"])
    if changes.get("private_address") is not None:
        upd["private_address"] = v.address("--private-address", changes["private_address"]) if changes["private_address"] else None
    if not upd:
        raise BadInput("setpeer", name, "nothing to change", hint="give --endpoint, --allowedips, --keepalive, --listen-port or --private-address")
    new_inv = replace(inv, peers=tuple(replace(p, **upd) if p.name == name else p for p in inv.peers))
    invmod.check(new_inv)
    save(ws, new_inv)
    return new_inv.peer(name)


@dataclass
class GraphResult:
    files: list[str]
    dot: str
    status: StatusResult


def graph(ws: Workspace, parallel: int = DEFAULT_PARALLEL) -> GraphResult:
    from wgmesh.adapters import graphviz
    from wgmesh.graph import to_dot

    st = status(ws, parallel)
    inv = load(ws)
    dot = to_dot(inv, st.links, set(st.unreachable))
    ensure_private_dir(ws.output_dir.parent)
    ensure_private_dir(ws.output_dir)
    base = ws.output_dir / "mesh"
    write_atomic(base.with_suffix(".dot"), dot, 0o644)
    files = [base.with_suffix(".dot")] + graphviz.render(dot, base)
    return GraphResult([str(f) for f in files], dot, st)
