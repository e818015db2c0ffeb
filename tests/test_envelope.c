/* The provenance headers (dq_envelope): the names DESIGN.md fixes, a
 * round trip of every field, and the worst values a topic's writer can
 * put in them. */
#include <criterion/criterion.h>
#include <string.h>

#include "dq_envelope.h"
#include "banned.h"

/* The value of header name in h, as a string. */
static const char *get(const rd_kafka_headers_t *h, const char *name, char *buf,
                       size_t size)
{
        const void *v;
        size_t len;

        if (rd_kafka_header_get_last(h, name, &v, &len) || !v)
                return NULL;
        if (len >= size)
                len = size - 1;
        memcpy(buf, v, len);
        buf[len] = '\0';
        return buf;
}

Test(envelope, header_names_are_the_wire_contract)
{
        /* DESIGN.md, "Headers on delay and DLQ copies". */
        static const char *const design[] = {
            "decayq-attempts",        "decayq-not-before",
            "decayq-original-topic",  "decayq-original-partition",
            "decayq-original-offset", "decayq-original-timestamp",
            "decayq-consumer-group",  "decayq-worker",
            "decayq-error-class",     "decayq-error-code",
            "decayq-error-message",   "decayq-first-failed-at",
            "decayq-replay-count",
        };

        for (size_t i = 0; i < sizeof(design) / sizeof(*design); i++) {
                bool found = false;
                for (int f = 0; f < DQ_ENV__CNT; f++)
                        found |= !strcmp(dq_envelope_name(f), design[i]);
                cr_assert(found, "%s has no field", design[i]);
        }
        cr_assert_str_eq(dq_envelope_name(DQ_ENV_ATTEMPTS), DQ_HDR_ATTEMPTS);
        cr_assert_null(dq_envelope_name(DQ_ENV__CNT));
}

Test(envelope, every_field_survives_a_round_trip)
{
        rd_kafka_headers_t *h = rd_kafka_headers_new(8);
        dq_envelope_t e = {0}, d;
        char buf[64];

        dq_envelope_set_str(&e, DQ_ENV_SCHEMA, "1");
        dq_envelope_set_str(&e, DQ_ENV_TRACE_ID, "trace");
        dq_envelope_set_int(&e, DQ_ENV_ATTEMPTS, 3);
        dq_envelope_set_int(&e, DQ_ENV_NOT_BEFORE, 1796000000123);
        dq_envelope_set_str(&e, DQ_ENV_ORIGINAL_TOPIC, "decay.jobs");
        dq_envelope_set_int(&e, DQ_ENV_ORIGINAL_PARTITION, 7);
        dq_envelope_set_int(&e, DQ_ENV_ORIGINAL_OFFSET, 9007199254740993);
        dq_envelope_set_int(&e, DQ_ENV_ORIGINAL_TIMESTAMP, 1796000000000);
        dq_envelope_set_str(&e, DQ_ENV_CONSUMER_GROUP, "g");
        dq_envelope_set_str(&e, DQ_ENV_WORKER, "pod-1");
        dq_envelope_set_str(&e, DQ_ENV_ERROR_CLASS, "retryable");
        dq_envelope_set_str(&e, DQ_ENV_ERROR_CODE, "decay.x");
        dq_envelope_set_str(&e, DQ_ENV_ERROR_MESSAGE, "it failed");
        dq_envelope_set_int(&e, DQ_ENV_FIRST_FAILED_AT, 1795999999000);
        dq_envelope_set_int(&e, DQ_ENV_REPLAY_COUNT, 2);
        dq_envelope_set_str(&e, DQ_ENV_REPLAYED_FROM, "decay.dlq/0/5");
        dq_envelope_set_str(&e, DQ_ENV_REPLAYED_BY, "ops");
        dq_envelope_set_str(&e, DQ_ENV_TRUNCATED, "payload");
        dq_envelope_set_int(&e, DQ_ENV_ORIGINAL_SIZE, 2000000);
        dq_envelope_set_int(&e, DQ_ENV_ORIGINAL_KEY_SIZE, 0);
        dq_envelope_set_str(&e, DQ_ENV_ORIGINAL_SHA256, "ab");
        cr_assert_eq(e.has, (1u << DQ_ENV__CNT) - 1);
        cr_assert_eq(dq_envelope_encode(&e, h), 0);
        cr_assert_eq(rd_kafka_header_cnt(h), DQ_ENV__CNT);
        cr_assert_str_eq(get(h, DQ_HDR_NOT_BEFORE, buf, sizeof(buf)),
                         "2026-11-30T00:53:20.123Z");
        cr_assert_str_eq(get(h, DQ_HDR_ORIGINAL_OFFSET, buf, sizeof(buf)),
                         "9007199254740993");

        dq_envelope_decode(&d, h);
        cr_assert_eq(memcmp(&d, &e, sizeof(d)), 0, "decode differs");
        rd_kafka_headers_destroy(h);
}

Test(envelope, only_set_fields_are_written)
{
        rd_kafka_headers_t *h = rd_kafka_headers_new(2);
        dq_envelope_t e = {0};

        dq_envelope_set_int(&e, DQ_ENV_ATTEMPTS, 0);
        cr_assert_eq(dq_envelope_encode(&e, h), 0);
        cr_assert_eq(rd_kafka_header_cnt(h), 1);
        rd_kafka_headers_destroy(h);

        dq_envelope_decode(&e, NULL);
        cr_assert_eq(e.has, 0);
}

Test(envelope, hostile_values_never_parse_as_numbers_or_overflow)
{
        static const char *const bad_ints[] = {
            "", " 1", "1 ", "1x", "0x10", "99999999999999999999", "+", "-",
        };
        static const char *const bad_times[] = {
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00+01:00",
            "yesterday",
        };
        char big[5000];
        dq_envelope_t e;

        for (size_t i = 0; i < sizeof(bad_ints) / sizeof(*bad_ints); i++) {
                rd_kafka_headers_t *h = rd_kafka_headers_new(1);
                rd_kafka_header_add(h, DQ_HDR_ATTEMPTS, -1, bad_ints[i], -1);
                dq_envelope_decode(&e, h);
                cr_assert_not(dq_envelope_has(&e, DQ_ENV_ATTEMPTS),
                              "'%s' parsed", bad_ints[i]);
                cr_assert_eq(e.attempts, 0);
                rd_kafka_headers_destroy(h);
        }
        for (size_t i = 0; i < sizeof(bad_times) / sizeof(*bad_times); i++) {
                rd_kafka_headers_t *h = rd_kafka_headers_new(1);
                rd_kafka_header_add(h, DQ_HDR_NOT_BEFORE, -1, bad_times[i], -1);
                dq_envelope_decode(&e, h);
                cr_assert_not(dq_envelope_has(&e, DQ_ENV_NOT_BEFORE),
                              "'%s' parsed", bad_times[i]);
                rd_kafka_headers_destroy(h);
        }

        /* An oversized message with a NUL inside, a NULL value, and the
         * same name twice (the last counts). */
        memset(big, 'm', sizeof(big));
        big[10] = '\0';
        rd_kafka_headers_t *h = rd_kafka_headers_new(4);
        rd_kafka_header_add(h, DQ_HDR_ERROR_MESSAGE, -1, big, sizeof(big));
        rd_kafka_header_add(h, DQ_HDR_WORKER, -1, NULL, 0);
        rd_kafka_header_add(h, DQ_HDR_REPLAY_COUNT, -1, "1", -1);
        rd_kafka_header_add(h, DQ_HDR_REPLAY_COUNT, -1, "5", -1);
        dq_envelope_decode(&e, h);
        cr_assert(dq_envelope_has(&e, DQ_ENV_ERROR_MESSAGE));
        cr_assert_eq(e.err_message[DQ_ENVELOPE_MESSAGE_MAX], '\0');
        cr_assert_not(dq_envelope_has(&e, DQ_ENV_WORKER));
        cr_assert_eq(e.replay_count, 5);
        rd_kafka_headers_destroy(h);
}
