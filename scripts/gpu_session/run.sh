#!/bin/bash
# One GPU session (issue 27 stroke net at real scale, the default recipe at 256 px, issue 25 AdaIN, bench GPU rows).
# Rehearse on the CPU: DEV=cpu N=4 T=00:00:00:40 BENCH=0 HO=2 bash gpu/run.sh
set -u
T0=$(date +%s)
DEV=${DEV:-cuda}; N=${N:-1000}; T=${T:-00:00:04:20}; BENCH=${BENCH:-1}; HO=${HO:-50}; ARB=${ARB:-30000}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p $OUT/log $OUT/res
R=$PWD/gpu/runs; rm -rf $R; mkdir -p $R
if [ -d .whl ] && [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 FASTST_STYLE_DIR=$PWD/gpu/styles
PY=python3
el() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $OUT/log/timeline.txt; }
el "start on $(hostname); $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
$PY -c "import torch, pytorch_lightning, hydra; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pl', pytorch_lightning.__version__, 'hydra', hydra.__version__)" 2>&1 | tee -a $OUT/log/timeline.txt

if [ "$BENCH" = 1 ]; then
  timeout 80 $PY -m fastst bench --quick --device cuda --no-compile --vgg16-weights gpu/vgg16_c4.pth \
    --data gpu/photos_val --json $OUT/res/bench.json > $OUT/log/bench.txt 2>&1
  el "bench rc=$?"
fi

W=gpu/vgg16_c4.pth; VG=gpu/pair/vincent_van_gogh_001.jpg; MO=gpu/pair/claude_monet_001.jpg
COMMON="data.root=gpu/photos_train loss.network=vgg16 loss.weights=$W loss.preprocessing=caffe logger=none progress=plain seed=0 callbacks.export.onnx=false +trainer.max_time=$T trainer.log_every_n_steps=100"
[ "$DEV" = cpu ] && COMMON="$COMMON trainer=cpu data.image_size=64 data.num_workers=0"
tr() { name=$1; steps=$2; th=$3; shift 3
  OMP_NUM_THREADS=$th $PY -m fastst train $COMMON trainer.max_steps=$steps \
    callbacks.model_checkpoint.every_n_train_steps=$steps callbacks.preview.every_n_steps=$steps \
    hydra.run.dir=$R/$name "$@" > $OUT/log/$name.log 2>&1
  el "train $name rc=$?"; }
# issue 27: the two-painting stroke net at the default 256 px, N steps per row, and a net per (painting, scale)
tr stroke $((6 * N)) 4 model=multistyle "styles=[$VG,$MO]" 'stroke_scales=[1,2.83,8]' data.num_workers=2 &
for k in 1 2.83 8; do
  th=1; [ $k = 8 ] && th=3
  tr vg_$k $N $th model=multistyle "styles=[$VG]" "stroke_scales=[$k]" data.num_workers=1 &
  tr mo_$k $N $th model=multistyle "styles=[$MO]" "stroke_scales=[$k]" data.num_workers=1 &
done
# the default recipe at its real scale (256 px), VGG-16 caffe for the torchvision VGG-19 it would download;
# the default net was then Johnson's 32 channels and 9x9, today's model=johnson_full
tr starry $((6 * N)) 1 style=starry_night model=johnson_full data.num_workers=2 &
# issue 25: AdaIN (the CPU preset's net and criterion) at 256 px, batch 8, as many steps as the time allows
if [ "$DEV" = cuda ]; then AEXTRA="trainer.accelerator=gpu trainer.benchmark=true data.image_size=256 data.resize=256 data.style_resize=256 data.batch_size=8 data.num_workers=3"; else AEXTRA="data.image_size=64 data.resize=64 data.style_resize=64"; fi
OMP_NUM_THREADS=1 $PY -m fastst train experiment=arbitrary_cpu $AEXTRA \
  data.root=gpu/photos_train data.style_root=gpu/paint_train data.preview_root=gpu/photos_val \
  data.preview_style_root=gpu/paint_val loss.weights=$W loss.preprocessing=caffe seed=0 progress=plain \
  model.optimizer.lr=5.0e-4 model.scheduler.decay=1.0e-4 trainer.max_steps=$ARB +trainer.max_time=$T \
  callbacks.model_checkpoint.every_n_train_steps=2000 callbacks.preview.every_n_steps=2000 \
  callbacks.painting_val.every_n_steps=500 callbacks.export.onnx=false trainer.log_every_n_steps=100 \
  hydra.run.dir=$R/arb > $OUT/log/arb.log 2>&1 &
( while sleep 30; do el "gpu $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"; done ) &
SAMPLER=$!
wait $(jobs -p | grep -v "^$SAMPLER$")
kill $SAMPLER 2>/dev/null
el "all training done"
nvidia-smi --query-gpu=memory.used --format=csv 2>/dev/null | tail -1

X=$R/stroke/export/vincent_van_gogh_001-claude_monet_001.safetensors
SINGLES=""
for k in 1 2.83 8; do
  SINGLES="$SINGLES --single vincent_van_gogh_001@$k=$R/vg_$k/export/vincent_van_gogh_001.safetensors"
  SINGLES="$SINGLES --single claude_monet_001@$k=$R/mo_$k/export/claude_monet_001.safetensors"
done
$PY scripts/check_blobs.py $X --photos gpu/photos_val --held-out $HO --size 500 --device $DEV \
  --json $OUT/res/blobs_stroke.json --save $R/worst > $OUT/res/blobs_stroke.txt 2>&1
el "blobs stroke rc=$?"
for m in vg_1 vg_2.83 vg_8 mo_1 mo_2.83 mo_8; do
  f=$(ls $R/$m/export/*.safetensors | head -1)
  $PY scripts/check_blobs.py $f --photos gpu/photos_val --held-out $HO --size 500 --device $DEV > $OUT/res/blobs_$m.txt 2>&1
  el "blobs $m rc=$?"
done
$PY scripts/stroke_measure.py $X --painting vincent_van_gogh_001=$VG --painting claude_monet_001=$MO $SINGLES \
  --photos gpu/photos_val --held-out $HO --vgg $W --device $DEV --grid $OUT/res/stroke_grid.jpg > $OUT/res/stroke_measure.txt 2>&1
el "stroke_measure rc=$?"
S=$R/starry/export/starry_night.safetensors
$PY -m fastst evaluate $S --content gpu/photos_val --size 512 --loss-weights $W --device $DEV -o $OUT/res/starry_eval.json > $OUT/log/starry_eval.txt 2>&1
el "starry evaluate rc=$?"
$PY - <<EOF >> $OUT/log/timeline.txt 2>&1
import sys, glob; sys.path.insert(0, "$PWD")
from PIL import Image
from fastst import load_stylizer
files = sorted(glob.glob("gpu/photos_val/*"))[-6:]
st = load_stylizer("$S", device="$DEV")
tiles = []
for f in files:
    im = Image.open(f).convert("RGB"); im.thumbnail((512, 512))
    tiles += [im, st(im)]
w, h = 512, 342
grid = Image.new("RGB", (2 * w, 6 * h), "white")
for i, t in enumerate(tiles):
    grid.paste(t.resize((w, h)), ((i % 2) * w, (i // 2) * h))
grid.save("$OUT/res/starry_grid.jpg", quality=88)
print("starry grid written")
EOF
el "starry grid rc=$?"
A=$(ls $R/arb/export/*.safetensors 2>/dev/null | head -1)
[ -n "$A" ] && $PY -m fastst evaluate $A --content gpu/photos_val --style-images gpu/paint_val --size 512 --limit ${ALIM:-10} --painting-limit ${PLIM:-0} \
  --loss-weights $W --device $DEV -o $OUT/res/arb_eval.json > $OUT/log/arb_eval.txt 2>&1
el "arb evaluate rc=$?"
# bring back (8 files at most): res.tgz (tables, scores, grids), logs.tgz, worst.tgz, models.tar, arbitrary parts
cp -r $R/arb/val_loss.csv $OUT/res/ 2>/dev/null
el "packing"; cp $OUT/log/timeline.txt $OUT/res/; tar czf $OUT/logs.tgz -C $OUT log && rm -rf $OUT/log
tar czf $OUT/arb_run.tgz --exclude=checkpoints --exclude=export -C $R arb 2>/dev/null
tar czf $OUT/worst.tgz -C $R worst 2>/dev/null
tar czf $OUT/res.tgz -C $OUT res && rm -rf $OUT/res
tar cf $OUT/models.tar $X $S 2>/dev/null
[ -n "$A" ] && split -b 15m $A $OUT/arbitrary.safetensors.part-
ls -la $OUT; echo "end at $(( $(date +%s) - T0 )) s"
