"""The benchmark harness still works: bench/run --smoke, every case at its smallest size.

Only that it runs and measures what it claims; the figures themselves live in bench/RESULTS.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke(tmp_path):
    out = tmp_path / "RESULTS.md"
    r = subprocess.run([str(ROOT / "bench" / "run"), "--smoke", "--out", str(out), "--work", str(tmp_path / "w")],
                       check=False, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = out.read_text()
    assert "Machine:" in text and "wg-meshconf 2.5.1" in text
    for row in ("python -c pass (the interpreter alone)", "wgmesh genconfig --help", "wg-meshconf genconfig --help",
                "ratio: wgmesh / wg-meshconf start-up", "wgmesh genconfig", "wg-meshconf 2.5.1 genconfig",
                "floor: write the same",
                "wgmesh import", "wgmesh addpeer (one)", "wg-meshconf addpeer (one)",
                "wgmesh up (fresh lab", "wgmesh push (all hosts", "serial scp + ssh wg-quick up loop",
                "wgmesh verify", "addpeer + push (syncconf)", "endpoint change + push (syncconf)",
                "[Interface] change + push (restart)", "active gateway killed: longest ping gap",
                "healed gateway returns as standby", "wgmesh failover (planned"):
        assert row in text, row
    # The hitless changes lost nothing while the ping ran; the figures are real numbers.
    for what in ("addpeer + push (syncconf)", "endpoint change + push (syncconf)"):
        line = next(row for row in text.splitlines() if what in row)
        assert re.search(r"(\d+) sent, \*\*0 lost\*\*", line), line
    medians = re.findall(r"\| (\d+\.\d{4}) \| \d+\.\d{4} \| \d+\.\d{4} \| [12] \|", text)
    assert len(medians) >= 16 and all(float(x) > 0 for x in medians), medians
    # A healed gateway lost nothing; a planned failover (a handover) at most one packet per
    # switch, the one a 5/s ping may put in its ~1 ms window (the figures themselves: RESULTS.md).
    line = next(row for row in text.splitlines() if "healed gateway returns as standby" in row)
    assert "**0 lost**" in line, line
    line = next(row for row in text.splitlines() if "wgmesh failover (planned" in row)
    m = re.search(r"\*\*(\d+) lost\*\* in (\d+) switches; handover .* (\d+) ms", line)
    assert m and int(m.group(1)) <= int(m.group(2)), line
