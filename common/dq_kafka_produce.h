/* Producing: the one rule for which kafka.* keys reach a producer, and one
 * send that treats a full local queue as back-pressure. Used by the
 * producer library, the consumer's copy producer and decayctl's replay. */
#ifndef DQ_KAFKA_PRODUCE_H
#define DQ_KAFKA_PRODUCE_H

#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

#include "dq_conf.h"
#include "dq_err.h"

/* How long a send waits for room at most between tries, serving the
 * client's delivery reports meanwhile. */
#define DQ_KAFKA_QUEUE_FULL_POLL_MS 100

typedef struct dq_kafka_record_s {
        const char *topic;
        int32_t partition; /* RD_KAFKA_PARTITION_UA (-1): the partitioner's */
        const void *key;
        size_t key_len;
        const void *value;
        size_t len;
        rd_kafka_headers_t *headers; /* NULL: none; taken over on success */
        void *opaque;                /* the delivery report's _private */
} dq_kafka_record_t;

/* Sends a copy of r. While the local queue is full it serves rk's events
 * (its delivery report callbacks run here) and tries again, so that
 * QUEUE_FULL is never returned. Returns the librdkafka error; on one the
 * headers are still the caller's. */
rd_kafka_resp_err_t dq_kafka_produce(rd_kafka_t *rk,
                                     const dq_kafka_record_t *r);

/* Applies the configuration's kafka.* keys to a producer's k: every key
 * but the consumer-only ones (group.*, fetch.*, queued.*, offset and
 * assignment settings) and transactional.id, which a program sets
 * itself. Then the guarantees that no key may change: enable.idempotence
 * and acks=all. A caller sets its defaults before and its own guarantees
 * after. DQ_OK, or DQ_ERR_INVALID with errstr naming the key and where it
 * was set. */
dq_err_t dq_kafka_producer_conf(const dq_conf_t *conf, rd_kafka_conf_t *k,
                                char *errstr, size_t errstr_size);

#endif
