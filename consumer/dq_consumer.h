/* The decay-consumer engine: consumes decay jobs from the jobs topic and its
 * delay tiers, claims and settles them in Redis in pipelined batches, sends
 * retries to the delay tiers and failures to the DLQ, and commits an offset
 * only after every message before it is settled. */
#ifndef DQ_CONSUMER_H
#define DQ_CONSUMER_H

#include <stddef.h>

#include "dq_conf.h"

typedef struct dq_consumer_s dq_consumer_t;

/* Connects to Redis and Kafka and subscribes. conf must outlive the
 * consumer. With create_topics > 0, missing topics are created with that
 * many partitions. NULL with errstr set on failure. */
dq_consumer_t *dq_consumer_new(const dq_conf_t *conf, int create_topics,
                               char *errstr, size_t errstr_size);

/* How a run ended. */
typedef enum dq_run_e {
        DQ_RUN_DRAINED = 0,     /* all settled, final commit succeeded */
        DQ_RUN_HANDED_BACK = 1, /* work abandoned, or the commit failed */
        DQ_RUN_FATAL = 2,       /* a fatal Kafka client error */
} dq_run_t;

/* Runs until dq_consumer_stop() or a fatal error. */
dq_run_t dq_consumer_run(dq_consumer_t *c);

/* Asks the run to stop: gracefully (drain, commit, leave) the first time,
 * at once the second. Async-signal-safe. */
void dq_consumer_stop(dq_consumer_t *c);

/* A signal arrived: SIGTERM, SIGINT, SIGHUP and SIGQUIT stop the run as
 * dq_consumer_stop() does; SIGUSR1 logs the run summary; others are only
 * logged. The run logs each one. Async-signal-safe. */
void dq_consumer_signal(dq_consumer_t *c, int sig);

/* Closes the consumer; NULL is a no-op. */
void dq_consumer_destroy(dq_consumer_t *c);

#endif
