"""The demo's localisation part (Tables 8-9 on the ILSVRC-style set), at the smallest settings."""

from __future__ import annotations

from pipeline.demo_results import paper_results
from pipeline.localise.demo import TABLE8_NETS, demo_localisation
from pipeline.shipped.ilsvrc_loc import BLACKLIST, WNIDS, prepare_ilsvrc_loc
from tests.helpers.localise import save_classifier


def test_demo_localisation_tables_and_results(tmp_path):
    data = prepare_ilsvrc_loc(tmp_path / "loc", train_per_class=2, val_per_class=3, seed=2)
    (data / BLACKLIST).write_text("4\n")  # whatever the set's own list holds, one known entry here
    cls = save_classifier(tmp_path / "cls.pt", WNIDS, s=32)
    calls = []

    def task(fn, name):
        calls.append(name)
        return fn

    res = demo_localisation(str(data), str(cls), tmp_path / "runs", epochs=1, task=task)
    assert calls == [f"localise-train-{h}-{f}" for h, f in TABLE8_NETS] + ["localise-crop", "localise-dense"]
    crop = [r["name"] for r in res["crop"]["rows"]]
    assert crop == ["net0", "net1", "net2", "whole image", "centre quarter"]
    assert [(r["regression"], r["fine_tuned"]) for r in res["crop"]["rows"][:3]] == \
        [("SCR", "1st and 2nd FC"), ("PCR", "1st and 2nd FC"), ("PCR", "all")]
    dense = {r["name"]: r for r in res["dense"]["rows"]}
    assert [dense[f"net{i}"]["test"] for i in range(3)] == ["32", "32,64", "32"]
    assert dense["fusion"]["train"] == "fusion: 32 (PCR, all)/32 and 32 (PCR, FC)/32" and "net0 crop" in dense
    assert res["crop"]["images"]["blacklisted"] == res["dense"]["images"]["blacklisted"] == 1
    assert set(res["training_seconds"]) == {"scr-fc", "pcr-fc", "pcr-all"}
    out = paper_results(loc_crop=res["crop"], loc_dense=res["dense"])["localisation"]
    assert out["crop"]["net"] == "net2" and out["dense"]["net"] == "fusion"
    again = demo_localisation(str(data), str(cls), tmp_path / "runs", epochs=1)  # finished runs are reused
    assert again["crop"]["rows"] == res["crop"]["rows"]
    assert again["crop"]["status"] == again["dense"]["status"] == "exists"  # the saved summaries
