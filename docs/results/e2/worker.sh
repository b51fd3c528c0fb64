#!/usr/bin/env bash
# E2 worker: pops (cell, entry, seeds, steps, sizes...) lines from jobs.txt under a lock, runs one compare each.
cd /work/wt-e2
export PYTHONPATH=/work/wt-e2 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
unset MINIMOLKV_FAST
while true; do
  line=$(flock e2/jobs.lock bash -c 'l=$(head -n1 e2/jobs.txt); [ -n "$l" ] && sed -i 1d e2/jobs.txt; echo "$l"')
  [ -z "$line" ] && break
  set -- $line; cell=$1; entry=$2; seeds=$3; steps=$4; shift 4
  echo "$(date -u +%FT%TZ) worker $W start $cell $entry" >> e2/logs/queue.log
  python -m minimolkv compare --data shakespeare --entries $entry --seeds $seeds --steps $steps "$@" \
      --out e2/parts/$cell-$entry --save-params runs/e2/$cell > e2/logs/$cell-$entry.log 2>&1
  echo "$(date -u +%FT%TZ) worker $W end $cell $entry rc=$?" >> e2/logs/queue.log
done
