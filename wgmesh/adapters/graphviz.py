"""Graphviz's `dot`, run on a DOT text to make SVG and PNG files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from wgmesh.errors import WgmeshError


def render(dot_text: str, base: Path, formats: tuple[str, ...] = ("svg", "png")) -> list[Path]:
    exe = shutil.which("dot")
    if exe is None:
        raise WgmeshError("Graphviz 'dot' is not installed (apt-get install graphviz; ./bootstrap.sh does it)")
    out: list[Path] = []
    for fmt in formats:
        target = base.with_suffix(f".{fmt}")
        try:
            r = subprocess.run(
                [exe, f"-T{fmt}", "-o", str(target)],
                input=dot_text, text=True, capture_output=True, timeout=120, check=False,  # the exit code is read below
            )
        except subprocess.TimeoutExpired:
            raise WgmeshError(f"dot -T{fmt} took more than 120 s") from None
        if r.returncode != 0:
            raise WgmeshError(f"dot -T{fmt} failed: {r.stderr.strip()[:500]}")
        out.append(target)
    return out
