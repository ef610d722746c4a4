#!/usr/bin/env bash
# Installs and runs the backend servers the tests need, as plain background processes on
# 127.0.0.1 (no systemd, no Docker). Idempotent.
#
#   scripts/services.sh install [SERVICE...]   install missing packages only
#   scripts/services.sh up      [SERVICE...]   install, start, wait until ready
#   scripts/services.sh down    [SERVICE...]   stop what this script started (by PID)
#   scripts/services.sh status  [SERVICE...]
#
# Services: postgres (5432), redis (6379), zookeeper (2181), etcd (2379, peers on 2380),
# azurite (blob service on 10000, in memory, account devstoreaccount1), mariadb (3306), odbc (no
# server: unixODBC with the MariaDB and PostgreSQL ODBC drivers, and a project-local
# odbcinst.ini in $LE_SERVICES_DIR/odbc — use it with `export ODBCSYSINI=$LE_SERVICES_DIR/odbc`).
# Default: all.
# State (data, logs, PID files) lives in $LE_SERVICES_DIR (default /tmp/leader-election-services).
# A service whose port already answers is left alone and not stopped by `down`.
set -euo pipefail

STATE="${LE_SERVICES_DIR:-/tmp/leader-election-services}"
ALL=(postgres redis zookeeper etcd azurite mariadb odbc)
PG_BIN="${LE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}"

log() { echo "services: $*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  if [[ $APT_UPDATED == 0 ]]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s, bounded.
wait_until() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
  log "$what is ready"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Stops the process in PID file $1 with SIGTERM, then SIGKILL after a bounded wait.
stop_pid() {
  local pidfile=$1 name=$2
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  log "$name stopped"
}

# ---------------------------------------------------------------- PostgreSQL
PG_DIR="$STATE/postgres"
pg_install() {
  apt_install postgresql postgresql-contrib openssl
  PG_BIN="${LE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}"
}
pg_run() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p 5432; }
pg_up() {
  pg_install
  if pg_ready; then log "postgres already answers on 5432; using it"; return 0; fi
  mkdir -p "$STATE"; chmod 755 "$STATE"
  if [[ ! -f $PG_DIR/data/PG_VERSION ]]; then
    rm -rf "$PG_DIR"; mkdir -p "$PG_DIR"
    [[ $(id -u) == 0 ]] && chown postgres:postgres "$PG_DIR"
    pg_run "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
      || { cat "$PG_DIR/initdb.log"; die "initdb failed"; }
    # Superuser over the socket only; the tests' role over TCP with a password.
    cat >"$PG_DIR/data/pg_hba.conf" <<'HBA'
local all all trust
host  all all 127.0.0.1/32 scram-sha-256
HBA
  fi
  pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p 5432 -k $PG_DIR -c fsync=off -c max_connections=200" start >/dev/null \
    || { tail -n 20 "$PG_DIR/server.log"; die "postgres did not start"; }
  head -n1 "$PG_DIR/data/postmaster.pid" >"$STATE/postgres.pid"
  wait_until 30 postgres pg_ready || die "postgres not ready within 30 s"
  pg_run "$PG_BIN/psql" -q -h "$PG_DIR" -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'leader') THEN
    CREATE ROLE leader LOGIN PASSWORD 'leader-secret';
  END IF;
END $$;
SELECT 'CREATE DATABASE leader_election OWNER leader'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'leader_election') \gexec
SQL
}
pg_down() {
  if pid_alive "$STATE/postgres.pid"; then
    pg_run "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
    stop_pid "$STATE/postgres.pid" postgres
  fi
}
pg_status() { pg_ready && echo "postgres: up on 127.0.0.1:5432" || echo "postgres: down"; }

# --------------------------------------------------------------------- Redis
redis_install() { apt_install redis-server redis-tools openssl; }
redis_ready() { [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]; }
redis_up() {
  redis_install
  if redis_ready; then log "redis already answers on 6379; using it"; return 0; fi
  mkdir -p "$STATE/redis"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes \
    --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" --dir "$STATE/redis" \
    || die "redis-server did not start"
  wait_until 20 redis redis_ready || { tail -n 20 "$STATE/redis.log"; die "redis not ready within 20 s"; }
}
redis_down() { stop_pid "$STATE/redis.pid" redis; }
redis_status() { redis_ready && echo "redis: up on 127.0.0.1:6379" || echo "redis: down"; }

# ----------------------------------------------------------------- ZooKeeper
ZK_DIR="$STATE/zookeeper"
zk_install() { apt_install zookeeper netcat-openbsd default-jre-headless; }
zk_ready() { [[ $(echo ruok | nc -N -w1 127.0.0.1 2181 2>/dev/null) == imok ]]; }
zk_up() {
  zk_install
  if zk_ready; then log "zookeeper already answers on 2181; using it"; return 0; fi
  mkdir -p "$ZK_DIR/data"
  # tickTime=500: the server expires sessions on tick boundaries, so a dead client's session
  # (and its leader's lease) can outlive the session timeout by up to one tick — keep it small
  # so that failover is within "session timeout + tick" with a tight tick. The explicit
  # min/maxSessionTimeout keep the server from clamping the tests' sessions to 2–20 ticks.
  cat >"$ZK_DIR/zoo.cfg" <<CFG
tickTime=500
dataDir=$ZK_DIR/data
clientPort=2181
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=*
minSessionTimeout=1000
maxSessionTimeout=60000
CFG
  local cp=/usr/share/java/zookeeper.jar
  for j in /usr/share/java/slf4j-simple.jar /usr/share/java/slf4j-api.jar; do [[ -f $j ]] && cp="$cp:$j"; done
  nohup java -Xmx256m -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$ZK_DIR/zoo.cfg" \
    >"$ZK_DIR/server.log" 2>&1 &
  echo $! >"$STATE/zookeeper.pid"
  wait_until 60 zookeeper zk_ready || { tail -n 20 "$ZK_DIR/server.log"; die "zookeeper not ready within 60 s"; }
}
zk_down() { stop_pid "$STATE/zookeeper.pid" zookeeper; }
zk_status() { zk_ready && echo "zookeeper: up on 127.0.0.1:2181" || echo "zookeeper: down"; }

# ---------------------------------------------------------------------- etcd
ETCD_DIR="$STATE/etcd"
etcd_install() { apt_install etcd-server etcd-client; }
etcd_ready() { ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; }
etcd_up() {
  etcd_install
  if etcd_ready; then log "etcd already answers on 2379; using it"; return 0; fi
  mkdir -p "$ETCD_DIR"
  nohup etcd --name le --data-dir "$ETCD_DIR/data" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster le=http://127.0.0.1:2380 >"$ETCD_DIR/server.log" 2>&1 &
  echo $! >"$STATE/etcd.pid"
  wait_until 30 etcd etcd_ready || { tail -n 20 "$ETCD_DIR/server.log"; die "etcd not ready within 30 s"; }
}
etcd_down() { stop_pid "$STATE/etcd.pid" etcd; }
etcd_status() { etcd_ready && echo "etcd: up on 127.0.0.1:2379" || echo "etcd: down"; }
# ------------------------------------------------------------------- Azurite
# The Azure Storage emulator's blob service, from npm (3.35.0: later releases need Node 22), in
# memory (a restart loses everything), telemetry off (it would try the internet).
AZURITE_VERSION=3.35.0
az_install() {
  command -v azurite-blob >/dev/null 2>&1 && return 0
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  log "installing azurite@$AZURITE_VERSION"
  as_root npm install -g --no-fund --no-audit "azurite@$AZURITE_VERSION" >/dev/null
}
az_ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 http://127.0.0.1:10000/ 2>/dev/null) =~ ^[1-5][0-9][0-9]$ ]]; }
az_up() {
  az_install
  apt_install curl
  if az_ready; then log "azurite already answers on 10000; using it"; return 0; fi
  mkdir -p "$STATE/azurite"
  (cd "$STATE/azurite" || exit 1; nohup azurite-blob --blobHost 127.0.0.1 --blobPort 10000 \
    --inMemoryPersistence --disableTelemetry --skipApiVersionCheck \
    >"$STATE/azurite/server.log" 2>&1 & echo $! >"$STATE/azurite.pid")
  wait_until 30 azurite az_ready || { tail -n 20 "$STATE/azurite/server.log"; die "azurite not ready within 30 s"; }
}
az_down() { stop_pid "$STATE/azurite.pid" azurite; }
az_status() { az_ready && echo "azurite: up on 127.0.0.1:10000" || echo "azurite: down"; }
# ------------------------------------------------------------------- MariaDB
# Root over TCP from 127.0.0.1 with an empty password (tests start private instances the same
# way); the tests' user `leader` (password `leader-secret`) owns database `leader_election` and
# may create databases named `le_…` (the ODBC provider's schema option).
MARIADB_DIR="$STATE/mariadb"
mariadb_install() { apt_install mariadb-server mariadb-client; }
mariadb_ready() { mariadb-admin --no-defaults --protocol=tcp -h127.0.0.1 -P3306 -uroot --connect-timeout=2 ping; }
mariadb_up() {
  mariadb_install
  if mariadb_ready >/dev/null 2>&1; then log "mariadb already answers on 3306; using it"
  else
    mkdir -p "$MARIADB_DIR"
    # mariadbd exits silently unless its state directory belongs to the user it runs as.
    [[ $(id -u) == 0 ]] && chown mysql:mysql "$MARIADB_DIR"
    if [[ ! -d $MARIADB_DIR/data/mysql ]]; then
      mariadb-install-db --no-defaults --user=mysql --datadir="$MARIADB_DIR/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$MARIADB_DIR/install.log" 2>&1 \
        || { cat "$MARIADB_DIR/install.log"; die "mariadb-install-db failed"; }
    fi
    nohup mariadbd --no-defaults --user=mysql --datadir="$MARIADB_DIR/data" \
      --socket="$MARIADB_DIR/mysqld.sock" --pid-file="$MARIADB_DIR/mariadbd.pid" \
      --bind-address=127.0.0.1 --port=3306 --skip-name-resolve \
      --log-error="$MARIADB_DIR/error.log" >/dev/null 2>&1 &
    echo $! >"$STATE/mariadb.pid"
    wait_until 60 mariadb mariadb_ready || { tail -n 20 "$MARIADB_DIR/error.log"; die "mariadb not ready within 60 s"; }
  fi
  mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P3306 -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS leader_election;
CREATE USER IF NOT EXISTS 'leader'@'127.0.0.1' IDENTIFIED BY 'leader-secret';
CREATE USER IF NOT EXISTS 'leader'@'localhost' IDENTIFIED BY 'leader-secret';
GRANT ALL ON leader_election.* TO 'leader'@'127.0.0.1', 'leader'@'localhost';
GRANT ALL ON `le\_%`.* TO 'leader'@'127.0.0.1', 'leader'@'localhost';
SQL
}
mariadb_down() { stop_pid "$STATE/mariadb.pid" mariadb; }
mariadb_status() { mariadb_ready >/dev/null 2>&1 && echo "mariadb: up on 127.0.0.1:3306" || echo "mariadb: down"; }

# ---------------------------------------------------------------------- ODBC
# Not a server: the driver manager and drivers, and an odbcinst.ini of the project's own. It
# names the drivers by their absolute paths (from dpkg -L) and turns psqlODBC's CommLog off
# (Debian's system file sets CommLog=1: a log file per connection in the temp directory).
ODBC_DIR="$STATE/odbc"
odbc_install() { apt_install unixodbc unixodbc-dev odbc-postgresql odbc-mariadb; }
odbc_so() { dpkg -L "$1" 2>/dev/null | grep -m1 "/$2\$" || die "$2 not found in package $1"; }
odbc_up() {
  odbc_install
  mkdir -p "$ODBC_DIR"
  cat >"$ODBC_DIR/odbcinst.ini.tmp" <<INI
[PostgreSQL Unicode]
Description=PostgreSQL ODBC driver (Unicode version)
Driver=$(odbc_so odbc-postgresql psqlodbcw.so)
Debug=0
CommLog=0

[PostgreSQL ANSI]
Description=PostgreSQL ODBC driver (ANSI version)
Driver=$(odbc_so odbc-postgresql psqlodbca.so)
Debug=0
CommLog=0

[MariaDB Unicode]
Description=MariaDB Connector/ODBC (Unicode)
Driver=$(odbc_so odbc-mariadb libmaodbc.so)
INI
  : >"$ODBC_DIR/odbc.ini"
  mv "$ODBC_DIR/odbcinst.ini.tmp" "$ODBC_DIR/odbcinst.ini"
  log "odbc is ready: export ODBCSYSINI=$ODBC_DIR"
}
odbc_down() { :; }
odbc_status() {
  if [[ -f $ODBC_DIR/odbcinst.ini ]]; then echo "odbc: drivers in $ODBC_DIR/odbcinst.ini"; else echo "odbc: not set up"; fi
}

# ---------------------------------------------------------------------------
fn_prefix() {
  case $1 in
    postgres) echo pg ;; redis) echo redis ;; zookeeper) echo zk ;; etcd) echo etcd ;; azurite) echo az ;;
    mariadb) echo mariadb ;; odbc) echo odbc ;;
    *) die "unknown service '$1' (known: ${ALL[*]})" ;;
  esac
}

cmd=${1:-}; shift || true
services=("$@"); ((${#services[@]})) || services=("${ALL[@]}")
case $cmd in
  install)
    for s in "${services[@]}"; do "$(fn_prefix "$s")_install"; done ;;
  up) for s in "${services[@]}"; do "$(fn_prefix "$s")_up"; done ;;
  down) for s in "${services[@]}"; do "$(fn_prefix "$s")_down"; done ;;
  status) for s in "${services[@]}"; do "$(fn_prefix "$s")_status"; done ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
