"""The command line as a user meets it: real subprocesses, real exit codes, real files."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from _cli import one_error_line, run_cli, share_engine_exports
from embedtune.engine import BatchingEmbedder, CountingEmbedder
from embedtune.factory import EmbedderSpec, open_provider
from embedtune.textio import read_vectors


def run(*args, home, cwd=None, timeout=120):
    return run_cli(*args, home=home, cwd=cwd, timeout=timeout)


def assert_one_error_line(result, message):
    line = one_error_line(result)
    assert message in line, line


@pytest.fixture()
def texts_file(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(f"note {i}: the backup of shard {i % 7} finished" for i in range(40)))
    return path


def test_embed_then_rerun_from_cache(tmp_path, texts_file):
    out = tmp_path / "v.parquet"
    first = run("embed", texts_file, "--model", "fake:hash-256", "--out", out, home=tmp_path / "h")
    assert first.returncode == 0, first.stderr
    assert "40 new, 0 from cache" in first.stdout
    second = run("embed", texts_file, "--model", "fake:hash-256", "--out", tmp_path / "v.npy", home=tmp_path / "h")
    assert "0 new, 40 from cache" in second.stdout
    ids, vectors = read_vectors(out)
    ids2, vectors2 = read_vectors(tmp_path / "v.npy")
    assert ids == ids2 == [str(i) for i in range(1, 41)]
    np.testing.assert_array_equal(vectors, vectors2)


def test_second_embed_makes_zero_model_calls(tmp_path, texts_file, monkeypatch, minilm):
    from embedtune import cli, factory

    counters = []

    def counting_provider(spec):
        counters.append(CountingEmbedder(minilm))
        return counters[-1]

    monkeypatch.setattr(factory, "open_provider", counting_provider)
    monkeypatch.setenv("EMBEDTUNE_HOME", str(tmp_path / "h"))
    runner = CliRunner()
    for name in ("a.parquet", "b.parquet"):
        result = runner.invoke(cli.app, ["embed", str(texts_file), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    assert counters[0].calls > 0 and sum(counters[0].texts.values()) == 40
    assert counters[1].calls == 0
    np.testing.assert_array_equal(read_vectors(tmp_path / "a.parquet")[1], read_vectors(tmp_path / "b.parquet")[1])


def test_kill_9_then_rerun_continues_from_the_cache(tmp_path, monkeypatch):
    texts = [
        f"log line {i}: request to service {i % 13} took {i * 7 % 997} ms and returned status {200 + i % 5}"
        for i in range(1500)
    ]
    path = tmp_path / "logs.txt"
    path.write_text("\n".join(texts))
    home, out = share_engine_exports(tmp_path / "h"), tmp_path / "v.parquet"
    env = {**os.environ, "EMBEDTUNE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedtune.cli", "embed", str(path), "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cache = home / "embeddings.sqlite"
    deadline = time.monotonic() + 120
    cached = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if cache.exists():
            try:
                with sqlite3.connect(cache) as db:
                    cached = db.execute("SELECT count(*) FROM vectors").fetchone()[0]
            except sqlite3.OperationalError:
                cached = 0
            if cached >= 256:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    with sqlite3.connect(cache) as db:
        cached = db.execute("SELECT count(*) FROM vectors").fetchone()[0]
    assert 256 <= cached < len(texts)
    assert not out.exists()

    rerun = run("embed", path, "--out", out, home=home, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(texts) - cached} new, {cached} from cache" in rerun.stdout
    ids, vectors = read_vectors(out)
    assert ids == [str(i) for i in range(1, len(texts) + 1)]
    # The engine the command ran (auto's choice, remembered under the same home) without a kill.
    monkeypatch.setenv("EMBEDTUNE_HOME", str(home))
    uninterrupted = BatchingEmbedder(open_provider(EmbedderSpec(model="local:all-MiniLM-L6-v2"))).embed(texts)
    cosines = np.sum(vectors * uninterrupted, axis=1)
    assert cosines.min() > 0.99999


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda p: ["embed", p / "missing.txt"], "missing.txt does not exist"),
        (lambda p: ["embed", p / "empty.txt"], "holds no documents"),
        (lambda p: ["embed", p / "bad.jsonl"], "bad.jsonl:2: not valid JSON"),
        (
            lambda p: ["embed", p / "long.txt", "--model", "tiny"],
            "text 1 (id '2') has 14 tokens, over the model's limit of 10",
        ),
        (lambda p: ["embed", p / "late.txt", "--model", "tiny"], "text 299 (id '301') has 14 tokens"),
        (
            lambda p: ["embed", p / "long.txt", "--model", "local:no-such-model"],
            "unknown model 'local:no-such-model'; known local models",
        ),
        (lambda p: ["embed", p / "long.txt", "--model", "minilm"], "neither a configured embedder"),
        (
            lambda p: ["embed", p / "long.txt", "--model", "fake:hash-256", "--cache", p],
            "cannot open the embedding cache",
        ),
        (lambda p: ["embed", p / "long.txt", "--out", p / "v.csv"], "use a .parquet or .npy file name"),
        (lambda p: ["embed", p / "long.txt", "--kind", "passage"], "kind must be 'document' or 'query'"),
        (lambda p: ["bench", "batching", "-n", "0"], "-n must be at least 1"),
    ],
)
def test_bad_input_gets_one_clear_line(tmp_path, make_args, message):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    (tmp_path / "long.txt").write_text("short\n" + " ".join(["word"] * 12) + "\n")
    (tmp_path / "late.txt").write_text("\n" + "short\n" * 299 + " ".join(["word"] * 12) + "\n")  # past one slice
    (tmp_path / "embedtune.toml").write_text('[embedders.tiny]\nmodel = "fake:hash-256"\nmax_tokens = 10\n')
    result = run(*make_args(tmp_path), home=tmp_path / "h", cwd=tmp_path)
    assert_one_error_line(result, message)


def test_corrupt_cache_is_moved_aside_and_the_command_says_so(tmp_path, texts_file):
    cache = tmp_path / "c.sqlite"
    cache.write_bytes(os.urandom(4096))
    result = run(
        "embed",
        texts_file,
        "--model",
        "fake:hash-256",
        "--cache",
        cache,
        "--out",
        tmp_path / "v.npy",
        home=tmp_path / "h",
    )
    assert result.returncode == 0, result.stderr
    assert "was corrupt" in result.stderr and "moved it aside" in result.stderr
    assert "40 new" in result.stdout
    assert len(list(tmp_path.glob("c.sqlite.corrupt-*"))) == 1


def test_over_limit_policies_from_the_command_line(tmp_path):
    (tmp_path / "embedtune.toml").write_text('[embedders.tiny]\nmodel = "fake:hash-256"\nmax_tokens = 10\n')
    (tmp_path / "long.txt").write_text("short\n" + " ".join(["word"] * 12) + "\n")
    truncated = run(
        "embed",
        "long.txt",
        "-m",
        "tiny",
        "--over-limit",
        "truncate",
        "--out",
        "t.npy",
        home=tmp_path / "h",
        cwd=tmp_path,
    )
    assert "1 texts over 10 tokens were truncated" in truncated.stdout
    split = run(
        "embed", "long.txt", "-m", "tiny", "--over-limit", "split", "--out", "s.npy", home=tmp_path / "h", cwd=tmp_path
    )
    assert "1 texts over 10 tokens were split" in split.stdout


def test_bench_batching_prints_both_runs_and_the_ratio(tmp_path):
    result = run("bench", "batching", "--model", "fake:hash-256", "-n", "50", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "one call per text" in result.stdout and "50" in result.stdout
    assert "batched is" in result.stdout and "x the speed of one call per text" in result.stdout


def test_models_marks_what_runs_offline(tmp_path):
    result = run("models", home=tmp_path)
    assert result.returncode == 0
    row = next(line for line in result.stdout.splitlines() if "local:all-MiniLM-L6-v2" in line)
    assert "384" in row and "yes" in row
    row = next(line for line in result.stdout.splitlines() if "openai:text-embedding-3-small" in line)
    assert "0.02" in row and "no" in row


def test_import_without_torch(tmp_path):
    script = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "sentence_transformers", "transformers"}:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
import embedtune
from embedtune.factory import EmbedderSpec, open_provider
assert "torch" not in sys.modules
print(open_provider(EmbedderSpec(model="fake:hash-256")).embed(["ok"]).shape)
try:
    open_provider(EmbedderSpec(model="local:all-MiniLM-L6-v2"))
except embedtune.EmbedtuneError as exc:
    print("ERR", exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "(1, 256)" in result.stdout
    assert (
        'ERR sentence_transformers is not installed; install it with: pip install torch==2.13.0 && pip install "embedtune[local]"'
        in result.stdout
    )


@pytest.mark.parametrize("command", ["embed", "eval"])
def test_catalogued_model_without_offline_weights_says_it_needs_a_download(tmp_path, texts_file, command):
    # No package carries bge's weights and the hub is off: one line at once, before any model loads.
    from importlib import resources

    source = texts_file if command == "embed" else resources.files("embedtune") / "data" / "sample"
    args = ["--out", tmp_path / "v.npy"] if command == "embed" else []
    result = run_cli(command, source, "--model", "local:bge-small-en-v1.5", *args, home=tmp_path / "h", timeout=60)
    line = one_error_line(result)
    assert "local:bge-small-en-v1.5 needs a download" in line and "local:/path/to/folder" in line, line
