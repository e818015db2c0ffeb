# Shared shell helpers for decayq's scripts: free ports, and starting,
# checking and stopping a local Kafka broker (KRaft) and Redis server.
# Sourced, never run.

DQ_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DQ_KAFKA_VERSION=3.9.1
DQ_CACHE_DIR=${DECAYQ_CACHE_DIR:-$DQ_ROOT/.cache}
DQ_KAFKA_LIBS=$DQ_CACHE_DIR/kafka-$DQ_KAFKA_VERSION/libs

dq_say() {
	printf 'decayq: %s\n' "$*" >&2
}

dq_die() {
	printf 'decayq: error: %s\n' "$*" >&2
	exit 1
}

# Prints a TCP port on 127.0.0.1 that nothing listens on. Ports are drawn at
# random from a wide range so that two runs on one machine do not collide.
dq_free_port() {
	local p i
	for i in $(seq 1 200); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	dq_die "no free port found"
}

# Fetches the Kafka broker jars into the cache folder, once.
dq_kafka_fetch() {
	if [ -f "$DQ_KAFKA_LIBS/.complete" ]; then
		return 0
	fi
	dq_say "fetching Apache Kafka $DQ_KAFKA_VERSION from Maven Central"
	rm -rf "$DQ_KAFKA_LIBS"
	mkdir -p "$DQ_KAFKA_LIBS"
	mvn -q -B -Dstyle.color=never -f "$DQ_ROOT/scripts/kafka/pom.xml" \
		org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$DQ_KAFKA_LIBS" ||
		dq_die "maven could not fetch Kafka $DQ_KAFKA_VERSION"
	ls "$DQ_KAFKA_LIBS"/kafka_2.13-"$DQ_KAFKA_VERSION".jar >/dev/null ||
		dq_die "kafka jar missing after fetch"
	touch "$DQ_KAFKA_LIBS/.complete"
}

# dq_kafka_start DIR: formats a fresh KRaft log dir under DIR and starts a
# single combined broker/controller on free loopback ports. Writes
# DIR/kafka.pid and DIR/kafka.port.
dq_kafka_start() {
	local dir=$1 port cport cluster_id
	dq_kafka_fetch
	mkdir -p "$dir/kafka-logs" "$dir/kafka-data"
	if [ -f "$dir/kafka.port" ]; then
		port=$(cat "$dir/kafka.port")
		cport=$(cat "$dir/kafka.cport")
	else
		port=$(dq_free_port)
		cport=$(dq_free_port)
		while [ "$cport" = "$port" ]; do cport=$(dq_free_port); done
		echo "$port" >"$dir/kafka.port"
		echo "$cport" >"$dir/kafka.cport"
	fi
	cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/kafka-data
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=4
background.threads=2
log.cleaner.dedupe.buffer.size=2097152
log.flush.interval.messages=9223372036854775807
PROPS
	local cp="$DQ_KAFKA_LIBS/*"
	local jvm=(-Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
		-Djava.awt.headless=true
		-Dlog4j.configuration="file:$DQ_ROOT/scripts/kafka/log4j.properties"
		-Dkafka.logs.dir="$dir/kafka-logs")
	if [ ! -f "$dir/kafka-data/meta.properties" ]; then
		# A URL-safe base64 UUID; one that starts with '-' would be read
		# as an option, so draw again.
		cluster_id=-
		while [ "${cluster_id#-}" != "$cluster_id" ]; do
			cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
		done
		java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format \
			-t "$cluster_id" -c "$dir/server.properties" \
			>"$dir/kafka-logs/format.out" 2>&1 ||
			dq_die "kafka storage format failed: $(tail -3 "$dir/kafka-logs/format.out")"
	fi
	: >"$dir/kafka-logs/server.log"
	setsid java "${jvm[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
		>"$dir/kafka-logs/stdout.log" 2>&1 </dev/null &
	echo $! >"$dir/kafka.pid"
	disown
	local i
	for i in $(seq 1 240); do
		if grep -q 'Kafka Server started' "$dir/kafka-logs/server.log" 2>/dev/null; then
			dq_say "kafka $DQ_KAFKA_VERSION ready on 127.0.0.1:$port"
			return 0
		fi
		if ! kill -0 "$(cat "$dir/kafka.pid")" 2>/dev/null; then
			tail -20 "$dir/kafka-logs/stdout.log" "$dir/kafka-logs/server.log" >&2
			dq_die "kafka exited during start-up"
		fi
		sleep 0.5
	done
	dq_die "kafka not ready after 120 s"
}

# dq_kafka_stop DIR [--kill]: controlled shutdown with SIGTERM (or SIGKILL).
dq_kafka_stop() {
	dq_kafka_signal "$1" CONT # a frozen broker cannot stop
	dq_stop_pidfile "$1/kafka.pid" "${2:-}" 60
}

# dq_kafka_signal DIR SIG: STOP freezes the broker (its connections stay
# open and nothing answers), CONT thaws it. Nothing when it is not running.
dq_kafka_signal() {
	local pid
	pid=$(cat "$1/kafka.pid" 2>/dev/null) || return 0
	kill -"$2" "$pid" 2>/dev/null || true
}

# dq_redis_start DIR: starts redis-server with configs/redis.conf on a free
# port, data in DIR/redis. Keeps the port across restarts of the same DIR.
dq_redis_start() {
	local dir=$1 port
	mkdir -p "$dir/redis"
	if [ -f "$dir/redis.port" ]; then
		port=$(cat "$dir/redis.port")
	else
		port=$(dq_free_port)
		echo "$port" >"$dir/redis.port"
	fi
	setsid redis-server "$DQ_ROOT/configs/redis.conf" --port "$port" \
		--dir "$dir/redis" --logfile "$dir/redis/redis.log" \
		--pidfile "$dir/redis/redis.pid" \
		>/dev/null 2>&1 </dev/null &
	echo $! >"$dir/redis.pid"
	disown
	local i
	for i in $(seq 1 100); do
		if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = "PONG" ]; then
			return 0
		fi
		kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null ||
			dq_die "redis-server exited during start-up: $(tail -5 "$dir/redis/redis.log")"
		sleep 0.1
	done
	dq_die "redis not ready after 10 s"
}

dq_redis_stop() {
	dq_stop_pidfile "$1/redis.pid" "${2:-}" 20
}

# dq_stop_pidfile FILE [--kill] TIMEOUT
dq_stop_pidfile() {
	local f=$1 mode=$2 timeout=$3 pid i
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	rm -f "$f"
	kill -0 "$pid" 2>/dev/null || return 0
	if [ "$mode" = "--kill" ]; then
		kill -9 "$pid" 2>/dev/null || true
	else
		kill -TERM "$pid" 2>/dev/null || true
	fi
	for i in $(seq 1 $((timeout * 10))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
}
