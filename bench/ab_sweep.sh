#!/usr/bin/env bash
# A/B of the streaming sweep between two checkouts, interleaved so that a noisy
# machine weighs on both alike:
#
#   git worktree add /tmp/base <commit>            # the "before" checkout
#   PY=/path/to/venv/bin/python bench/ab_sweep.sh /tmp/base . "100 200" "1 2"
#
# For each round and level it runs bench/stream_sweep.py in the "before" checkout,
# then in the "after" one (each with its own database, chatsite_ab_<name>; Redis db
# $AB_REDIS_DB, flushed), and prints the table row; results land in each checkout's
# bench/results/stream_sweep-ab-<name>-<level>-r<round>.{json,md}. PY is the Python
# of a virtualenv with requirements.txt (as deployed) plus `websockets`.
set -u
BEFORE=$(cd "$1" && pwd)
AFTER=$(cd "$2" && pwd)
LEVELS=${3:-100 200}
ROUNDS=${4:-1 2}
PY=${PY:-.venv/bin/python}
RURL=redis://127.0.0.1:6379/${AB_REDIS_DB:-6}
for round in $ROUNDS; do
  for n in $LEVELS; do
    for tree in "$BEFORE" "$AFTER"; do
      name=$(basename "$tree")
      echo "=== round $round n=$n $name $(date -u +%T)"
      (cd "$tree" && timeout 900 "$PY" bench/stream_sweep.py --levels "$n" \
        --label "ab-$name-$n-r$round" \
        --database-url "postgres://postgres@127.0.0.1:5432/chatsite_ab_$name" \
        --redis-url "$RURL" 2>&1 | grep "^| $n ")
    done
  done
done
