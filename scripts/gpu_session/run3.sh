#!/bin/bash
# Issue 28's GPU calls: is a half-width default net (16 channels, 5x5 outer convolutions; 0.38x the 32-channel
# net's int8 time at 1024 px) as good as Johnson's 32 channels and 9x9 at the real 256 px recipe?
# {32 ch 9x9, 16 ch 5x5} x PAINTINGS (and 16 ch 9x9 on starry_night with H9=1), N steps or T each, all at once;
# then fastst evaluate on the 50 held-out photos at 512 px. The two calls that ran (docs/deploy.md, "The default net"):
#   run 3: bash gpu/run3.sh                      (nine nets: four paintings, H9=1, 4,000 steps or 4 min 30 s)
#   run 4: PAINTINGS="starry marc" H9=0 N=100000 T=00:00:03:40 TH=2 NW=3 OUT=/tmp/gpu_out4 bash gpu/run3.sh
# Rehearse on the CPU: DEV=cpu N=3 T=00:00:00:30 HO=2 bash gpu/run3.sh
set -u
T0=$(date +%s); DEV=${DEV:-cuda}; N=${N:-4000}; T=${T:-00:00:04:30}; HO=${HO:-0}
PAINTINGS=${PAINTINGS:-starry scream marc boccioni}; H9=${H9:-1}; TH=${TH:-1}; NW=${NW:-1}
OUT=${OUT:-/tmp/gpu_out3}; mkdir -p $OUT/res
. "$(dirname "$0")/prelude.sh" runs3
export FASTST_STYLE_DIR=$PWD/gpu/styles
el "start on $(hostname); $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
W=gpu/vgg16_c4.pth; V1=gpu/paint_val/franz_marc_001.jpg; V2=gpu/paint_val/umberto_boccioni_001.jpg
COMMON="data.root=gpu/photos_train loss.network=vgg16 loss.weights=$W loss.preprocessing=caffe logger=none progress=plain seed=0 callbacks.export.onnx=false +trainer.max_time=$T trainer.log_every_n_steps=500 data.num_workers=$NW"
[ "$DEV" = cpu ] && COMMON="$COMMON trainer=cpu data.image_size=64"
tr() { name=$1; shift
  OMP_NUM_THREADS=$TH python3 -m fastst train $COMMON trainer.max_steps=$N callbacks.model_checkpoint.every_n_train_steps=$N \
    callbacks.preview.every_n_steps=$N hydra.run.dir=$R/$name "$@" > $OUT/res/$name.log 2>&1
  el "train $name rc=$? $(grep -o 'done: [0-9]* steps' $OUT/res/$name.log | tail -1)"; }
style() { case $1 in
  starry) echo style=starry_night;; scream) echo style=the_scream;;
  marc) echo style=custom style.image=$PWD/$V1 style.name=franz_marc_001;;
  boccioni) echo style=custom style.image=$PWD/$V2 style.name=umberto_boccioni_001;; esac; }
MODELS=""
for a in d h5; do
  X="model=johnson_full"; [ $a = h5 ] && X="model=johnson model.net.channels=16 model.net.outer_kernel=5"
  for p in $PAINTINGS; do tr ${a}_$p $(style $p) $X & MODELS="$MODELS ${a}_$p"; done
done
[ "$H9" = 1 ] && { tr h9_starry style=starry_night model=johnson_small & MODELS="$MODELS h9_starry"; }
( while sleep 30; do el "gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"; done ) &
SAMPLER=$!
wait $(jobs -p | grep -v "^$SAMPLER$"); kill $SAMPLER 2>/dev/null
el "all training done"
ev() { m=$1; f=$(ls $R/$m/export/*.safetensors | head -1); S=""
  case $m in *marc) S="--style $V1";; *boccioni) S="--style $V2";; esac
  python3 -m fastst evaluate $f $S --content gpu/photos_val --limit $HO --size 512 --loss-weights $W --device $DEV \
    -o $OUT/res/eval_$m.json > $OUT/res/eval_$m.txt 2>&1; el "evaluate $m rc=$?"; }
i=0; for m in $MODELS; do ev $m & i=$((i + 1)); [ $((i % 4)) = 0 ] && wait; done; wait
if [ "$DEV" = cuda ] && python3 -c "import pytest" 2>/dev/null; then
  timeout 120 python3 -m pytest -q tests/integration/test_gpu.py > $OUT/res/test_gpu.txt 2>&1; el "test_gpu rc=$?"
fi
tar czf $OUT/res.tgz -C $OUT res && rm -rf $OUT/res
tar cf - -C $R $(cd $R && ls */export/*.safetensors) | split -b 15m - $OUT/nets.tar.part-
ls -la $OUT; echo "end at $(( $(date +%s) - T0 )) s"
