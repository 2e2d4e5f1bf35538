"""
The rooms of qewd_twisted and what each may import (docs/architecture.md, "The rooms").

A module's imports of ``qewd_twisted`` (anywhere in it, type-checking ones included) must stay
within what its subpackage's docstring allows.
"""

from __future__ import annotations

import ast
import os

from twisted.trial.unittest import SynchronousTestCase

import qewd_twisted

ROOT = os.path.dirname(os.path.abspath(qewd_twisted.__file__))

# room -> the qewd_twisted modules (or packages) it may import, besides itself
ALLOWED = {
    "transports": {"core", "config.limits", "errors", "_json"},
    "core": {"errors", "auth", "apps", "config.limits", "ops.observe", "_json"},
    "apps": {"core", "errors", "auth.tokens", "config.limits", "_json"},
    "auth": {"errors", "_json"},
    "mesh": {"core.envelope", "core.interfaces", "errors", "transports.wire",
             "transports.framing"},
    "config": {"errors"},
    "documents": {"errors", "auth.sessions"},
    "rest": {"core", "apps", "auth", "config", "errors", "_json", "transports"},
    "pushbus": {"core.push", "_json"},
    "cluster": {"config", "core.push", "errors", "_json", "ops", "service", "transports"},
}


def imports_of(path: str) -> set[str]:
    """The qewd_twisted modules a file imports, without the ``qewd_twisted.`` prefix."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "qewd_twisted":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("qewd_twisted."):
                base = node.module[len("qewd_twisted."):]
                for alias in node.names:  # `from qewd_twisted.core import envelope`
                    sub = os.path.join(ROOT, *base.split("."), alias.name + ".py")
                    found.add(base + "." + alias.name if os.path.exists(sub) else base)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qewd_twisted."):
                    found.add(alias.name[len("qewd_twisted."):])
    return found


def allowed(room: str, target: str) -> bool:
    if target == room or target.startswith(room + "."):
        return True
    return any(target == a or target.startswith(a + ".") for a in ALLOWED[room])


class LayoutTests(SynchronousTestCase):
    def test_rooms_import_only_what_they_may(self) -> None:
        problems = []
        checked = 0
        for room in ALLOWED:
            folder = os.path.join(ROOT, room)
            for name in sorted(os.listdir(folder)):
                if not name.endswith(".py"):
                    continue
                checked += 1
                for target in sorted(imports_of(os.path.join(folder, name))):
                    if not allowed(room, target):
                        problems.append(f"{room}/{name} imports qewd_twisted.{target}")
        self.assertGreater(checked, 20)
        self.assertEqual(problems, [])

    def test_envelope_is_pure(self) -> None:
        self.assertEqual(imports_of(os.path.join(ROOT, "core", "envelope.py")), {"errors"})

    def test_correlation_knows_no_protocol(self) -> None:
        self.assertEqual(imports_of(os.path.join(ROOT, "mesh", "correlation.py")),
                         {"core.envelope", "core.interfaces"})

    def test_every_module_names_its_tests(self) -> None:
        missing = []
        for folder, _, files in os.walk(ROOT):
            for name in files:
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        if "test-case-name:" not in f.readline():
                            missing.append(os.path.relpath(os.path.join(folder, name), ROOT))
        self.assertEqual(missing, [])
