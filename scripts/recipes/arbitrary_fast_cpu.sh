#!/bin/bash
# The fast arbitrary-style net that met issue 25's targets (`fba35`, docs/arbitrary_training.md, "The
# painting's finer layers in the decoder"), rebuilt on a CPU the way it was built: a CPU teacher (AdaIN's net
# with the photo and Gram terms), the fast net distilled from it, then thirteen fine-tunes, each with
# init_from the one before and the options that run had. 2,500 teacher steps and 11,200 fast-net steps: about
# 6-7 hours on the shared 2-core machine, in 15 runs of `fastst train experiment=arbitrary_cpu`.
#
#   PHOTOS=photos/train PAINTINGS=paintings/train VAL_PHOTOS=photos/val VAL_PAINTINGS=paintings/val \
#   VGG16=vgg16_caffe_conv.pth OUT=runs/fast_cpu bash scripts/recipes/arbitrary_fast_cpu.sh
#
# The net is OUT/fba35/export/arbitrary.safetensors (and its two .onnx graphs). Each stage's run folder is
# OUT/<stage>; a stage whose model file exists is skipped and an interrupted one resumes from its last
# checkpoint (ckpt_path=auto), so running the script again goes on where it stopped. Judge the result with
# scripts/bench_arbitrary.py (docs/arbitrary_training.md gives the command). Optional: SCALE=N divides every
# stage's steps by N and EXTRA adds overrides to every stage (a rehearsal: SCALE=500 EXTRA="data.image_size=32
# data.resize=32 data.style_resize=32 data.preview_size=32 callbacks.painting_val.size=32").
# VGG16: ImageNet VGG-16 in the caffe convention (fastst's loss.preprocessing=caffe); the recipe was tuned on it.
set -euo pipefail
: "${PHOTOS:?set PHOTOS to the training photos}" "${PAINTINGS:?set PAINTINGS to the training paintings}"
: "${VAL_PHOTOS:?set VAL_PHOTOS to held-out photos}" "${VAL_PAINTINGS:?set VAL_PAINTINGS to held-out paintings}"
: "${VGG16:?set VGG16 to the caffe-convention VGG-16 weights}" "${OUT:?set OUT to the folder for the runs}"
SCALE=${SCALE:-1}
EXTRA=${EXTRA:-}
PYTHON=${PYTHON:-python}
model() { echo "$OUT/$1/export/arbitrary.safetensors"; }

stage() {  # stage NAME STEPS OVERRIDES...
    local name=$1 steps=$(( $2 / SCALE > 2 ? $2 / SCALE : 2 ))
    shift 2
    if [ -f "$(model "$name")" ]; then
        echo "== $name: done before ($(model "$name"))"
        return
    fi
    echo "== $name: $steps steps, $*"
    # shellcheck disable=SC2086  # EXTRA is a list of overrides
    "$PYTHON" -m fastst train experiment=arbitrary_cpu "$@" trainer.max_steps="$steps" \
        data.root="$PHOTOS" data.style_root="$PAINTINGS" data.preview_root="$VAL_PHOTOS" \
        data.preview_style_root="$VAL_PAINTINGS" loss.weights="$VGG16" loss.preprocessing=caffe \
        callbacks.export.int8=false progress=plain $EXTRA hydra.run.dir="$OUT/$name"
}

G=loss.gram_style_weight
P=loss.photo_content_weight
FAST=model=arbitrary_fast
stage teacher 2500 $P=3 $G=1000000
stage distil 1500 $FAST distill_from="$(model teacher)" $P=0 $G=0
stage ftg6 400 $FAST init_from="$(model distil)" $P=3 $G=1000000
stage ftg6b 800 $FAST init_from="$(model ftg6)" $P=3 $G=1000000
stage ftg6c 800 $FAST init_from="$(model ftg6b)" $P=6 $G=1000000
stage col 800 $FAST init_from="$(model ftg6c)" model.net.color=match $P=6 $G=1000000
stage col2 800 $FAST init_from="$(model col)" $P=12 $G=1000000
stage blk2 800 $FAST init_from="$(model col2)" model.net.decoder_blocks=2 $P=12 $G=1000000
stage blk2p6 800 $FAST init_from="$(model blk2)" $P=6 $G=1000000
stage film6 800 $FAST init_from="$(model blk2p6)" model.net.modulation=film $P=6 $G=1000000
stage film6g2 800 $FAST init_from="$(model film6)" $P=6 $G=2000000
stage fb 800 $FAST init_from="$(model film6g2)" model.net.modulation=film_blocks $P=6 $G=2000000
stage fba 800 $FAST init_from="$(model fb)" loss.content_weight=0.25 loss.style_weight=2.5 $P=6 $G=2000000
stage fba5 800 $FAST init_from="$(model fba)" loss.content_weight=0.25 loss.style_weight=2.5 $P=6 $G=5000000
stage fba35 500 $FAST init_from="$(model fba5)" loss.content_weight=0.25 loss.style_weight=2.5 $P=6 $G=3500000
echo "the net: $(model fba35)"
