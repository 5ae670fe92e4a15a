"""The Ray engine on a real local cluster of two workers, started once for the module.

Output equals a single process's (same order), the cache stays on the driver (each distinct
text goes to the cluster once, a rerun sends nothing), a worker killed mid-job loses and
duplicates nothing, and a cluster that cannot be reached or a missing ray is one clear line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from _cli import one_error_line, run_cli
from embedtune.engine import CachingEmbedder, close_stack, find_layer
from embedtune.errors import ConfigError, MissingDependencyError, ModelLoadError
from embedtune.factory import EmbedderSpec, build_embedder, open_provider

MINILM = EmbedderSpec(model="local:all-MiniLM-L6-v2", over_limit="truncate", engine="torch")  # as the reference


@pytest.fixture(scope="module")
def ray_address():
    """A local two-CPU cluster this process starts (and stops); yields its address."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the Ray tests need ray[data]")
        pytest.skip("the Ray tests need ray[data]")
    from embedtune.engine.ray import quiet_core_log

    # Workers are started by this process's raylet and import embedtune from the same path.
    with quiet_core_log():  # Ray Data's per-job core warning, as embedtune's own init does
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def scifact_texts(shared_datasets):
    """Mixed-length texts: SciFact titles, abstracts cut at varied lengths, and queries."""
    folder = shared_datasets / "scifact"
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(60), f)]
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        queries = [json.loads(line)["text"] for _, line in zip(range(40), f)]
    texts = [d["title"] for d in docs[:30]]
    texts += [d["text"][: 80 + 30 * i] for i, d in enumerate(docs[30:])]
    return texts + queries


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_equals_a_single_process_with_a_worker_killed_mid_job_and_the_cache_on_the_driver(
    ray_address, minilm, scifact_texts, tmp_path, capfd
):
    import psutil

    from embedtune.engine.ray import RayEmbedder, RayOptions

    texts = scifact_texts + scifact_texts[:25]  # repeats: the cache sends each distinct text once
    returned: list[int] = []  # texts per part as parts come back
    killed: list[int] = []

    def kill_a_worker_once(done: int) -> None:
        returned.append(done)
        if killed:
            return
        ours = psutil.Process().children(recursive=True)  # only this test's cluster, never another's
        workers = [p for p in ours if any("EmbedActor" in part for part in p.cmdline())]
        assert workers, "no embedding actor among this process's children"
        os.kill(workers[0].pid, signal.SIGKILL)
        killed.append(workers[0].pid)

    spec = replace(MINILM, max_batch=8)  # many small tasks, so the kill lands with work queued
    cache = tmp_path / "cache.sqlite"
    options = RayOptions(address=ray_address, workers=2)
    stack = build_embedder(spec, cache=cache, ray=options, on_progress=kill_a_worker_once)
    try:
        vectors = stack.embed(texts)
        misses = find_layer(stack, CachingEmbedder).stats.misses
        ray_texts = find_layer(stack, RayEmbedder).stats.texts
    finally:
        close_stack(stack)
    distinct = len(set(texts))
    # Ray core's per-job line about actor restarts (harmless for Ray Data's own actors) is kept quiet.
    assert "constructor arguments in the object store" not in capfd.readouterr().err
    assert killed and len(returned) > 1  # parts came back after the kill
    assert misses == ray_texts == sum(returned) == distinct  # nothing lost, nothing twice

    alone = minilm.embed(texts)
    cosines = _cosines(vectors, alone)
    assert cosines.min() >= 0.99999, cosines.min()  # row i is text i: the order is kept
    assert _cosines(vectors[:-1], alone[1:]).min() < 0.99  # and a shifted order would show

    rerun = build_embedder(spec, cache=cache, ray=options)
    try:
        again = rerun.embed(texts[::-1])
        assert find_layer(rerun, CachingEmbedder).stats.misses == 0
        assert find_layer(rerun, RayEmbedder).stats.batches == 0  # no job at all
    finally:
        close_stack(rerun)
    np.testing.assert_array_equal(again, vectors[::-1])


def test_an_unreachable_cluster_is_one_line_and_fast(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("one\ntwo\n", encoding="utf-8")
    result = run_cli("embed", texts, "--model", "fake:hash-256", "--ray", "127.0.0.1:9", home=tmp_path, timeout=60)
    line = one_error_line(result)
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in line and "ray start --head" in line, line

    with pytest.raises(ConfigError, match="with a port"):
        build_embedder(EmbedderSpec(model="fake:hash-256"), ray=_options("ray://nowhere"))


def test_a_model_the_workers_cannot_load_is_its_own_one_line_error(ray_address):
    from embedtune.engine.ray import RayEmbedder, RayOptions

    embedder = RayEmbedder(
        open_provider(EmbedderSpec(model="fake:hash-256")),  # here the model is fine ...
        partial(open_provider, EmbedderSpec(model="local:/nonexistent/model")),  # ... on the workers it is not
        options=RayOptions(address=ray_address, workers=1),
    )
    with pytest.raises(ModelLoadError) as caught:
        embedder.embed(["one", "two"])
    assert type(caught.value) is ModelLoadError  # not Ray's wrapper, whose message is a traceback
    assert str(caught.value) == (
        "model folder /nonexistent/model does not exist; give the folder of a sentence-transformers model"
    )


def test_ray_not_installed_names_the_extra(monkeypatch):
    from embedtune.engine.ray import connect

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were absent
    with pytest.raises(MissingDependencyError, match=r'pip install "embedtune\[ray\]"'):
        connect("auto")


def test_the_cli_embeds_on_a_cluster_given_by_address(ray_address, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"text {i % 7}" for i in range(20)), encoding="utf-8")
    out = tmp_path / "out.npy"
    result = run_cli("embed", texts, "--model", "fake:hash-256", "--ray", ray_address, "-o", out, home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "embedded 20 texts" in result.stdout and "7 new, 13 from cache" in result.stdout, result.stdout
    vectors = np.load(out)
    assert vectors.shape == (20, 256)
    np.testing.assert_array_equal(vectors[7], vectors[0])  # "text 0" both times, in its place


def test_ray_alone_means_a_local_cluster():
    from embedtune.cli import _optional_values

    assert _optional_values(["embed", "x.txt", "--ray"]) == ["embed", "x.txt", "--ray", "auto"]
    assert _optional_values(["embed", "--ray", "x.txt"]) == ["embed", "--ray", "auto", "x.txt"]
    assert _optional_values(["embed", "--ray", "--no-cache"]) == ["embed", "--ray", "auto", "--no-cache"]
    assert _optional_values(["embed", "--ray", "ray://h:10001"]) == ["embed", "--ray", "ray://h:10001"]


def _options(address: str):
    from embedtune.engine.ray import RayOptions

    return RayOptions(address=address)
