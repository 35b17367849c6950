#!/usr/bin/env bash
# The six-method study of REPRODUCE.md ("Six methods on real digits"): on the embedded `digits` data set, the
# same LeNet at sigma 0.25 trained for the same 30 epochs with Gaussian augmentation, MACER, SmoothAdv, Stability
# training, Consistency regularization and SmoothMix (presets digits-METHOD-0.25: the demo's three, and the three
# newer methods with their authors' Cifar-10 hyper-parameters at sigma 0.25), all certified on the same 100 test
# images (every 10th from 0) with N0 = 100, N = 10000, alpha = 0.001, hard mode, then the paired comparison with
# Gaussian first (visualize/compare.py), the certified-accuracy curves and the training curves. Everything lands in
# runs/six (SIX_DIR); rerun it and it resumes where it stopped. Prints the seconds per epoch of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${SIX_DIR:-runs/six}
SIGMA=0.25
CERT=(--dataset digits --sigma "$SIGMA" --start_img 0 --num_img 100 --skip 10 --N0 100 --N 10000 --mode hard
      --certify_batch 250 --quiet)
METHODS=(gaussian macer smoothadv stability consistency smoothmix)
LABELS=(Gaussian MACER SmoothAdv Stability Consistency SmoothMix)
start=$(date +%s)

for method in "${METHODS[@]}"; do
  echo "==> training $method (preset digits-$method-$SIGMA)"
  "$PY" main.py --task train --preset "digits-$method-$SIGMA" --ckptdir "$OUT/$method" --resume_ckpt auto --quiet
done
for method in "${METHODS[@]}"; do
  echo "==> certifying $method"
  "$PY" main.py --task test "${CERT[@]}" --resume_ckpt "$OUT/$method/latest.pth" --matdir "$OUT/results" --name "$method"
done
MATS=() JSONS=() LOGS=()
for method in "${METHODS[@]}"; do
  MATS+=("$OUT/results/$method.mat"); JSONS+=("$OUT/results/$method.json"); LOGS+=("$OUT/$method/log.jsonl")
done
"$PY" visualize/plotcurves.py "${MATS[@]}" --labels "${LABELS[@]}" \
  --title "digits, sigma = $SIGMA, N = 10000, 100 test images (every 10th from 0)" --out "$OUT/digits-$SIGMA-six"
"$PY" visualize/trainingcurves.py "${LOGS[@]}" --labels "${LABELS[@]}" \
  --title "digits, sigma = $SIGMA: training of the six methods" --out "$OUT/digits-$SIGMA-six-training"
"$PY" visualize/compare.py "${JSONS[@]}" --labels "${LABELS[@]}" \
  --title "digits, sigma = $SIGMA: six methods, paired on the same 100 test images" --out "$OUT/digits-$SIGMA-six-compare"
# on a shared machine the slowest epochs measure the other jobs: the fastest epoch and the median are printed
echo "==> seconds per epoch (log.jsonl): fastest (median)"
for method in "${METHODS[@]}"; do
  "$PY" -c 'import json, statistics, sys; s = [json.loads(l)["seconds"] for l in open(sys.argv[1])]; print(f"{sys.argv[2]}: {min(s):.2f} ({statistics.median(s):.2f}) s/epoch over {len(s)} epochs")' \
    "$OUT/$method/log.jsonl" "$method"
done
echo "==> six methods done in $(( $(date +%s) - start )) s: $OUT/digits-$SIGMA-six-compare.md .png, curves $OUT/digits-$SIGMA-six.png"
