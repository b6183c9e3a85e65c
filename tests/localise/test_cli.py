"""``vgg localise train|evaluate``: thin wrappers, JSON output, one-line errors (exit 2)."""

from __future__ import annotations

import json

from pipeline.cli import main


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_then_evaluate_from_the_command_line(voc_tree, voc_classifier, tmp_path, capsys):
    code, out, err = _run(["localise", "train", "--data", str(voc_tree), "--classifier", str(voc_classifier),
                           "--head", "scr", "--fine-tune", "fc", "--out", str(tmp_path / "run"),
                           "--set", "epochs=1", "--set", "batch_size=8", "--set", "scale=64", "--set", "limit=6",
                           "--set", "progress=false", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["head"] == "scr" and res["fine_tune"] == "fc" and res["train_scale"] == 64
    code, out, err = _run(
        [
            "localise",
            "evaluate",
            res["best"],
            "--data",
            str(voc_tree),
            "--split",
            "val",
            "--protocol",
            "crop",
            "--out",
            str(tmp_path / "ev"),
            "--set",
            "progress=false",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["protocol"] == "crop" and summary["rows"][0]["regression"] == "SCR"
    assert summary["rows"][0]["fine_tuned"] == "1st and 2nd FC"
    assert (tmp_path / "ev" / "loc_eval.json").is_file()
    # dense protocol, two nets at their own scales (Table 9's fusion row)
    code, out, err = _run(["localise", "evaluate", res["best"], res["last"], "--classifier", str(voc_classifier),
                           "--data", str(voc_tree), "--split", "val", "--scales", "64;64,96", "--limit", "2",
                           "--set", "progress=false", "--json"], capsys)
    assert code == 0, err
    dense = json.loads(out)
    assert [n["scales"] for n in dense["nets"]] == [[64], [64, 96]]
    assert dense["rows"][2]["train"] == "fusion: 64/64 and 64/64,96"
    # the plain output is the Markdown table
    code, out, err = _run(["localise", "evaluate", res["best"], "--data", str(voc_tree), "--split", "val",
                           "--protocol", "crop", "--limit", "3", "--set", "progress=false"], capsys)
    assert code == 0 and "| Fine-tuned layers | regression type |" in out
    # --blacklist: 1-based positions in the split (VOC keys carry no ILSVRC number)
    (tmp_path / "black.txt").write_text("2\n")
    code, out, err = _run(["localise", "evaluate", res["best"], "--data", str(voc_tree), "--split", "val",
                           "--protocol", "crop", "--limit", "3", "--blacklist", str(tmp_path / "black.txt"),
                           "--set", "progress=false"], capsys)
    assert code == 0 and "1 blacklisted images left out" in out, err


def test_bad_input_is_one_line_and_exit_2(voc_tree, voc_classifier, tmp_path, capsys):
    code, out, err = _run(["localise", "evaluate", str(voc_classifier), "--data", str(voc_tree)], capsys)
    assert code == 2 and err.count("\n") == 1 and "not a localisation checkpoint" in err
    code, out, err = _run(["localise", "evaluate", str(voc_classifier), "--data", str(voc_tree),
                           "--protocol", "diagonal"], capsys)
    assert code == 2 and err.count("\n") == 1 and "protocol" in err
    code, out, err = _run(["localise", "train", "--data", str(voc_tree), "--classifier", str(tmp_path / "none.pt"),
                           "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "checkpoint not found" in err
