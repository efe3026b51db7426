"""A pytest plugin: skipped tests are said loudly at the end, and fail the run under CI.

A skip is a check that did not run (Chromium missing, a tool not built): a green run that
skipped one proves less than it seems to. Without CI it lists them in red after the summary;
with `CI=true` (or 1, yes) the run fails.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        _skipped.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and in_ci() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped:
        verdict = "this FAILS the run (CI=true)" if in_ci() else "the suite did NOT fully run"
        title = f"{len(_skipped)} tests skipped: {verdict}"
        terminalreporter.section(title, red=True, bold=True)
        for line in _skipped:
            terminalreporter.write_line(line, red=True)
