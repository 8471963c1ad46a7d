# Sourced by the validation scripts: nginx-light as an external reference server.
# start_nginx DIR CORE PORT  -> sets server_pid; one worker pinned to CORE, `return 200`,
# keep-alive without a request cap, no access log.
start_nginx() {
  local dir=$1 core=$2 port=$3
  cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 65536; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { return 200 "Hello, World!"; }
  }
}
CONF
  taskset -c "$core" nginx -c "$dir/nginx.conf" -p "$dir" &
  server_pid=$!
  local _
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nginx did not start; see $dir/nginx-error.log" >&2
  return 1
}

# cpu_ticks PID -> "utime stime" in clock ticks (all threads)
cpu_ticks() {
  awk '{ sub(/.*\) /, ""); print $12, $13 }' "/proc/$1/stat"
}
