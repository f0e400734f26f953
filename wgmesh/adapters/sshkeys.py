"""The client keys an SSH connection offers (paramiko): a peer's own key file, else ssh-agent's
keys, ~/.ssh/id_*, then the fallback keys; each once, and agent sockets closed after login."""

from __future__ import annotations

import base64
from pathlib import Path

import paramiko

from wgmesh.adapters.hostkeys import SshError


def public_blob(key_file: str) -> bytes | None:
    """The public half of a private key file that needs a passphrase: from KEY.pub, else from the
    file itself (an OpenSSH-format key carries its public key in clear)."""
    try:
        return base64.b64decode(Path(key_file + ".pub").read_text().split()[1], validate=True)
    except (OSError, IndexError, ValueError):
        pass
    try:
        lines = Path(key_file).read_text().splitlines()
        raw = base64.b64decode("".join(line for line in lines if not line.startswith("-----")))
    except (OSError, ValueError):
        return None
    magic = b"openssh-key-v1\0"
    if not raw.startswith(magic):
        return None
    msg = paramiko.Message(raw[len(magic):])
    for _ in ("cipher", "kdf", "kdf options"):
        msg.get_string()
    return msg.get_binary() if msg.get_int() >= 1 else None


def agent_keys() -> list[paramiko.PKey]:
    try:
        return list(paramiko.Agent().get_keys())
    except (paramiko.SSHException, OSError):
        return []  # no usable agent: the other keys are still tried


def load_client_keys(key_file: str | None, fallback: tuple[str, ...] = ()) -> list[paramiko.PKey]:
    """The keys to offer, each once. A peer with its own key file (`--ssh-key`, a stack's
    `ssh_key`): that key alone (or ssh-agent's copy of it, when the file needs a passphrase) —
    the identity named for a host is the only one offered to it. Without one: the agent's keys,
    ~/.ssh/id_*, then the fallback keys. sshd counts every key offered against its MaxAuthTries
    (6 by default), so no key is offered twice."""
    agent = agent_keys()
    chosen: list[paramiko.PKey] = []
    try:
        chosen = choose_keys(agent, key_file, fallback)
        return chosen
    finally:
        close_agents(agent, keep=chosen)  # an agent none of whose keys is offered


def choose_keys(agent: list[paramiko.PKey], key_file: str | None, fallback: tuple[str, ...]) -> list[paramiko.PKey]:
    keys: list[paramiko.PKey] = []
    if key_file:
        try:
            keys.append(paramiko.PKey.from_path(key_file))
        except FileNotFoundError:
            raise SshError(f"SSH key file not found: {key_file}") from None
        except (paramiko.PasswordRequiredException, TypeError):  # paramiko 4+ says so with a TypeError
            blob = public_blob(key_file)
            keys.extend(k for k in agent if blob is not None and k.asbytes() == blob)
            if not keys:
                raise SshError(
                    f"SSH key {key_file} needs a passphrase and ssh-agent does not hold it: ssh-add {key_file}"
                ) from None
        except (paramiko.SSHException, ValueError) as exc:
            raise SshError(f"SSH key {key_file} could not be read: {type(exc).__name__}") from None
        return keys
    keys.extend(agent)
    home = Path.home() / ".ssh"
    for name in ("id_ed25519", "id_ecdsa", "id_rsa"):
        p = home / name
        if p.exists():
            try:
                keys.append(paramiko.PKey.from_path(p))
            except (paramiko.SSHException, ValueError, TypeError):  # TypeError: it needs a passphrase
                continue
    for extra in fallback:
        try:
            keys.append(paramiko.PKey.from_path(extra))
        except (OSError, paramiko.SSHException, ValueError, TypeError):
            continue
    if not keys:
        raise SshError("no SSH key: give --ssh-key or load a key into ssh-agent")
    unique: dict[bytes, paramiko.PKey] = {}
    for k in keys:
        unique.setdefault(k.asbytes(), k)
    return list(unique.values())


def close_agents(keys: list[paramiko.PKey], keep: list[paramiko.PKey] | None = None) -> None:
    """Close the ssh-agent connections behind `keys`, but one a key of `keep` still signs with: an
    agent and its keys refer to each other, so without this its socket stays open until the
    cyclic GC runs (one per host connected meanwhile)."""
    needed = {id(k.agent) for k in keep or () if isinstance(k, paramiko.AgentKey)}
    agents = {id(k.agent): k.agent for k in keys if isinstance(k, paramiko.AgentKey)}
    for ident, agent in agents.items():
        if ident not in needed and isinstance(agent, paramiko.Agent):
            agent.close()
