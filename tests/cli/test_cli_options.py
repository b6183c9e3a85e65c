"""Stage options generated from the configs (pipeline/cli/options.py): every field is an option with
its description as help, values are parsed by the config models, and a new field needs no CLI edit."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
import typer
from pydantic import Field
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.options import JsonOption, config_fields, stage_command
from pipeline.config import StageConfig, load_config
from pipeline.evaluate import EvaluateConfig
from pipeline.features import ExtractConfig
from pipeline.localise.config import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.shards.config import ShardConfig, StatsConfig
from pipeline.train.config import TrainConfig
from pipeline.transfer import TransferConfig

STAGES = {("shard",): ShardConfig, ("stats",): StatsConfig, ("train",): TrainConfig, ("evaluate",): EvaluateConfig,
          ("extract",): ExtractConfig, ("transfer",): TransferConfig, ("localise", "train"): LocaliseTrainConfig,
          ("localise", "evaluate"): LocaliseEvalConfig}


def _help(*command: str) -> str:
    r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"})
    assert r.exit_code == 0, r.output
    return r.output


@pytest.mark.parametrize("command", list(STAGES), ids=" ".join)
def test_every_config_field_is_documented_in_help(command):
    text = _help(*command)
    lines = text.splitlines()
    for path, field in config_fields(STAGES[command]):
        if "dict" in str(field.annotation):
            continue  # mappings are set with --set key.sub=value
        flag = path.replace("_", "-")
        upper = path.upper()
        rows = [ln for ln in lines if re.search(rf"(--{re.escape(flag)}\b|\b{upper}\b|--no-{re.escape(flag)}\b)", ln)
                or f" {path}" in ln]
        assert rows, f"{command}: no option for {path}"
        words = field.description.split()[:3]
        assert " ".join(words) in " ".join(text.split()), f"{command} {path}: help lacks {field.description!r}"
    assert "--config" in text and "--set" in text


def test_values_are_parsed_by_the_model_the_same_way_everywhere(tmp_path):
    preset = tmp_path / "e.yaml"
    preset.write_text("scales: [256, 384]\n")
    from_set = load_config(EvaluateConfig, None, ["scales=256,384"])
    from_yaml = load_config(EvaluateConfig, preset)
    from_text = load_config(EvaluateConfig, None, None, scales="256 384")
    assert from_set.scales == from_yaml.scales == from_text.scales == [256, 384]
    assert load_config(EvaluateConfig, None, None, scales="single").scales == "single"
    assert load_config(TransferConfig, None, None, stores="a.h5", protocol="voc07", c_grid="0.1,1").c_grid == [0.1, 1.0]
    assert load_config(TrainConfig, None, ["data.mean=120,115,100"], out="o", data={"shards": "s"}).data.mean == \
        (120.0, 115.0, 100.0)
    loc = load_config(LocaliseEvalConfig, None, None, checkpoints=["a.pt", "b.pt"], data="d", scales="64;64,96")
    assert loc.net_scales == [[64], [64, 96]] and loc.scales is None
    with pytest.raises(Exception, match="expected integers"):
        load_config(ExtractConfig, None, None, scales="256,3x")


class _Toy(StageConfig):
    """A config a stage might grow: options appear without editing the CLI."""

    name: str = Field(description="a positional name")
    sizes: list[int] = Field([1, 2], description="sizes to try")
    fast: bool = Field(False, description="go fast")
    paths: list[str] = Field(default_factory=list, description="files to read")


def _toy_app(seen: list) -> typer.Typer:
    toy = typer.Typer()

    @stage_command(_Toy, arguments=["name"], aliases={"paths": "--path"})
    def run(cfg: _Toy, loud: Annotated[bool, typer.Option(help="shout")] = False, as_json: JsonOption = False) -> None:
        """Toy command."""
        seen.append((cfg, loud, as_json))

    toy.command("run")(run)
    toy.command("other")(lambda: None)
    return toy


def test_generated_command_options_precedence_and_repeats(tmp_path):
    seen: list = []
    toy = _toy_app(seen)
    runner = CliRunner()
    (tmp_path / "p.yaml").write_text("sizes: [7]\nfast: true\n")
    r = runner.invoke(toy, ["run", "n", "--config", str(tmp_path / "p.yaml"), "--set", "sizes=[8, 9]", "--loud",
                            "--path", "a", "--paths", "b", "--json"])
    assert r.exit_code == 0, r.output
    cfg, loud, as_json = seen[-1]
    assert cfg.name == "n" and cfg.sizes == [8, 9] and cfg.fast and cfg.paths == ["a", "b"] and loud and as_json
    r = runner.invoke(toy, ["run", "n", "--set", "sizes=[8]", "--sizes", "3,4", "--no-fast", "--paths", "x,y"])
    assert r.exit_code == 0, r.output
    cfg = seen[-1][0]
    assert cfg.sizes == [3, 4] and not cfg.fast and cfg.paths == ["x", "y"]  # options win over --set
    r = runner.invoke(toy, ["run", "--help"], env={"COLUMNS": "200"})
    assert all(w in r.output for w in ("sizes to try", "go fast", "files to read", "a positional name", "--path"))


def test_cli_declares_few_options_by_hand():
    from pathlib import Path

    import pipeline.cli

    text = "".join(p.read_text() for p in Path(pipeline.cli.__file__).parent.glob("*.py"))
    assert text.count("typer.Option(") <= 45
    assert "re.split" not in text  # no list parsing in the CLI: the config models parse their values
