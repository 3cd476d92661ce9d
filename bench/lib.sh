# bench/lib.sh -- helpers the benchmark scripts share (sourced, not run).
# The sourcing script sets $bench_name (for messages) before using them.

# median N...: the median of the numbers given (mean of the middle two
# for an even count).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# wait_port PORT: until something accepts on 127.0.0.1:PORT (15 s), else
# exits the script.
wait_port() {
	local i
	for i in $(seq 1 300); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "${bench_name:-bench}: nothing listens on port $1" >&2
	exit 1
}

# stop_pid PID: stops a background process and reaps it.
stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
