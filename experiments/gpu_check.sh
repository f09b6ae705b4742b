#!/usr/bin/env bash
# One prepared run on a lent GPU: correctness first, then the benchmark grids and
# training.  Every result lands in $OUT (at most 8 files).  Each stage has its own
# time limit so that one slow stage cannot eat the others.
#   OUT=/tmp/gpu bash experiments/gpu_check.sh
set -u -o pipefail
export OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
LOG="$OUT/gpu_log.txt"
py=python3
stage() { echo "=== $1 ($(date -u +%T))" | tee -a "$LOG"; }

stage "device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
$py -c "import jax, optax; print('jax', jax.__version__, 'optax', optax.__version__, jax.devices())" 2>&1 | tee -a "$LOG"

stage "1. correctness: softmax-jax verify --quick on the GPU"
timeout 90 $py -m softmax_jax verify --quick --all --json "$OUT/verify_gpu.json" > /tmp/verify.txt 2>&1
echo "verify exit $?" | tee -a "$LOG"; tail -4 /tmp/verify.txt | tee -a "$LOG"

stage "2. bench, default grid"
# (no --markdown: $OUT brings back 8 files at most; the markdown is regenerated from the JSON
# by experiments/backend_benchmark.py)
timeout 150 $py -m softmax_jax bench --backend gpu --json "$OUT/bench_gpu.json" \
  2>/dev/null | tee -a "$LOG"
echo "bench exit $?" | tee -a "$LOG"

stage "3. bench, reference shapes of the large-scale issue"
timeout 100 $py -m softmax_jax bench --backend gpu --shapes 65536x1024,8192x32768,4096x131072 \
  --ops softmax,log_softmax,xent_int_fwd_bwd --dtype float32,bfloat16 --json "$OUT/bench_gpu_large.json" 2>/dev/null \
  | tee -a "$LOG"
echo "bench exit $?" | tee -a "$LOG"

stage "3b. chunked linear cross-entropy at the reference shape (bfloat16)"
timeout 100 $py -m softmax_jax bench --backend gpu --ops linear_xent_fwd_bwd --dtype bfloat16 \
  --linear-shape 8192x4096x131072 --repeats 5 --json "$OUT/bench_gpu_linear.json" 2>/dev/null \
  | tee -a "$LOG"
echo "bench exit $?" | tee -a "$LOG"

stage "3c. logits donation in the fused cross-entropy (compiled memory, time)"
timeout 60 $py experiments/donation_check.py --shape 8192x1024x32768 --dtype bfloat16 2>&1 \
  | tail -3 | tee -a "$LOG"

stage "4. training on the GPU"
for ds in iris digits; do
  timeout 45 $py -m softmax_jax train --device gpu --dataset $ds --out /tmp/run_$ds --quiet \
    2>&1 | tee -a "$LOG"
done
$py - <<'PY' 2>&1 | tee -a "$LOG"
import json, os
out = {ds: json.load(open(f"/tmp/run_{ds}/metrics.json")) for ds in ("iris", "digits")
       if os.path.exists(f"/tmp/run_{ds}/metrics.json")}
json.dump(out, open(os.environ["OUT"] + "/train_gpu_metrics.json", "w"), indent=1)
print({k: (v["backend"], v["device"], v["test"]["accuracy"]) for k, v in out.items()})
PY
timeout 90 $py experiments/training_report.py --only-throughput \
  --json "$OUT/training_gpu.json" --markdown "$OUT/training_gpu.md" 2>&1 | tail -14 | tee -a "$LOG"
stage "done"
