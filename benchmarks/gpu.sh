#!/usr/bin/env bash
# Every GPU benchmark and GPU training job, in one run on the device machine.
# Usage (device tool, carry [".whl"]): bash benchmarks/gpu.sh   -- results go to $OUT (default ./gpu-out)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

run() {  # run NAME CMD...: log to $OUT/NAME.log, keep going when one fails
  local name=$1; shift
  echo "== $name: $*"
  if "$@" >"$OUT/$name.log" 2>&1; then echo "ok" >"$OUT/$name.status"; else echo "failed ($?)" >"$OUT/$name.status"; fi
  tail -n 5 "$OUT/$name.log"
}

run synthetic python3 benchmarks/bench_synthetic.py --device cuda --train --json "$OUT/synthetic.json"
run corruptions python3 benchmarks/bench_corruptions.py --device cuda --threads 0 --parts throughput,calibration --batch-224 64 --batch-32 1024 --json "$OUT/corruptions.json"
run pgd_smallcnn python3 benchmarks/bench_pgd.py --device cuda --n 512 --batch-size 256 --json "$OUT/pgd_smallcnn.json"
run pgd_resnet18 python3 benchmarks/bench_pgd.py --device cuda --arch timm:resnet18 --n 512 --batch-size 256 --json "$OUT/pgd_resnet18.json"
run square_onnx python3 benchmarks/bench_square_onnx.py --device cuda --n 128 --json "$OUT/square_onnx.json"
run demo python3 -m robust.cli demo --out "$OUT/demo" --device cuda
run audit python3 -m robust.cli audit -m "$OUT/demo/classifier" -d synthetic:test_iid --device cuda -o "$OUT/audit" --allow-errors
run plugin_examples python3 -m pytest examples --robust-profile=ci --robust-device=cuda --robust-report="$OUT/plugin-report" -q

echo
echo "== summary"
for s in "$OUT"/*.status; do printf '%-24s %s\n' "$(basename "$s" .status)" "$(cat "$s")"; done
