"""TrainConfig: the command line, the checks and their messages, config.json, the algorithm registry's options."""
import json

import pytest

from cg2a_ext.rl.cli.options import config_from_args
from cg2a_ext.rl.config import ConfigError, TrainConfig, field_docs


def test_config_cli_and_errors(tmp_path, capsys):
    docs = field_docs()
    from dataclasses import fields
    assert all(docs.get(f.name) for f in fields(TrainConfig)), "every field needs a docstring"
    cfg = config_from_args(["--task", "finger_spin", "--device", "cpu", "--preset", "paper"])
    assert cfg.algorithm == "cg2a" and cfg.train_steps == 500_000 and cfg.batch_size == 128 and cfg.eval_freq == 10_000
    cpu = config_from_args(["--task", "cartpole_balance", "--preset", "cpu", "--batch_size", "32", "--no-gas",
                            "--gamma", "0.3", "0.3", "--augmentations", "overlay", "overlay_s"])
    assert cpu.num_conv_layers == 4 and cpu.batch_size == 32 and cpu.options.gas is False
    assert cpu.options.sgs_damping == (0.3, 0.3) and cpu.options.augmentations == ("overlay", "overlay_s")
    assert cpu.K == 3
    # parse-level errors: the CLI library names the option and the valid choices
    for argv, msg in ([["--gamma", "0.2"], "--gamma"],
                      [["--mask", "x"], "invalid choice 'x'"], [["--augmentations", "conv", "bogus"], "bogus"]):
        with pytest.raises(SystemExit):
            config_from_args(argv + ["--device", "cpu"])
        assert msg in capsys.readouterr().err
    # semantic errors: ConfigError with the reason
    for argv, msg in ([["--algorithm", "ppo"], "unknown algorithm 'ppo'"], [["--gamma", "0.4", "0.3"], "0 <= A <= B <= 1"], [["--batch_size", "0"], "must be positive"],
                      [["--algorithm", "cg2a", "--augmentations"], "at least one augmentation"],
                      [["--resume", "--run_dir", str(tmp_path)], "no config.json"]):
        with pytest.raises(ConfigError, match=msg):
            config_from_args(argv + ["--device", "cpu"])
    with pytest.raises(SystemExit):
        config_from_args(["--preset", "huge"])
    assert "invalid choice 'huge'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown preset"):
        TrainConfig(preset="huge").validate()


def test_config_validates_objects_built_in_code():
    from cg2a_ext.rl.algorithms.cg2a import CG2AOptions
    from cg2a_ext.rl.algorithms.sgqn import SGQNOptions

    with pytest.raises(ConfigError, match="at least one augmentation in --augmentations"):
        TrainConfig(options=CG2AOptions(augmentations="conv,overlay")).validate()
    with pytest.raises(ConfigError, match="unknown algorithm"):
        TrainConfig(algorithm="ppo").validate()
    with pytest.raises(ConfigError, match="unknown evaluation mode 'nope'"):
        TrainConfig(eval_modes=("train", "nope")).validate()
    with pytest.raises(ConfigError, match="options of cg2a must be"):
        TrainConfig(options=SGQNOptions()).validate()
    # per-algorithm and per-task defaults apply in Python as on the command line
    assert TrainConfig(algorithm="sgqn", task="cartpole_swingup").validate().options.quantile == 0.98
    assert TrainConfig(algorithm="sgqn", task="walker_walk").validate().options.quantile == 0.95
    smg = TrainConfig(algorithm="smg", task="walker_stand", preset="paper", device="cpu").validate()
    assert (smg.batch_size, smg.projection_dim, smg.train_steps) == (64, 256, 250_000)
    assert TrainConfig(algorithm="smg", task="walker_walk", preset="paper", device="cpu").validate().train_steps == 500_000
    assert TrainConfig(algorithm="smg", task="walker_stand", preset="paper", device="cpu",
                       train_steps=2000).validate().train_steps == 2000
    # the same defaults from the command line
    assert config_from_args(["--algorithm", "sgqn", "--task", "cartpole_swingup"]).options.quantile == 0.98
    # defect 3 of issue 19: options that passed the checks and crashed after the run folder existed
    for kw, msg in ((dict(critic_lr=float("nan")), "critic_lr must be a finite"), (dict(discount=2.0), "discount"),
                    (dict(buffer_capacity=10), "below --batch_size"),
                    (dict(seed_steps=5000, train_steps=300), "never update"), (dict(actor_lr=-1.0), "actor_lr"),
                    (dict(critic_tau=float("inf")), "critic_tau")):
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(task="cartpole_balance", **kw).validate()


def test_config_json_round_trip(tmp_path):
    from cg2a_ext.rl.algorithms.cg2a import CG2AOptions

    cfg = TrainConfig(task="walker_walk", options=CG2AOptions(augmentations=("overlay",), sgs_damping=(0.1, 0.2)),
                      eval_modes=("train",)).validate()
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    # a config.json written before the algorithms owned their options: the flat keys are taken over
    old = {k: v for k, v in cfg.to_dict().items() if k != "options"}
    old.update(gamma=[0.1, 0.2], augmentations=["overlay"], gas=True, sgs=True, mask="agree", soda_crop="random",
               sgqn_quantile=0.95, svea_alpha=0.5)
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert TrainConfig.load(tmp_path / "old.json") == cfg
    (tmp_path / "bad.json").write_text('{"task": "walker_walk", "no_such_option": 1}')
    with pytest.raises(ConfigError, match="unknown config keys: no_such_option"):
        TrainConfig.load(tmp_path / "bad.json")


def test_parsing_options_imports_no_environment():
    import subprocess
    import sys
    code = ("import sys; from cg2a_ext.rl.cli.options import parse; "
            "parse(['--task', 'walker_walk', '--preset', 'cpu']); "
            "bad = [m for m in ('dm_control', 'mujoco', 'cg2a_ext.rl.envs') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_declares_every_algorithm():
    from typing import get_args

    from cg2a_ext.rl import algorithms
    from cg2a_ext.rl.algorithms.base import Algorithm
    assert set(algorithms.NAMES) >= {"sac", "drq", "svea", "ac", "cg2a", "soda", "sgqn", "smg"}
    for name in algorithms.NAMES:
        cls = algorithms.get(name)
        assert issubclass(cls, Algorithm) and cls.name == name and cls.summary and cls.label
        assert all(docs for docs in cls.option_docs().values()) and len(cls.option_docs()) == len(
            cls.cli_names()), f"every option of {name} needs a docstring"
    assert TrainConfig(algorithm="svea").K == 2 and TrainConfig(algorithm="drq").K == 1
    from cg2a_ext.rl.algorithms.cg2a import CG2AOptions
    assert TrainConfig(algorithm="cg2a", options=CG2AOptions(augmentations=("conv", "overlay"))).K == 3
    with pytest.raises(KeyError, match="unknown algorithm 'ppo'"):
        algorithms.get("ppo")


def test_config_names_match_environments_and_augmentations():
    from typing import get_args

    from cg2a_ext.rl.algorithms.parts.combination import AUGMENTATION_NAMES, AugmentationName
    from cg2a_ext.rl.core.augmentations import AUGMENTATIONS
    assert set(get_args(AugmentationName)) == set(AUGMENTATIONS) == set(AUGMENTATION_NAMES)

