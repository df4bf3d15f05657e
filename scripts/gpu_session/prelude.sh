# Sourced by run2.sh, run3.sh and run4.sh (". gpu/prelude.sh runsN"; they need DEV, OUT and T0 set): an empty
# run folder R=gpu/runsN, the wheels installed on the device (DEV=cuda; the machine reaches no network),
# PYTHONPATH, unbuffered output, and el: a line with the seconds since T0, also kept in $OUT/res/timeline.txt.
R=$PWD/gpu/$1; rm -rf $R; mkdir -p $R
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else export PYTHONPATH=$PWD; fi
export PYTHONUNBUFFERED=1
el() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a $OUT/res/timeline.txt; }
