"""The suite's skip report (`tests/support/skip_report.py`): a skipped test is said loudly at
the end of the run, and under CI it fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = """
import pytest

@pytest.mark.skip(reason="chromium is missing")
def test_in_a_browser():
    pass

def test_plain():
    pass
"""


@pytest.mark.parametrize(("ci", "status"), [("", 0), ("true", 1)])
def test_a_skip_is_listed_and_fails_only_under_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, status: int
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makepyfile(SUITE)
    result = pytester.runpytest_subprocess("-p", "tests.support.skip_report")
    assert result.ret == status
    result.stdout.fnmatch_lines(["*1 tests skipped*", "*test_in_a_browser: *chromium is missing*"])


def test_a_run_without_skips_says_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "tests.support.skip_report")
    assert result.ret == 0
    assert "skipped" not in result.stdout.str()
