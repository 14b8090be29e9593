#!/usr/bin/env bash
# Every GPU benchmark and GPU training job, in one run on the device machine.
# Usage (device tool, carry [".whl"]): bash benchmarks/gpu.sh [NAME...]   -- results go to $OUT (default ./gpu-out)
# With NAMEs, only those jobs run (e.g. `bash benchmarks/gpu.sh pgd_smallcnn natra`), to fit a short device budget.
# The whole script takes well over one 10-minute device call: run it in parts.
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

ONLY=" $* "
run() {  # run NAME CMD...: log to $OUT/NAME.log, keep going when one fails
  local name=$1; shift
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then return; fi
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
# Generator: throughput, then the demo generator's training job (the shipped asset is a CPU run).
run gan_bench python3 benchmarks/bench_gan.py --device cuda --preset synthetic32 --json "$OUT/gan_bench.json"
run gan_demo python3 -m robust.cli gan train --data synthetic:generator --condition class,texture,fill,mark --preset synthetic32 --set class_guidance=1.0 --set class_guidance_eps=0.5 --set class_guidance_pretrain=1500 \
  --kimg 5000 --minutes 8 --snapshot-kimg 250 --metrics synthetic --metric-samples 2000 --out "$OUT/gan_demo" \
  --export "$OUT/demo_generator" --seed 0 --device cuda --no-progress
# The shipped encoder continued on the GPU (CPU runs give about +0.25 dB per 4500 steps); natra_encoder_bench measures it.
run natra_encoder python3 -m robust.cli gan train-encoder --generator demo --data synthetic:generator -n 10000 --steps 6000 --batch-size 128 \
  --lr 3e-4 --init demo --seed 3 --device cuda --out "$OUT/demo_encoder"
run natra_encoder_bench python3 benchmarks/bench_natra.py --generator demo --device cuda --encoder "$OUT/demo_encoder" --parts inversion \
  --n 512 --steps 20 --baseline-steps 150,200,250 --timing-repeats 2 --expand-res 16 --batch 512 --json "$OUT/natra_encoder.json"
run natra python3 benchmarks/bench_natra.py --generator demo --device cuda --encoder auto \
  --n 512 --steps 10 --baseline-steps 100,120,140,170,200 --timing-repeats 2 --expand-res 16 --batch 512 --candidates 32 --top 16 --score-n 256 --effect-n 256 \
  --householder-steps 200 --json "$OUT/natra.json" --markdown "$OUT/natra.md"
run sage python3 benchmarks/bench_sage.py --device cuda --budget-queries 20000 --cache "$OUT/sage-cache" --json "$OUT/sage.json"
run sage_renderer python3 benchmarks/bench_sage.py --device cuda --generator renderer --budget-queries 20000 --cache "$OUT/sage-cache" --json "$OUT/sage_renderer.json"
run train_speed python3 benchmarks/bench_train_speed.py --device cuda --batch-size 512 --size 32 --steps 50 --warmup 10 \
  --recipes "oracle;classic;augmix;corrupt;pgd:linf@4/255,steps=3;natra:random;natra:worst_of_k,k=2;natra:gradient,steps=1;natra:random+classic" \
  --json "$OUT/train_speed.json"
run shortcut python3 benchmarks/bench_shortcut.py --device cuda --n-train 10000 --n-test 1000 --epochs 30 --seeds 3 \
  --runs "$OUT/shortcut-runs" --json "$OUT/shortcut.json"
run plugin_examples python3 -m pytest examples --robust-profile=ci --robust-device=cuda --robust-report="$OUT/plugin-report" -q

echo
echo "== summary"
for s in "$OUT"/*.status; do printf '%-24s %s\n' "$(basename "$s" .status)" "$(cat "$s")"; done
