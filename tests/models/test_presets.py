"""Every shipped preset resolves (``base:`` chains included) to exactly the config it resolved to before
presets had bases: ``presets_resolved.json`` is that frozen copy (class, the required fields a preset
leaves to the command line, and the resolved config)."""

import json
from pathlib import Path

import pytest

from pipeline.config import PRESET_DIR, load_config, read_preset
from pipeline.errors import UserError
from pipeline.localise import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.train import TrainConfig

FROZEN_FILE = Path(__file__).parent / "presets_resolved.json"
FROZEN = json.loads(FROZEN_FILE.read_text())
CLASSES = {c.__name__: c for c in (TrainConfig, LocaliseTrainConfig, LocaliseEvalConfig)}
#: the required fields a stage's presets leave to the command line, filled in for the frozen copy
REQUIRED = {"LocaliseTrainConfig": {"data": "D", "classifier": "C.pt", "out": "O"},
            "LocaliseEvalConfig": {"checkpoints": ["K.pt"], "data": "D"}}


def freeze() -> None:
    """Rewrite presets_resolved.json from the presets as they are (only when a change to a preset is meant):
    ``.venv/bin/python tests/models/test_presets.py``."""
    out = {}
    for p in sorted(PRESET_DIR.glob("*.yaml")):
        cls = LocaliseTrainConfig if p.stem.startswith("localise-train") else \
            LocaliseEvalConfig if p.stem.startswith("localise-eval") else TrainConfig
        data = read_preset(p)
        req = {k: v for k, v in REQUIRED.get(cls.__name__, {}).items() if k not in data}
        out[p.stem] = {"class": cls.__name__, "required": req,
                       "config": load_config(cls, p.stem, values=req).model_dump(mode="json")}
    FROZEN_FILE.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


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


if __name__ == "__main__":
    freeze()
