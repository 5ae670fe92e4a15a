"""`embedtune optimize` killed mid-search (SIGKILL, no chance to clean up), then run again."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna

from _cli import run_cli, share_engine_exports

TARGET = 20  # trials the search should reach; the kill comes long before


def trial_states(study: Path) -> dict[str, int]:
    """``{state: count}`` read straight from optuna's tables (no optuna import in the loop)."""
    if not study.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{study}?mode=ro", uri=True, timeout=1) as db:
            counts = dict(db.execute("SELECT state, count(*) FROM trials GROUP BY state").fetchall())
            asked = (
                "SELECT count(DISTINCT t.trial_id) FROM trials t JOIN trial_params p USING (trial_id) WHERE t.state = ?"
            )
            counts["ASKED"] = db.execute(asked, ("RUNNING",)).fetchone()[0]  # running, parameters chosen
            return counts
    except sqlite3.OperationalError:  # tables not created yet, or locked by the writer for a moment
        return {}


def trials(out: Path, *states: optuna.trial.TrialState) -> dict[int, tuple[dict, object]]:
    """``{number: (params, completion time)}`` of the study's trials in ``states``."""
    storage = f"sqlite:///{out / 'study.sqlite'}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    return {t.number: (t.params, t.datetime_complete) for t in study.get_trials(deepcopy=False, states=states)}


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def test_a_search_killed_mid_run_resumes_from_its_study_and_reruns_no_finished_trial(tmp_path):
    out, home = tmp_path / "out", share_engine_exports(tmp_path / "home")
    args = ["optimize", "--models", "fake:hash-256", "--chunker", "none", "--trials", str(TARGET), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDTUNE_HOME": str(home)}
    search = subprocess.Popen(
        [sys.executable, "-m", "embedtune.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and search.poll() is None:
            states = trial_states(out / "study.sqlite")
            # Three trials done and one under way with its parameters chosen: the kill cuts a trial short.
            if states.get("COMPLETE", 0) + states.get("PRUNED", 0) >= 3 and states.get("ASKED"):
                break
            time.sleep(0.02)
        assert search.poll() is None, "the search ended before it could be killed"
        search.send_signal(signal.SIGKILL)
    finally:
        search.kill()
        search.wait()
    before = trials(out, *FINISHED)
    assert 3 <= len(before) < TARGET
    interrupted = trials(out, optuna.trial.TrialState.RUNNING)  # the one the kill cut short, if any

    rerun = run_cli(*args, home=home)
    assert rerun.returncode == 0, rerun.stderr
    after = trials(out, *FINISHED)
    # Every trial finished before the kill is still there as it was: not scored again.
    assert {n: after[n] for n in before} == before
    # The rerun ran only what was missing, and the search completes.
    assert len(after) == TARGET
    assert f"{TARGET - len(before)} new trials" in rerun.stdout
    # A trial the kill interrupted is closed as failed and run again from its parameters.
    assert set(trials(out, optuna.trial.TrialState.FAIL)) == set(interrupted)
    assert not trials(out, optuna.trial.TrialState.RUNNING)
    rerun_params = [params for number, (params, _) in after.items() if number not in before]
    # (A trial killed before it asked anything has nothing to run again.)
    assert all(params in rerun_params for params, _ in interrupted.values() if params)
