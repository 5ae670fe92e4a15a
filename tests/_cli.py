"""The embedtune command as a user runs it: a process of its own, its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: object,
    home: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """``embedtune ARGS`` offline, with ``home`` as EMBEDTUNE_HOME and ``env`` added to the environment."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "240"}
    if home is not None:
        environment["EMBEDTUNE_HOME"] = str(home)
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "embedtune.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line a refused command prints (exit 2, no traceback); fails otherwise."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
