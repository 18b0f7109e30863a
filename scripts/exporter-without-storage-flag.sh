#!/bin/bash
# Runs the exporter binary given as $1 with the other arguments minus --storage.path=...: lets the
# load harness (which always passes the flag) drive a build from before the store (BENCHMARKS.md 8):
#   loadtest ... --exporter OLD/krs-exporter --wrap scripts/exporter-without-storage-flag.sh
prog=$1; shift
args=()
for a in "$@"; do case $a in --storage.path=*) ;; *) args+=("$a");; esac; done
exec "$prog" "${args[@]}"
