#!/usr/bin/env bash
# CPU used each second by the bench's processes (switchyard, bench-upstream, loadgen, nginx), in
# clock ticks per second (100 = one core busy), from utime + stime in /proc/PID/stat. Light
# enough to run beside a benchmark (it reads /proc only; `ss` over tens of thousands of sockets is
# not). To see whether a phase saturated the two cores:
#
#   bench/cpu-by-process.sh > cpu.log &  bench/run.sh --targets switchyard;  kill %1
#
# Each line: time, then NAME=ticks used in the last second; a process that exited or started in
# that second reads as a negative or partial figure.
set -euo pipefail
names=(switchyard bench-upstream loadgen nginx)
declare -A last
while sleep 1; do
    line=$(date -u +%T)
    for name in "${names[@]}"; do
        total=0
        for pid in $(pgrep -x "$name" || true); do
            t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
            total=$((total + t))
        done
        line+=" $name=$((total - ${last[$name]:-$total}))"
        last[$name]=$total
    done
    echo "$line"
done
