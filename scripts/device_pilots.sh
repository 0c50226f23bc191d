#!/usr/bin/env bash
# Codec pilots side by side on one lent GPU (docs/TRAINING.md, "On a lent GPU"):
#   bash scripts/device_pilots.sh continued fixed scratch     (configs/gpu/NAME.json)
# Each trains for $WALL seconds from the start of its loop (its config fits the step
# count and the cool-down to that), then its inference model and log land in $OUT.
# Run on the device from the repository root, with .shards and .whl carried;
# EXTRA_SETS adds `--set key=value` overrides to every run (a CPU smoke test).
set -u
WALL=${WALL:-450}
# A hard stop, in seconds from now, that leaves time to export before the device's own
# limit kills everything: SIGTERM makes each run save its checkpoint and stop.
DEADLINE=${DEADLINE:-$((WALL + 60))}
OUT=${OUT:-/tmp/device_out}
PY=${PY:-python3}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
runs=()
for name in "$@"; do
  $PY -m neucomp.train --config "configs/gpu/$name.json" --set "run_dir=/tmp/gpu_$name" \
    --set "max_wall_s=$WALL" ${EXTRA_SETS:-} > "$OUT/$name.log" 2>&1 &
  runs+=($!)
done
(sleep "$DEADLINE"; pkill -TERM -f "neucomp.train --config") &
watchdog=$!
# one look at the GPU while they all run
(sleep 90; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv) &
look=$!
wait "${runs[@]}"
# each helper is a subshell asleep in `sleep`: end the sleep, then the subshell
pkill -P "$watchdog"; pkill -P "$look"; kill "$watchdog" "$look" 2>/dev/null
for name in "$@"; do
  [ -f "/tmp/gpu_$name/last.pt" ] && \
    $PY -m neucomp.train export "/tmp/gpu_$name/last.pt" "$OUT/$name.pt" >> "$OUT/$name.log" 2>&1 &
done
wait
for name in "$@"; do echo "== $name"; grep -v "^step" "$OUT/$name.log" | tail -n 4; grep "^step" "$OUT/$name.log" | tail -n 2; done
