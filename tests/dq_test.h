/* Helpers for decayq's Criterion tests: the addresses of the services the
 * scripts started, unique names, and ready-made clients. */
#ifndef DQ_TEST_H
#define DQ_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>

/* Kafka bootstrap of the test broker (DQ_TEST_BOOTSTRAP). Fails the
 * test when unset: integration tests never skip silently. */
const char *dq_test_bootstrap(void);

/* Redis host and port of the test server (DQ_TEST_REDIS_*). */
const char *dq_test_redis_host(void);
int dq_test_redis_port(void);

/* Writes "<prefix>-<pid>-<counter>-<random>" into buf: a name no other test,
 * or other run on the machine, uses. */
void dq_test_unique(char *buf, size_t size, const char *prefix);

/* A connected Redis context; fails the test when Redis does not answer. */
redisContext *dq_test_redis(void);

/* An idempotent producer on the test broker. */
rd_kafka_t *dq_test_producer(void);

/* A consumer in group with auto commit off, reading from the earliest
 * offset. */
rd_kafka_t *dq_test_consumer(const char *group);

/* Creates a fresh topic with partitions partitions; fails the test on
 * error. */
void dq_test_create_topic(rd_kafka_t *rk, const char *topic, int partitions);

/* The high watermark of topic's partition: the messages it has ever held,
 * for a topic that was never trimmed. */
int64_t dq_test_high(const char *topic, int32_t partition);

/* The path of one of this tree's programs, rel being its place in the
 * build tree ("consumer/decay-consumer"): under $DQ_TEST_PROGRAMS when
 * that is set (a tree built with other instrumentation, e.g. ThreadSanitizer),
 * else this tree's. Written to buf. */
const char *dq_test_program(const char *rel, char *buf, size_t size);

/* The whole file at path, NUL-terminated; "" when it cannot be read. The
 * caller frees it. */
char *dq_test_slurp(const char *path);

/* Milliseconds on a monotonic clock. */
long long dq_test_now_ms(void);

/* Sleeps ms milliseconds. */
void dq_test_sleep_ms(long ms);

/* Runs a shell command of the services script: e.g. "redis-kill". Fails the
 * test when it fails. */
void dq_test_services(const char *verb);

/* A TCP port on loopback that was free a moment ago. */
int dq_test_free_port(void);

/* Sends the raw request req to 127.0.0.1:port; returns the status code (0:
 * no answer) and the body in body. */
int dq_test_http(int port, const char *req, char *body, size_t size);

/* GET path; as dq_test_http(). */
int dq_test_http_get(int port, const char *path, char *body, size_t size);

/* The threads of this process, as their ids in /proc/self/task (at most
 * max); returns how many. */
int dq_test_tasks(long *ids, int max);

/* Expects every thread started since dq_test_tasks() gave before[0..nb) to
 * block each signal decay-consumer handles, so that a drain signal reaches
 * the main loop's thread; returns how many threads it checked. */
int dq_test_expect_new_threads_block_signals(const long *before, int nb);

#endif
