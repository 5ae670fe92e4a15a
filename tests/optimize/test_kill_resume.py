"""`embedtune optimize` killed mid-search (SIGKILL, no chance to clean up), then run again."""

import os

from _cli import share_engine_exports
from embedtune.testing.resume import kill_and_resume, trials

TARGET = 20  # trials the search should reach; the kill comes long before


def test_a_search_killed_mid_run_resumes_from_its_study_and_reruns_no_finished_trial(tmp_path):
    out, home = tmp_path / "out", share_engine_exports(tmp_path / "home")
    args = ["optimize", "--models", "fake:hash-256", "--chunker", "none", "--trials", str(TARGET), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDTUNE_HOME": str(home), "COLUMNS": "240"}
    # Three trials done and one under way with its parameters chosen: the kill cuts a trial short.
    outcome = kill_and_resume(args, out, 3, env=env, wait_s=120, rerun_timeout_s=120)
    assert outcome.killed, f"the search ended (exit {outcome.exit_code}) before it could be killed"
    assert 3 <= len(outcome.before) < TARGET
    assert outcome.rerun is not None and outcome.rerun.returncode == 0, outcome.rerun and outcome.rerun.stderr
    # Every trial finished before the kill is still there as it was: not scored again.
    assert {n: outcome.after[n] for n in outcome.before} == outcome.before
    # The rerun ran only what was missing, and the search completes.
    assert len(outcome.after) == TARGET
    assert f"{TARGET - len(outcome.before)} new trials" in outcome.rerun.stdout
    # A trial the kill interrupted is closed as failed and run again from its parameters.
    assert set(outcome.failed) == set(outcome.cut)
    assert not trials(out / "study.sqlite", "RUNNING")
    rerun_params = [params for number, (params, _) in outcome.after.items() if number not in outcome.before]
    # (A trial killed before it asked anything has nothing to run again.)
    assert all(params in rerun_params for params in outcome.asked)
