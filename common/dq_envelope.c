/* The provenance headers: one table from field to header name, type and
 * place in dq_envelope_t, read by both directions. */
#include "dq_envelope.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_time.h"
#include "banned.h"

typedef enum { STR, INT, TIME } type_t;

static const struct field_s {
        const char *name;
        type_t type;
        size_t off;
        size_t size; /* STR: the buffer's */
} fields[DQ_ENV__CNT] = {
#define F(f, n, t, m)                            \
        [f] = {n, t, offsetof(dq_envelope_t, m), \
               sizeof(((dq_envelope_t *)0)->m)}
    F(DQ_ENV_SCHEMA, DQ_HDR_SCHEMA, STR, schema),
    F(DQ_ENV_TRACE_ID, DQ_HDR_TRACE_ID, STR, trace_id),
    F(DQ_ENV_ATTEMPTS, DQ_HDR_ATTEMPTS, INT, attempts),
    F(DQ_ENV_NOT_BEFORE, DQ_HDR_NOT_BEFORE, TIME, not_before),
    F(DQ_ENV_ORIGINAL_TOPIC, DQ_HDR_ORIGINAL_TOPIC, STR, orig_topic),
    F(DQ_ENV_ORIGINAL_PARTITION, DQ_HDR_ORIGINAL_PARTITION, INT,
      orig_partition),
    F(DQ_ENV_ORIGINAL_OFFSET, DQ_HDR_ORIGINAL_OFFSET, INT, orig_offset),
    F(DQ_ENV_ORIGINAL_TIMESTAMP, DQ_HDR_ORIGINAL_TIMESTAMP, TIME, orig_ts),
    F(DQ_ENV_CONSUMER_GROUP, DQ_HDR_CONSUMER_GROUP, STR, group),
    F(DQ_ENV_WORKER, DQ_HDR_WORKER, STR, worker),
    F(DQ_ENV_ERROR_CLASS, DQ_HDR_ERROR_CLASS, STR, err_class),
    F(DQ_ENV_ERROR_CODE, DQ_HDR_ERROR_CODE, STR, err_code),
    F(DQ_ENV_ERROR_MESSAGE, DQ_HDR_ERROR_MESSAGE, STR, err_message),
    F(DQ_ENV_FIRST_FAILED_AT, DQ_HDR_FIRST_FAILED_AT, TIME, first_failed_at),
    F(DQ_ENV_REPLAY_COUNT, DQ_HDR_REPLAY_COUNT, INT, replay_count),
    F(DQ_ENV_REPLAYED_FROM, DQ_HDR_REPLAYED_FROM, STR, replayed_from),
    F(DQ_ENV_REPLAYED_BY, DQ_HDR_REPLAYED_BY, STR, replayed_by),
    F(DQ_ENV_TRUNCATED, DQ_HDR_TRUNCATED, STR, truncated),
    F(DQ_ENV_ORIGINAL_SIZE, DQ_HDR_ORIGINAL_SIZE, INT, original_size),
    F(DQ_ENV_ORIGINAL_KEY_SIZE, DQ_HDR_ORIGINAL_KEY_SIZE, INT,
      original_key_size),
    F(DQ_ENV_ORIGINAL_SHA256, DQ_HDR_ORIGINAL_SHA256, STR, original_sha256),
#undef F
};

const char *dq_envelope_name(dq_env_field_t f)
{
        return (unsigned)f < DQ_ENV__CNT ? fields[f].name : NULL;
}

static char *str_at(dq_envelope_t *e, dq_env_field_t f)
{
        return (char *)e + fields[f].off;
}

static int64_t *int_at(dq_envelope_t *e, dq_env_field_t f)
{
        return (int64_t *)(void *)((char *)e + fields[f].off);
}

void dq_envelope_set_str(dq_envelope_t *e, dq_env_field_t f, const char *s)
{
        snprintf(str_at(e, f), fields[f].size, "%s", s ? s : "");
        e->has |= DQ_ENV_BIT(f);
}

void dq_envelope_set_int(dq_envelope_t *e, dq_env_field_t f, int64_t v)
{
        *int_at(e, f) = v;
        e->has |= DQ_ENV_BIT(f);
}

/* Parses val[0..len) as field f's type; false when it does not parse. */
static bool parse(dq_envelope_t *e, dq_env_field_t f, const char *val,
                  size_t len)
{
        char buf[64], *end;
        long long v;
        int64_t ms;

        if (fields[f].type == STR) {
                size_t n = len < fields[f].size ? len : fields[f].size - 1;
                memcpy(str_at(e, f), val, n);
                str_at(e, f)[n] = '\0';
                return true;
        }
        if (len >= sizeof(buf))
                return false;
        memcpy(buf, val, len);
        buf[len] = '\0';
        if (fields[f].type == TIME) {
                if (!dq_time_parse_rfc3339(buf, len, &ms))
                        return false;
                *int_at(e, f) = ms;
                return true;
        }
        /* Digits with an optional '-': no blanks, no '+', no hex. */
        if (!(buf[0] >= '0' && buf[0] <= '9') && buf[0] != '-')
                return false;
        errno = 0;
        v = strtoll(buf, &end, 10);
        if (errno || end == buf || *end)
                return false;
        *int_at(e, f) = (int64_t)v;
        return true;
}

void dq_envelope_decode(dq_envelope_t *e, const rd_kafka_headers_t *h)
{
        memset(e, 0, sizeof(*e));
        for (int f = 0; h && f < DQ_ENV__CNT; f++) {
                const void *val;
                size_t len;

                if (rd_kafka_header_get_last(h, fields[f].name, &val, &len) ||
                    !val)
                        continue;
                if (parse(e, (dq_env_field_t)f, val, len))
                        e->has |= DQ_ENV_BIT(f);
        }
}

void dq_envelope_decode_msg(dq_envelope_t *e, const rd_kafka_message_t *m)
{
        rd_kafka_headers_t *h = NULL;

        if (rd_kafka_message_headers(m, &h))
                h = NULL;
        dq_envelope_decode(e, h);
}

int dq_envelope_encode(const dq_envelope_t *e, rd_kafka_headers_t *h)
{
        for (int f = 0; f < DQ_ENV__CNT; f++) {
                const char *v = (const char *)e + fields[f].off;
                int64_t n;
                char buf[64];

                if (!(e->has & DQ_ENV_BIT(f)))
                        continue;
                if (fields[f].type != STR) {
                        memcpy(&n, v, sizeof(n));
                        if (fields[f].type == TIME)
                                dq_time_format_rfc3339(n, buf, sizeof(buf));
                        else
                                snprintf(buf, sizeof(buf), "%lld",
                                         (long long)n);
                        v = buf;
                }
                if (rd_kafka_header_add(h, fields[f].name, -1, v, -1))
                        return -1;
        }
        return 0;
}
