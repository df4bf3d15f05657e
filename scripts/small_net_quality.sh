#!/usr/bin/env bash
# Quality of the half-width net (model=johnson_small, 16 channels, 9x9) against Johnson's full net
# (model=johnson_full, 32 channels; the default until issue 28): both trained the same way with `fastst train`, then scored by
# `fastst evaluate` on held-out photos (content loss, style loss, SSIM to the content).
#
#   bash scripts/small_net_quality.sh [WORK_DIR]        # ~9 min on a 2-core CPU
#
# Photos: the last 50 (sorted) of $PHOTOS are held out, the rest train. VGG-16 caffe weights
# ($VGG16), since ImageNet VGG-19 cannot be downloaded offline here. Results in WORK_DIR/eval_*.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared}
# Paths given relative to where the script is called from; absolute from here on.
WORK=$(realpath -m "${1:-/tmp/fastst_small_net_quality}")
PHOTOS=$(realpath -m "${PHOTOS:-$SHARED/data/photos}")
STYLE=$(realpath -m "${STYLE:-$SHARED/data/styles/starry_night.jpg}")
VGG16=$(realpath -m "${VGG16:-$SHARED/weights/vgg16_caffe_conv.pth}")
STEPS=${STEPS:-1000}
SIZE=${SIZE:-128}
HELD_OUT=${HELD_OUT:-50}
cd "$REPO"

[ -d "$PHOTOS" ] || { echo "small_net_quality.sh: photo folder $PHOTOS not found (set PHOTOS or SHARED)" >&2; exit 2; }
for f in "$STYLE" "$VGG16"; do
  [ -f "$f" ] || { echo "small_net_quality.sh: $f not found (set STYLE, VGG16 or SHARED)" >&2; exit 2; }
done
for p in "$WORK" "$STYLE" "$VGG16"; do  # Hydra override values: quoted below, so no ' in them
  case "$p" in *"'"*) echo "small_net_quality.sh: $p: paths with ' are not supported" >&2; exit 2 ;; esac
done
[ "$STEPS" -ge 5 ] || { echo "small_net_quality.sh: STEPS must be >= 5, got $STEPS" >&2; exit 2; }
rm -rf "$WORK/train" "$WORK/val"
mkdir -p "$WORK/train" "$WORK/val"
mapfile -t files < <(find -L "$PHOTOS" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \
  -o -iname '*.webp' -o -iname '*.bmp' -o -iname '*.tif' -o -iname '*.tiff' \) | sort)
n=${#files[@]}
[ "$n" -gt "$HELD_OUT" ] || { echo "small_net_quality.sh: need more than $HELD_OUT photos in $PHOTOS, found $n" >&2; exit 2; }
for i in "${!files[@]}"; do
  if [ "$i" -lt $((n - HELD_OUT)) ]; then ln -s "${files[$i]}" "$WORK/train/"; else ln -s "${files[$i]}" "$WORK/val/"; fi
done
echo "$((n - HELD_OUT)) training photos, $HELD_OUT held out"

for model in johnson_full johnson_small; do
  run="$WORK/run_$model"
  rm -rf "$run"
  start=$(date +%s)
  fastst train model="$model" style=custom style.name=starry_night style.image="'$STYLE'" \
    data.root="'$WORK/train'" data.image_size="$SIZE" data.resize=$((SIZE * 9 / 8)) \
    loss.network=vgg16 loss.weights="'$VGG16'" loss.preprocessing=caffe \
    trainer.max_steps="$STEPS" logger=none progress=plain trainer.log_every_n_steps=$((STEPS / 5)) \
    callbacks.model_checkpoint.every_n_train_steps="$STEPS" callbacks.preview.every_n_steps="$STEPS" \
    hydra.run.dir="'$run'" > "$WORK/train_$model.log" 2>&1 || { tail -5 "$WORK/train_$model.log"; exit 1; }
  echo "$model: trained $STEPS steps in $(( $(date +%s) - start )) s"
  fastst evaluate "$run/export/starry_night.safetensors" --content "$WORK/val" --style "$STYLE" \
    --size 256 -o "$WORK/eval_$model.json" --network vgg16 --loss-weights "$VGG16" --preprocessing caffe
done
for model in johnson_full johnson_small; do
  echo; echo "## $model"; cat "$WORK/eval_$model.md"
done
