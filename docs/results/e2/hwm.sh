#!/usr/bin/env bash
# every 30 s: the peak resident memory (VmHWM) of each running compare process
while true; do
  for p in $(pgrep -f "minimolkv compare"); do
    echo "$(date -u +%T) $p $(tr '\0' ' ' < /proc/$p/cmdline | grep -o 'entries [a-z-]*' ) $(grep -o 'steps [0-9]*' /proc/$p/cmdline 2>/dev/null) $(grep VmHWM /proc/$p/status | tr -s ' ')" ;
  done >> logs/hwm.log
  sleep 30
done
