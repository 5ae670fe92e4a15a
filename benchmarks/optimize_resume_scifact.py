"""Kill `embedtune optimize` on SciFact mid-search (SIGKILL), run it again: what does the rerun redo?

    python benchmarks/optimize_resume_scifact.py [--models local:all-MiniLM-L6-v2] [--trials 12]
                                                 [--kill-after 4] [--out DIR] [--dataset PATH]

Runs the command as a user does, in a process of its own, over whole documents and every retrieval
mode and vector setting; once ``--kill-after`` trials are finished and another is under way, sends
it SIGKILL (once that trial has chosen its parameters). Then runs the same command again and prints: the trials finished before the kill,
whether each is still in the study as it was (same parameters, same completion time: not scored
again), the trial the kill cut short (closed as failed, its parameters run again), the rerun's new
trials and wall time, and the texts it embedded. Uses the embedding cache in EMBEDTUNE_HOME: run
``optimize_scifact.py`` first so neither run waits for the model.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def states(study: Path) -> dict[str, int]:
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
    except sqlite3.OperationalError:
        return {}


def trials(out: Path, *wanted: optuna.trial.TrialState) -> dict[int, tuple[dict, object]]:
    storage = f"sqlite:///{out / 'study.sqlite'}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    return {t.number: (t.params, t.datetime_complete) for t in study.get_trials(deepcopy=False, states=wanted)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--models", default="local:all-MiniLM-L6-v2")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--kill-after", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("embedtune-optimize-resume"))
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if (args.out / "study.sqlite").exists():
        print(f"error: {args.out} already holds a study; give a new --out", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "embedtune.cli", "optimize", str(args.dataset), "--models", args.models]
    command += ["--chunker", "none", "--trials", str(args.trials), "--out", str(args.out)]

    start = time.perf_counter()
    search = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        while search.poll() is None:
            now = states(args.out / "study.sqlite")
            if now.get("COMPLETE", 0) + now.get("PRUNED", 0) >= args.kill_after and now.get("ASKED"):
                search.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        search.wait()
    first_s = time.perf_counter() - start
    if search.returncode != -signal.SIGKILL:
        print(f"error: the search ended (exit {search.returncode}) before it was killed; ask for more --trials")
        return 1
    before = trials(args.out, *FINISHED)
    cut = trials(args.out, optuna.trial.TrialState.RUNNING)
    print(f"killed after {first_s:.0f} s: {len(before)} trials finished, {len(cut)} under way (trial {list(cut)})")

    start = time.perf_counter()
    rerun = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), check=False)
    rerun_s = time.perf_counter() - start
    if rerun.returncode != 0:
        print(rerun.stderr[-2000:])
        return 1
    after = trials(args.out, *FINISHED)
    kept = sum(after.get(n) == figures for n, figures in before.items())
    failed = trials(args.out, optuna.trial.TrialState.FAIL)
    asked = [params for params, _ in cut.values() if params]  # a trial killed before it asked has nothing to redo
    again = [n for n, (params, _) in after.items() if n not in before and params in asked]
    summary = re.search(r"(\d+) new trials, (\d+) texts embedded", rerun.stdout)
    print(f"rerun ({rerun_s:.0f} s): {summary.group(0) if summary else rerun.stdout[-300:]}")
    print(f"  finished before the kill and untouched by the rerun: {kept} of {len(before)}")
    print(
        f"  closed as failed: trials {sorted(failed)} ({len(asked)} had asked their parameters); "
        f"run again as trials {again}"
    )
    print(f"  finished trials now: {len(after)} of {args.trials}")
    ok = kept == len(before) and len(after) == args.trials and set(failed) == set(cut)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
