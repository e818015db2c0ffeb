/* The decayq producer library: validates decay jobs and publishes them to
 * the main topic with an idempotent Kafka producer, keyed by scope. */
#ifndef DQ_PRODUCER_H
#define DQ_PRODUCER_H

#include <stddef.h>
#include <stdint.h>

#include "dq_conf.h"
#include "dq_err.h"
#include "dq_job.h"

typedef struct dq_producer_s dq_producer_t;

/* The outcome of one sent job, reported exactly once per accepted send. */
typedef struct dq_delivery_s {
        const char *job_id;
        dq_err_t err;       /* DQ_OK when the broker acknowledged it */
        const char *errstr; /* why not, when err != DQ_OK */
        int32_t partition;
        int64_t offset;
        void *msg_opaque; /* as passed to dq_producer_send() */
} dq_delivery_t;

typedef void(dq_delivery_cb_t)(const dq_delivery_t *delivery, void *opaque);

/* Creates a producer from conf (kafka.* keys go to librdkafka; the topic is
 * topic.jobs). Idempotence and acks=all are always on. cb is called from
 * dq_producer_poll() and dq_producer_flush() in the caller's thread. conf is
 * only read, not kept. Returns NULL with errstr set on failure. */
dq_producer_t *dq_producer_new(const dq_conf_t *conf, dq_delivery_cb_t *cb,
                               void *opaque, char *errstr, size_t errstr_size);

/* Validates the job message buf[0..len) and, when valid, enqueues its exact
 * bytes keyed by its scope with headers decayq-schema and decayq-trace-id.
 * An invalid job returns DQ_ERR_INVALID with *rej filled and is never sent.
 * Blocks while the local queue is full. If job_idp is not NULL it receives
 * the job id (27 bytes). Returns DQ_OK once enqueued: the outcome comes
 * later through the delivery callback. */
dq_err_t dq_producer_send(dq_producer_t *p, const char *buf, size_t len,
                          void *msg_opaque, char *job_idp, dq_reject_t *rej,
                          char *errstr, size_t errstr_size);

/* Serializes and sends a job built in code (see dq_producer_send()). */
dq_err_t dq_producer_send_job(dq_producer_t *p, const dq_job_t *job,
                              void *msg_opaque, dq_reject_t *rej, char *errstr,
                              size_t errstr_size);

/* Serves delivery reports for up to timeout_ms. */
void dq_producer_poll(dq_producer_t *p, int timeout_ms);

/* Jobs sent whose delivery has not been reported yet. */
int dq_producer_outstanding(const dq_producer_t *p);

/* Waits up to timeout_ms for every outstanding delivery. On timeout, purges
 * what is left, so that each remaining job gets a failure report, and
 * returns DQ_ERR_TIMEOUT. */
dq_err_t dq_producer_flush(dq_producer_t *p, int timeout_ms);

/* Destroys p; outstanding jobs are purged and reported as failed first.
 * NULL is a no-op. */
void dq_producer_destroy(dq_producer_t *p);

#endif
