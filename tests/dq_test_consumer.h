/* Running decay-consumer processes from tests: a fresh set of topics, a
 * Redis namespace and a group per fixture, one log file per process. */
#ifndef DQ_TEST_CONSUMER_H
#define DQ_TEST_CONSUMER_H

#include <stdint.h>
#include <sys/types.h>
#include <librdkafka/rdkafka.h>

#define DQ_TC_MAX_ARGS 64

typedef struct dq_tc_s {
        char ns[128];
        char topic[128];
        char dlq[160];
        char prefix[160];
        char tiers[64];
        char tier_topic[2][192];
        char group[160];
        char dir[256]; /* logs */
        int partitions;
        char *args[DQ_TC_MAX_ARGS]; /* -X pairs every process gets */
        int arg_cnt;
} dq_tc_t;

/* Creates the topics (jobs, DLQ and two delay tiers "1s,3s", each with
 * partitions partitions), a namespace, a group and a log folder. */
void dq_tc_init(dq_tc_t *tc, const char *name, int partitions);

/* The names, log folder and arguments of dq_tc_init() for the cluster at
 * bootstrap, without creating topics (a mock cluster makes its own). */
void dq_tc_setup(dq_tc_t *tc, const char *name, int partitions,
                 const char *bootstrap);

/* Adds "-X kv" to every process started after. */
void dq_tc_arg(dq_tc_t *tc, const char *kv);

/* Starts decay-consumer as worker; its stderr goes (appended) to
 * <dir>/<worker>.log. */
pid_t dq_tc_spawn(dq_tc_t *tc, const char *worker);

/* Starts program (a path under the build tree, "planner/decay-planner")
 * the same way, with the fixture's -X pairs, then up to 10 extra
 * arguments. */
pid_t dq_tc_spawn_program(dq_tc_t *tc, const char *program, const char *worker,
                          const char *const *extra, int extra_cnt);

/* Kills (SIGKILL) and reaps every consumer this test spawned that is still
 * running: a failed test leaves none behind. For .fini. */
void dq_tc_reap(void);

/* Waits up to timeout_ms for pid; returns its exit code, or 128 + signal.
 * Kills it and fails the test on timeout. */
int dq_tc_wait(pid_t pid, long timeout_ms);

/* Path of worker's log. */
void dq_tc_log_path(const dq_tc_t *tc, const char *worker, char *buf,
                    size_t size);

/* The delivery report callback of dq_tc_producer(), for producers made
 * elsewhere: fills the offsetp given to dq_tc_send(). */
void dq_tc_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/* An idempotent producer whose delivery reports fill the offsetp given to
 * dq_tc_send() (-2 on failure). */
rd_kafka_t *dq_tc_producer(void);

/* Enqueues value with key to topic, partition (-1: by key). */
void dq_tc_send(rd_kafka_t *rk, const char *topic, int32_t partition,
                const char *key, const void *value, size_t len,
                int64_t *offsetp);

/* Waits for every delivery report. */
void dq_tc_flush(rd_kafka_t *rk);

/* dq_tc_send() and dq_tc_flush(); returns the offset. */
int64_t dq_tc_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                      const char *key, const void *value, size_t len);

/* Sum over partitions of the group's committed offsets equals the high
 * watermarks of topic. */
int dq_tc_caught_up(rd_kafka_t *rk, const dq_tc_t *tc, const char *topic);

/* Waits up to ms for the fixture's group to have committed every message
 * of topic; fails the test otherwise. */
void dq_tc_wait_caught_up(const dq_tc_t *tc, const char *topic, long ms);

/* A record of the fixture's DLQ: its job id, error code and message. */
typedef struct dq_tc_dlq_s {
        char job[32];
        char code[64];
        char message[256];
} dq_tc_dlq_t;

/* Reads every record of the fixture's DLQ partition 0 into recs (up to
 * max); returns how many there are. */
int dq_tc_read_dlq(const dq_tc_t *tc, dq_tc_dlq_t *recs, int max);

/* The record of recs[0..n) for job id; NULL if none. */
const dq_tc_dlq_t *dq_tc_dlq_find(const dq_tc_dlq_t *recs, int n,
                                  const char *id);

#endif
