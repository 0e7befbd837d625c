#!/usr/bin/env bash
# Local service stack for tokendist: PostgreSQL, Apache Kafka (KRaft), anvil and local-kms
# (the AWS KMS API, for operator keys held in KMS).
# There is no Docker engine on our machines, so every service is a plain process whose
# whole state (data, logs, pid files, download caches) lives in <repo>/.stack.
#
#   stack/stack.sh up [--brokers 1|3] [--cdc] [--secure]   install what is missing, start, wait
#                                       until ready (--cdc or TOKENDIST_CDC=1: also Debezium in
#                                       Kafka Connect; --secure or TOKENDIST_SECURE=1: TLS, SASL and
#                                       ACLs, see "secured mode" below)
#   stack/stack.sh down | status | env
#   stack/stack.sh start-service|stop-service|restart-service pg|kafka|anvil|cdc|kms
#   stack/stack.sh kill-broker N        SIGKILL one broker (crash simulation)
#   stack/stack.sh start-broker N       start it again and wait until it is back
#   stack/stack.sh kill-cdc             SIGKILL the Connect worker (crash simulation)
#   stack/stack.sh cdc-libs             only install Kafka Connect and the Debezium plugin
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# Overridable so a second stack (e.g. for fault runs) can live beside the first.
ST="${TOKENDIST_STACK_HOME:-$ROOT/.stack}"
RUN="$ST/run"
# Downloads (Maven, npm) can be shared with another stack's home: `make test-secured` reuses
# the main stack's instead of fetching the broker again.
CACHE="${TOKENDIST_STACK_CACHE:-$ST/cache}"
LOGS="$ST/logs"
LIBS="$ST/kafka-libs"
NPM_DIR="$ST/npm"
HOST=127.0.0.1
# Non-default ports so a developer's own Postgres/Kafka/anvil keeps working beside ours, and
# below Linux's ephemeral range (32768-60999): a port in it can be taken as the source port of
# some outbound connection while a service restarts, which then fails "Address already in use".
PG_PORT="${TOKENDIST_PG_PORT:-25432}"
ANVIL_PORT="${TOKENDIST_ANVIL_PORT:-28545}"
KAFKA_PORT0="${TOKENDIST_KAFKA_PORT:-29092}" # node N: KAFKA_PORT0 + 100*(N-1), controller +1
TIMEOUT="${TOKENDIST_STACK_TIMEOUT:-120}"
CDC_LIBS="$ST/cdc-libs"
# One Connect worker per CDC_HOME: the stack's own under .stack/cdc; a test or a benchmark
# points these at its own database, topic and directory and runs a worker beside it.
CDC_HOME="${TOKENDIST_CDC_HOME:-$ST/cdc}"
CDC_NAME="${TOKENDIST_CDC_NAME:-tokendist_outbox}" # connector, slot, publication, topic prefix
CDC_DATABASE="${TOKENDIST_CDC_DATABASE:-tokendist}"
CDC_TOPIC="${TOKENDIST_CDC_TOPIC:-payments.confirmed}"
CDC_REST_PORT="${TOKENDIST_CDC_REST_PORT:-$((KAFKA_PORT0 + 991))}" # 29092 -> 30083
DEBEZIUM_VERSION=3.6.1.Final
OPERATOR_KEY=0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80 # anvil dev account #0
DEPLOYER_KEY=0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d # anvil dev account #1
# 3 JVMs must fit on a 2-core machine beside the tests, hence the small heap.
KJAVA=(java -Xms128m -Xmx384m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties")

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }
fail() { log "ERROR: $1; last lines of $2:"; tail -n 40 "$2" >&2 || true; exit 1; }
now() { date +%s.%N; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
# A process whose /proc entry is gone may still hold its socket for a moment (a big anvil
# state being written out): a restart right away would find the port taken.
wait_port_closed() { # port
  local i
  for ((i = 0; i < 100; i++)); do port_open "$1" || return 0; sleep 0.1; done
  log "port $1 still open 10s after its process stopped"
}

# ---------------------------------------------------------------- processes
# A pid file alone can be stale (reboot, pid reuse) and a zombie still answers kill -0,
# so a process only counts as ours while its command line matches.
pid_alive() { # pidfile pattern
  local pid
  [[ -s $1 ]] && pid=$(<"$1") || return 1
  kill -0 "$pid" 2>/dev/null && grep -q -- "$2" < <(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)
}
stop_pid() { # pidfile pattern [signal]
  local pid i
  pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid=$(<"$1")
  kill -"${3:-TERM}" "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do pid_alive "$1" "$2" || break; sleep 0.1; done
  if pid_alive "$1" "$2"; then
    log "pid $pid still alive 30s after SIG${3:-TERM}; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
# setsid detaches services from the caller's session, so a Ctrl-C or a CI step ending
# after `up` does not take them down.
spawn() { # pidfile logfile cmd...
  setsid "${@:3}" </dev/null >>"$2" 2>&1 &
  echo $! >"$1"
}
wait_for() { # what pidfile pattern logfile check-cmd...
  local what=$1 pf=$2 pat=$3 lf=$4 end=$((SECONDS + TIMEOUT))
  shift 4
  until "$@"; do
    pid_alive "$pf" "$pat" || fail "$what exited during startup" "$lf"
    ((SECONDS < end)) || fail "$what not ready after ${TIMEOUT}s" "$lf"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- PostgreSQL
pg_bin() {
  local c=(/usr/lib/postgresql/*/bin/initdb)
  [[ -x ${c[-1]} ]] && dirname "${c[-1]}"
}
PGBIN=$(pg_bin || true)
# initdb/postgres refuse to run as root, so under root the cluster belongs to `postgres`.
as_pg() {
  if ((EUID == 0)); then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}
apt_install() { # debian-package what-it-is
  ((EUID == 0)) || die "$2 missing: run 'sudo apt-get install -y $1'"
  log "installing $2 with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$LOGS/apt.log" 2>&1 || fail "apt-get update failed" "$LOGS/apt.log"
  apt-get install -y -qq "$1" >>"$LOGS/apt.log" 2>&1 || fail "apt-get install failed" "$LOGS/apt.log"
}
ensure_pg_installed() {
  [[ -n $PGBIN ]] && return 0
  apt_install postgresql "PostgreSQL server binaries"
  PGBIN=$(pg_bin) || die "apt-get installed postgresql but no initdb found"
}
# Not a service of the stack: the alert rules' checks (promtool) and the alert test
# (prometheus) run them; Debian's package has both.
ensure_prometheus_installed() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return 0
  apt_install prometheus "Prometheus (prometheus, promtool)"
}
ensure_pg_cluster() {
  mkdir -p "$ST/pg" "$ST/pgsock"
  touch "$LOGS/postgres.log"
  if ((EUID == 0)); then
    id -u postgres >/dev/null 2>&1 ||
      useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin postgres
    chown postgres: "$ST/pg" "$ST/pgsock" "$LOGS/postgres.log"
    as_pg test -w "$ST/pg" || die "user postgres cannot reach $ST (a parent directory is not searchable)"
  fi
  chmod 700 "$ST/pg"
  [[ -f $ST/pg/PG_VERSION ]] && return 0
  log "initdb $ST/pg"
  as_pg "$PGBIN/initdb" -D "$ST/pg" -U tokendist --auth=trust -E UTF8 --locale=C \
    >"$LOGS/initdb.log" 2>&1 || fail "initdb failed" "$LOGS/initdb.log"
  # Path-dependent settings (socket dir) go on the pg_ctl command line instead, so the
  # cluster survives the checkout being moved; so does wal_level=logical (Debezium's
  # replication slots), which then also reaches clusters made before it was added.
  cat >>"$ST/pg/postgresql.conf" <<EOF
# tokendist stack
listen_addresses = '$HOST'
port = $PG_PORT
max_connections = 300
shared_buffers = 64MB
EOF
}
pg_running() { [[ -n $PGBIN && -f $ST/pg/PG_VERSION ]] && as_pg "$PGBIN/pg_ctl" status -D "$ST/pg" >/dev/null 2>&1; }
start_pg() {
  ensure_pg_cluster
  if secure; then pg_secure_configure; fi
  if pg_running; then
    log "postgres already running"
  else
    port_open $PG_PORT && die "port $PG_PORT is in use by a process this stack did not start"
    as_pg "$PGBIN/pg_ctl" start -w -t "$TIMEOUT" -D "$ST/pg" -l "$LOGS/postgres.log" \
      -o "-p $PG_PORT -k '$ST/pgsock' -c listen_addresses=$HOST -c wal_level=logical" >/dev/null ||
      fail "postgres did not start" "$LOGS/postgres.log"
  fi
  # Over the Unix socket: the owner's login there needs no password, in secure mode too.
  local psql=("$PGBIN/psql" -h "$ST/pgsock" -p $PG_PORT -U tokendist -d postgres -qtAX)
  [[ -n $("${psql[@]}" -c "select 1 from pg_database where datname = 'tokendist'") ]] ||
    "${psql[@]}" -c "create database tokendist" >/dev/null
  if secure; then pg_secure_roles; fi
}

# ---------------------------------------------------------------- PostgreSQL, secured
# Secure mode (up --secure or TOKENDIST_SECURE=1; recorded in $ST/secure): TLS with a
# certificate of the stack's CA, TCP only through hostssl with scram-sha-256, and one login
# per component role (tokendist/core/grants.sql) with its own password. The owner keeps a
# password-less login on the stack's Unix socket, for the stack's own setup.
PG_COMPONENTS=(webhook relay consumer operator)
secure() { [[ $(cat "$ST/secure" 2>/dev/null) == 1 ]]; }
secret() { # name -> its password, made on first use
  local f="$ST/secrets/$1.password"
  if [[ ! -s $f ]]; then mkdir -p "$ST/secrets"; (umask 077 && openssl rand -hex 24 >"$f"); fi
  cat "$f"
}
pg_secure_configure() { # before the server starts: certificate, TLS settings, pg_hba
  bash "$HERE/tls.sh" "$ST/tls" pg
  install -m 600 "$ST/tls/pg.crt" "$ST/pg/server.crt"
  install -m 600 "$ST/tls/pg.key" "$ST/pg/server.key"
  printf '%s\n' "# tokendist stack, secure mode: no TCP connection without TLS and a password" \
    "local    all  tokendist             trust" \
    "hostssl  all  all        $HOST/32   scram-sha-256" >"$ST/pg/pg_hba.conf"
  grep -q '^ssl = on' "$ST/pg/postgresql.conf" ||
    printf '%s\n' "# tokendist stack, secure mode" "ssl = on" "ssl_cert_file = 'server.crt'" \
      "ssl_key_file = 'server.key'" "ssl_min_protocol_version = 'TLSv1.2'" \
      "password_encryption = 'scram-sha-256'" >>"$ST/pg/postgresql.conf"
  if ((EUID == 0)); then chown postgres: "$ST/pg/server.crt" "$ST/pg/server.key" "$ST/pg/pg_hba.conf"; fi
  if pg_running; then as_pg "$PGBIN/pg_ctl" reload -D "$ST/pg" >/dev/null; fi
}
pg_secure_roles() { # the server is up: each role may log in, with its own password
  local psql=("$PGBIN/psql" -h "$ST/pgsock" -p $PG_PORT -U tokendist -d postgres -qtAX -v ON_ERROR_STOP=1)
  local who sql="ALTER ROLE tokendist PASSWORD '$(secret pg-owner)';"
  for who in "${PG_COMPONENTS[@]}"; do
    # Created here when no database of the cluster has migrated yet (0016 then skips it).
    sql+="DO \$\$ BEGIN CREATE ROLE tokendist_$who; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;"
    sql+="ALTER ROLE tokendist_$who LOGIN PASSWORD '$(secret "pg-$who")';"
  done
  "${psql[@]}" -c "$sql" >/dev/null
}
pg_dsn() { # owner|webhook|relay|consumer|operator [database]: verifies the server against the CA
  local user=tokendist
  [[ $1 == owner ]] || user="tokendist_$1"
  printf 'postgresql://%s:%s@localhost:%s/%s?sslmode=verify-full&sslrootcert=%s' \
    "$user" "$(secret "pg-$1")" "$PG_PORT" "${2:-tokendist}" "$ST/tls/ca.crt"
}
pg_secure_env() { # the owner for migrations and tests; each component its own role
  echo "export TOKENDIST_DATABASE_URL='$(pg_dsn owner)'"
  echo "export TOKENDIST_WEBHOOK_DATABASE_URL='$(pg_dsn webhook)'"
  echo "export TOKENDIST_RELAY_DATABASE_URL='$(pg_dsn relay)'"
  echo "export TOKENDIST_CONSUMER_DATABASE_URL='$(pg_dsn consumer)'"
  echo "export TOKENDIST_SECURE_OPERATOR_DATABASE_URL='$(pg_dsn operator)'"
  echo "export TOKENDIST_SECURE_PG_CA=$ST/tls/ca.crt"
}
stop_pg() { if pg_running; then as_pg "$PGBIN/pg_ctl" stop -D "$ST/pg" -m fast -w >/dev/null; fi; }

# ---------------------------------------------------------------- Kafka
mode() { cat "$ST/kafka.mode" 2>/dev/null || echo 1; }
kport() { echo $((KAFKA_PORT0 + 100 * ($1 - 1))); }
cport() { echo $((KAFKA_PORT0 + 1 + 100 * ($1 - 1))); }
kbase() { if secure; then echo "$ST/kafka-$(mode)b-secure"; else echo "$ST/kafka-$(mode)b"; fi; }
kdir() { echo "$(kbase)/node$1"; } # each mode has its own data, never mixed
klogdir() { echo "$LOGS/kafka-$(mode)b-node$1"; }
kpid() { echo "$RUN/kafka-$1.pid"; }
bootstrap() {
  local n s=
  for ((n = 1; n <= $(mode); n++)); do s+="${s:+,}$HOST:$(kport $n)"; done
  echo "$s"
}
kafka_any_running() {
  local f
  for f in "$RUN"/kafka-*.pid; do pid_alive "$f" kafka.Kafka && return 0; done
  return 1
}
# The Apache tarball is unreachable here; Maven Central has the broker as kafka_2.13.
ensure_kafka_libs() {
  local want b
  want=$(sha256sum "$HERE/kafka/pom.xml" | cut -d' ' -f1)
  [[ -f $LIBS/.pom-sha256 && $(<"$LIBS/.pom-sha256") == "$want" ]] && return 0
  log "resolving Kafka jars with Maven (cache: $CACHE/m2)"
  local mvn=(mvn -q -B -f "$HERE/kafka/pom.xml" "-Dmaven.repo.local=$CACHE/m2")
  rm -rf "$LIBS" "$LIBS.tmp"
  "${mvn[@]}" dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$LIBS.tmp" \
    >"$LOGS/mvn.log" 2>&1 || fail "maven could not resolve Kafka" "$LOGS/mvn.log"
  # Zero bindings means a silent broker (no "started" line to wait for); two is a lottery.
  "${mvn[@]}" dependency:tree "-DoutputFile=$LIBS.tmp/.tree" >>"$LOGS/mvn.log" 2>&1 ||
    fail "mvn dependency:tree failed" "$LOGS/mvn.log"
  b=$(grep -cE 'log4j-slf4j2?-impl|slf4j-(simple|reload4j|log4j12|jdk14|nop)|logback-classic' "$LIBS.tmp/.tree" || true)
  [[ $b == 1 ]] || die "expected exactly one slf4j binding, found $b (see $LIBS.tmp/.tree)"
  echo "$want" >"$LIBS.tmp/.pom-sha256"
  mv "$LIBS.tmp" "$LIBS"
}
kafka_props() { # node -> server.properties for the current mode
  local n=$1 m i voters=
  m=$(mode) # replication factor = broker count; min ISR 2 of 3 tolerates one dead broker
  local rf=$m isr=$((m == 3 ? 2 : 1))
  for ((i = 1; i <= m; i++)); do voters+="${voters:+,}$i@$HOST:$(cport $i)"; done
  cat <<EOF
node.id=$n
process.roles=broker,controller
controller.quorum.voters=$voters
listeners=PLAINTEXT://$HOST:$(kport "$n"),CONTROLLER://$HOST:$(cport "$n")
advertised.listeners=PLAINTEXT://$HOST:$(kport "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$(kdir "$n")/data
num.partitions=8
auto.create.topics.enable=false
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
group.initial.rebalance.delay.ms=0
EOF
}
ensure_kafka_node() {
  local n=$1 d lg cidf scram=()
  cidf="$(kbase)/cluster.id" d=$(kdir "$n") lg=$(klogdir "$n")
  mkdir -p "$d" "$lg"
  # Regenerated so edits to this script apply; later keys win, so --secure's come last.
  (umask 077 && { kafka_props "$n"; if secure; then kafka_secure_props "$n"; fi; } >"$d/server.properties")
  [[ -f $d/data/meta.properties ]] && return 0
  if secure; then mapfile -t scram < <(kafka_scram_args); fi
  [[ -s $cidf ]] || "${KJAVA[@]}" "-Dkafka.logs.dir=$lg" -cp "$LIBS/*" kafka.tools.StorageTool random-uuid |
    tail -n 1 >"$cidf"
  # Static quorum (controller.quorum.voters): every node formatted with one cluster id.
  "${KJAVA[@]}" "-Dkafka.logs.dir=$lg" -cp "$LIBS/*" kafka.tools.StorageTool format \
    -t "$(<"$cidf")" -c "$d/server.properties" "${scram[@]}" >"$lg/format.log" 2>&1 ||
    fail "formatting kafka node $n failed" "$lg/format.log"
}
start_kafka_node() {
  local n=$1 lg="$(klogdir "$1")"
  if pid_alive "$(kpid "$n")" kafka.Kafka; then log "kafka node $n already running"; return 0; fi
  port_open "$(kport "$n")" && die "port $(kport "$n") is in use by a process this stack did not start"
  ensure_kafka_node "$n"
  touch "$lg/server.log"
  # server.log is appended across restarts: remember where this start begins.
  stat -c %s "$lg/server.log" >"$RUN/kafka-$n.logoffset"
  # JVM-level failures (bad flag, missing class) print to stdout: keep them in the same file.
  spawn "$(kpid "$n")" "$lg/server.log" "${KJAVA[@]}" "-Dkafka.logs.dir=$lg" \
    -cp "$LIBS/*" kafka.Kafka "$(kdir "$n")/server.properties"
}
kafka_started() { # log offset port
  grep -q 'Kafka Server started' < <(tail -c +$(($2 + 1)) "$1") && port_open "$3"
}
wait_kafka_node() {
  local n=$1 lf="$(klogdir "$1")/server.log"
  wait_for "kafka node $n" "$(kpid "$n")" kafka.Kafka "$lf" \
    kafka_started "$lf" "$(cat "$RUN/kafka-$n.logoffset" 2>/dev/null || echo 0)" "$(kport "$n")"
}
# All nodes first: in 3-broker mode none finishes starting before a controller quorum exists.
start_kafka() { ensure_kafka_libs; for n in $(seq "$(mode)"); do start_kafka_node "$n"; done; }
wait_kafka() { for n in $(seq "$(mode)"); do wait_kafka_node "$n"; done; }
stop_kafka() { # all nodes at once; in 3-broker mode they would otherwise wait on each other
  local f n nodes=()
  for f in "$RUN"/kafka-*.pid; do
    if [[ -e $f ]]; then n=${f##*/kafka-}; nodes+=("${n%.pid}"); stop_pid "$f" kafka.Kafka & fi
  done
  wait
  for n in "${nodes[@]}"; do wait_port_closed "$(kport "$n")"; done
}

# ---------------------------------------------------------------- anvil
anvil_bin() {
  local a=amd64
  if [[ $(uname -m) == aarch64 ]]; then a=arm64; fi
  echo "$NPM_DIR/node_modules/@foundry-rs/anvil-linux-$a/bin/anvil"
}
ensure_anvil() {
  local want
  want=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)
  [[ -x $(anvil_bin) && $(cat "$NPM_DIR/.lock-sha256" 2>/dev/null) == "$want" ]] && return 0
  log "installing anvil with npm ci (cache: $CACHE/npm)"
  mkdir -p "$NPM_DIR"
  cp "$HERE/package.json" "$HERE/package-lock.json" "$NPM_DIR/"
  # --ignore-scripts: the wrapper's postinstall only fetches a binary when the platform
  # package is missing, and the lock file pins that package anyway.
  (cd "$NPM_DIR" && npm ci --ignore-scripts --no-audit --no-fund --cache "$CACHE/npm") \
    >"$LOGS/npm.log" 2>&1 || fail "npm ci failed" "$LOGS/npm.log"
  [[ -x $(anvil_bin) ]] || die "npm ci did not install the platform binary $(anvil_bin)"
  echo "$want" >"$NPM_DIR/.lock-sha256"
}
anvil_ready() {
  [[ $(curl -sf -m 2 -H 'content-type: application/json' \
    -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' \
    "http://$HOST:$ANVIL_PORT" 2>/dev/null) == *'"0x7a69"'* ]]
}
# anvil's periodic state dump is not atomic with block production: a dump taken while a
# block is being sealed can hold the block's state changes but not the block (its receipts
# and logs), and a restart from it loses mined logs. Stop mining, let one more dump run,
# then stop: the state on disk matches the last block.
# The port comes from the stack's own record, not the caller's environment: a `down` of
# one stack run with another's ports in the environment once paused that other node's
# mining (a benchmark beside it stalled for eight minutes).
stop_anvil() {
  local port
  port=$(cat "$RUN/anvil.port" 2>/dev/null || echo "$ANVIL_PORT")
  if pid_alive "$RUN/anvil.pid" anvil; then
    curl -sf -m 2 -H 'content-type: application/json' \
      -d '{"jsonrpc":"2.0","id":1,"method":"evm_setIntervalMining","params":[0]}' \
      "http://$HOST:$port" >/dev/null 2>&1 || true
    sleep 1.5
  fi
  stop_pid "$RUN/anvil.pid" anvil
  wait_port_closed "$port"
}
start_anvil() {
  ensure_anvil
  if pid_alive "$RUN/anvil.pid" anvil; then log "anvil already running"; return 0; fi
  port_open $ANVIL_PORT && die "port $ANVIL_PORT is in use by a process this stack did not start"
  # Interval mining: automine stalls under many concurrent same-sender txs (foundry#10122).
  # Sub-second blocks keep the test suite fast. The chain state is dumped to disk every
  # second and on exit, so a restarted node (fault tests) keeps what was mined.
  # --prune-history: by default anvil spills every historical state past 500 blocks to
  # ~/.foundry/anvil/tmp and never removes it when killed; four blocks a second filled
  # 76 GB in a day of fault runs. Nothing here reads state older than the last blocks
  # (receipts and logs are kept whole).
  mkdir -p "$ST/anvil"
  # A dump cut short (the machine stopped mid-write) is a truncated JSON file anvil
  # refuses to start from: keep it aside and start from a fresh chain, saying so.
  if [ -s "$ST/anvil/state.json" ] &&
    ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$ST/anvil/state.json" 2>/dev/null; then
    mv "$ST/anvil/state.json" "$ST/anvil/state.json.corrupt"
    log "anvil's state file was unreadable (kept as state.json.corrupt): starting a fresh chain"
  fi
  echo "$ANVIL_PORT" >"$RUN/anvil.port"
  spawn "$RUN/anvil.pid" "$LOGS/anvil.log" "$(anvil_bin)" --host $HOST --port $ANVIL_PORT \
    --chain-id 31337 --block-time "${TOKENDIST_ANVIL_BLOCK_TIME:-0.25}" \
    --prune-history 256 --state "$ST/anvil/state.json" --state-interval 1
}
wait_anvil() { wait_for anvil "$RUN/anvil.pid" anvil "$LOGS/anvil.log" anvil_ready; }

# ---------------------------------------------------------------- Debezium CDC (Kafka Connect)
# Kafka's own connect-runtime (the broker's version) from Maven Central; Debezium's
# PostgreSQL plugin archive (connector, JDBC driver, EventRouter) unpacked into plugin.path
# beside our one transform, compiled here with the JDK's javac.
ensure_cdc_libs() {
  local want mvn
  want=$(cat "$HERE/cdc/pom.xml" "$HERE/cdc/smt/src/tokendist/cdc/"*.java | sha256sum | cut -d' ' -f1)
  [[ -f $CDC_LIBS/.sha256 && $(<"$CDC_LIBS/.sha256") == "$want" ]] && return 0
  log "resolving Kafka Connect and Debezium $DEBEZIUM_VERSION with Maven (cache: $CACHE/m2)"
  mvn=(mvn -q -B -f "$HERE/cdc/pom.xml" "-Dmaven.repo.local=$CACHE/m2")
  rm -rf "$CDC_LIBS" "$CDC_LIBS.tmp"
  mkdir -p "$CDC_LIBS.tmp/plugins/tokendist-outbox-headers" "$CDC_LIBS.tmp/smt"
  "${mvn[@]}" dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$CDC_LIBS.tmp/worker" \
    >"$LOGS/mvn-cdc.log" 2>&1 || fail "maven could not resolve Kafka Connect" "$LOGS/mvn-cdc.log"
  # Not with its transitive dependencies: one of them (debezium-storage-chronicle-queue)
  # is not on Central. The plugin archive holds everything the connector needs.
  "${mvn[@]}" dependency:copy "-Dartifact=io.debezium:debezium-connector-postgres:$DEBEZIUM_VERSION:tar.gz:plugin" \
    "-DoutputDirectory=$CDC_LIBS.tmp" >>"$LOGS/mvn-cdc.log" 2>&1 ||
    fail "maven could not fetch the Debezium plugin archive" "$LOGS/mvn-cdc.log"
  tar -xzf "$CDC_LIBS.tmp"/debezium-connector-postgres-*-plugin.tar.gz -C "$CDC_LIBS.tmp/plugins"
  rm "$CDC_LIBS.tmp"/debezium-connector-postgres-*-plugin.tar.gz
  javac -nowarn -d "$CDC_LIBS.tmp/smt" -cp "$CDC_LIBS.tmp/worker/*" "$HERE/cdc/smt/src/tokendist/cdc/"*.java \
    >"$LOGS/javac-cdc.log" 2>&1 || fail "compiling the outbox headers transform failed" "$LOGS/javac-cdc.log"
  cp -r "$HERE/cdc/smt/META-INF" "$CDC_LIBS.tmp/smt/"
  jar cf "$CDC_LIBS.tmp/plugins/tokendist-outbox-headers/tokendist-outbox-headers.jar" -C "$CDC_LIBS.tmp/smt" .
  rm -rf "$CDC_LIBS.tmp/smt"
  echo "$want" >"$CDC_LIBS.tmp/.sha256"
  mv "$CDC_LIBS.tmp" "$CDC_LIBS"
}
cdc_render() { # template -> stdout, with this worker's values
  sed -e "s|@BOOTSTRAP@|$(bootstrap)|g" -e "s|@HOME@|$CDC_HOME|g" \
    -e "s|@OFFSET_FLUSH_MS@|${TOKENDIST_CDC_OFFSET_FLUSH_MS:-1000}|g" \
    -e "s|@PLUGIN_PATH@|$CDC_LIBS/plugins|g" -e "s|@REST_PORT@|$CDC_REST_PORT|g" \
    -e "s|@NAME@|$CDC_NAME|g" -e "s|@PG_HOST@|$HOST|g" -e "s|@PG_PORT@|$PG_PORT|g" \
    -e "s|@PG_USER@|tokendist|g" -e "s|@PG_DATABASE@|$CDC_DATABASE|g" \
    -e "s|@TOPIC@|$CDC_TOPIC|g" -e "s|@PARTITIONS@|${TOKENDIST_TOPIC_PARTITIONS:-16}|g" \
    -e "s|@HEARTBEAT_MS@|${TOKENDIST_CDC_HEARTBEAT_MS:-10000}|g" "$1"
}
cdc_ready() { # the connector and its task both RUNNING; a FAILED task is fatal
  local s
  s=$(curl -sf -m 2 "http://$HOST:$CDC_REST_PORT/connectors/$CDC_NAME/status" 2>/dev/null) || return 1
  [[ $s == *'"state":"FAILED"'* ]] && { log "connector status: $s"; fail "the CDC connector failed" "$CDC_HOME/connect.log"; }
  [[ $s =~ \"connector\":\{\"state\":\"RUNNING\" && $s =~ \"tasks\":\[\{[^]]*\"state\":\"RUNNING\" ]]
}
# The connector's publication names the outbox table: the database must be migrated first
# (idempotent; the stack's own database only, a test's or benchmark's comes migrated).
migrate_for_cdc() {
  local py="${TOKENDIST_PYTHON:-$ROOT/.venv/bin/python}"
  [[ -x $py ]] || die "--cdc migrates the database with the project's venv: run 'make deps' first"
  (eval "$(cmd_env)" && TOKENDIST_DATABASE_URL="postgresql://tokendist@$HOST:$PG_PORT/$CDC_DATABASE" \
    "$py" -m tokendist.cli db migrate) >"$LOGS/migrate-cdc.log" 2>&1 ||
    fail "tokendist db migrate failed" "$LOGS/migrate-cdc.log"
}
start_cdc() {
  ensure_cdc_libs
  mkdir -p "$CDC_HOME"
  if pid_alive "$CDC_HOME/connect.pid" ConnectStandalone; then log "CDC worker already running"; return 0; fi
  if [[ -z ${TOKENDIST_CDC_HOME:-} ]]; then migrate_for_cdc; fi
  port_open "$CDC_REST_PORT" && die "port $CDC_REST_PORT is in use by a process this stack did not start"
  cdc_render "$HERE/cdc/worker.properties" >"$CDC_HOME/worker.properties"
  cdc_render "$HERE/cdc/outbox-connector.properties" >"$CDC_HOME/outbox-connector.properties"
  spawn "$CDC_HOME/connect.pid" "$CDC_HOME/connect.log" java -Xms128m -Xmx384m -XX:+UseG1GC \
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$HERE/cdc/log4j2.properties" \
    -cp "$CDC_LIBS/worker/*" org.apache.kafka.connect.cli.ConnectStandalone \
    "$CDC_HOME/worker.properties" "$CDC_HOME/outbox-connector.properties"
}
wait_cdc() { wait_for "CDC worker" "$CDC_HOME/connect.pid" ConnectStandalone "$CDC_HOME/connect.log" cdc_ready; }
stop_cdc() { stop_pid "$CDC_HOME/connect.pid" ConnectStandalone "${1:-TERM}"; }

# ---------------------------------------------------------------- secured mode (--secure)
# `up --secure` (or TOKENDIST_SECURE=1) starts the same services locked down: Kafka's client
# listener is SASL_SSL (SCRAM-SHA-512, the stack's own CA from tls.sh) with KRaft's
# StandardAuthorizer, and each component has its own principal and ACLs (SecureSetup.java).
# The choice is recorded with the stack (like the broker count) and its data kept apart.
# Passwords are random, made once per stack under $ST/secrets; `env` exports them.
# The broker's own principal (inter-broker traffic) and `admin` (setup and tests) are super
# users; relay, consumer and operator get only their ACLs; the webhook has no principal.
KAFKA_PRINCIPALS=(broker admin relay consumer operator)
kafka_jaas() { # principal
  echo "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$1\" password=\"$(secret "kafka-$1")\";"
}
# SCRAM credentials live in the cluster metadata: written at format time (KIP-900), so the
# broker authenticates its first client without a bootstrap user.
kafka_scram_args() {
  local p
  for p in "${KAFKA_PRINCIPALS[@]}"; do
    printf '%s\n' --add-scram "SCRAM-SHA-512=[name=$p,password=$(secret "kafka-$p")]"
  done
}
# The controller listener stays PLAINTEXT on 127.0.0.1: its (anonymous) peers are the
# nodes themselves, which must be super users for the quorum and broker registration.
kafka_secure_props() { # node
  local n=$1
  cat <<EOF
# --secure
listeners=SASL_SSL://$HOST:$(kport "$n"),CONTROLLER://$HOST:$(cport "$n")
advertised.listeners=SASL_SSL://$HOST:$(kport "$n")
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=$(kafka_jaas broker)
ssl.keystore.type=PEM
ssl.keystore.location=$ST/tls/kafka-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$ST/tls/ca.crt
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:broker;User:admin;User:ANONYMOUS
EOF
}
kafka_tls() { # the broker's certificate, and the one PEM file Kafka's keystore reads
  bash "$HERE/tls.sh" "$ST/tls" kafka
  (umask 077 && cat "$ST/tls/kafka.key" "$ST/tls/kafka.crt" >"$ST/tls/kafka-keystore.pem")
}
kafka_client_props() { # principal -> Java client properties
  cat <<EOF
bootstrap.servers=$(bootstrap)
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$(kafka_jaas "$1")
ssl.truststore.type=PEM
ssl.truststore.location=$ST/tls/ca.crt
EOF
}
# Topics and ACLs, by `admin`, once the broker answers (idempotent: every `up` runs it).
kafka_secure_setup() {
  local f="$ST/secrets/kafka-admin.properties" lf="$LOGS/secure-setup.log"
  (umask 077 && kafka_client_props admin >"$f")
  "${KJAVA[@]}" "-Dkafka.logs.dir=$LOGS/secure-setup" -cp "$LIBS/*" "$HERE/kafka/SecureSetup.java" \
    "$f" "${TOKENDIST_TOPIC:-payments.confirmed}" "${TOKENDIST_CONSUMER_GROUP:-tokendist-distributor}" \
    "${TOKENDIST_TOPIC_PARTITIONS:-16}" "$(mode)" >"$lf" 2>&1 || fail "creating the secured topics and ACLs failed" "$lf"
}
# Not TOKENDIST_SECURE itself: a shell that evaluated this must not make the next `up` of
# another stack a secured one.
kafka_secure_env() {
  local p
  echo "export TOKENDIST_KAFKA_SECURITY_PROTOCOL=SASL_SSL"
  echo "export TOKENDIST_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
  echo "export TOKENDIST_KAFKA_CA_FILE=$ST/tls/ca.crt"
  echo "export TOKENDIST_KAFKA_USERNAME=admin"
  echo "export TOKENDIST_KAFKA_PASSWORD=$(secret kafka-admin)"
  for p in relay consumer operator; do
    echo "export TOKENDIST_SECURE_${p^^}_PASSWORD=$(secret "kafka-$p")"
  done
}

# ---------------------------------------------------------------- local-kms (AWS KMS API)
# nsmithuk/local-kms: the KMS API over a LevelDB directory, secp256k1 signing included.
# Built from the Go module proxy once per version (GOBIN under $ST); it accepts any
# credentials, and listens on every interface (it has no host setting).
# Beside anvil's (28545 -> 28600), so a second stack on other ports gets its own.
KMS_PORT="${TOKENDIST_KMS_PORT:-$((ANVIL_PORT + 55))}"
KMS_REGION=us-east-1
LOCAL_KMS_VERSION=v0.0.0-20260228092603-2a5e92d09ab6
KMS_GOBIN="$ST/go/bin"
# The official toolchain's usual place is not always on PATH (a CI step's environment).
go_bin() { command -v go || { [[ -x /usr/local/go/bin/go ]] && echo /usr/local/go/bin/go; }; }
ensure_kms() {
  local go
  [[ -x $KMS_GOBIN/local-kms && $(cat "$KMS_GOBIN/.version" 2>/dev/null) == "$LOCAL_KMS_VERSION" ]] && return 0
  go=$(go_bin) || { apt_install golang-go "Go (builds local-kms)"; go=$(go_bin) || die "no go after installing golang-go"; }
  log "building local-kms $LOCAL_KMS_VERSION with go install"
  mkdir -p "$KMS_GOBIN"
  GOBIN="$KMS_GOBIN" GOFLAGS=-mod=mod "$go" install "github.com/nsmithuk/local-kms@$LOCAL_KMS_VERSION" \
    >"$LOGS/go-kms.log" 2>&1 || fail "go install local-kms failed" "$LOGS/go-kms.log"
  echo "$LOCAL_KMS_VERSION" >"$KMS_GOBIN/.version"
}
kms_ready() {
  [[ $(curl -sf -m 2 -X POST -H 'content-type: application/x-amz-json-1.1' \
    -H 'x-amz-target: TrentService.ListKeys' -d '{}' "http://$HOST:$KMS_PORT/" 2>/dev/null) == *'"Keys"'* ]]
}
start_kms() {
  ensure_kms
  if pid_alive "$RUN/kms.pid" local-kms; then log "local-kms already running"; return 0; fi
  port_open "$KMS_PORT" && die "port $KMS_PORT is in use by a process this stack did not start"
  mkdir -p "$ST/kms"
  echo "$KMS_PORT" >"$RUN/kms.port"
  spawn "$RUN/kms.pid" "$LOGS/kms.log" env PORT="$KMS_PORT" KMS_REGION=$KMS_REGION \
    KMS_DATA_PATH="$ST/kms" KMS_SEED_PATH="$ST/kms/seed.yaml" "$KMS_GOBIN/local-kms"
}
wait_kms() { wait_for local-kms "$RUN/kms.pid" local-kms "$LOGS/kms.log" kms_ready; }
stop_kms() {
  stop_pid "$RUN/kms.pid" local-kms
  wait_port_closed "$(cat "$RUN/kms.port" 2>/dev/null || echo "$KMS_PORT")"
}
kms_env() {
  echo "export TOKENDIST_KMS_ENDPOINT_URL=http://$HOST:$KMS_PORT"
  echo "export TOKENDIST_KMS_REGION=$KMS_REGION"
  # local-kms checks no signature, but boto3 signs every request: any credentials do.
  echo "export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-tokendist-local}"
  echo "export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-tokendist-local}"
}

# ---------------------------------------------------------------- commands
# Plain ';' on purpose: set -e is suspended inside functions called from && lists.
start_service() {
  case ${1:-} in
  pg) ensure_pg_installed; start_pg ;;
  kafka) start_kafka; wait_kafka; if secure; then kafka_secure_setup; fi ;;
  anvil) start_anvil; wait_anvil ;;
  cdc) start_cdc; wait_cdc ;;
  kms) start_kms; wait_kms ;;
  *) die "unknown service '${1:-}' (pg|kafka|anvil|cdc|kms)" ;;
  esac
}
stop_service() {
  case ${1:-} in
  pg) stop_pg ;;
  kafka) stop_kafka ;;
  anvil) stop_anvil ;;
  cdc) stop_cdc ;;
  kms) stop_kms ;;
  *) die "unknown service '${1:-}' (pg|kafka|anvil|cdc|kms)" ;;
  esac
}
cmd_up() {
  local brokers=1 cdc=${TOKENDIST_CDC:-0} sec=${TOKENDIST_SECURE:-0} t0 p1 p2 p3= p4
  t0=$(now)
  while (($#)); do
    case $1 in
    --brokers) brokers=${2:-}; shift ;;
    --brokers=*) brokers=${1#*=} ;;
    --cdc) cdc=1 ;;
    --secure) sec=1 ;;
    *) die "usage: up [--brokers 1|3] [--cdc] [--secure]" ;;
    esac
    shift
  done
  [[ $brokers == 1 || $brokers == 3 ]] || die "--brokers must be 1 or 3"
  if kafka_any_running && [[ $(mode) != "$brokers" ]]; then
    die "Kafka is running with $(mode) broker(s); run 'stack/stack.sh down' first"
  fi
  [[ $sec == 0 || $sec == 1 ]] || die "TOKENDIST_SECURE must be 0 or 1"
  [[ $sec == 0 || $cdc == 0 ]] || die "--cdc does not run on the secured stack yet (its Connect worker speaks PLAINTEXT)"
  if kafka_any_running && [[ $(cat "$ST/secure" 2>/dev/null || echo 0) != "$sec" ]]; then
    die "Kafka is running $(secure && echo secured || echo unsecured); run 'stack/stack.sh down' first"
  fi
  echo "$brokers" >"$ST/kafka.mode"
  echo "$sec" >"$ST/secure"
  if secure; then kafka_tls; fi
  ensure_pg_installed
  ensure_prometheus_installed
  # The two downloads are independent; overlap them on a cold machine.
  ensure_kafka_libs & p1=$!
  ensure_anvil & p2=$!
  ensure_kms & p4=$!
  if [[ $cdc == 1 ]]; then ensure_cdc_libs & p3=$!; fi
  wait $p1; wait $p2; wait $p4; if [[ -n $p3 ]]; then wait $p3; fi
  start_kafka # JVM boot is the slow part: overlap it with Postgres and anvil
  start_anvil
  start_kms
  start_pg
  wait_anvil
  wait_kms
  wait_kafka
  if secure; then kafka_secure_setup; fi
  if [[ $cdc == 1 ]]; then start_cdc; wait_cdc; fi
  echo "postgres  postgresql://tokendist@$HOST:$PG_PORT/tokendist"
  echo "kafka     $(bootstrap)  ($brokers broker(s), Kafka $(kafka_version)$(secure && echo ', SASL_SSL + ACLs'))"
  echo "anvil     http://$HOST:$ANVIL_PORT  (chain id 31337, block time ${TOKENDIST_ANVIL_BLOCK_TIME:-0.25}s)"
  echo "kms       http://$HOST:$KMS_PORT  (local-kms, region $KMS_REGION)"
  if [[ $cdc == 1 ]]; then
    echo "cdc       Debezium $DEBEZIUM_VERSION in Kafka Connect, $CDC_DATABASE.outbox -> $CDC_TOPIC  (REST http://$HOST:$CDC_REST_PORT)"
  fi
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "stack up in %.1fs\n", b - a }'
}
kafka_version() { grep -ho 'Kafka version: [^ ]*' "$(klogdir 1)/server.log" 2>/dev/null | tail -n 1 | cut -d' ' -f3; }
cmd_down() {
  stop_service cdc
  stop_service kms
  stop_service anvil
  stop_service kafka
  stop_service pg
  log "stopped"
}
cmd_status() {
  local rc=0 n
  if pg_running; then echo "pg       up    $HOST:$PG_PORT"; else echo "pg       down"; rc=1; fi
  for ((n = 1; n <= $(mode); n++)); do
    if pid_alive "$(kpid $n)" kafka.Kafka && port_open "$(kport $n)"; then
      echo "kafka-$n  up    $HOST:$(kport $n)$(secure && echo '  SASL_SSL')"
    else echo "kafka-$n  down"; rc=1; fi
  done
  if pid_alive "$RUN/anvil.pid" anvil && anvil_ready; then echo "anvil    up    $HOST:$ANVIL_PORT"; else echo "anvil    down"; rc=1; fi
  if pid_alive "$RUN/kms.pid" local-kms && kms_ready; then echo "kms      up    $HOST:$KMS_PORT"; else echo "kms      down"; rc=1; fi
  if [[ -e $CDC_HOME/connect.pid ]]; then # only reported once started: it is optional
    if pid_alive "$CDC_HOME/connect.pid" ConnectStandalone && cdc_ready; then echo "cdc      up    $HOST:$CDC_REST_PORT"; else echo "cdc      down"; rc=1; fi
  fi
  return $rc
}
cmd_env() {
  if secure; then pg_secure_env; else
    echo "export TOKENDIST_DATABASE_URL=postgresql://tokendist@$HOST:$PG_PORT/tokendist"
  fi
  echo "export TOKENDIST_KAFKA_BOOTSTRAP=$(bootstrap)"
  echo "export TOKENDIST_RPC_URL=http://$HOST:$ANVIL_PORT"
  echo "export TOKENDIST_OPERATOR_KEY=$OPERATOR_KEY"
  echo "export TOKENDIST_DEPLOYER_KEY=$DEPLOYER_KEY"
  echo "export TOKENDIST_STACK_DIR=$ST"
  if secure; then kafka_secure_env; fi
  kms_env
}
broker_arg() {
  [[ ${1:-} =~ ^[1-3]$ ]] && (($1 <= $(mode))) || die "broker must be 1..$(mode) (running mode: $(mode) broker(s))"
}

main() {
  local cmd=${1:-}
  shift || true
  [[ $cmd == env ]] || mkdir -p "$RUN" "$LOGS"
  case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  start-service) start_service "${1:-}" ;;
  stop-service) stop_service "${1:-}" ;;
  restart-service) stop_service "${1:-}"; start_service "${1:-}" ;;
  kill-broker) broker_arg "${1:-}"; stop_pid "$(kpid "$1")" kafka.Kafka KILL ;;
  start-broker) broker_arg "${1:-}"; ensure_kafka_libs; start_kafka_node "$1"; wait_kafka_node "$1" ;;
  kill-cdc) stop_cdc KILL ;;
  cdc-libs) ensure_cdc_libs; echo "$CDC_LIBS" ;;
  *) sed -n '2,15p' "${BASH_SOURCE[0]}" >&2; exit 2 ;;
  esac
}
main "$@"
