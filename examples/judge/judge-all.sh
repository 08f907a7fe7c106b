#!/bin/sh
# Judge every solution of every problem here (`make examples`). $1 is the dcodex
# command (default: dcodex); a problem's judge.args holds its checker options.
# Exits non-zero when a solution is not accepted.
set -eu
dcodex=${1:-dcodex}
case $dcodex in */*) dcodex=$(realpath "$dcodex") ;; esac  # before the cd below
cd "$(dirname "$0")"
for problem in */; do
    (
        cd "$problem"
        args=$(cat judge.args 2>/dev/null || true)
        set --
        for file in solutions/*; do set -- "$@" -f "$file"; done
        # shellcheck disable=SC2086  # judge.args holds several words
        "$dcodex" bus judge --tests tests $args "$@"
    )
done
