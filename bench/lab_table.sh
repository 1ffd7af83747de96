#!/usr/bin/env bash
# Every weak-network profile side by side in one run: resilience off, the server as
# shipped (on: downlink estimation from receiver reports), and as shipped but with str0m's
# GoogCC estimating the downlink (twcc).
#   bench/lab_table.sh [SECONDS] > table.jsonl      (needs root; uses target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
for profile in clean lossy-10 lossy-20 lossy-30 burst-loss intercontinental 4g-congested cap-300k wifi-flap; do
  for features in off on twcc; do
    secs="$seconds"
    [ "$profile" = wifi-flap ] && secs=$(( seconds > 30 ? seconds : 30 ))
    tools/netsim/lab --profile "$profile" --seconds "$secs" --features "$features" | tail -1
  done
done
