"""``results.json`` of the demo: the numbers of the stages' summaries, in percent, in the issue's schema."""

from __future__ import annotations

import json

from pipeline.demo_results import paper_results, write_results


def _loc_crop():
    return {"rows": [
        {"name": "net0", "fine_tuned": "1st and 2nd FC", "regression": "SCR", "scale": 32, "error": 0.40},
        {"name": "net1", "fine_tuned": "all", "regression": "PCR", "scale": 32, "error": 0.30},
        {"name": "whole image", "fine_tuned": "-", "regression": "whole image (baseline)", "error": 0.88},
        {"name": "centre quarter", "fine_tuned": "-", "regression": "centre quarter (baseline)", "error": 0.82}],
        "images": {"evaluated": 500, "localisation": 480, "blacklisted": 20}}


def _loc_dense():
    return {"top_k": 5, "classification_error": 0.01, "images": {"evaluated": 500}, "rows": [
        {"name": "net0", "train": "32", "test": "32,64", "error": 0.35, "error_top1": 0.45},
        {"name": "fusion", "train": "fusion: ...", "test": "", "error": 0.33, "error_top1": 0.44},
        {"name": "whole image", "train": "-", "test": "", "error": 0.87, "error_top1": 0.9},
        {"name": "centre quarter", "train": "-", "test": "", "error": 0.8125, "error_top1": 0.85}]}


def test_schema_and_percent_values(tmp_path):
    ev = {"rows": [{"config": "A", "train_S": "34", "test_Q": "34", "method": "dense", "top1_error_pct": 22.5,
                    "top5_error_pct": 1.2, "n_images": 200}]}
    res = paper_results(evaluate=ev, caltech={"mean": 0.625, "std": 0.0125}, caltech_pixels={"mean": 0.3, "std": 0.02},
                        voc07={"mean": 0.7}, voc07_pixels=None, loc_crop=_loc_crop(), loc_dense=_loc_dense(),
                        training_seconds={"A": 61.04}, seconds=300)
    assert res["classification"] == [{"net": "A", "train_scale": "34", "test_scales": "34", "method": "dense",
                                      "top1_error": 22.5, "top5_error": 1.2, "images": 200}]
    assert res["transfer"] == {"caltech": {"mean": 62.5, "std": 1.25, "pixels_mean": 30.0, "pixels_std": 2.0},
                               "voc07": {"map": 70.0, "pixels_map": None}}
    crop, dense = res["localisation"]["crop"], res["localisation"]["dense"]
    assert crop["error"] == 30.0 and crop["net"] == "net1"  # the paper's setting: PCR, all layers
    assert crop["baselines"] == {"whole_image": 88.0, "centre": 82.0}
    assert dense["top5_error"] == 33.0 and dense["top1_error"] == 44.0 and dense["net"] == "fusion"
    assert dense["baselines"] == {"whole_image": 87.0, "centre": 81.25}
    assert [r["error"] for r in crop["rows"]] == [40.0, 30.0, 88.0, 82.0]
    assert res["training"] == {"A": 61.0}
    path = write_results(tmp_path / "results.json", res)
    assert json.loads(path.read_text()) == res


def test_parts_not_run_are_null():
    res = paper_results()
    assert res["classification"] == [] and res["localisation"] == {"crop": None, "dense": None}
    assert res["transfer"]["caltech"]["mean"] is None


def test_pydantic_results_are_accepted():
    import pydantic

    class Summary(pydantic.BaseModel):
        mean: float
        std: float | None = None

    res = paper_results(caltech=Summary(mean=0.5, std=0.1))
    assert res["transfer"]["caltech"]["mean"] == 50.0 and res["transfer"]["caltech"]["std"] == 10.0
