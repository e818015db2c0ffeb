/* libFuzzer entry point for the two decoders of what a topic's writer
 * controls: the job decoder (any bytes must either parse into a job that
 * serializes and parses again, or be rejected with a reason code) and the
 * envelope decoder (the bytes cut into headers must decode, encode and
 * decode again to the same envelope). Never crash, leak or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dq_envelope.h"
#include "dq_job.h"
#include "banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Cuts data into headers: each byte b picks a field name (b % fields,
 * else a name of its own), then a value of up to the next NUL or 200
 * bytes. */
static void fuzz_envelope(const uint8_t *data, size_t size)
{
        rd_kafka_headers_t *h = rd_kafka_headers_new(8), *again;
        dq_envelope_t e, d;
        size_t i = 0;

        while (i < size) {
                unsigned pick = data[i++] % (DQ_ENV__CNT + 1);
                const char *name = pick < DQ_ENV__CNT
                                       ? dq_envelope_name((dq_env_field_t)pick)
                                       : "other";
                size_t n = 0;
                while (i + n < size && n < 200 && data[i + n])
                        n++;
                rd_kafka_header_add(h, name, -1, data + i, (ssize_t)n);
                i += n + 1;
        }
        dq_envelope_decode(&e, h);
        again = rd_kafka_headers_new(DQ_ENV__CNT);
        if (dq_envelope_encode(&e, again))
                abort();
        dq_envelope_decode(&d, again);
        /* Times and strings are normal forms after one decode. */
        if (d.has != e.has || d.attempts != e.attempts ||
            d.orig_offset != e.orig_offset || d.not_before != e.not_before ||
            strcmp(d.err_message, e.err_message) ||
            strcmp(d.orig_topic, e.orig_topic))
                abort();
        rd_kafka_headers_destroy(again);
        rd_kafka_headers_destroy(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        dq_reject_t rej;
        dq_job_t *job;

        fuzz_envelope(data, size);
        job = dq_job_parse((const char *)data, size, 64 * 1024, &rej);
        if (!job) {
                if (!rej.code || strncmp(rej.code, "decay.job.", 10))
                        abort();
                return 0;
        }
        {
                size_t len;
                char *out = dq_job_serialize(job, &len);
                dq_job_t *again;
                if (!out)
                        abort();
                again = dq_job_parse(out, len, 1024 * 1024, &rej);
                if (!again || strcmp(again->id, job->id) ||
                    again->source_cnt != job->source_cnt)
                        abort();
                dq_job_destroy(again);
                free(out);
        }
        dq_job_destroy(job);
        return 0;
}
