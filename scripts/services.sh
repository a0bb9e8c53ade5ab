#!/usr/bin/env bash
# Local brokers for development and CI, all on 127.0.0.1, no Docker.
#
#   scripts/services.sh start  [nats|kafka|redis|all]...  (default: all) idempotent
#   scripts/services.sh stop   [nats|kafka|redis|all]   stops what this script started (pid files)
#   scripts/services.sh status [nats|kafka|redis|all]   exit 0 only if all named are serving
#   scripts/services.sh env                             the AGENTFLOW_TEST_* lines to export
#   scripts/services.sh logs   nats|kafka|redis         tail of a service's log
#   scripts/services.sh reset  [kafka|nats|all]         stop and wipe the data directory
#
# State (pid files, logs, data) lives in ${AGENTFLOW_SERVICES_DIR:-<repo>/.services}.
# Ports: AGENTFLOW_NATS_PORT (4222), AGENTFLOW_NATS_MONITOR_PORT (8222), AGENTFLOW_KAFKA_PORT
# (9092), AGENTFLOW_KAFKA_CONTROLLER_PORT (9093), AGENTFLOW_REDIS_PORT (6379).
#
# nats : Debian's nats-server with JetStream (-js), store in the state dir, monitoring on -m.
# kafka: Apache Kafka (version pinned in deploy/kafka/pom.xml) in KRaft mode, one node acting as
#        broker and controller. Jars come from Maven Central via `mvn dependency:copy-dependencies`
#        into ${AGENTFLOW_CACHE_DIR:-~/.cache/agentflow}/kafka-<version>/libs (fetched once).
#        auto.create.topics.enable=false: code must create its topics (admin client) as it would
#        have to on a production cluster; override with AGENTFLOW_KAFKA_AUTO_CREATE=true.
#        Data survives stop/start; it is wiped when the generated server.properties changes.
# redis: Debian's redis-server, no persistence (no RDB, no AOF).
#
# A port that already answers with the right protocol but was not started by this script is
# reported as "external" and used as is (start succeeds, stop leaves it alone).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${AGENTFLOW_SERVICES_DIR:-$REPO/.services}
CACHE=${AGENTFLOW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/agentflow}
HOST=127.0.0.1
NATS_PORT=${AGENTFLOW_NATS_PORT:-4222}
NATS_MONITOR_PORT=${AGENTFLOW_NATS_MONITOR_PORT:-8222}
KAFKA_PORT=${AGENTFLOW_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${AGENTFLOW_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${AGENTFLOW_KAFKA_HEAP:-768m}
KAFKA_AUTO_CREATE=${AGENTFLOW_KAFKA_AUTO_CREATE:-false}
REDIS_PORT=${AGENTFLOW_REDIS_PORT:-6379}
NATS_WAIT=${AGENTFLOW_NATS_WAIT:-20}
KAFKA_WAIT=${AGENTFLOW_KAFKA_WAIT:-55}
REDIS_WAIT=${AGENTFLOW_REDIS_WAIT:-20}
PYTHON=${PYTHON:-python3}
POM=$REPO/deploy/kafka/pom.xml
ALL_SERVICES=(nats kafka redis)

log() { printf '%s\n' "$*" >&2; }
die() { printf 'services.sh: error: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
elapsed() { local ms=$(( $(now_ms) - $1 )); printf '%d.%01ds' $((ms / 1000)) $(((ms % 1000) / 100)); }

# ---------------------------------------------------------------------------------- helpers
APT_UPDATED=0
ensure_pkg() { # ensure_pkg <binary path or name> <debian package>
    local bin=$1 pkg=$2
    if command -v "$bin" >/dev/null 2>&1 || [[ -x $bin ]]; then return 0; fi
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "$pkg is not installed and I am not root: apt-get install $pkg"
        sudo=(sudo)
    fi
    log "installing Debian package $pkg ..."
    if [[ $APT_UPDATED -eq 0 ]]; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2 \
        || die "apt-get install $pkg failed"
    command -v "$bin" >/dev/null 2>&1 || [[ -x $bin ]] || die "$pkg installed but $bin not found"
}

tcp_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

nats_answers() { # the server greets every connection with an INFO line
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1 && IFS= read -r line <&3 && [[ \$line == INFO* ]]" 2>/dev/null
}

nats_healthy() { # JetStream ready according to the monitoring endpoint
    curl -fsS --max-time 2 "http://$HOST:$NATS_MONITOR_PORT/healthz" 2>/dev/null | grep -q '"ok"'
}

redis_answers() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1 && printf 'PING\r\n' >&3 && IFS= read -r line <&3 && [[ \$line == +PONG* ]]" 2>/dev/null
}

# Kafka is ready when the broker serves metadata (not merely when the port accepts).
# Exit codes: 0 ready, 1 timed out, 2 process died, 3 aiokafka missing.
kafka_wait_metadata() { # <port> <timeout seconds> <pid or 0>
    "$PYTHON" - "$HOST:$1" "$2" "$3" <<'PY'
import asyncio, os, sys, time
try:
    from aiokafka.admin import AIOKafkaAdminClient
except Exception:
    sys.exit(3)
import logging
logging.disable(logging.CRITICAL)
bootstrap, limit, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])

def alive() -> bool:
    if not pid:
        return True
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

async def once() -> bool:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await asyncio.wait_for(client.start(), 5)
        await asyncio.wait_for(client.list_topics(), 5)
        return True
    except Exception:
        return False
    finally:
        try:
            await asyncio.wait_for(client.close(), 2)
        except Exception:
            pass

async def main() -> int:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not alive():
            return 2
        if await once():
            return 0
        await asyncio.sleep(0.3)
    return 1

sys.exit(asyncio.run(main()))
PY
}

kafka_answers() { tcp_open "$KAFKA_PORT" && kafka_wait_metadata "$KAFKA_PORT" 5 0 >/dev/null 2>&1; }

port_of() {
    case $1 in nats) echo "$NATS_PORT" ;; kafka) echo "$KAFKA_PORT" ;; redis) echo "$REDIS_PORT" ;; esac
}

answers() { # <svc>: does the port speak the service's protocol?
    case $1 in
        nats) nats_answers "$NATS_PORT" ;;
        kafka) kafka_answers ;;
        redis) redis_answers "$REDIS_PORT" ;;
    esac
}

pidfile() { echo "$STATE/$1/$1.pid"; }

# pid of a process this script started, if it is still that process; else empty
managed_pid() {
    local f pid pattern
    f=$(pidfile "$1")
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    case $1 in nats) pattern=nats-server ;; kafka) pattern=kafka.Kafka ;; redis) pattern=redis-server ;; esac
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
        echo "$pid"
    fi
}

# Start a long-running process detached from this shell (own session, no inherited fds),
# record its pid.
spawn() { # <svc> <logfile> <cmd...>
    local svc=$1 logf=$2
    shift 2
    setsid "$@" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
    echo $! >"$(pidfile "$svc")"
    disown $! 2>/dev/null || true
}

abandon() { # <svc>: a start failed -- do not leave a half-started process behind
    local pid
    pid=$(managed_pid "$1")
    [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
    rm -f "$(pidfile "$1")"
}

log_tail() { # <file>
    [[ -f $1 ]] || return 0
    log "---- last lines of $1 ----"
    tail -n "${2:-40}" "$1" >&2 || true
    log "----"
}

# ------------------------------------------------------------------------------------- nats
start_nats() {
    local dir=$STATE/nats t0 pid
    t0=$(now_ms)
    if pid=$(managed_pid nats) && [[ -n $pid ]]; then
        log "nats : already running (pid $pid) on $HOST:$NATS_PORT"
        return 0
    fi
    if nats_answers "$NATS_PORT"; then
        log "nats : $HOST:$NATS_PORT already served by a process not started here; using it"
        return 0
    fi
    tcp_open "$NATS_PORT" && die "nats: port $NATS_PORT is taken by something that is not nats-server"
    ensure_pkg nats-server nats-server
    local bin
    bin=$(command -v nats-server || echo /usr/sbin/nats-server)
    mkdir -p "$dir/jetstream"
    : >"$dir/nats.log"
    spawn nats "$dir/nats.log" "$bin" -a "$HOST" -p "$NATS_PORT" -js -sd "$dir/jetstream" \
        -m "$NATS_MONITOR_PORT" --server_name agentflow-dev
    pid=$(<"$(pidfile nats)")
    local deadline=$(( $(date +%s) + NATS_WAIT ))
    until nats_answers "$NATS_PORT" && nats_healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail "$dir/nats.log"
            die "nats-server exited during start-up (log above: $dir/nats.log)"
        fi
        if (( $(date +%s) >= deadline )); then
            log_tail "$dir/nats.log"
            abandon nats
            die "nats-server did not become ready on $HOST:$NATS_PORT within ${NATS_WAIT}s"
        fi
        sleep 0.1
    done
    log "nats : started (pid $pid) on $HOST:$NATS_PORT, monitoring :$NATS_MONITOR_PORT, in $(elapsed "$t0")"
}

# ------------------------------------------------------------------------------------ redis
start_redis() {
    local dir=$STATE/redis t0 pid
    t0=$(now_ms)
    if pid=$(managed_pid redis) && [[ -n $pid ]]; then
        log "redis: already running (pid $pid) on $HOST:$REDIS_PORT"
        return 0
    fi
    if redis_answers "$REDIS_PORT"; then
        log "redis: $HOST:$REDIS_PORT already served by a process not started here; using it"
        return 0
    fi
    tcp_open "$REDIS_PORT" && die "redis: port $REDIS_PORT is taken by something that is not redis"
    ensure_pkg redis-server redis-server
    mkdir -p "$dir"
    : >"$dir/redis.log"
    # Runs in the foreground of its own session (daemonized by spawn), so the pid is known at once.
    spawn redis "$dir/redis.log" "$(command -v redis-server)" --bind "$HOST" --port "$REDIS_PORT" \
        --save '' --appendonly no --dir "$dir" --daemonize no --protected-mode yes
    pid=$(<"$(pidfile redis)")
    local deadline=$(( $(date +%s) + REDIS_WAIT ))
    until redis_answers "$REDIS_PORT"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log_tail "$dir/redis.log"
            die "redis-server exited during start-up (log above: $dir/redis.log)"
        fi
        if (( $(date +%s) >= deadline )); then
            log_tail "$dir/redis.log"
            abandon redis
            die "redis-server did not answer PING on $HOST:$REDIS_PORT within ${REDIS_WAIT}s"
        fi
        sleep 0.1
    done
    log "redis: started (pid $pid) on $HOST:$REDIS_PORT, in $(elapsed "$t0")"
}

# ------------------------------------------------------------------------------------ kafka
kafka_version() {
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1
}

java_bin() {
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then echo "$JAVA_HOME/bin/java"; else command -v java; fi
}

# Fetch the broker's jars once per pom content; prints the libs dir.
kafka_libs() {
    local version libs stamp want tmp t0
    version=$(kafka_version)
    [[ -n $version ]] || die "cannot read <kafka.version> from $POM"
    libs=$CACHE/kafka-$version/libs
    stamp=$CACHE/kafka-$version/pom.sha256
    want=$(sha256sum "$POM" | cut -d' ' -f1)
    libs_ready() { [[ -d $libs && -f $stamp && $(<"$stamp") == "$want" ]] && compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; }
    if libs_ready; then
        echo "$libs"
        return 0
    fi
    # One fetch at a time per version (runs in a $(...) subshell: the lock ends with it).
    mkdir -p "$CACHE/kafka-$version"
    exec 8>"$CACHE/kafka-$version/.lock"
    flock -w 600 8 || die "timed out waiting for another fetch of the Kafka jars"
    if libs_ready; then
        echo "$libs"
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "maven (mvn) is needed once to fetch the Kafka jars: apt-get install maven"
    t0=$(now_ms)
    log "kafka: fetching Kafka $version jars from Maven Central into $libs ..."
    mkdir -p "$CACHE/kafka-$version"
    tmp=$(mktemp -d "$CACHE/kafka-$version/libs.tmp.XXXXXX")
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$tmp" >"$CACHE/kafka-$version/mvn.log" 2>&1; then
        tail -n 30 "$CACHE/kafka-$version/mvn.log" >&2 || true
        rm -rf "$tmp"
        die "mvn dependency:copy-dependencies failed (full log: $CACHE/kafka-$version/mvn.log)"
    fi
    rm -rf "$libs"
    mv "$tmp" "$libs"
    echo "$want" >"$stamp"
    log "kafka: fetched $(find "$libs" -name '*.jar' | wc -l) jars in $(elapsed "$t0")"
    echo "$libs"
}

kafka_write_config() { # <dir> <output file>
    local dir=$1 out=$2
    cat >"$out" <<EOF
# Generated by scripts/services.sh -- single-node KRaft (broker + controller) for dev and tests.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dir=$dir/data

# Topics are created explicitly by the code under test (as on a production cluster).
auto.create.topics.enable=$KAFKA_AUTO_CREATE
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics on a single node: replication factor 1, min ISR 1, few partitions (fast first use).
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# No 3 s wait before the first rebalance of every new group; allow short session timeouts in tests.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000

# Small machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
}

kafka_write_log4j() { # <file>
    cat >"$1" <<'EOF'
# Generated by scripts/services.sh: everything to the console (redirected to kafka.log), WARN+.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
# Keep the one line that says the server is up.
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = info
EOF
}

start_kafka() {
    local dir=$STATE/kafka t0 pid libs java cfg
    t0=$(now_ms)
    if pid=$(managed_pid kafka) && [[ -n $pid ]]; then
        log "kafka: already running (pid $pid) on $HOST:$KAFKA_PORT"
        return 0
    fi
    if tcp_open "$KAFKA_PORT"; then
        if kafka_answers; then
            log "kafka: $HOST:$KAFKA_PORT already served by a process not started here; using it"
            return 0
        fi
        die "kafka: port $KAFKA_PORT is taken by something that does not serve Kafka metadata"
    fi
    tcp_open "$KAFKA_CONTROLLER_PORT" && die "kafka: controller port $KAFKA_CONTROLLER_PORT is taken"
    java=$(java_bin) || die "java (17+) is needed for Kafka: apt-get install openjdk-17-jre-headless"
    libs=$(kafka_libs)
    local t1
    t1=$(now_ms)
    mkdir -p "$dir"
    cfg=$dir/server.properties
    kafka_write_config "$dir" "$cfg.new"
    kafka_write_log4j "$dir/log4j2.properties"
    if [[ ! -f $cfg ]] || ! cmp -s "$cfg" "$cfg.new" || [[ ! -f $dir/data/meta.properties ]]; then
        # New or changed configuration (ports, dirs): start from an empty, freshly formatted log dir.
        rm -rf "$dir/data"
        mv "$cfg.new" "$cfg"
        local cluster_id
        cluster_id=$("$java" -cp "$libs/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
            kafka.tools.StorageTool random-uuid 2>>"$dir/format.log") \
            || { log_tail "$dir/format.log"; die "kafka StorageTool random-uuid failed"; }
        cluster_id=$(echo "$cluster_id" | tail -n1 | tr -d '[:space:]')
        "$java" -cp "$libs/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
            kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$cfg" >>"$dir/format.log" 2>&1 \
            || { log_tail "$dir/format.log"; die "kafka StorageTool format failed (log: $dir/format.log)"; }
    else
        rm -f "$cfg.new"
    fi
    : >"$dir/kafka.log"
    spawn kafka "$dir/kafka.log" "$java" "-Xmx$KAFKA_HEAP" -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
        -cp "$libs/*" kafka.Kafka "$cfg"
    pid=$(<"$(pidfile kafka)")
    local rc=0
    kafka_wait_metadata "$KAFKA_PORT" "$KAFKA_WAIT" "$pid" || rc=$?
    if [[ $rc -eq 3 ]]; then # no aiokafka in this python: fall back to the port and the log line
        rc=1
        local deadline=$(( $(date +%s) + KAFKA_WAIT ))
        while (( $(date +%s) < deadline )); do
            kill -0 "$pid" 2>/dev/null || { rc=2; break; }
            if tcp_open "$KAFKA_PORT" && grep -q 'Kafka Server started' "$dir/kafka.log"; then rc=0; break; fi
            sleep 0.2
        done
    fi
    case $rc in
        0) ;;
        2) log_tail "$dir/kafka.log" 60; die "Kafka exited during start-up (log above: $dir/kafka.log)" ;;
        *) log_tail "$dir/kafka.log" 60
           abandon kafka
           die "Kafka did not serve metadata on $HOST:$KAFKA_PORT within ${KAFKA_WAIT}s (killed pid $pid; log: $dir/kafka.log)" ;;
    esac
    log "kafka: started Kafka $(kafka_version) (pid $pid) on $HOST:$KAFKA_PORT, in $(elapsed "$t1") (total $(elapsed "$t0"))"
}

# ------------------------------------------------------------------------------ stop/status
stop_one() {
    local svc=$1 pid grace
    pid=$(managed_pid "$svc")
    if [[ -z $pid ]]; then
        rm -f "$(pidfile "$svc")"
        if answers "$svc" 2>/dev/null; then
            log "$(printf '%-5s' "$svc"): not started by this script (port $(port_of "$svc") is served by another process); left alone"
        else
            log "$(printf '%-5s' "$svc"): not running"
        fi
        return 0
    fi
    case $svc in kafka) grace=30 ;; *) grace=10 ;; esac
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(( $(date +%s) + grace ))
    while kill -0 "$pid" 2>/dev/null; do
        if (( $(date +%s) >= deadline )); then
            log "$svc: still alive after ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f "$(pidfile "$svc")"
    log "$(printf '%-5s' "$svc"): stopped (pid $pid)"
}

status_one() {
    local svc=$1 pid name
    name=$(printf '%-5s' "$svc")
    pid=$(managed_pid "$svc")
    if [[ -n $pid ]]; then
        if answers "$svc"; then
            echo "$name: running (pid $pid) on $HOST:$(port_of "$svc")"
            return 0
        fi
        echo "$name: process running (pid $pid) but $HOST:$(port_of "$svc") not answering"
        return 1
    fi
    if answers "$svc"; then
        echo "$name: external (not started by this script) on $HOST:$(port_of "$svc")"
        return 0
    fi
    echo "$name: stopped"
    return 3
}

print_env() {
    local svc
    for svc in "$@"; do
        case $svc in
            nats) echo "export AGENTFLOW_TEST_NATS_URL=nats://$HOST:$NATS_PORT" ;;
            kafka) echo "export AGENTFLOW_TEST_KAFKA_URL=kafka://$HOST:$KAFKA_PORT" ;;
            redis) echo "export AGENTFLOW_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT/0" ;;
        esac
    done
}

# ------------------------------------------------------------------------------------- main
usage() {
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

services_from() { # expand the service argument
    case ${1:-all} in
        all) echo "${ALL_SERVICES[@]}" ;;
        nats | kafka | redis) echo "$1" ;;
        *) usage ;;
    esac
}

with_lock() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 180 9 || die "another services.sh holds $STATE/.lock"
}

main() {
    local cmd=${1:-}
    [[ -n $cmd ]] || usage
    shift
    local -a svcs=()
    local arg
    for arg in "${@:-all}"; do
        case $arg in all | nats | kafka | redis) ;; *) usage ;; esac
        # shellcheck disable=SC2207
        svcs+=($(services_from "$arg"))
    done
    case $cmd in
        start)
            with_lock
            local t0 svc
            t0=$(now_ms)
            for svc in "${svcs[@]}"; do "start_$svc"; done
            log "services ready in $(elapsed "$t0"); for tests:"
            print_env "${svcs[@]}"
            ;;
        stop)
            with_lock
            local svc
            for svc in "${svcs[@]}"; do stop_one "$svc"; done
            ;;
        restart)
            "$0" stop "${svcs[@]}"
            exec "$0" start "${svcs[@]}"
            ;;
        status)
            local svc rc=0
            for svc in "${svcs[@]}"; do status_one "$svc" || rc=3; done
            return $rc
            ;;
        env) print_env "${svcs[@]}" ;;
        logs)
            [[ ${#svcs[@]} -eq 1 ]] || usage
            local f=$STATE/${svcs[0]}/${svcs[0]}.log
            [[ -f $f ]] || die "no log at $f"
            tail -n "${LINES:-60}" "$f"
            ;;
        reset)
            with_lock
            local svc
            for svc in "${svcs[@]}"; do
                stop_one "$svc"
                rm -rf "${STATE:?}/$svc"
                log "$(printf '%-5s' "$svc"): data wiped"
            done
            ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
}

main "$@"
