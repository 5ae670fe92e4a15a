"""The embedtune command as a user runs it: a process of its own, its output captured."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

# Where tests keep local models' engine exports and auto's choice. A fresh EMBEDTUNE_HOME per test
# would export and measure each model again (tens of seconds); the exports are keyed by weights
# hash and machine, so sharing them between homes and runs changes no result.
SHARED_ENGINES = Path(tempfile.gettempdir()) / "embedtune-tests-engines"


def share_engine_exports(home: Path) -> Path:
    """Point ``home``'s engine exports at the tests' shared folder; returns ``home``."""
    link = home / "models" / "engines"
    if not link.exists():
        SHARED_ENGINES.mkdir(parents=True, exist_ok=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(SHARED_ENGINES, target_is_directory=True)
    return home


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
        environment["EMBEDTUNE_HOME"] = str(share_engine_exports(Path(home)))
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
    """The one ``error:`` line a refused command prints (exit 2, no traceback); fails otherwise.

    ``note:`` lines (a model's first export, the engine ``auto`` chose) may come before it."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("note: ")]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
