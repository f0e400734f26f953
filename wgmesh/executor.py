"""Run one function per host, many at once; a failure on one host never stops the others."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from wgmesh.model import HostResult

DEFAULT_PARALLEL = 16  # the CLI's --parallel default: importing this module costs nothing more

T = TypeVar("T")


def fan_out(
    items: Iterable[T],
    key: Callable[[T], str],
    work: Callable[[T], HostResult],
    *,
    parallel: int = DEFAULT_PARALLEL,
    on_start: Callable[[str], None] | None = None,
    on_done: Callable[[HostResult], None] | None = None,
) -> dict[str, HostResult]:
    """`work(item)` for every item, at most `parallel` at a time. Every item ends with a result."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from wgmesh.model import Action, HostResult

    items = list(items)
    results: dict[str, HostResult] = {}
    if not items:
        return results

    def guarded(item: T) -> HostResult:
        name = key(item)
        if on_start:
            on_start(name)
        t0 = time.monotonic()
        try:
            res = work(item)
        except Exception as exc:  # one host's fault (or our bug) must not stop the others
            reason = getattr(exc, "reason", None)  # SshError: short, no secrets
            if reason is not None:
                hint = getattr(exc, "hint", None)
                res = HostResult(name, False, Action.FAILED, reason + (f" ({hint})" if hint else ""))
            else:
                res = HostResult(name, False, Action.FAILED, f"{type(exc).__name__}: {exc}")
        if not res.seconds:
            res = HostResult(res.host, res.ok, res.action, res.detail, round(time.monotonic() - t0, 3))
        return res

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items)))) as pool:
        futures = {pool.submit(guarded, it): key(it) for it in items}
        for fut in as_completed(futures):
            res = fut.result()
            results[res.host] = res
            if on_done:
                on_done(res)
    return {k: results[k] for k in sorted(results)}
