#!/bin/bash
# usage: queue.sh LIST  (lines: NAME SEED [FIELD=VALUE ...]); run by N workers that claim lines via lock dir
cd /work/exp
while true; do
  line=""
  exec 9>/work/exp/queue.lock; flock 9
  while read -r l; do
    [ -z "$l" ] && continue
    key=$(echo "$l" | awk '{print $1"-s"$2}')
    if [ ! -e "/work/exp/claimed/$key" ]; then touch "/work/exp/claimed/$key"; line="$l"; break; fi
  done < "$1"
  flock -u 9
  [ -z "$line" ] && exit 0
  set -- "$1"; read -r name seed rest <<< "$line"
  echo "$(date +%T) start $name s$seed $rest" >> /work/exp/queue.log
  SEED=$seed PYTHONPATH=/work/exp3 /work/main/.venv/bin/python /work/exp/fork.py /none sdft 0 3 /work/exp/var $rest > /work/exp/logs/$name-s$seed.log 2>&1
  echo "$(date +%T) done $name s$seed rc=$?" >> /work/exp/queue.log
done
