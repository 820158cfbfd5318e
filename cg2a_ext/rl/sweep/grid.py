"""The grid of a sweep: tasks x algorithms x seeds x options, and the name of each run.

Every run is a :class:`~cg2a_ext.rl.config.TrainConfig` (``RunSpec.config``), built from typed option
values: a string of ``--set`` / ``--vary`` or a TOML value is converted by the field's type in one place
(:func:`convert`): ``"overlay overlay_s"`` -> ``("overlay", "overlay_s")``, ``"false"`` -> ``False``,
``"0.3 0.3"`` -> ``(0.3, 0.3)``. Options are addressed by their command-line names: the core options
(``batch_size``) and the algorithms' own (``soda_crop``, ``gas``, ``augmentations``, the alias ``gamma``).

Two kinds of options:

- **fixed** options (``--set KEY=VALUE`` or the TOML ``[set]`` table) hold for the whole sweep and do
  not appear in run names (e.g. ``preset=cpu``, ``train_steps=20000``);
- **named** options (``--vary KEY=V1|V2`` or a TOML ``[vary]`` table, and the ``set`` of a TOML
  ``[[grid]]`` block) tell runs apart and appear in their folder names, sorted by key:
  ``cartpole_balance--cg2a--augmentations=overlay+overlay_s--seed0``.

An algorithm's own option (``soda_crop``, ``augmentations``) is given only to the algorithms that own
it, and so is a core option that only some algorithms' ``method_options`` name (``image_bank``):
varying ``augmentations`` over drq and cg2a makes two cg2a runs per seed and one drq run, not two
identical drq runs. Other options (``action_repeat``, ``batch_size``...) apply to every algorithm.

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

import dataclasses
import difflib
import functools
import itertools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

from cg2a_ext.rl import algorithms
from cg2a_ext.rl.config import TrainConfig

# Fields the grid itself sets for every run, or the sweep runner manages.
RESERVED = ("task", "algorithm", "seed", "run_dir", "runs_root", "resume", "options")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")
_NONE = ("none", "null")
_SAFE = re.compile(r"[^A-Za-z0-9_.=+-]")
_TOML_KEYS = ("root", "tasks", "algorithms", "seeds", "set", "vary", "grid")
_GRID_KEYS = ("tasks", "algorithms", "seeds", "set", "vary")


class GridError(ValueError):
    """The grid is invalid (unknown option, bad value, clashing names); raised before any run starts."""


# --------------------------------------------------------------------------- options and their types
@dataclass(frozen=True)
class Option:
    """An option a run can be given, by its command-line name: a core option (``owners`` empty; the
    TrainConfig field ``key``) or some algorithms' own option (algorithm -> its Options field)."""

    key: str
    type: Any
    owners: Mapping[str, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def _options(names: tuple[str, ...]) -> dict[str, Option]:
    hints = typing.get_type_hints(TrainConfig)
    out = {f.name: Option(f.name, hints[f.name]) for f in dataclasses.fields(TrainConfig) if f.name != "options"}
    for name in names:
        algo = algorithms.get(name)
        option_hints = typing.get_type_hints(algo.Options)
        for option, flag in algo.cli_names().items():
            for key in (flag, *(a.lstrip("-") for a in algo.cli_aliases.get(option, ()))):
                known = out.get(key)
                owners = {**(known.owners if known else {}), name: option}
                out[key] = Option(key, known.type if known else option_hints[option], owners)
    return out


def options() -> dict[str, Option]:
    """Every option by command-line name (the registry's algorithms at the time of the call)."""
    return _options(algorithms.NAMES)


def option(key: str) -> Option:
    """The option ``key``; GridError for a reserved or unknown name (with the closest names)."""
    if key in RESERVED:
        hint = {"task": "--tasks", "algorithm": "--algorithms", "seed": "--seeds"}.get(key, "the sweep (--root)")
        raise GridError(f"option {key!r} is set by {hint}, not by --set / --vary")
    known = options()
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=3)
        raise GridError(f"unknown option {key!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                       "; see python/train.py --help"))
    return known[key]


def check_key(key: str) -> None:
    option(key)


def _unwrap(typ) -> tuple[Any, bool]:
    """(the type without ``None``, whether None is allowed)."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return (args[0] if len(args) == 1 else typ), len(args) < len(typing.get_args(typ))
    return typ, False


def _scalar(key: str, typ, value: Any) -> Any:
    """One value of type ``typ`` from a string token or a TOML scalar."""
    text = value.strip() if isinstance(value, str) else None
    if typ is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise GridError(f"option {key} is a boolean: give true or false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool):
            raise GridError(f"option {key} takes a number, got {value!r}")
        if typ is int and isinstance(value, float) and not value.is_integer():
            raise GridError(f"option {key} takes an integer, got {value!r}")
        try:
            return typ(text if text is not None else value)        # int("6.5") fails; int(8.0) is 8
        except (TypeError, ValueError):
            raise GridError(f"option {key} takes {'an integer' if typ is int else 'a number'}, got {value!r}") \
                from None
    if typing.get_origin(typ) is Literal:
        choices = typing.get_args(typ)
        if str(value) not in choices:
            raise GridError(f"option {key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return str(value)
    if typ is str:
        return str(value)
    raise GridError(f"option {key}: cannot convert {value!r} to {typ}")


def _tokens(value: Any) -> list:
    """A string -> its whitespace-separated tokens; a list -> its items, strings among them split too."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in (v.split() if isinstance(v, str) else [v])]
    return [value]


def convert(key: str, value: Any) -> Any:
    """The one conversion of an option value, by the type of its field: a command-line string
    (``"overlay overlay_s"``, ``"false"``, ``"0.3 0.3"``), a TOML scalar or list, or a value of the right
    type already -> the typed value (tuples for tuple fields; ``none`` for a field that may be None)."""
    typ, nullable = _unwrap(option(key).type)
    tokens = _tokens(value)
    if not tokens:
        raise GridError(f"option {key}: empty value")
    if nullable and (value is None or (len(tokens) == 1 and str(tokens[0]).lower() in _NONE)):
        return None
    if typing.get_origin(typ) is tuple:
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_scalar(key, args[0], t) for t in tokens)
        if len(tokens) != len(args):
            raise GridError(f"option {key} takes {len(args)} values, got {len(tokens)}: {value!r}")
        return tuple(_scalar(key, a, t) for a, t in zip(args, tokens))
    if len(tokens) != 1:
        raise GridError(f"option {key} takes one value, got {len(tokens)}: {value!r}")
    return _scalar(key, typ, tokens[0])


def applies(key: str, algorithm: str) -> bool:
    """Whether ``algorithm`` takes option ``key``: an algorithm's own option goes only to the algorithms that
    own it; a core option that some algorithms' ``method_options`` name (``image_bank``) only to those; every
    other option to all."""
    opt = option(key)
    if opt.owners:
        return algorithm in opt.owners
    named_by = [n for n in algorithms.NAMES if key in algorithms.get(n).method_options]
    return not named_by or algorithm in named_by


def format_value(value: Any) -> str:
    """An option value in a run name or a method: tuple items joined by ``+``, booleans as true/false."""
    items = value if isinstance(value, tuple) else (value,)
    return _SAFE.sub("_", "+".join(_text(v) for v in items))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_name(task: str, algorithm: str, seed: int, named: Mapping[str, Any]) -> str:
    parts = [task, algorithm] + [f"{k}={format_value(named[k])}" for k in sorted(named)] + [f"seed{seed}"]
    return "--".join(_SAFE.sub("_", p) for p in parts)


def build_config(task: str, algorithm: str, seed: int, values: Mapping[str, Any]) -> TrainConfig:
    """The (unresolved) TrainConfig of a run: core options set on it, the algorithm's own in its Options.
    GridError when two names set one field (``gamma`` and ``sgs_damping``)."""
    core: dict[str, Any] = {}
    own: dict[str, Any] = {}
    set_by: dict[tuple[str, str], str] = {}
    for key, value in values.items():
        opt = option(key)
        kind, name = ("options", opt.owners[algorithm]) if opt.owners else ("core", key)
        if (kind, name) in set_by:
            raise GridError(f"options {set_by[kind, name]} and {key} both set {algorithm}'s {name}; give one")
        set_by[kind, name] = key
        (own if opt.owners else core)[name] = value
    return TrainConfig(task=task, algorithm=algorithm, seed=seed, options=algorithms.get(algorithm).Options(**own),
                       **core)


def command_line(run: "RunSpec") -> list[str]:
    """The train.py arguments that make the run's config, for a human to read or run (without --run_dir)."""
    out = ["--task", run.task, "--algorithm", run.algorithm, "--seed", str(run.seed)]
    for key, value in {**run.fixed, **run.named}.items():
        if isinstance(value, bool):
            out.append(f"--{key}" if value else f"--no-{key}")
        elif value is None:
            out += [f"--{key}", "None"]
        else:
            out += [f"--{key}", *(_text(v) for v in (value if isinstance(value, tuple) else (value,)))]
    return out


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: its folder name, the options it was given (named: in its name; fixed: the
    sweep's), typed and by command-line name, and the TrainConfig they make."""

    name: str
    config: TrainConfig
    named: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, task: str, algorithm: str, seed: int, named: Mapping[str, Any],
             fixed: Mapping[str, Any] = {}) -> "RunSpec":
        config = build_config(task, algorithm, seed, {**fixed, **named})
        return cls(run_name(task, algorithm, seed, named), config, dict(named), dict(fixed))

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def algorithm(self) -> str:
        return self.config.algorithm

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def method(self) -> str:
        """The algorithm and its named options: runs with one method and task differ only by seed."""
        items = [f"{k}={','.join(map(_text, v if isinstance(v, tuple) else (v,)))}" for k, v in sorted(self.named.items())]
        return " ".join([self.algorithm] + items)

    def explicit(self) -> set[str]:
        """The config's fields the sweep gave (TrainConfig names; ``options.<field>`` for the algorithm's)."""
        out = {"task", "algorithm", "seed"}
        for key in {**self.fixed, **self.named}:
            opt = option(key)
            out.add(f"options.{opt.owners[self.algorithm]}" if opt.owners else key)
        return out

    def command_line(self) -> list[str]:
        return command_line(self)

    def to_dict(self) -> dict:
        return {"name": self.name, "task": self.task, "algorithm": self.algorithm, "seed": self.seed,
                "method": self.method, "named": {k: _json(v) for k, v in self.named.items()},
                "fixed": {k: _json(v) for k, v in self.fixed.items()}, "config": self.config.to_dict(),
                "command": self.command_line()}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        """From ``to_dict`` (or a sweep.json of earlier versions, whose values are command-line tokens)."""
        named = {k: convert(k, v) for k, v in d.get("named", {}).items()}
        fixed = {k: convert(k, v) for k, v in d.get("fixed", {}).items()}
        spec = cls.make(d["task"], d["algorithm"], int(d["seed"]), named, fixed)
        return spec if spec.name == d["name"] else dataclasses.replace(spec, name=d["name"])


@dataclass
class GridBlock:
    """tasks x algorithms x seeds x the product of ``vary``; ``set`` adds named single values."""

    tasks: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    set: dict[str, Any] = field(default_factory=dict)
    vary: dict[str, tuple[Any, ...]] = field(default_factory=dict)

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

    def runs(self, fixed: Mapping[str, Any]) -> list[RunSpec]:
        keys = list(self.vary)
        out = []
        for task, algorithm in itertools.product(self.tasks, self.algorithms):
            for combo in itertools.product(*(self.vary[k] for k in keys)):
                named = {k: v for k, v in {**self.set, **dict(zip(keys, combo))}.items() if applies(k, algorithm)}
                own_fixed = {k: v for k, v in fixed.items() if applies(k, algorithm) and k not in named}
                for seed in self.seeds:
                    out.append(RunSpec.make(task, algorithm, seed, named, own_fixed))
        return out


@dataclass
class SweepSpec:
    """The whole grid: sweep-wide fixed options and one or more blocks."""

    fixed: dict[str, Any] = field(default_factory=dict)
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
                if other is not None and other.config != run.config:
                    raise GridError(f"two different runs are both named {run.name!r}: "
                                    f"{' '.join(other.command_line())} / {' '.join(run.command_line())}")
                by_name.setdefault(run.name, run)
        return list(by_name.values())

    def to_dict(self) -> dict:
        return {"fixed": {k: _json(v) for k, v in self.fixed.items()},
                "blocks": [{"tasks": list(b.tasks), "algorithms": list(b.algorithms), "seeds": list(b.seeds),
                            "set": {k: _json(v) for k, v in b.set.items()},
                            "vary": {k: [_json(x) for x in v] for k, v in b.vary.items()}} for b in self.blocks]}


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


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["preset=cpu", "augmentations=overlay overlay_s"]`` -> fixed options."""
    out: dict[str, Any] = {}
    for item in items:
        key, value = parse_assignment(item, "--set")
        if key in out:
            raise GridError(f"--set {key} given twice")
        out[key] = convert(key, value)
    return out


def parse_vary(items: Iterable[str]) -> dict[str, tuple[Any, ...]]:
    """``["augmentations=overlay overlay_s|conv overlay overlay_s"]`` -> named options ('|' separates values)."""
    out: dict[str, tuple[Any, ...]] = {}
    for item in items:
        key, value = parse_assignment(item, "--vary")
        if key in out:
            raise GridError(f"--vary {key} given twice")
        out[key] = tuple(convert(key, v) for v in value.split("|"))
    return out


def _toml_vary(table: Mapping, where: str) -> dict[str, tuple[Any, ...]]:
    out = {}
    for key, values in table.items():
        if not isinstance(values, list):
            raise GridError(f"{where}: vary.{key} must be a list of values")
        out[key] = tuple(convert(key, v) for v in values)
    return out


def _toml_set(table: Mapping, where: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise GridError(f"{where}: `set` must be a table")
    return {key: convert(key, v) for key, v in table.items()}


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
