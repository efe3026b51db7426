"""`parley bench scaling`, small, on the test control plane: one overload → scale-up →
scale-down cycle under calls, and the operator scraping ten SCOS stand-ins. It checks that the
bench measures what it says (a reaction time, every count of cut sessions, scrapes that reached
the pods), not how fast anything is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import ControlPlane

pytestmark = [pytest.mark.k8s, pytest.mark.e2e]


def test_a_short_scaling_bench_measures_a_cycle_and_the_scrapes(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    out = tmp_path / "scaling.json"
    command = [
        sys.executable,
        "-m",
        "parley",
        "bench",
        "scaling",
        "--cycles",
        "1",
        "--scale-down-window",
        "5s",
        "--pods",
        "10",
        "--scrape-hold",
        "10s",
        "--out",
        str(out),
    ]
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "cycle 1/1:" in run.stdout and "overload → replica requested" in run.stdout

    report = json.loads(out.read_text())
    cycles = report["cycles"]
    assert cycles["completed_cycles"] == 1
    (cycle,) = cycles["cycles"]
    assert cycle["error"] is None and cycle["cause"] == "backpressure"
    assert cycle["fillers"] >= 1
    assert cycle["reaction_s"] > 0 and cycles["reaction_s"]["n"] == 1
    cut = cycles["sessions_cut"]
    assert (cut["operator"], cut["calls"], cut["fillers"]) == (0, 0, 0)
    assert cut["runtimes_not_exiting_0"] == {}
    assert cycles["calls"]["connections"]["opened"] >= 1

    scrape = report["scrape"]
    assert scrape["pods"] == 10 and scrape["scrape_failures"] == 0
    # Every round reads every pod, and every read reached a stand-in.
    assert scrape["rounds"] >= 1 and scrape["scrapes"] >= 10 * scrape["rounds"]
    assert scrape["scrapes_answered"] >= scrape["scrapes"]
    assert scrape["scraping"]["rss_mib"] > 0
