#!/usr/bin/env bash
# E21: export a 48 kHz run's last checkpoint with the shipped-to-be envelope grafted on,
# and score it on the dev-eval music at 6 kbps (LSD per band, stereo image; ViSQOL with
# VISQOL=1).   scripts/e21/snapshot.sh RUN_DIR NAME
set -euo pipefail
run=$1 name=$2
py=.venv/bin/python
out=build/e21/$name
mkdir -p build/e21
$py -m neucomp.train export "$run/last.pt" "$out-net.pt"
$py scripts/graft_envelope.py "$out-net.pt" checkpoints/neucomp_48khz-train.pt "$out.pt"
vis=--no-visqol
[ "${VISQOL:-0}" = 1 ] && vis=--visqol
$py -m neucomp eval data/deveval/music --model "$out.pt" -b "${BW:-6}" --baselines none $vis \
  --no-dnsmos --no-speech-metrics -q --json "$out.json" | tail -3
