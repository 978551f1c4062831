"""The apps' layering: ``sessions`` (the core) <- ``agents`` <-> ``approvals``, services without
import cycles, and no function-local imports hiding one.

Read from the source (ast), so a violation fails here whatever happens to be imported first.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("sessions/services.py", "agents/services.py", "approvals/services.py")


def imports(path: str) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in a file."""
    tree = ast.parse((ROOT / path).read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, id(node) in top) for alias in node.names)
    return found


@pytest.mark.parametrize("path", SERVICES)
def test_services_import_nothing_inside_functions(path):
    local = [module for module, at_top in imports(path) if not at_top]
    assert local == [], f"{path} imports inside a function: {local}"


# The sessions app's core; its REST edge (api.py) and admin may show agent data.
CORE = (
    "sessions/models.py",
    "sessions/services.py",
    "sessions/selectors.py",
    "sessions/locks.py",
    "sessions/db.py",
    "sessions/signals.py",
)


def test_the_core_knows_nothing_of_the_apps_built_on_it():
    for path in CORE:
        for module, _ in imports(path):
            assert not module.startswith(("agents", "approvals")), f"{path} imports {module}"


def test_the_decision_service_does_not_reach_back_into_turns_or_agent_services():
    reached = {module for module, _ in imports("approvals/services.py")}
    assert not reached & {"agents.services", "agents.turns", "agents.engine"}, reached
    assert "agents.turns" not in {module for module, _ in imports("agents/services.py")}


@pytest.mark.parametrize("module", [p.removesuffix(".py").replace("/", ".") for p in SERVICES])
def test_each_services_module_imports_on_its_own(module):
    code = f"import django; django.setup(); import {module}"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"DJANGO_SETTINGS_MODULE": "agent_runtime.settings", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
