/* libFuzzer entry point for the job decoder: any bytes must either parse
 * into a job that serializes and parses again, or be rejected with a reason
 * code; never crash, leak or hang. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dq_job.h"
#include "banned.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        dq_reject_t rej;
        dq_job_t *job = dq_job_parse((const char *)data, size, 64 * 1024, &rej);

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
