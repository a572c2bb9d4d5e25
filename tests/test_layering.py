"""The layering: the roles (rollout, learner, reward serving, reward training) never import
each other or the layers above them; the shared contract (`mogrpo`) imports no role; only
the driver (orchestration), the benchmarks and the evaluation harness (which measures the
reward model's direction and its training prompts) reach into roles."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLES = {"rollout", "learner", "reward_service", "reward_training"}
PACKAGES = ROLES | {"mogrpo", "orchestration", "evaluation", "benchmarks"}
MAY_IMPORT = {
    "rollout": {"mogrpo"},
    "learner": {"mogrpo"},
    "reward_service": {"mogrpo"},
    "reward_training": {"mogrpo"},
    "mogrpo": set(),
    "orchestration": {"mogrpo"} | ROLES,
    "benchmarks": {"mogrpo", "orchestration"} | ROLES,
    "evaluation": {"mogrpo", "reward_training"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages that a file imports (at any depth of the file)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out & PACKAGES


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_follow_the_layers(package):
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - MAY_IMPORT[package] - {package}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package])}: {wrong}"


def test_the_check_sees_a_forbidden_import(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from learner.actor import LearnerWorker\n")
    assert imported_packages(path) == {"learner"}
