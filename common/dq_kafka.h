/* Kafka helpers shared by the producer, the consumer and decayctl. */
#ifndef DQ_KAFKA_H
#define DQ_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

#include "dq_conf.h"
#include "dq_err.h"

/* Room a delay or DLQ copy needs beyond its job's bytes: the key (a scope:
 * at most 255 bytes), the header set of DESIGN.md (whose error message is
 * at most 1 KiB) and the record's framing. A topic that holds copies must
 * accept DQ_COPY_MAX_BYTES(job.max.bytes). */
#define DQ_COPY_OVERHEAD           16384
#define DQ_COPY_MAX_BYTES(job_max) ((int64_t)(job_max) + DQ_COPY_OVERHEAD)

/* Sets one librdkafka property on k. DQ_OK, or DQ_ERR_INVALID with
 * librdkafka's reason in errstr, on one line (librdkafka ends some reasons
 * with a line end). */
dq_err_t dq_kafka_set(rd_kafka_conf_t *k, const char *name, const char *value,
                      char *errstr, size_t errstr_size);

/* Sets on k a property that a guarantee of decayq rests on. A kafka.* key
 * of conf that would set it otherwise (by its name or an alias) is refused
 * rather than overridden without a word: DQ_ERR_INVALID, with errstr
 * naming the key, where it was set, and why (the text of why). */
dq_err_t dq_kafka_require(const dq_conf_t *conf, rd_kafka_conf_t *k,
                          const char *name, const char *value, const char *why,
                          char *errstr, size_t errstr_size);

/* Sets on k the prefetch a decayq group consumer keeps by default, bounded
 * by bytes alone (3 MiB queued, in 256 KiB fetches): decay-consumer's, and
 * the bench's plain consumers' beside it. DQ_OK, or DQ_ERR_INVALID with
 * errstr. */
dq_err_t dq_kafka_conf_prefetch(rd_kafka_conf_t *k, char *errstr,
                                size_t errstr_size);

/* Sets a decayq group consumer's k: the prefetch defaults
 * (dq_kafka_conf_prefetch()), then every kafka.* key of conf. librdkafka
 * refuses a consumer whose fetch.max.bytes is below its message.max.bytes;
 * when the user set one of them alone, the consumer's other one follows it.
 * A message.max.bytes set for the producers reaches the consumer too, and
 * raises its fetch; a smaller fetch.max.bytes lowers the consumer's
 * message.max.bytes, which bounds only the requests it sends. Both set, and
 * in conflict, are left for librdkafka to refuse. A caller sets its own
 * overridable defaults before and its guarantees after. DQ_OK, or
 * DQ_ERR_INVALID with errstr naming the key. */
dq_err_t dq_kafka_consumer_conf(const dq_conf_t *conf, rd_kafka_conf_t *k,
                                char *errstr, size_t errstr_size);

/* Creates each topic with the given partition count and replication factor
 * 1 unless it exists (an existing topic is success, and is not changed).
 * max_message_bytes > 0 sets the new topics' max.message.bytes. Uses the
 * admin API on any client handle rk. Returns once every topic is in the
 * metadata with its partitions led, so that a client started next finds
 * them. Blocks up to timeout_ms for the creation, and as long again for
 * the metadata. @locality any thread except rk's own callbacks. */
dq_err_t dq_kafka_create_topics(rd_kafka_t *rk, const char *const *topics,
                                size_t cnt, int partitions,
                                int64_t max_message_bytes, int timeout_ms,
                                char *errstr, size_t errstr_size);

/* Reads each topic's max.message.bytes, the largest record batch the
 * broker accepts for it, into bytes[i]. DQ_OK, or an error with errstr set
 * when the broker would not say (then bytes[] is -1).
 * @locality any thread except rk's own callbacks. */
dq_err_t dq_kafka_topic_max_bytes(rd_kafka_t *rk, const char *const *topics,
                                  size_t cnt, int64_t *bytes, int timeout_ms,
                                  char *errstr, size_t errstr_size);

/* Reads each partition of parts' offset at the log's end (where
 * RD_KAFKA_OFFSET_END: the high watermark) or start (RD_KAFKA_OFFSET_
 * BEGINNING) into out[i], -1 when unknown, within timeout_ms however the
 * brokers fare. rd_kafka_query_watermark_offsets() of librdkafka 2.0 waits
 * for a leader's answer past its timeout (forever while the brokers are
 * down), so decayq never calls it.
 * @locality any thread except rk's own callbacks. */
void dq_kafka_log_offsets(rd_kafka_t *rk,
                          const rd_kafka_topic_partition_list_t *parts,
                          int64_t where, int timeout_ms, int64_t *out);

#endif
