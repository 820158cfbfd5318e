"""The grid of a sweep: tasks x algorithms x seeds x options, and the name of each run.

An option value is a tuple of command-line tokens (``("overlay", "overlay_s")`` for
``--augmentations overlay overlay_s``; ``("true",)`` for ``--gas``), so every TrainConfig field
can be set the way ``train.py`` takes it.

Two kinds of options:

- **fixed** options (``--set KEY=VALUE`` or the TOML ``[set]`` table) hold for the whole sweep and do
  not appear in run names (e.g. ``preset=cpu``, ``train_steps=20000``);
- **named** options (``--vary KEY=V1|V2`` or a TOML ``[vary]`` table, and the ``set`` of a TOML
  ``[[grid]]`` block) tell runs apart and appear in their folder names, sorted by key:
  ``cartpole_balance--cg2a--augmentations=overlay+overlay_s--seed0``.

An option that is some algorithm's ``method_options`` (``cg2a_ext.rl.algorithms``) is given only to
the algorithms that own it: varying ``augmentations`` over drq and cg2a makes two cg2a runs per seed
and one drq run, not two identical drq runs. Other options (``action_repeat``, ``batch_size``...)
apply to every algorithm.

TOML layout (``--config sweep.toml``; every key optional, command-line values add to it)::

    tasks = ["cartpole_balance"]
    algorithms = ["drq", "svea", "ac"]
    seeds = [0, 1, 2]
    [set]                    # fixed for the whole sweep
    preset = "cpu"
    action_repeat = 8
    [vary]                   # named: one run per value
    augmentations = [["overlay", "overlay_s"], ["conv", "overlay", "overlay_s"]]
    [[grid]]                 # optional blocks: each inherits tasks / algorithms / seeds / vary above
    algorithms = ["cg2a"]
    set = { gas = false }    # named, one value

Without ``[[grid]]`` blocks the top level is the one grid.
"""
from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, get_type_hints

from cg2a_ext.rl import algorithms

OptionValue = tuple[str, ...]

# Fields the grid itself sets for every run, or the sweep runner manages.
RESERVED = ("task", "algorithm", "seed", "run_dir", "runs_root", "resume")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]")
_TOML_KEYS = ("root", "tasks", "algorithms", "seeds", "set", "vary", "grid")
_GRID_KEYS = ("tasks", "algorithms", "seeds", "set", "vary")


class GridError(ValueError):
    """The grid is invalid (unknown option, bad value, clashing names); raised before any run starts."""


def _field_types() -> dict[str, Any]:
    """Every option a run can be given, by its command-line name: the core fields and each algorithm's options."""
    from cg2a_ext.rl.config import TrainConfig

    hints = get_type_hints(TrainConfig)
    out = {f.name: hints[f.name] for f in fields(TrainConfig) if f.name != "options"}
    for name in algorithms.NAMES:
        algo = algorithms.get(name)
        option_hints = get_type_hints(algo.Options)
        for option, flag in algo.cli_names().items():
            out.setdefault(flag, option_hints[option])
            for alias in algo.cli_aliases.get(option, ()):
                out.setdefault(alias.lstrip("-"), option_hints[option])
    return out


def _flags(algorithm: str) -> set[str]:
    """The command-line names (aliases included) of ``algorithm``'s own options."""
    algo = algorithms.get(algorithm)
    return set(algo.cli_names().values()) | {a.lstrip("-") for v in algo.cli_aliases.values() for a in v}


def _is_bool(key: str) -> bool:
    return _field_types()[key] is bool


def check_key(key: str) -> None:
    types = _field_types()
    if key in RESERVED:
        hint = {"task": "--tasks", "algorithm": "--algorithms", "seed": "--seeds"}.get(key, "the sweep (--root)")
        raise GridError(f"option {key!r} is set by {hint}, not by --set / --vary")
    if key not in types:
        close = difflib.get_close_matches(key, list(types), n=3)
        raise GridError(f"unknown option {key!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                       "; see python/train.py --help"))


def normalise_value(key: str, value: Any) -> OptionValue:
    """A CLI string ("overlay overlay_s"), a TOML scalar or list -> a tuple of tokens (booleans as true/false)."""
    check_key(key)
    if isinstance(value, bool):
        tokens: tuple[str, ...] = ("true" if value else "false",)
    elif isinstance(value, (list, tuple)):
        tokens = tuple(t for v in value for t in (str(v).split() if isinstance(v, str) else [_scalar(v)]))
    elif isinstance(value, (int, float)):
        tokens = (_scalar(value),)
    elif isinstance(value, str):
        tokens = tuple(value.split())
    else:
        raise GridError(f"option {key}: cannot use a value of type {type(value).__name__} ({value!r})")
    if not tokens:
        raise GridError(f"option {key}: empty value")
    if _is_bool(key):
        if len(tokens) != 1 or tokens[0].lower() not in _TRUE + _FALSE:
            raise GridError(f"option {key} is a boolean: give true or false, got {' '.join(tokens)!r}")
        tokens = ("true" if tokens[0].lower() in _TRUE else "false",)
    return tokens


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def option_argv(key: str, tokens: OptionValue) -> list[str]:
    """The train.py arguments for one option (booleans as --key / --no-key)."""
    if _is_bool(key):
        return [f"--{key}" if tokens[0] == "true" else f"--no-{key}"]
    return [f"--{key}", *tokens]


def applies(key: str, algorithm: str) -> bool:
    """Whether ``algorithm`` takes option ``key``: options that are some algorithm's method option
    go only to the algorithms that own them; every other option goes to all."""
    if any(key in _flags(name) for name in algorithms.NAMES):
        return key in _flags(algorithm)
    owners = {k for name in algorithms.NAMES for k in algorithms.get(name).method_options}
    return key not in owners or key in algorithms.get(algorithm).method_options


def format_value(tokens: OptionValue) -> str:
    return _SAFE.sub("_", "+".join(tokens))


def run_name(task: str, algorithm: str, seed: int, named: Mapping[str, OptionValue]) -> str:
    parts = [task, algorithm] + [f"{k}={format_value(named[k])}" for k in sorted(named)] + [f"seed{seed}"]
    return "--".join(_SAFE.sub("_", p) for p in parts)


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: its folder name, identity and the options it is started with."""

    name: str
    task: str
    algorithm: str
    seed: int
    named: dict[str, OptionValue] = field(default_factory=dict)
    fixed: dict[str, OptionValue] = field(default_factory=dict)

    @property
    def method(self) -> str:
        """The algorithm and its named options: runs with one method and task differ only by seed."""
        return " ".join([self.algorithm] + [f"{k}={','.join(self.named[k])}" for k in sorted(self.named)])

    def argv(self) -> list[str]:
        """train.py arguments, without --run_dir (the runner adds it)."""
        out = ["--task", self.task, "--algorithm", self.algorithm, "--seed", str(self.seed)]
        for key, tokens in {**self.fixed, **self.named}.items():
            out += option_argv(key, tokens)
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "task": self.task, "algorithm": self.algorithm, "seed": self.seed,
                "method": self.method, "named": {k: list(v) for k, v in self.named.items()},
                "fixed": {k: list(v) for k, v in self.fixed.items()}, "argv": self.argv()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(name=d["name"], task=d["task"], algorithm=d["algorithm"], seed=int(d["seed"]),
                   named={k: tuple(v) for k, v in d.get("named", {}).items()},
                   fixed={k: tuple(v) for k, v in d.get("fixed", {}).items()})


@dataclass
class GridBlock:
    """tasks x algorithms x seeds x the product of ``vary``; ``set`` adds named single values."""

    tasks: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    set: dict[str, OptionValue] = field(default_factory=dict)
    vary: dict[str, tuple[OptionValue, ...]] = field(default_factory=dict)

    def check(self, where: str) -> None:
        for what in ("tasks", "algorithms", "seeds"):
            if not getattr(self, what):
                raise GridError(f"{where}: no {what} given (--{what} or `{what} = [...]` in the TOML file)")
        for a in self.algorithms:
            if a not in algorithms.NAMES:
                raise GridError(f"{where}: unknown algorithm {a!r}; registered: {', '.join(algorithms.NAMES)}")
        for s in self.seeds:
            if not isinstance(s, int) or isinstance(s, bool) or s < 0:
                raise GridError(f"{where}: seeds must be non-negative integers, got {s!r}")
        for key, values in self.vary.items():
            if not values:
                raise GridError(f"{where}: --vary {key} has no values")
            if len(set(values)) != len(values):
                raise GridError(f"{where}: --vary {key} repeats a value")
        both = set(self.set) & set(self.vary)
        if both:
            raise GridError(f"{where}: {', '.join(sorted(both))} both set and varied")

    def runs(self, fixed: Mapping[str, OptionValue]) -> list[RunSpec]:
        keys = list(self.vary)
        out = []
        for task, algorithm in itertools.product(self.tasks, self.algorithms):
            for combo in itertools.product(*(self.vary[k] for k in keys)):
                named = {k: v for k, v in {**self.set, **dict(zip(keys, combo))}.items() if applies(k, algorithm)}
                own_fixed = {k: v for k, v in fixed.items() if applies(k, algorithm) and k not in named}
                for seed in self.seeds:
                    out.append(RunSpec(run_name(task, algorithm, seed, named), task, algorithm, seed, named, own_fixed))
        return out


@dataclass
class SweepSpec:
    """The whole grid: sweep-wide fixed options and one or more blocks."""

    fixed: dict[str, OptionValue] = field(default_factory=dict)
    blocks: list[GridBlock] = field(default_factory=list)
    root: str = ""

    def runs(self) -> list[RunSpec]:
        """Every run once (runs that two blocks or inapplicable options make twice are kept once)."""
        if not self.blocks:
            raise GridError("the sweep has no grid")
        for key in self.fixed:
            for i, b in enumerate(self.blocks):
                if key in b.vary or key in b.set:
                    raise GridError(f"option {key} is both fixed (--set / [set]) and named in grid block {i}")
        by_name: dict[str, RunSpec] = {}
        for i, block in enumerate(self.blocks):
            block.check(f"grid block {i}" if len(self.blocks) > 1 else "grid")
            for run in block.runs(self.fixed):
                other = by_name.get(run.name)
                if other is not None and other.argv() != run.argv():
                    raise GridError(f"two different runs are both named {run.name!r}: "
                                    f"{' '.join(other.argv())} / {' '.join(run.argv())}")
                by_name.setdefault(run.name, run)
        return list(by_name.values())

    def to_dict(self) -> dict:
        return {"fixed": {k: list(v) for k, v in self.fixed.items()},
                "blocks": [{"tasks": list(b.tasks), "algorithms": list(b.algorithms), "seeds": list(b.seeds),
                            "set": {k: list(v) for k, v in b.set.items()},
                            "vary": {k: [list(x) for x in v] for k, v in b.vary.items()}} for b in self.blocks]}


# --------------------------------------------------------------------------- parsing
ORDERS = ("seeds", "grid")


def order_runs(runs: Sequence[RunSpec], order: str = "seeds") -> list[RunSpec]:
    """The launch order. ``seeds``: every configuration's first seed before any configuration's second
    (a first comparison of all methods arrives early, and every later seed tightens it); ``grid``: as
    the grid lists them (all seeds of one configuration, then the next)."""
    if order not in ORDERS:
        raise GridError(f"unknown order {order!r}; expected one of {', '.join(ORDERS)}")
    if order == "grid":
        return list(runs)
    rank: dict[str, int] = {}
    configuration_seeds: dict[tuple, int] = {}
    for run in runs:
        key = (run.task, run.algorithm, tuple(sorted((k, str(v)) for k, v in run.named.items())))
        rank[run.name] = configuration_seeds.get(key, 0)
        configuration_seeds[key] = rank[run.name] + 1
    return sorted(runs, key=lambda r: rank[r.name])      # stable: grid order within a round of seeds


def parse_assignment(text: str, what: str) -> tuple[str, str]:
    if "=" not in text:
        raise GridError(f"{what} expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip().lstrip("-").replace("-", "_")
    return key, value


def parse_set(items: Iterable[str]) -> dict[str, OptionValue]:
    """``["preset=cpu", "augmentations=overlay overlay_s"]`` -> fixed options."""
    out: dict[str, OptionValue] = {}
    for item in items:
        key, value = parse_assignment(item, "--set")
        if key in out:
            raise GridError(f"--set {key} given twice")
        out[key] = normalise_value(key, value)
    return out


def parse_vary(items: Iterable[str]) -> dict[str, tuple[OptionValue, ...]]:
    """``["augmentations=overlay overlay_s|conv overlay overlay_s"]`` -> named options ('|' separates values)."""
    out: dict[str, tuple[OptionValue, ...]] = {}
    for item in items:
        key, value = parse_assignment(item, "--vary")
        if key in out:
            raise GridError(f"--vary {key} given twice")
        out[key] = tuple(normalise_value(key, v) for v in value.split("|"))
    return out


def _toml_vary(table: Mapping, where: str) -> dict[str, tuple[OptionValue, ...]]:
    out = {}
    for key, values in table.items():
        if not isinstance(values, list):
            raise GridError(f"{where}: vary.{key} must be a list of values")
        out[key] = tuple(normalise_value(key, v) for v in values)
    return out


def _toml_set(table: Mapping, where: str) -> dict[str, OptionValue]:
    if not isinstance(table, Mapping):
        raise GridError(f"{where}: `set` must be a table")
    return {key: normalise_value(key, v) for key, v in table.items()}


def _seq(d: Mapping, key: str, where: str) -> tuple:
    v = d.get(key, ())
    if not isinstance(v, (list, tuple)):
        raise GridError(f"{where}: {key} must be a list")
    return tuple(v)


def load_toml(path) -> SweepSpec:
    import tomllib

    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GridError(f"sweep file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise GridError(f"{path}: not valid TOML ({e})") from None
    unknown = sorted(set(doc) - set(_TOML_KEYS))
    if unknown:
        raise GridError(f"{path}: unknown keys {', '.join(unknown)}; known: {', '.join(_TOML_KEYS)}")
    top = GridBlock(_seq(doc, "tasks", str(path)), _seq(doc, "algorithms", str(path)), _seq(doc, "seeds", str(path)),
                    vary=_toml_vary(doc.get("vary", {}), str(path)))
    spec = SweepSpec(fixed=_toml_set(doc.get("set", {}), str(path)), root=str(doc.get("root", "")))
    grids = doc.get("grid", [])
    if not isinstance(grids, list):
        raise GridError(f"{path}: `grid` must be an array of tables ([[grid]])")
    for i, g in enumerate(grids):
        where = f"{path} [[grid]] {i}"
        unknown = sorted(set(g) - set(_GRID_KEYS))
        if unknown:
            raise GridError(f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join(_GRID_KEYS)}")
        spec.blocks.append(GridBlock(_seq(g, "tasks", where) or top.tasks, _seq(g, "algorithms", where) or top.algorithms,
                                     _seq(g, "seeds", where) or top.seeds, set=_toml_set(g.get("set", {}), where),
                                     vary={**top.vary, **_toml_vary(g.get("vary", {}), where)}))
    if not grids:
        spec.blocks.append(top)
    return spec


def build_spec(config: str | None = None, tasks: Sequence[str] = (), algorithms_: Sequence[str] = (),
               seeds: Sequence[int] = (), set_items: Sequence[str] = (), vary_items: Sequence[str] = ()) -> SweepSpec:
    """The sweep from an optional TOML file plus command-line values (which replace the file's
    tasks / algorithms / seeds in every block and add fixed and varied options)."""
    spec = load_toml(config) if config else SweepSpec(blocks=[GridBlock()])
    extra_fixed = parse_set(set_items)
    clash = set(extra_fixed) & set(spec.fixed)
    if clash:
        raise GridError(f"--set {', '.join(sorted(clash))} is also in the sweep file's [set]")
    spec.fixed.update(extra_fixed)
    extra_vary = parse_vary(vary_items)
    for b in spec.blocks:
        b.tasks = tuple(tasks) or b.tasks
        b.algorithms = tuple(algorithms_) or b.algorithms
        b.seeds = tuple(seeds) or b.seeds
        b.vary = {**b.vary, **extra_vary}
    return spec
