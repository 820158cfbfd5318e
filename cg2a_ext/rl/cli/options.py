"""The training command line: argv to a validated :class:`~cg2a_ext.rl.config.TrainConfig`.

The command line is flat, as it always was: the core options (``--task``, ``--batch_size`` ...) and the chosen
algorithm's own options under its prefix (``--algorithm soda --soda_crop shift``; ``--algorithm cg2a --no-gas
--gamma 0.3 0.3``). ``--algorithm`` is read first; the parser then holds the core options and that algorithm's,
typed from the dataclasses, with their docstrings as help (tyro). A flat line was kept over tyro's subcommands
(``train.py soda --soda.crop shift``) so that every documented command and every sweep file keeps working.

Argv exists only here: everything after this module takes a TrainConfig.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import typing
from pathlib import Path
from typing import Annotated, Sequence

from cg2a_ext.rl.config import RESUMABLE, ConfigError, TrainConfig, resolve, resolve_preset

_HELP_MARKUP = re.compile(r"``([^`]*)``")


def _help(text: str) -> str:
    return _HELP_MARKUP.sub(r"\1", text)   # reST literals read badly in a terminal


def _core_docs() -> dict[str, str]:
    from cg2a_ext.rl.config import field_docs

    return field_docs(TrainConfig)


def _algorithm_from(argv: Sequence[str]) -> str:
    name = TrainConfig.algorithm
    for i, token in enumerate(argv):
        if token == "--algorithm" and i + 1 < len(argv):
            name = argv[i + 1]
        elif token.startswith("--algorithm="):
            name = token.split("=", 1)[1]
    return name


def cli_class(algorithm: str) -> type:
    """The flat dataclass tyro parses for ``algorithm``: the core fields and the algorithm's options under their
    command-line names."""
    import tyro

    from cg2a_ext.rl import algorithms

    algo = algorithms.get(algorithm)
    docs = _core_docs()
    core_types = typing.get_type_hints(TrainConfig)
    option_types = typing.get_type_hints(algo.Options)
    specs = []
    for f in dataclasses.fields(TrainConfig):
        if f.name == "options":
            continue
        help_text = docs.get(f.name, "")
        if f.name == "algorithm":
            help_text += f" (this help shows the options of {algorithm}; --algorithm X --help shows X's)"
        specs.append((f.name, Annotated[core_types[f.name],
                                        tyro.conf.arg(help=_help(help_text))], dataclasses.field(default=f.default)))
    option_docs = algo.option_docs()
    names = algo.cli_names()
    for f in dataclasses.fields(algo.Options):
        aliases = algo.cli_aliases.get(f.name, ())
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        typ = option_types[f.name]
        specs.append((names[f.name], Annotated[typ, tyro.conf.arg(
            help=_help(f"{algorithm}: {option_docs.get(f.name, '')}"), aliases=aliases or None)],
            dataclasses.field(default=default)))
    return dataclasses.make_dataclass(f"train_{algorithm}", specs)


def explicit_options(argv: Sequence[str], algorithm: str) -> set[str]:
    """The options named on a command line (``--x``, ``--x=v``, ``--no-x``), as TrainConfig field names or
    ``options.<field>`` for the algorithm's."""
    from cg2a_ext.rl import algorithms

    algo = algorithms.get(algorithm)
    lookup = {f.name: f.name for f in dataclasses.fields(TrainConfig) if f.name != "options"}
    for field, flag in algo.cli_names().items():
        lookup[flag] = f"options.{field}"
        for alias in algo.cli_aliases.get(field, ()):
            lookup[alias.lstrip("-").replace("-", "_")] = f"options.{field}"
    found = set()
    for token in argv:
        if not token.startswith("--"):
            continue
        key = token[2:].split("=", 1)[0].replace("-", "_")
        if key not in lookup and key.startswith("no_") and key[3:] in lookup:
            key = key[3:]
        if key in lookup:
            found.add(lookup[key])
    return found


def _refuse_other_algorithms_options(argv: Sequence[str], algorithm: str) -> None:
    """An option of another algorithm is a mistake worth naming (tyro would only say "unrecognized")."""
    from cg2a_ext.rl import algorithms

    mine = set(algorithms.get(algorithm).cli_names().values())
    owners: dict[str, str] = {}
    for other in algorithms.NAMES:
        if other != algorithm:
            for flag in algorithms.get(other).cli_names().values():
                if flag not in mine:
                    owners.setdefault(flag, other)
    for token in argv:
        key = token[2:].split("=", 1)[0].replace("-", "_") if token.startswith("--") else ""
        key = key[3:] if key.startswith("no_") and key[3:] in owners else key
        if key in owners:
            raise ConfigError(f"--{key} is an option of {owners[key]}, not of --algorithm {algorithm}")


def parse(argv: Sequence[str], prog: str | None = None) -> tuple[TrainConfig, set[str]]:
    """argv -> (an unresolved TrainConfig, the options given explicitly)."""
    import tyro

    from cg2a_ext.rl import algorithms

    argv = list(argv)
    name = _algorithm_from(argv)
    if name not in algorithms.NAMES:
        raise ConfigError(f"unknown algorithm {name!r}; choose one of {', '.join(algorithms.NAMES)}")
    algo = algorithms.get(name)
    _refuse_other_algorithms_options(argv, name)
    parsed = tyro.cli(cli_class(name), args=argv, use_underscores=True, prog=prog,
                      description=f"Train a SAC agent ({' / '.join(algorithms.NAMES)}) on a visual control task.")
    values = dataclasses.asdict(parsed)
    names = algo.cli_names()
    options = algo.Options(**{field: values.pop(flag) for field, flag in names.items()})
    return TrainConfig(**values, options=options), explicit_options(argv, name)


def config_from_args(argv: Sequence[str] | None = None, prog: str | None = None) -> TrainConfig:
    """Parse ``argv`` into a validated TrainConfig (options left unset take the algorithm's, family's and preset's
    values, as in Python). With ``--resume``, the run folder's config.json is the base; explicit options outside
    RESUMABLE that differ from it raise ConfigError listing every conflict."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, explicit = parse(argv, prog)
    if cfg.resume:
        return _resume_config(cfg, explicit)
    return cfg.validate()


def _resume_config(parsed: TrainConfig, explicit: set[str]) -> TrainConfig:
    from cg2a_ext.rl.run.folder import CONFIG

    if not parsed.run_dir:
        raise ConfigError("--resume needs --run_dir (the run folder to continue)")
    cfg_path = Path(parsed.run_dir) / CONFIG
    if not cfg_path.is_file():
        raise ConfigError(f"--resume: no {CONFIG} in {parsed.run_dir!r} (not a run folder?)")
    saved = TrainConfig.load(cfg_path)
    resolve(saved)                          # a config.json written by hand may leave options unset
    if saved.buffer_capacity == 0:          # the buffer keeps the capacity it was created with
        saved.buffer_capacity = saved.train_steps
    if parsed.algorithm != saved.algorithm and "algorithm" in explicit:
        raise ConfigError(f"--resume: --algorithm {parsed.algorithm!r} conflicts with the run's {saved.algorithm!r}")

    def value(cfg: TrainConfig, key: str):
        return getattr(cfg.options, key[8:]) if key.startswith("options.") else getattr(cfg, key)

    conflicts = [f"--{k.replace('options.', '')} {value(parsed, k)!r} (the run has {value(saved, k)!r})"
                 for k in sorted(explicit - set(RESUMABLE) - {"preset", "algorithm"})
                 if value(parsed, k) != value(saved, k)]
    if "preset" in explicit and resolve_preset(parsed.preset) != saved.preset:
        conflicts.append(f"--preset {parsed.preset!r} (the run has {saved.preset!r})")
    if conflicts:
        raise ConfigError("--resume: options conflict with the run's config.json: " + "; ".join(conflicts)
                          + ". Only these may change on resume: " + ", ".join(RESUMABLE))
    for k in explicit & set(RESUMABLE):
        setattr(saved, k, getattr(parsed, k))
    saved.resume = True
    saved.run_dir = parsed.run_dir
    return saved.validate()
