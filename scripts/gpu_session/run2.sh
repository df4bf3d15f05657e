#!/bin/bash
# Second GPU call: the six nets at one scale alone, at the stroke net's steps per row (3410 / 6 = 568), and the
# stroke measurements (widths, losses against them, grid) of gpu/models/stroke.safetensors from the first call.
set -u
T0=$(date +%s); DEV=${DEV:-cuda}; N=${N:-568}; T=${T:-00:00:01:45}; HO=${HO:-50}
OUT=${OUT:-/tmp/gpu_out2}; mkdir -p $OUT/res
. "$(dirname "$0")/prelude.sh" runs2
W=gpu/vgg16_c4.pth; VG=gpu/pair/vincent_van_gogh_001.jpg; MO=gpu/pair/claude_monet_001.jpg
COMMON="data.root=gpu/photos_train loss.network=vgg16 loss.weights=$W loss.preprocessing=caffe logger=none progress=plain seed=0 callbacks.export.onnx=false +trainer.max_time=$T trainer.log_every_n_steps=100"
[ "$DEV" = cpu ] && COMMON="$COMMON trainer=cpu data.image_size=64"
tr() { name=$1; th=$2; shift 2
  OMP_NUM_THREADS=$th python3 -m fastst train $COMMON trainer.max_steps=$N callbacks.model_checkpoint.every_n_train_steps=$N \
    callbacks.preview.every_n_steps=$N hydra.run.dir=$R/$name data.num_workers=1 "$@" > $OUT/res/$name.log 2>&1
  el "train $name rc=$?"; }
for k in 1 2.83 8; do th=1; [ $k = 8 ] && th=4
  tr vg_$k $th model=multistyle "styles=[$VG]" "stroke_scales=[$k]" &
  tr mo_$k $th model=multistyle "styles=[$MO]" "stroke_scales=[$k]" &
done
wait
SINGLES=""
for k in 1 2.83 8; do
  SINGLES="$SINGLES --single vincent_van_gogh_001@$k=$R/vg_$k/export/vincent_van_gogh_001.safetensors"
  SINGLES="$SINGLES --single claude_monet_001@$k=$R/mo_$k/export/claude_monet_001.safetensors"
done
python3 scripts/stroke_measure.py gpu/models/stroke.safetensors --painting vincent_van_gogh_001=$VG --painting claude_monet_001=$MO \
  $SINGLES --photos gpu/photos_val --held-out $HO --vgg $W --device $DEV --grid $OUT/res/stroke_grid.jpg > $OUT/res/stroke_measure.txt 2>&1
el "stroke_measure rc=$?"
tar czf $OUT/res.tgz -C $OUT res && rm -rf $OUT/res
tar cf - -C $R $(cd $R && ls */export/*.safetensors) | split -b 15m - $OUT/singles.tar.part-
ls -la $OUT; echo "end at $(( $(date +%s) - T0 )) s"
