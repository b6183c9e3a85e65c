"""Every shipped preset resolves (``base:`` chains included) to exactly the config it resolved to before
presets had bases: ``presets_resolved.json`` is that frozen copy (class, the required fields a preset
leaves to the command line, and the resolved config)."""

import json
from pathlib import Path

import pytest

from pipeline.config import PRESET_DIR, load_config
from pipeline.errors import UserError
from pipeline.localise import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.train import TrainConfig

FROZEN = json.loads((Path(__file__).parent / "presets_resolved.json").read_text())
CLASSES = {c.__name__: c for c in (TrainConfig, LocaliseTrainConfig, LocaliseEvalConfig)}


def test_every_preset_is_frozen():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted(FROZEN)


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_preset_resolves_as_frozen(name):
    want = FROZEN[name]
    got = load_config(CLASSES[want["class"]], name, values=want["required"]).model_dump(mode="json")
    assert got == want["config"]


def test_base_merges_sections_and_the_file_wins(tmp_path):
    (tmp_path / "root.yaml").write_text("base: paper-a-s256\nout: runs/root\noptim: {lr: 0.5}\n")
    (tmp_path / "leaf.yaml").write_text("base: root.yaml\nmodel: {config: D}\noptim: {momentum: 0.5}\n")
    cfg = load_config(TrainConfig, tmp_path / "leaf.yaml")
    assert (cfg.out, cfg.model.config, cfg.optim.lr, cfg.optim.momentum) == ("runs/root", "D", 0.5, 0.5)
    assert cfg.data.shards == load_config(TrainConfig, "paper-a-s256").data.shards


def test_missing_base_and_cycles_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: nowhere\n")
    with pytest.raises(UserError, match=r"a\.yaml: base: .*nowhere.* not found") as e:
        load_config(TrainConfig, tmp_path / "a.yaml")
    assert "\n" not in str(e.value)
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(UserError, match=r"cycle of bases \(b -> c -> b\)") as e:
        load_config(TrainConfig, tmp_path / "b.yaml")
    assert "\n" not in str(e.value)
    (tmp_path / "d.yaml").write_text("base: d.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(TrainConfig, tmp_path / "d.yaml")
