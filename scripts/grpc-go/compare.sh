#!/usr/bin/env bash
# spec-provider against the grpc-go server of main.go, driven alike by h2load (Debian's
# nghttp2-client): Health/Check, a cache hit (`ws-hit`, which must be stored) and one unknown id
# again and again, the two servers in turn, ROUNDS rounds (default 3) of 100,000 requests on 8
# connections with 32 streams each, as issue 25 measured. Prints requests/s and each server's CPU
# time per request (its user + system time from /proc, in 10 ms ticks).
#
#   scripts/grpc-go/compare.sh SPEC_PROVIDER_PORT GRPC_GO_PORT [ROUNDS]
set -euo pipefail
ours_port=$1 go_port=$2 rounds=${3:-3} requests=100000
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pid_on() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# A framed GetImageSpecRequest for the id $1 (shorter than 128 bytes).
request() { printf '\0\0\0\0'"\\x$(printf %02x $((${#1} + 2)))"'\x0a'"\\x$(printf %02x ${#1})"'%s' "$1"; }

printf '\0\0\0\0\0' > "$work/check"
request ws-hit > "$work/hit"
request unknown-probe > "$work/unknown"
declare -A pids=([spec-provider]=$(pid_on "$ours_port") [grpc-go]=$(pid_on "$go_port"))
declare -A ports=([spec-provider]=$ours_port [grpc-go]=$go_port)

printf '%-5s %-8s %-13s %12s %16s\n' round kind server requests/s "CPU µs/request"
for round in $(seq 1 "$rounds"); do
  for kind in check hit unknown; do
    path=/registryfacade.SpecProvider/GetImageSpec
    [[ $kind == check ]] && path=/grpc.health.v1.Health/Check
    for server in spec-provider grpc-go; do
      before=$(cpu_ticks "${pids[$server]}")
      rps=$(h2load -n "$requests" -c 8 -m 32 -w 30 -W 30 -d "$work/$kind" \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:${ports[$server]}$path" | awk '/finished in/ {print $4}')
      after=$(cpu_ticks "${pids[$server]}")
      printf '%-5s %-8s %-13s %12s %16.1f\n' "$round" "$kind" "$server" "$rps" \
        "$(echo "($after - $before) * 10000 / $requests" | bc -l)"
    done
  done
done
