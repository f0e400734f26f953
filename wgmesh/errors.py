"""One error root and the exit-status contract (README, "Exit codes").

The core raises these; only the CLI turns them into an exit status.
Messages never contain key material.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    OTHER = 1  # anything else: the message says what (a file the system refused, a missing tool)
    BAD_INPUT = 2
    LOCKED = 3
    HOSTS_FAILED = 4
    TERRAFORM_FAILED = 5
    CHANGES_PENDING = 6  # push --dry-run: some host would change
    BACKEND_FAILED = 7  # the shared backend (S3, Secrets Manager) refused or could not be reached
    INTERRUPTED = 130


class WgmeshError(Exception):
    exit_code: ExitStatus = ExitStatus.OTHER

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(WgmeshError):
    """Input refused before anything changed."""

    exit_code = ExitStatus.BAD_INPUT

    def __init__(self, field: str, value: object, problem: str, hint: str | None = None):
        super().__init__(f"{field}: {value!r}: {problem}", hint)
        self.field = field
        self.value = value
        self.problem = problem


class Refused(WgmeshError):
    """Local state wgmesh will not use as it is (e.g. a keystore others can read); nothing changed."""

    exit_code = ExitStatus.BAD_INPUT


class LockHeld(WgmeshError):
    exit_code = ExitStatus.LOCKED


class BackendFailed(WgmeshError):
    """The shared backend could not be used: no credentials, access denied, unreachable, a write
    that kept meeting newer versions. Nothing was changed by the failing call."""

    exit_code = ExitStatus.BACKEND_FAILED


class HostsFailed(WgmeshError):
    """A host could not do what was asked (e.g. the agent of a failover target does not run)."""

    exit_code = ExitStatus.HOSTS_FAILED


class TerraformFailed(WgmeshError):
    exit_code = ExitStatus.TERRAFORM_FAILED


class Interrupted(WgmeshError):
    exit_code = ExitStatus.INTERRUPTED
