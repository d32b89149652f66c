"""The command line's process-wide memory settings (``endolight.allocator``), checked in a child
process, as they cannot be undone in this one."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux settings")

# The command line's entry point on a command that exits at once, then this process's status.
CLI_THEN_STATUS = """
import sys
from endolight import cli
sys.argv = ["endolight", "--help"]
try:
    cli.main()
except SystemExit:
    pass
print(open("/proc/self/status").read())
"""


def _status(code: str) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if line.count(":") == 1 and "\t" in line)


def test_the_command_line_turns_huge_pages_off_and_a_bare_process_keeps_them():
    bare = _status("print(open('/proc/self/status').read())")
    if "THP_enabled" not in bare:
        pytest.skip("this kernel does not report THP_enabled")
    assert bare["THP_enabled"].strip() == "1"
    assert _status(CLI_THEN_STATUS)["THP_enabled"].strip() == "0"
