"""The adapters are optional: importing embedtune imports no framework, and an adapter whose
framework is missing says which extra installs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FRAMEWORKS = ("langchain_core", "llama_index", "haystack")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_importing_embedtune_and_its_integrations_package_imports_no_framework():
    done = run_python(
        f"""
        import sys
        import embedtune, embedtune.integrations
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
        print(loaded)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "framework", "extra"),
    [
        ("langchain", "langchain_core", "langchain"),
        ("llamaindex", "llama_index", "llamaindex"),
        ("haystack", "haystack", "haystack"),
    ],
)
def test_an_adapter_without_its_framework_names_the_extra(module, framework, extra):
    done = run_python(
        f"""
        import sys
        sys.modules[{framework!r}] = None  # as if it were not installed
        from embedtune.errors import MissingDependencyError
        try:
            import embedtune.integrations.{module}
        except MissingDependencyError as exc:
            print(exc)
        """
    )
    assert done.returncode == 0, done.stderr
    assert f'pip install "embedtune[{extra}]"' in done.stdout
