#!/bin/bash
# alternating rounds: nginx, er1, er2s (2 loops shared), er2r (2 loops reuseport)
cd /tmp/x   # needs /tmp/be (bench/backend), /tmp/er (bench/epollrelay), this nginx.conf in /tmp/x
/tmp/be -socket /tmp/x/app.sock > be.log 2>&1 & BE=$!
sleep 0.5
nginx -p /tmp/x -c /tmp/x/nginx.conf -g "daemon off; user root;" > nginx.out 2>&1 & NG=$!
/tmp/er -socket /tmp/x/app.sock -addr 127.0.0.1:18081 > er1.log 2>&1 & E1=$!
/tmp/er -socket /tmp/x/app.sock -addr 127.0.0.1:18082 -loops 2 -shared > er2s.log 2>&1 & E2=$!
/tmp/er -socket /tmp/x/app.sock -addr 127.0.0.1:18083 -loops 2 > er2r.log 2>&1 & E3=$!
sleep 1
targets=("nginx 18080" "er1 18081" "er2s 18082" "er2r 18083")
for r in $(seq 1 ${ROUNDS:-6}); do
  order=("${targets[@]}")
  if (( r % 2 == 0 )); then order=("${targets[3]}" "${targets[2]}" "${targets[1]}" "${targets[0]}"); fi
  for t in "${order[@]}"; do
    set -- $t
    wrk -t2 -c64 -d2s http://127.0.0.1:$2/ > /dev/null 2>&1
    out=$(wrk -t2 -c64 -d10s --latency http://127.0.0.1:$2/)
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    err=$(echo "$out" | grep -c "Socket errors\|Non-2xx")
    echo "round $r $1 $rps $p99 err=$err"
  done
done
kill $NG $E1 $E2 $E3 $BE
