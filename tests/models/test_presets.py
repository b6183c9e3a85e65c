"""Every shipped preset resolves (``base:`` chains included) to exactly the config it resolved to before
presets had bases: ``presets_resolved.json`` is that frozen copy (class, the required fields a preset
leaves to the command line, and the resolved config)."""

import json
from pathlib import Path

import pytest

from pipeline.config import PRESET_DIR, load_config
from pipeline.localise.evaluate import LocaliseEvalConfig
from pipeline.localise.train import LocaliseTrainConfig
from pipeline.train.config import TrainConfig

FROZEN = json.loads((Path(__file__).parent / "presets_resolved.json").read_text())
CLASSES = {c.__name__: c for c in (TrainConfig, LocaliseTrainConfig, LocaliseEvalConfig)}


def test_every_preset_is_frozen():
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted(FROZEN)


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_preset_resolves_as_frozen(name):
    want = FROZEN[name]
    got = load_config(CLASSES[want["class"]], name, values=want["required"]).model_dump(mode="json")
    assert got == want["config"]
