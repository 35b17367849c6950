#!/usr/bin/env bash
# The real-data reproduction of REPRODUCE.md ("Fashion-MNIST, real data, against the published log"): Gaussian
# augmentation on Fashion-MNIST at sigma 0.25 with the protocol of alinlab/smoothing-catrs's released models (preset
# fashion_mnist-gaussian-0.25: LeNet, 90 epochs, SGD lr 0.01, batch 256), certified with N0 100, N 100000, alpha
# 0.001 on 200 of the published images (every 50th from 0: IMAGES images, SKIP apart), then compared image by image
# with the published Gaussian log (visualize/compare.py --shared) and placed among the seven published models at
# sigma 0.25 (visualize/leaderboard.py). Needs Debian's dataset-fashion-mnist. Everything lands in runs/fmnist
# (FMNIST_DIR); rerun it and it resumes where it stopped. Prints the seconds each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${FMNIST_DIR:-runs/fmnist}
IMAGES=${IMAGES:-200}
SKIP=${SKIP:-50}
PUBLISHED=reproduce/published/catrs/fashion_mnist-gaussian-0.25.tsv.gz
t0=$(date +%s)
"$PY" main.py --task train --preset fashion_mnist-gaussian-0.25 --ckptdir "$OUT/gaussian" --resume_ckpt auto \
  --matdir "$OUT/gaussian-mat" --cert_from 1000 --quiet
t1=$(date +%s)
"$PY" main.py --task test --dataset fashion_mnist --sigma 0.25 --resume_ckpt "$OUT/gaussian/latest.pth" \
  --start_img 0 --num_img "$IMAGES" --skip "$SKIP" --mode hard --matdir "$OUT/cert" --name gaussian-0.25 --quiet
t2=$(date +%s)
"$PY" visualize/compare.py "$OUT/cert/gaussian-0.25.json" "$PUBLISHED" --labels "this tool" published --shared \
  --title "Fashion-MNIST, sigma 0.25, Gaussian: this tool against the published model" \
  --out "$OUT/gaussian-0.25-vs-published"
"$PY" visualize/leaderboard.py "$OUT/cert/gaussian-0.25.json" --label "this tool (Gaussian)" \
  --out "$OUT/gaussian-0.25-leaderboard"
t3=$(date +%s)
echo "==> training $((t1 - t0)) s, certification $((t2 - t1)) s, comparison and leaderboard $((t3 - t2)) s"
