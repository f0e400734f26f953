"""Terraform through python-terraform: the only module that imports it.

Each inventory has its own working directory (a generated root module that calls the
stack, its own state and its own CLI configuration). Provider plugins come from a local
filesystem mirror when one is present; the user's TF_CLI_CONFIG_FILE is never needed.

python-terraform 0.10.1 returns (rc, out, err) without raising and its destroy() passes
-force, which current Terraform rejects: every result is checked here, and commands are
built with its generate_cmd_string and run with our own process handling so Terraform's
progress streams to the user and an interrupt (Ctrl-C, or SIGTERM/SIGHUP to wgmesh) reaches it
exactly once, and it is waited for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from python_terraform import IsFlagged, Terraform

from wgmesh.errors import Interrupted, Refused, TerraformFailed
from wgmesh.fsutil import write_atomic

MIRROR_CANDIDATES = (
    "/opt/tf-plugins",
    "~/.terraform.d/plugins",
    "/usr/local/share/terraform/plugins",
    "/usr/share/terraform/plugins",
)
ERRORED_STATE = "errored.tfstate"  # where Terraform leaves a state it could not save


def mirror_providers(mirror: str | Path) -> list[str]:
    """The providers a filesystem mirror holds: its HOSTNAME/NAMESPACE/TYPE directories that
    hold something (a version directory, packed or unpacked)."""
    root = Path(mirror)
    found = (d.relative_to(root).parts for d in root.glob("*/*/*") if d.is_dir() and any(d.iterdir()))
    return sorted("/".join(parts) for parts in found if not any(p.startswith(".") for p in parts))


def find_mirror() -> str | None:
    env = os.environ.get("WGMESH_TF_PLUGIN_MIRROR")
    for cand in ([env] if env else []) + list(MIRROR_CANDIDATES):
        p = Path(cand).expanduser()
        if p.is_dir() and mirror_providers(p):
            return str(p)
    return None


def cli_config(mirror: str | None) -> str:
    """The mirror serves exactly the providers it holds; every other provider comes from its
    registry (a dev provider in ~/.terraform.d/plugins must not hide the AWS provider)."""
    providers = mirror_providers(mirror) if mirror else []
    if not providers:
        return "provider_installation {\n  direct {}\n}\n"
    listed = json.dumps(providers)
    return (
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path    = {json.dumps(mirror)}\n    include = {listed}\n  }}\n"
        f"  direct {{\n    exclude = {listed}\n  }}\n"
        "}\n"
    )


class TerraformRunner:
    def __init__(self, workdir: Path, on_line: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.on_line = on_line or (lambda line: None)
        self.tf = Terraform(working_dir=str(workdir))

    # ------------------------------------------------------------ root module

    def prepare(self, root: Mapping[str, object]) -> None:
        """Write the root module (made by wgmesh.stacks) and the CLI configuration."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        write_atomic(self.workdir / "main.tf.json", json.dumps(root, indent=2, sort_keys=True) + "\n", 0o644)
        write_atomic(self.workdir / "terraform.rc", cli_config(find_mirror()), 0o644)

    def has_state(self) -> bool:
        state = self.workdir / "terraform.tfstate"
        if not state.exists():
            return False
        try:
            return bool(json.loads(state.read_text()).get("resources"))
        except ValueError:
            return True

    # ------------------------------------------------------------ a state Terraform could not save

    def _errored(self) -> tuple[str, str] | None:
        """What errored.tfstate means and how to recover (message, hint), if Terraform left one."""
        path = self.workdir / ERRORED_STATE
        if not path.exists():
            return None
        return (
            f"Terraform could not save its state and left it in {path}: what that run created or destroyed "
            "is recorded only there, and running Terraform again before it is saved would fork the state",
            f"fix what kept Terraform from saving (its message says), then in {self.workdir} run "
            f"'terraform state push -force {ERRORED_STATE} && rm {ERRORED_STATE}', then wgmesh again "
            "(-force: a local state that failed to save keeps the serial of the one it replaces)",
        )

    def refuse_errored_state(self) -> None:
        """Nothing runs Terraform here while errored.tfstate holds state it could not save."""
        errored = self._errored()
        if errored is not None:
            raise Refused(*errored)

    # ------------------------------------------------------------ running

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TF_CLI_CONFIG_FILE=str(self.workdir / "terraform.rc"),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
        )
        env.pop("TF_DATA_DIR", None)
        return env

    def _run(self, what: str, *args: str, stream: bool = True, **options: object) -> tuple[int, str, str]:
        self.refuse_errored_state()
        cmd = self.tf.generate_cmd_string(*args, **options)
        try:
            proc = self._popen(cmd)
        except FileNotFoundError:
            raise TerraformFailed("terraform was not found on PATH (install Terraform 1.x)") from None
        return self._wait(what, proc, stream)

    def _popen(self, cmd: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a terminal's Ctrl-C reaches us only; we forward it once
        )

    def _wait(self, what: str, proc: subprocess.Popen[str], stream: bool) -> tuple[int, str, str]:
        stdout, stderr = proc.stdout, proc.stderr
        if stdout is None or stderr is None:
            raise TypeError("terraform must run with its stdout and stderr piped (see _popen)")
        err_lines: list[str] = []
        deaf = threading.Event()  # our terminal is gone (a dropped SSH session): keep draining and waiting

        def say(line: str) -> None:
            if not deaf.is_set():
                try:
                    self.on_line(line)
                except (OSError, SystemExit):  # (Rich turns a broken pipe into SystemExit)
                    deaf.set()

        def drain_err() -> None:
            for line in stderr:
                err_lines.append(line)
                if stream:
                    say(line.rstrip("\n"))

        t = threading.Thread(target=drain_err, daemon=True)
        t.start()
        out_lines: list[str] = []
        interrupted = forwarded = False
        while True:
            try:
                if interrupted and not forwarded:  # here, not in the handler: a second interrupt lands in it
                    forwarded = True
                    proc.send_signal(signal.SIGINT)  # Terraform stops gracefully and saves its state
                    say("interrupted: waiting for Terraform to stop cleanly")
                for line in stdout:
                    out_lines.append(line)
                    if line.startswith("Outputs:"):
                        stream = False  # the outputs are read as JSON next; no need to print them
                    if stream:
                        say(line.rstrip("\n"))
                proc.wait()
                break
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM/SIGHUP (see wgmesh.cli.app.run)
                interrupted = True
        t.join()
        out, err = "".join(out_lines), "".join(err_lines)
        if interrupted:
            errored = self._errored()
            if errored is not None:
                raise Interrupted(f"terraform {what} interrupted; {errored[0]}", hint=errored[1])
            raise Interrupted(f"terraform {what} interrupted")
        return proc.returncode, out, err

    def _check(self, what: str, rc: int, out: str, err: str) -> None:
        if rc != 0:
            msg = (err.strip() or out.strip()).splitlines()
            tail = "\n".join(msg[-15:]) if msg else "(no message)"
            errored = self._errored()
            if errored is not None:
                raise TerraformFailed(f"terraform {what} failed (exit {rc}):\n{tail}\n{errored[0]}", hint=errored[1])
            raise TerraformFailed(f"terraform {what} failed (exit {rc}):\n{tail}")

    def init(self, backend: str = "") -> None:
        """`backend`: "" as the root module says; "reconfigure": take its backend block as it is
        now (a shared backend, whose endpoint options follow the environment); "migrate": copy
        the state from the backend configured before to the one the root module names now."""
        flags: dict[str, object] = {}
        if backend == "reconfigure":
            flags["reconfigure"] = IsFlagged
        elif backend == "migrate":
            flags.update(migrate_state=IsFlagged, force_copy=IsFlagged)
        rc, out, err = self._run("init", "init", stream=False, no_color=IsFlagged, input=False, upgrade=False, **flags)
        self._check("init", rc, out, err)

    def state_pull(self) -> dict[str, object]:
        """The state as its backend holds it (after init)."""
        rc, out, err = self._run("state pull", "state", "pull", stream=False)
        self._check("state pull", rc, out, err)
        try:
            doc = json.loads(out or "{}")
        except ValueError:
            raise TerraformFailed("terraform state pull did not print JSON") from None
        return doc if isinstance(doc, dict) else {}

    PLAN_FILE = "wgmesh.tfplan"

    def plan(self) -> dict[str, object]:
        """Plan into a file and return the planned output values (unknown parts left out)."""
        rc, out, err = self._run("plan", "plan", no_color=IsFlagged, input=False, out=self.PLAN_FILE)
        self._check("plan", rc, out, err)
        rc, out, err = self._run("show", "show", self.PLAN_FILE, stream=False, json=IsFlagged, no_color=IsFlagged)
        self._check("show", rc, out, err)
        try:
            doc = json.loads(out)
        except ValueError:
            raise TerraformFailed("terraform show -json did not print JSON") from None
        return {k: v.get("after") for k, v in (doc.get("output_changes") or {}).items()}

    def apply(self) -> None:
        """Apply the plan made by plan() (nothing else), then forget it."""
        plan = self.workdir / self.PLAN_FILE
        try:
            rc, out, err = self._run("apply", "apply", self.PLAN_FILE, no_color=IsFlagged, input=False)
        finally:
            plan.unlink(missing_ok=True)
        self._check("apply", rc, out, err)

    def destroy(self) -> None:
        # Not self.tf.destroy(): it passes -force, which Terraform ≥ 0.15 rejects.
        rc, out, err = self._run("destroy", "destroy", no_color=IsFlagged, input=False, auto_approve=IsFlagged)
        self._check("destroy", rc, out, err)

    def outputs(self) -> dict[str, object]:
        rc, out, err = self._run("output", "output", stream=False, json=IsFlagged, no_color=IsFlagged)
        self._check("output", rc, out, err)
        try:
            doc = json.loads(out or "{}")
        except ValueError:
            raise TerraformFailed("terraform output -json did not print JSON") from None
        return {k: v.get("value") for k, v in doc.items()}
