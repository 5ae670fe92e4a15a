"""Kill ``embedtune optimize`` mid-search with SIGKILL, then run the same command again.

One procedure for the kill-and-resume test and its SciFact benchmark: the search runs as a process
of its own (as a user runs it); once ``kill_after`` trials are finished in its study and another has
chosen its parameters, it gets SIGKILL (no chance to clean up), so the kill always cuts a trial
short. Then the same command runs to its end, and the study is read before and after::

    outcome = kill_and_resume(["optimize", "data/", "--trials", "12", "--out", "out"], Path("out"), 4)
    assert outcome.untouched == len(outcome.before)
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["KillResume", "kill_and_resume", "trial_states", "trials"]

STUDY_FILE = "study.sqlite"
FINISHED = ("COMPLETE", "PRUNED")

Trials = dict[int, tuple[dict, object]]  # number: (parameters, completion time)


@dataclass(frozen=True, kw_only=True)
class KillResume:
    """What a killed search left and what its rerun did. ``killed`` is False when the search ended
    (or the wait ran out) before the kill: then nothing was rerun and the rest is empty."""

    killed: bool
    exit_code: int | None
    killed_after_s: float
    before: Trials = field(default_factory=dict)  # finished trials when the kill came
    cut: Trials = field(default_factory=dict)  # trials under way at the kill (still RUNNING in the study)
    rerun: subprocess.CompletedProcess | None = None
    rerun_s: float = 0.0
    after: Trials = field(default_factory=dict)  # finished trials after the rerun
    failed: Trials = field(default_factory=dict)  # trials closed as failed after the rerun

    @property
    def untouched(self) -> int:
        """Trials finished before the kill still in the study as they were: not scored again."""
        return sum(self.after.get(number) == trial for number, trial in self.before.items())

    @property
    def asked(self) -> list[dict]:
        """Parameters of the trials the kill cut short (one killed before it asked has none)."""
        return [params for params, _ in self.cut.values() if params]

    @property
    def run_again(self) -> list[int]:
        """New trials of the rerun that repeat a cut-short trial's parameters."""
        asked = self.asked
        return [n for n, (params, _) in self.after.items() if n not in self.before and params in asked]


def trial_states(study: Path) -> dict[str, int]:
    """``{state: count}`` read straight from optuna's tables, cheap enough to poll; ``ASKED`` counts
    running trials that have chosen parameters. Empty while the tables are not there yet or locked."""
    if not study.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{study}?mode=ro", uri=True, timeout=1) as db:
            counts = dict(db.execute("SELECT state, count(*) FROM trials GROUP BY state").fetchall())
            asked = (
                "SELECT count(DISTINCT t.trial_id) FROM trials t JOIN trial_params p USING (trial_id) WHERE t.state = ?"
            )
            counts["ASKED"] = db.execute(asked, ("RUNNING",)).fetchone()[0]
            return counts
    except sqlite3.OperationalError:
        return {}


def trials(study: Path, *states: str) -> Trials:
    """``{number: (params, completion time)}`` of the study's trials in ``states`` (optuna's names)."""
    import optuna

    storage = f"sqlite:///{study}"
    (name,) = optuna.get_all_study_names(storage)
    loaded = optuna.load_study(study_name=name, storage=storage)
    wanted = tuple(optuna.trial.TrialState[state] for state in states)
    return {t.number: (t.params, t.datetime_complete) for t in loaded.get_trials(deepcopy=False, states=wanted)}


def kill_and_resume(
    args: Sequence[str],
    out: Path,
    kill_after: int,
    *,
    env: Mapping[str, str] | None = None,
    wait_s: float | None = None,
    rerun_timeout_s: float | None = None,
) -> KillResume:
    """Run ``embedtune ARGS`` (whose study is ``out/study.sqlite``), SIGKILL it once ``kill_after``
    trials are finished and another is under way, then run it again to its end. ``wait_s`` bounds
    the wait for the kill."""
    command = [sys.executable, "-m", "embedtune.cli", *map(str, args)]
    environment = dict(os.environ if env is None else env)
    study = out / STUDY_FILE
    start = time.perf_counter()
    search = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = False
    try:
        while search.poll() is None and (wait_s is None or time.perf_counter() - start < wait_s):
            now = trial_states(study)
            if sum(now.get(state, 0) for state in FINISHED) >= kill_after and now.get("ASKED"):
                search.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
    finally:
        if search.poll() is None:
            search.kill()
        search.wait()
    killed_after_s = time.perf_counter() - start
    if not killed:
        return KillResume(killed=False, exit_code=search.returncode, killed_after_s=killed_after_s)
    before, cut = trials(study, *FINISHED), trials(study, "RUNNING")
    start = time.perf_counter()
    rerun = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=rerun_timeout_s, check=False
    )
    rerun_s = time.perf_counter() - start
    return KillResume(
        killed=True,
        exit_code=search.returncode,
        killed_after_s=killed_after_s,
        before=before,
        cut=cut,
        rerun=rerun,
        rerun_s=rerun_s,
        after=trials(study, *FINISHED),
        failed=trials(study, "FAIL"),
    )
