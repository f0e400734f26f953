"""Name resolution on the controller, bounded in time (getaddrinfo itself has no timeout)."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor, wait

RESOLVE_TIMEOUT = 3.0


def _lookup(host: str) -> bool:
    try:
        return bool(socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM))
    except (OSError, UnicodeError):
        return False


def unresolved(hosts: set[str], timeout: float = RESOLVE_TIMEOUT) -> set[str]:
    """The names among `hosts` that do not resolve within `timeout` (all looked up at once)."""
    if not hosts:
        return set()
    pool = ThreadPoolExecutor(max_workers=min(32, len(hosts)))
    futures = {pool.submit(_lookup, h): h for h in hosts}
    done, _ = wait(futures, timeout=timeout)
    pool.shutdown(wait=False, cancel_futures=True)  # a lookup still hanging is abandoned, not waited for
    return {h for f, h in futures.items() if f not in done or not f.result()}
