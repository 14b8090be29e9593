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

run synthetic python3 benchmarks/bench_synthetic.py --device cuda --json "$OUT/synthetic.json"

echo
echo "== summary"
for s in "$OUT"/*.status; do printf '%-24s %s\n' "$(basename "$s" .status)" "$(cat "$s")"; done
