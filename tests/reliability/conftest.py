"""Prints the reliability table at the end of the run (and writes it to test-output/reliability.md)."""
from __future__ import annotations

import pytest

from tests.reliability.tally import RESULTS, TABLE_PATH, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    text = table()
    terminalreporter.section("reliability")
    terminalreporter.write_line(text)
    TABLE_PATH.parent.mkdir(parents=True, exist_ok=True)
    TABLE_PATH.write_text(text + "\n")
