/* Kafka helpers shared by the producer, the consumer and decayctl. */
#ifndef DQ_KAFKA_H
#define DQ_KAFKA_H

#include <stddef.h>
#include <librdkafka/rdkafka.h>

#include "dq_err.h"

/* Creates each topic with the given partition count and replication factor
 * 1 unless it exists (an existing topic is success). Uses the admin API on
 * any client handle rk. Blocks up to timeout_ms.
 * @locality any thread except rk's own callbacks. */
dq_err_t dq_kafka_create_topics(rd_kafka_t *rk, const char *const *topics,
                                size_t cnt, int partitions, int timeout_ms,
                                char *errstr, size_t errstr_size);

#endif
