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
import re
import sys
from pathlib import Path

import optuna

from embedtune.testing.resume import STUDY_FILE, kill_and_resume

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--models", default="local:all-MiniLM-L6-v2")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--kill-after", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("embedtune-optimize-resume"))
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if (args.out / STUDY_FILE).exists():
        print(f"error: {args.out} already holds a study; give a new --out", file=sys.stderr)
        return 2
    command = ["optimize", str(args.dataset), "--models", args.models]
    command += ["--chunker", "none", "--trials", str(args.trials), "--out", str(args.out)]

    outcome = kill_and_resume(command, args.out, args.kill_after)
    if not outcome.killed:
        print(f"error: the search ended (exit {outcome.exit_code}) before it was killed; ask for more --trials")
        return 1
    print(
        f"killed after {outcome.killed_after_s:.0f} s: {len(outcome.before)} trials finished, "
        f"{len(outcome.cut)} under way (trial {list(outcome.cut)})"
    )
    rerun = outcome.rerun
    assert rerun is not None
    if rerun.returncode != 0:
        print(rerun.stderr[-2000:])
        return 1
    summary = re.search(r"(\d+) new trials, (\d+) texts embedded", rerun.stdout)
    print(f"rerun ({outcome.rerun_s:.0f} s): {summary.group(0) if summary else rerun.stdout[-300:]}")
    print(f"  finished before the kill and untouched by the rerun: {outcome.untouched} of {len(outcome.before)}")
    print(
        f"  closed as failed: trials {sorted(outcome.failed)} ({len(outcome.asked)} had asked their parameters); "
        f"run again as trials {outcome.run_again}"
    )
    print(f"  finished trials now: {len(outcome.after)} of {args.trials}")
    ok = outcome.untouched == len(outcome.before) and len(outcome.after) == args.trials
    return 0 if ok and set(outcome.failed) == set(outcome.cut) else 1


if __name__ == "__main__":
    sys.exit(main())
