"""One sampling-settings type: its defaults are the registered protocol, each rule is checked once, and
command lines derive their options from the config dataclasses (workbench.options)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pytest

from analysis import cli
from analysis.configs import ANALYSIS_SAMPLING, BoundaryConfig, CorrectiveConfig, RolloutConfig
from workbench.data import BENCHMARKS, REAL_BENCHMARKS, TOY_BENCHMARKS, get_spec
from workbench.errors import FieldError, UserArgumentParser, UserError
from workbench.models import SamplingConfig
from workbench.options import add_options, build

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_registered_protocol():
    # The paper's evaluation protocol (shared/paper README): 32 samples, T 0.6, top-p 0.95, top-k 20, 32768 tokens.
    paper = (32, 0.6, 0.95, 20, 32768, 1.0, 0)
    assert tuple(asdict(SamplingConfig()).values()) == paper
    assert {get_spec(b).generation for b in REAL_BENCHMARKS} == {SamplingConfig()}
    # The toy tiers: the same protocol, only a token limit that fits their answers.
    assert {get_spec(b).generation for b in TOY_BENCHMARKS} == {SamplingConfig(max_new_tokens=96)}
    assert all(isinstance(spec.generation, SamplingConfig) for spec in BENCHMARKS.values())


def test_untruncated_preset_turns_off_top_p_and_top_k_only():
    assert SamplingConfig.untruncated() == SamplingConfig(top_p=1.0, top_k=0)
    assert SamplingConfig.untruncated(n=3, seed=7) == SamplingConfig(n=3, top_p=1.0, top_k=0, seed=7)
    # the analyses sample untruncated, with a 4096-token budget, each stage its own count
    assert ANALYSIS_SAMPLING == SamplingConfig(top_p=1.0, top_k=0, max_new_tokens=4096)
    assert (RolloutConfig().sampling.n, CorrectiveConfig().sampling.n, BoundaryConfig().sampling.n) == (4, 4, 16)
    assert {replace(c().sampling, n=1) for c in (RolloutConfig, CorrectiveConfig, BoundaryConfig)} == {
        replace(ANALYSIS_SAMPLING, n=1)}


@pytest.mark.parametrize("bad, name", [
    ({"n": 0}, "n"), ({"temperature": -0.1}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"), ({"max_new_tokens": 0},
    "max_new_tokens"), ({"repetition_penalty": 0.0}, "repetition_penalty"), ({"seed": -1}, "seed")])
def test_each_rule_names_its_field(bad, name):
    with pytest.raises(FieldError) as caught:
        SamplingConfig(**bad)
    assert caught.value.field == name and isinstance(caught.value, UserError)
    with pytest.raises(FieldError):  # replace runs the same checks
        replace(SamplingConfig(), **bad)


@dataclass(frozen=True)
class Toy:
    """A config as a user would add to: a count, an optional number, a list, a switch, a sampling field."""

    steps: int = field(default=3, metadata={"help": "how many steps"})
    rate: float | None = field(default=None, metadata={"help": "a rate"})
    ratios: tuple[float, ...] = field(default=(0.5,), metadata={"help": "fractions"})
    verbose: bool = field(default=False, metadata={"help": "say more"})
    n_buckets: int = field(default=4, metadata={"option": "buckets", "help": "buckets"})
    sampling: SamplingConfig = field(default=SamplingConfig(n=2), metadata={"options": {"n": ("draws", "draws")}})

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise FieldError("steps", f"must be at least 1, got {self.steps}")


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = UserArgumentParser(prog="toy")
    add_options(parser, [Toy], **kwargs)
    return parser


def test_every_field_is_an_option_with_its_type_and_default():
    args = _parser().parse_args([])
    assert build(Toy, args) == Toy()
    assert (args.steps, args.rate, args.ratios, args.verbose, args.buckets, args.draws, args.top_k) == (
        3, None, (0.5,), False, 4, 2, 20)
    given = build(Toy, _parser().parse_args(["--steps", "5", "--rate", "0.25", "--ratios", "0.1", "0.9", "--verbose",
                                             "--buckets", "2", "--draws", "6", "--top-k", "0", "--seed", "9"]))
    assert given == Toy(5, 0.25, (0.1, 0.9), True, 2, SamplingConfig(n=6, top_k=0, seed=9))
    text = " ".join(_parser().format_help().split())
    assert "--steps STEPS how many steps (default: 3)" in text
    assert "--draws DRAWS draws (default: 2)" in text and "--n " not in text  # the nested count: its parent's name
    # a command may set its own defaults and leave fields out
    args = _parser(defaults={"steps": 7}, exclude=("rate",)).parse_args([])
    assert not hasattr(args, "rate") and build(Toy, args) == Toy(steps=7)


def test_a_value_the_config_refuses_is_one_line_naming_the_option():
    with pytest.raises(UserError, match=r"^argument --steps: must be at least 1, got 0$"):
        build(Toy, _parser().parse_args(["--steps", "0"]))
    with pytest.raises(UserError, match=r"^argument --draws: must be at least 1, got 0$"):
        build(Toy, _parser().parse_args(["--draws", "0"]))
    with pytest.raises(UserError, match=r"^argument --top-p: must be in \(0, 1\], got 2.0$"):
        build(Toy, _parser().parse_args(["--top-p", "2"]))


def test_shared_options_must_agree_on_their_default():
    @dataclass(frozen=True)
    class Other:
        steps: int = 9

    with pytest.raises(TypeError, match="--steps"):
        add_options(UserArgumentParser(), [Toy, Other])
    add_options(UserArgumentParser(), [Toy, Other], defaults={"steps": 1})  # a command's default settles it


def test_analysis_cli_options_are_the_configs_fields(monkeypatch, capsys):
    from workbench.cli import main

    @dataclass(frozen=True)
    class Wider(BoundaryConfig):
        min_solve_rate: float = field(default=0.25, metadata={"help": "a new setting"})

    monkeypatch.setattr(cli, "EXPERIMENT_CONFIGS", (*cli.EXPERIMENT_CONFIGS, Wider))
    with pytest.raises(SystemExit):
        cli.main(["toy", "--help"])
    assert "--min-solve-rate MIN_SOLVE_RATE a new setting (default: 0.25)" in " ".join(capsys.readouterr().out.split())
    for flag, value, problem in (("--temperature", "-1", "must be 0 (greedy) or more, got -1.0"),
                                 ("--buckets", "1", "must be at least 2, got 1"),
                                 ("--ratios", "1.5", "must be non-empty and lie strictly between 0 and 1, got [1.5]")):
        assert main(["analysis", "toy", flag, value]) == 2
        assert capsys.readouterr().err == f"error: argument {flag}: {problem}\n"


def test_toy_command_reproduces_the_committed_analysis_settings():
    """The toy command's defaults are the settings that made results/toy/analysis (its manifest)."""
    config = json.loads((REPO / "results" / "toy" / "analysis" / "manifest.json").read_text())["config"]
    settings = cli._settings(cli._parser().parse_args(["toy"]))
    assert asdict(settings["rollouts"].sampling) == config["rollouts"]
    assert asdict(settings["rollouts"].sampling) == {"n": 4, "temperature": 0.6, "top_p": 1.0, "top_k": 0,
                                                     "max_new_tokens": 96, "repetition_penalty": 1.0, "seed": 0}
    for stage in ("corrective", "boundary"):
        assert json.loads(json.dumps(asdict(settings[stage]))) == config[stage]
