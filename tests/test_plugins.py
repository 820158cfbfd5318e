"""The plugin shape: an algorithm or an environment family is one module and one registry line, and the package
has no import circle."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))   # the toy plugins live beside the tests

from cg2a_ext.rl import TrainConfig, algorithms, envs, train  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "cg2a_ext"


@pytest.fixture
def toys(monkeypatch):
    monkeypatch.setattr(algorithms, "_MODULES", dict(algorithms._MODULES))
    monkeypatch.setattr(algorithms, "NAMES", algorithms.NAMES)
    monkeypatch.setattr(envs, "FAMILIES", dict(envs.FAMILIES))
    algorithms.register("toy", "plugins.toy_algorithm")       # the one registry line of each
    envs.register_family("toy", "plugins.toy_family")


def test_a_toy_algorithm_and_family_train_from_one_module_and_one_line_each(toys, tmp_path):
    from plugins.toy_algorithm import ToyOptions

    cfg = TrainConfig(task="dot_reach", algorithm="toy", options=ToyOptions(weight=0.5), preset="cpu",
                      train_steps=40, seed_steps=20, eval_freq=40, eval_episodes=1, batch_size=8, log_freq=10,
                      num_conv_layers=2, num_filters=4, projection_dim=8, hidden_dim=16, progress=False,
                      tensorboard=False, run_dir=str(tmp_path / "run"))
    result = train(cfg)
    # the final evaluation is zero-shot on every mode the toy family declares
    assert result.step == 40 and set(result.final_evaluation) == {"train", "dark"}
    assert cfg.frame_stack == 1 and cfg.image_size == 16          # the family's observation defaults
    # the command line knows the toy's options by its prefix
    from cg2a_ext.rl.cli.options import config_from_args
    parsed = config_from_args(["--algorithm", "toy", "--task", "dot_reach", "--toy_weight", "3", "--eval_modes",
                               "train", "dark"])
    assert parsed.options.weight == 3.0 and parsed.eval_modes == ("train", "dark")
    with pytest.raises(Exception, match="--toy_weight must be positive"):
        TrainConfig(task="dot_reach", algorithm="toy", options=ToyOptions(weight=-1)).validate()


def test_robot_tasks_come_through_the_registry():
    fam = envs.family_of("reach")
    assert fam.name == "robot" and fam.modes[0] == "train" and "test3" in fam.test_modes
    cfg = TrainConfig(task="peg_in_box", algorithm="drq").validate()
    assert (cfg.frame_stack, cfg.action_repeat, cfg.episode_length, cfg.image_size) == (1, 1, 50, 84)
    assert envs.family_of("walker_walk").name == "dmc"
    with pytest.raises(ValueError, match="unknown task 'reach_far'"):
        envs.family_of("reach_far")
    with pytest.raises(ValueError, match="unknown mode 'color_hard' for robot task 'reach'"):
        envs.make_env("reach", mode="color_hard")


def _module_imports(path: Path, modules: set[str] = frozenset(), deferred: bool = False) -> set[str]:
    """The cg2a_ext modules ``path`` imports when it is imported: module-level imports (TYPE_CHECKING blocks
    excluded; function and class bodies too, unless ``deferred``: then every import it may run);
    ``from pkg import sub`` counts as importing the module ``pkg.sub``."""
    tree = ast.parse(path.read_text())
    out = set()

    def scan(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not deferred:
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    out.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            for field in ("body", "orelse", "handlers", "finalbody"):
                scan(getattr(node, field, []) or [])

    scan(tree.body)
    return {m for m in out if m.startswith("cg2a_ext")}


def test_the_package_has_no_import_circle():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {name: _module_imports(path, set(modules)) & set(modules) - {name} for name, path in modules.items()}
    seen, stack, cycles = set(), [], []

    def visit(node):
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for name in sorted(graph):
        visit(name)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_library_imports_nothing_of_the_rl_side():
    library = [p for p in PACKAGE.rglob("*.py") if "rl" not in p.relative_to(PACKAGE).parts]
    assert PACKAGE / "bench" / "ops.py" in library       # the library's benchmarks are the library's too
    for path in library:
        # imports inside functions count: running a library module must not need the RL side
        bad = [m for m in _module_imports(path, deferred=True) if m.startswith("cg2a_ext.rl")]
        assert not bad, f"{path} imports {bad}"


def test_deferred_imports_are_seen_only_when_asked(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import cg2a_ext.ops\n\ndef f():\n    from cg2a_ext.rl.core import replay\n")
    assert _module_imports(module) == {"cg2a_ext.ops"}
    assert _module_imports(module, deferred=True) == {"cg2a_ext.ops", "cg2a_ext.rl.core"}
