#!/bin/bash
# The twelfth step's side-by-side runs (BENCHMARKS.md): deployer's proxy
# package standalone (bench/proxyprof, GOMAXPROCS=1 as procs = "auto" runs
# it while steady) built without and with the yield before writes, beside
# nginx, all in front of one bench/backend; wrk -t2 -c64 for D seconds per
# target, targets in turn, ROUNDS rounds. Per request it prints each
# process's CPU (from /proc: the app, the proxy, wrk), the machine's idle
# CPU time, and its context switches (/proc/stat ctxt).
#
# Set up (run from the repository root; BASE and NEW are two checkouts):
#   (cd BASE && go build -o /tmp/pp ./bench/proxyprof)    # 5fb254d
#   (cd NEW && go build -o /tmp/ppg ./bench/proxyprof)    # with rawio.Yield
#   go build -o /tmp/be ./bench/backend && /tmp/be -socket /tmp/app.sock &
#   echo 8090 > /tmp/port.pp; GOMAXPROCS=1 /tmp/pp -socket /tmp/app.sock -addr 127.0.0.1:8090 &
#   echo 8091 > /tmp/port.ppg; GOMAXPROCS=1 /tmp/ppg -socket /tmp/app.sock -addr 127.0.0.1:8091 &
#   nginx with the bench's nginx.conf (user root;), listening on 127.0.0.1:8083
#   TARGETS="pp ppg nginx" bash s14-yield-side.sh 12 4
# ppq and ppr in s14-yield-side.txt are builds with only one of the two
# yields: before the request to the app (ppq), before the response (ppr).
BE=$(pgrep -f "/tmp/be -socket")
ticks() { local t=0; for p in "$@"; do s=$(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null); t=$((t+${s:-0})); done; echo $t; }
procstat() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6, $9} /^ctxt/{print $2}' /proc/stat | xargs; }
D=${2:-5}
for r in $(seq 1 ${1:-3}); do
 for tgt in ${TARGETS:-pp ppg nginx}; do
  case $tgt in nginx) port=8083; P="$(pgrep -f "nginx: " | xargs)";; *) port=$(cat /tmp/port.$tgt); P=$(pgrep -f "/tmp/$tgt -socket");; esac
  b0=$(ticks $BE); p0=$(ticks $P); s0=($(procstat))
  out=$(cd /tmp && bash -c "wrk -t2 -c64 -d${D}s --latency http://127.0.0.1:$port/ ; times" 2>&1)
  b1=$(ticks $BE); p1=$(ticks $P); s1=($(procstat))
  n=$(echo "$out" | awk '/requests in/{print $1}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  wrkcpu=$(echo "$out" | tail -1 | awk '{gsub("m"," ",$0); split($0,a," "); print (a[1]*60+a[2]+a[3]*60+a[4])}')
  printf "%d %-6s rps=%6d p99=%-7s be=%5.2f proxy=%5.2f wrk=%5.2f idle=%4.2f ctxt=%4.2f\n" $r $tgt $((n/D)) $p99 \
   $(echo "($b1-$b0)*10000/$n" | bc -l) $(echo "($p1-$p0)*10000/$n" | bc -l) $(echo "$wrkcpu*1000000/$n" | bc -l) \
   $(echo "(${s1[1]}-${s0[1]})*10000/$n" | bc -l) $(echo "(${s1[3]}-${s0[3]})/$n" | bc -l)
 done
done
