#!/usr/bin/env bash
# The lent GPU takes at most 64 MiB per call, the tracked files included (~94 MiB since
# session 17, whose checkpoints/ holds the 48 kHz run (17 MiB; needed to go on training it),
# ~77 MiB since
# session 16: the shipped coders and those of earlier weights in models/legacy/). Training
# needs neither the LMs nor the kept legacy files, so set them aside for the call:
#   bash scripts/device_slim.sh aside     # before the `run` call (~30 MiB left)
#   bash scripts/device_slim.sh back      # after it
set -eu
cd "$(dirname "$0")/.."
aside=.device_aside
case "${1:-}" in
  aside)
    mkdir -p "$aside"
    mv models/legacy "$aside/legacy"
    mv models/*.lm "$aside/"
    ;;
  back)
    mv "$aside/legacy" models/legacy
    mv "$aside"/*.lm models/
    rmdir "$aside"
    ;;
  *) echo "usage: $0 aside|back" >&2; exit 2 ;;
esac
git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{printf "tracked files present: %.1f MiB\n", $1 / 1048576}' || true
