"""graph: the mesh as a picture: output/<inventory>/mesh.{dot,svg,png}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wgmesh import store
from wgmesh.commands.status import StatusResult, status
from wgmesh.errors import ExitStatus
from wgmesh.executor import DEFAULT_PARALLEL
from wgmesh.fsutil import ensure_private_dir, write_atomic
from wgmesh.remote.host import Connector, ssh_pool
from wgmesh.workspace import Workspace


@dataclass
class GraphResult:
    files: list[str]
    dot: str
    status: StatusResult

    @property
    def exit_status(self) -> ExitStatus:
        # Drawn either way; a host that was not reached (its edges grey) makes it 4, as for status.
        return ExitStatus.HOSTS_FAILED if self.status.unreachable else ExitStatus.OK

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "unreachable": self.status.unreachable}


def graph(ws: Workspace, parallel: int = DEFAULT_PARALLEL, connect: Connector = ssh_pool) -> GraphResult:
    from wgmesh.adapters import graphviz
    from wgmesh.graph import to_dot

    st = status(ws, parallel, connect)
    inv = store.load(ws)
    dot = to_dot(inv, st.links, set(st.unreachable))
    ensure_private_dir(ws.output_dir.parent)
    ensure_private_dir(ws.output_dir)
    base = ws.output_dir / "mesh"
    write_atomic(base.with_suffix(".dot"), dot, 0o644)
    files = [base.with_suffix(".dot"), *graphviz.render(dot, base)]
    return GraphResult([str(f) for f in files], dot, st)
