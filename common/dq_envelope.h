/* The envelope of a decay job's record: its provenance headers (DESIGN.md,
 * "Headers on delay and DLQ copies"), their names, and a pure decode and
 * encode between a header set and a struct. The consumer writes them on
 * every delay and DLQ copy, decayctl reads them from the DLQ and writes a
 * replay's, and the producer writes the schema and the trace id. */
#ifndef DQ_ENVELOPE_H
#define DQ_ENVELOPE_H

#include <stdbool.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

#define DQ_HDR_SCHEMA             "decayq-schema"
#define DQ_HDR_TRACE_ID           "decayq-trace-id"
#define DQ_HDR_ATTEMPTS           "decayq-attempts"
#define DQ_HDR_NOT_BEFORE         "decayq-not-before"
#define DQ_HDR_ORIGINAL_TOPIC     "decayq-original-topic"
#define DQ_HDR_ORIGINAL_PARTITION "decayq-original-partition"
#define DQ_HDR_ORIGINAL_OFFSET    "decayq-original-offset"
#define DQ_HDR_ORIGINAL_TIMESTAMP "decayq-original-timestamp"
#define DQ_HDR_CONSUMER_GROUP     "decayq-consumer-group"
#define DQ_HDR_WORKER             "decayq-worker"
#define DQ_HDR_ERROR_CLASS        "decayq-error-class"
#define DQ_HDR_ERROR_CODE         "decayq-error-code"
#define DQ_HDR_ERROR_MESSAGE      "decayq-error-message"
#define DQ_HDR_FIRST_FAILED_AT    "decayq-first-failed-at"
#define DQ_HDR_REPLAY_COUNT       "decayq-replay-count"
/* Written by decayctl dlq replay on the records it republishes. */
#define DQ_HDR_REPLAYED_FROM "decayq-replayed-from"
#define DQ_HDR_REPLAYED_BY   "decayq-replayed-by"
/* Written on a DLQ copy that was cut to fit its topic. */
#define DQ_HDR_TRUNCATED         "decayq-truncated"
#define DQ_HDR_ORIGINAL_SIZE     "decayq-original-size"
#define DQ_HDR_ORIGINAL_KEY_SIZE "decayq-original-key-size"
#define DQ_HDR_ORIGINAL_SHA256   "decayq-original-sha256"

/* The schema version the producer writes. */
#define DQ_ENVELOPE_SCHEMA "1"
/* An error message is cut to this many bytes. */
#define DQ_ENVELOPE_MESSAGE_MAX 1024

/* The fields, in the order they are written. */
typedef enum dq_env_field_e {
        DQ_ENV_SCHEMA,
        DQ_ENV_TRACE_ID,
        DQ_ENV_ATTEMPTS,
        DQ_ENV_NOT_BEFORE,
        DQ_ENV_ORIGINAL_TOPIC,
        DQ_ENV_ORIGINAL_PARTITION,
        DQ_ENV_ORIGINAL_OFFSET,
        DQ_ENV_ORIGINAL_TIMESTAMP,
        DQ_ENV_CONSUMER_GROUP,
        DQ_ENV_WORKER,
        DQ_ENV_ERROR_CLASS,
        DQ_ENV_ERROR_CODE,
        DQ_ENV_ERROR_MESSAGE,
        DQ_ENV_FIRST_FAILED_AT,
        DQ_ENV_REPLAY_COUNT,
        DQ_ENV_REPLAYED_FROM,
        DQ_ENV_REPLAYED_BY,
        DQ_ENV_TRUNCATED,
        DQ_ENV_ORIGINAL_SIZE,
        DQ_ENV_ORIGINAL_KEY_SIZE,
        DQ_ENV_ORIGINAL_SHA256,
        DQ_ENV__CNT
} dq_env_field_t;

#define DQ_ENV_BIT(f) (1u << (f))

/* Times are wall-clock ms, written as RFC 3339 UTC. Strings are cut to
 * their buffer (an error message to DQ_ENVELOPE_MESSAGE_MAX bytes). */
typedef struct dq_envelope_s {
        /* Which fields are set: decoded, or to encode (DQ_ENV_BIT()). */
        unsigned has;
        char schema[64];
        char trace_id[256];
        int64_t attempts;
        int64_t not_before;
        char orig_topic[256];
        int64_t orig_partition;
        int64_t orig_offset;
        int64_t orig_ts;
        char group[256];
        char worker[256];
        char err_class[16];
        char err_code[128];
        char err_message[DQ_ENVELOPE_MESSAGE_MAX + 1];
        int64_t first_failed_at;
        int64_t replay_count;
        char replayed_from[320];
        char replayed_by[256];
        char truncated[16]; /* "payload" or "key,payload" */
        int64_t original_size;
        int64_t original_key_size;
        char original_sha256[65];
} dq_envelope_t;

/* The header name of a field. */
const char *dq_envelope_name(dq_env_field_t f);

/* Decodes the provenance headers of h (NULL: none) into e. The last header
 * of a name counts; a number or a time that does not parse leaves its
 * field unset, as if absent. Other headers are ignored. */
void dq_envelope_decode(dq_envelope_t *e, const rd_kafka_headers_t *h);

/* The same, from a message's headers. */
void dq_envelope_decode_msg(dq_envelope_t *e, const rd_kafka_message_t *m);

/* Appends the set fields of e to h, in field order. Returns 0, or -1 when
 * a header could not be added. */
int dq_envelope_encode(const dq_envelope_t *e, rd_kafka_headers_t *h);

/* Sets string field f to s (cut to its buffer). */
void dq_envelope_set_str(dq_envelope_t *e, dq_env_field_t f, const char *s);

/* Sets number or time field f to v. */
void dq_envelope_set_int(dq_envelope_t *e, dq_env_field_t f, int64_t v);

/* True when field f is set. */
static inline bool dq_envelope_has(const dq_envelope_t *e, dq_env_field_t f)
{
        return (e->has & DQ_ENV_BIT(f)) != 0;
}

#endif
