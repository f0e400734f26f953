"""One error root and the exit-code contract.

The core raises these; only the CLI turns them into an exit code.
Messages never contain key material.
"""

from __future__ import annotations

OK = 0
OTHER = 1  # anything else: the message says what (a file the system refused, a missing tool)
BAD_INPUT = 2
LOCKED = 3
HOSTS_FAILED = 4
TERRAFORM_FAILED = 5
INTERRUPTED = 130


class WgmeshError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(WgmeshError):
    """Input refused before anything changed."""

    exit_code = BAD_INPUT

    def __init__(self, field: str, value: object, problem: str, hint: str | None = None):
        shown = repr(value) if not isinstance(value, str) else repr(value)
        super().__init__(f"{field}: {shown}: {problem}", hint)
        self.field = field
        self.value = value
        self.problem = problem


class Refused(WgmeshError):
    """Local state wgmesh will not use as it is (e.g. a keystore others can read); nothing changed."""

    exit_code = BAD_INPUT


class LockHeld(WgmeshError):
    exit_code = LOCKED


class HostsFailed(WgmeshError):
    exit_code = HOSTS_FAILED


class TerraformFailed(WgmeshError):
    exit_code = TERRAFORM_FAILED


class Interrupted(WgmeshError):
    exit_code = INTERRUPTED
