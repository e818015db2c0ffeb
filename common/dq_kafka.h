/* Kafka helpers shared by the producer, the consumer and decayctl. */
#ifndef DQ_KAFKA_H
#define DQ_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

#include "dq_err.h"

/* Creates each topic with the given partition count and replication factor
 * 1 unless it exists (an existing topic is success). Uses the admin API on
 * any client handle rk. Blocks up to timeout_ms.
 * @locality any thread except rk's own callbacks. */
dq_err_t dq_kafka_create_topics(rd_kafka_t *rk, const char *const *topics,
                                size_t cnt, int partitions, int timeout_ms,
                                char *errstr, size_t errstr_size);

/* Copies the last header called name of m into buf as a string (cut to
 * size - 1 bytes); false, with buf "", when m has no such header. */
bool dq_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf,
                     size_t size);

/* The header as a decimal integer; def when absent or not a number. */
int64_t dq_kafka_header_int(const rd_kafka_message_t *m, const char *name,
                            int64_t def);

/* The header as an RFC 3339 time in ms; 0 when absent or not a time. */
int64_t dq_kafka_header_time(const rd_kafka_message_t *m, const char *name);

#endif
