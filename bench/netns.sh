#!/bin/sh
# Runs a command inside a fresh network namespace that has a veth pair (sb0, sb1), then
# removes the namespace. Janus gathers no ICE candidates on lo, so the side-by-side
# benchmark runs here; Souk runs in the same namespace, so both see the same network.
# Needs root. Example:
#   bench/netns.sh target/release/souk-bench fanout --servers souk,janus
set -eu
ns="souk-bench-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
ip -n "$ns" link add sb0 type veth peer name sb1
ip -n "$ns" addr add 10.203.0.1/24 dev sb0
ip -n "$ns" addr add 10.203.0.2/24 dev sb1
ip -n "$ns" link set sb0 up
ip -n "$ns" link set sb1 up
ip netns exec "$ns" "$@"
