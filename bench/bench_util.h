/* Helpers shared by decayq's benchmarks: ceilings measured with
 * redis-benchmark, child processes, and what /proc says of them. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Function calls per second that redis-benchmark reaches running
 * `FCALL decayq_claim` on random job keys under namespace ns in database
 * db, with the given pipeline depth and client count. 0 when it could not
 * run. The keys it leaves are the caller's to flush. */
double bench_redis_ceiling(const char *host, int port, int db, const char *ns,
                           int n, int pipeline, int clients);

/* Starts argv[0] (a path) with stdout and stderr appended to log.
 * Returns the pid, or -1 with errno set. */
pid_t bench_spawn(char *const argv[], const char *log);

/* Resident set size of pid in bytes, or -1. */
int64_t bench_rss(pid_t pid);

/* User plus system CPU time of pid so far, in seconds, or -1. */
double bench_cpu_s(pid_t pid);

/* Sends SIGTERM and waits up to timeout_ms, then SIGKILL. Returns the exit
 * status as waitpid(2) reports it. */
int bench_stop(pid_t pid, int timeout_ms);

/* Monotonic time in microseconds. */
int64_t bench_mono_us(void);

/* The machine, for the record: "N cores, M GiB, <kernel>". */
const char *bench_machine(void);

#endif
