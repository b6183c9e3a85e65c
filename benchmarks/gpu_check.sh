#!/usr/bin/env bash
# The GPU checks in one go (< 8 minutes on one H100/H200-class GPU): every `gpu`-marked test, then the
# CUDA benchmark rows, written as one JSON file.
#
#   bash benchmarks/gpu_check.sh [out.json]        # from the repository root; PYTHON=... to pick the interpreter
#
# Rows: train (VGG-16 224, bf16 + channels_last vs torchvision fp32: images/s, and MFU against the device's
# dense bf16 peak), ddp (NCCL on every GPU vs one), loader (data.decode=gpu: nvJPEG on ImageNet-size photos vs
# the CPU loader), transfer-paper (the batched SVM solver on CUDA vs liblinear on the CPU, same slice). Each
# part has its own time limit (130 + 80 + 75 + 50 + 140 s) so that one hang cannot eat the rest.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${1:-gpu_check.json}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
t0=$(date +%s)

timeout 130 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$TMP/pytest.xml" tests > "$TMP/pytest.log" 2>&1
echo $? > "$TMP/pytest.rc"
tail -3 "$TMP/pytest.log"

timeout 80 "$PY" - "$TMP/train.json" <<'PYEOF' > "$TMP/train.log" 2>&1
import json, sys
from pipeline.bench import load_benchmark
json.dump(load_benchmark("bench_train.py").gpu_rows(quick=True), open(sys.argv[1], "w"))
PYEOF
echo $? > "$TMP/train.rc"

timeout 75 "$PY" benchmarks/bench_gpu_ddp.py --quick --json > "$TMP/ddp.json" 2> "$TMP/ddp.log"
echo $? > "$TMP/ddp.rc"

timeout 50 "$PY" benchmarks/bench_loader_photos.py --gpu --quick > "$TMP/loader.json" 2> "$TMP/loader.log"
echo $? > "$TMP/loader.rc"

timeout 140 "$PY" benchmarks/bench_transfer_paper.py --device cuda --json > "$TMP/transfer.json" 2> "$TMP/transfer.log"
echo $? > "$TMP/transfer.rc"

"$PY" - "$TMP" "$OUT" "$t0" <<'PYEOF'
import json, platform, subprocess, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

tmp, out, t0 = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def rc(name):
    return int((tmp / f"{name}.rc").read_text().strip() or 1)


def rows(name):
    try:
        return json.loads((tmp / f"{name}.json").read_text())
    except (OSError, ValueError):
        return []


def tail(name):
    p = tmp / f"{name}.log"
    return p.read_text()[-3000:] if p.is_file() else ""


tests = {"returncode": rc("pytest"), "log_tail": tail("pytest")}
try:
    suite = ET.parse(tmp / "pytest.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    tests.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    tests["cases"] = [{"name": c.get("classname", "") + "::" + c.get("name", ""), "seconds": float(c.get("time", 0)),
                       "outcome": "failed" if c.find("failure") is not None or c.find("error") is not None
                       else "skipped" if c.find("skipped") is not None else "passed"} for c in suite.iter("testcase")]
except (OSError, ET.ParseError, IndexError):
    pass
try:
    gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
except (OSError, subprocess.SubprocessError):
    gpus = []
parts = {name: {"returncode": rc(name), "rows": rows(name), **({"log_tail": tail(name)} if rc(name) else {})}
         for name in ("train", "ddp", "loader", "transfer")}
report = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "seconds": int(time.time()) - t0,
          "host": platform.node(), "gpus": gpus, "gpu_tests": tests, "bench": parts,
          "ok": tests["returncode"] == 0 and all(p["returncode"] == 0 for p in parts.values())}
Path(out).write_text(json.dumps(report, indent=2))
print(f"gpu_check: {'ok' if report['ok'] else 'FAILED'} in {report['seconds']} s -> {out}")
for p in parts.values():
    for r in p["rows"]:
        print(f"  {r['stage']}: ratio {r['ratio']:.3g} ({r['unit']}; goal {r['goal']}: {'met' if r['meets'] else 'NOT met'})")
sys.exit(0 if report["ok"] else 1)
PYEOF
