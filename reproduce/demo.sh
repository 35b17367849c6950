#!/usr/bin/env bash
# The demo (`make demo`): on the embedded `digits` data set, train a Gaussian, a MACER and a
# SmoothAdv model at sigma 0.25 for the same number of epochs (presets digits-*-0.25), certify all
# three on the same 100 test images (every 10th) with the same N, draw the comparison with
# visualize/, and end with the paired comparison of the three on those images (visualize/compare.py:
# differences with their intervals over the images, exact McNemar tests). Everything lands in
# runs/demo (DEMO_DIR); rerun it and it resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${DEMO_DIR:-runs/demo}
SIGMA=0.25
START=0 NUM=100 SKIP=10 N0=100 N=10000
CERT=(--dataset digits --sigma "$SIGMA" --start_img "$START" --num_img "$NUM" --skip "$SKIP" --N0 "$N0" --N "$N"
      --certify_batch 250)
METHODS=(gaussian macer smoothadv)
start=$(date +%s)

for method in "${METHODS[@]}"; do
  echo "==> training $method (preset digits-$method-$SIGMA)"
  "$PY" main.py --task train --preset "digits-$method-$SIGMA" --ckptdir "$OUT/$method" --resume_ckpt auto
done
for method in "${METHODS[@]}"; do
  echo "==> certifying $method"
  "$PY" main.py --task test "${CERT[@]}" --resume_ckpt "$OUT/$method/latest.pth" --matdir "$OUT/results" \
    --name "$method"
done
"$PY" visualize/plotcurves.py "$OUT/results/macer.mat" "$OUT/results/gaussian.mat" "$OUT/results/smoothadv.mat" \
  --labels MACER "Gaussian (Cohen)" "SmoothAdv (Salman)" \
  --title "digits, sigma = $SIGMA, N = $N, $NUM test images (every ${SKIP}th from $START)" --out "$OUT/digits-$SIGMA"
"$PY" visualize/plotcurves.py "$OUT/results/macer.mat" "$OUT/results/gaussian.mat" "$OUT/results/smoothadv.mat" \
  --labels MACER "Gaussian (Cohen)" "SmoothAdv (Salman)" --ylim 0.75 1 \
  --title "the same, zoomed in on accuracies from 0.75 to 1" --out "$OUT/digits-$SIGMA-top" > /dev/null
"$PY" visualize/trainingcurves.py "$OUT"/{macer,gaussian,smoothadv}/log.jsonl --labels MACER "Gaussian (Cohen)" \
  "SmoothAdv (Salman)" --title "digits, sigma = $SIGMA: training" --out "$OUT/digits-$SIGMA-training"
echo "==> paired comparison on the same $NUM test images"
"$PY" visualize/compare.py "$OUT/results/macer.json" "$OUT/results/gaussian.json" "$OUT/results/smoothadv.json" \
  --labels MACER "Gaussian (Cohen)" "SmoothAdv (Salman)" \
  --title "digits, sigma = $SIGMA: paired comparison on the same $NUM test images" --out "$OUT/digits-$SIGMA-compare"
echo "==> demo done in $(( $(date +%s) - start )) s: $OUT/digits-$SIGMA.png and .pdf (zoomed: -top), tables .md" \
  ".tex .csv, training curves $OUT/digits-$SIGMA-training.png, paired comparison $OUT/digits-$SIGMA-compare.md .png"
