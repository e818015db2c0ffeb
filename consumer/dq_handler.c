/* Job handlers; see dq_handler.h. */
#define _GNU_SOURCE
#include "dq_handler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dq_time.h"
#include "banned.h"

static void fail(dq_handler_result_t *res, dq_err_t err, const char *code,
                 const char *what, const char *detail)
{
        res->err = err;
        res->code = code;
        snprintf(res->message, sizeof(res->message), "%s%s", what, detail);
}

/* Fault injection for tests, keyed by trace_id:
 *   fail-until:N   transient failure on attempts 1..N, then success
 *   fail-always    transient failure on every attempt
 *   slow:MS        runs MS milliseconds (heartbeats), then succeeds */
static bool inject(const dq_handler_ctx_t *ctx, const dq_job_t *job,
                   int64_t attempt, dq_handler_result_t *res)
{
        const char *t = job->trace_id;
        long n;

        if (!t)
                return false;
        if (!strcmp(t, "fail-always")) {
                fail(res, DQ_ERR_TRANSIENT, "decay.debug.injected_failure", t,
                     ": injected failure");
                return true;
        }
        if (sscanf(t, "fail-until:%ld", &n) == 1) {
                if (attempt <= n) {
                        fail(res, DQ_ERR_TRANSIENT,
                             "decay.debug.injected_failure", t,
                             ": injected failure");
                        return true;
                }
                return false;
        }
        if (sscanf(t, "slow:%ld", &n) == 1) {
                int64_t end = dq_mono_ms() + n;
                struct timespec ts = {0, 50 * 1000 * 1000};

                while (dq_mono_ms() < end) {
                        nanosleep(&ts, NULL);
                        if (ctx->heartbeat && !ctx->heartbeat(ctx->opaque)) {
                                res->abandoned = true;
                                return true;
                        }
                }
        }
        return false;
}

bool dq_handler_is_inline(bool faults, const dq_job_t *job)
{
        const char *t = job->trace_id;

        if (job->method == DQ_METHOD_LLM_SUMMARY)
                return false;
        return !faults || !t ||
               (strcmp(t, "fail-always") && strncmp(t, "fail-until:", 11) &&
                strncmp(t, "slow:", 5));
}

void dq_handler_run(const dq_handler_ctx_t *ctx, const dq_job_t *job,
                    int64_t attempt, dq_handler_result_t *res)
{
        memset(res, 0, sizeof(*res));
        res->err = DQ_OK;

        if (ctx->faults && inject(ctx, job, attempt, res))
                return;

        if (job->method == DQ_METHOD_LLM_SUMMARY) {
                /* Fails closed: no summary without an operator's
                 * attestation, and no backend is built in. */
                if (!job->attestation)
                        fail(res, DQ_ERR_REJECTED,
                             "decay.llm_summary.requires_operator_attestation",
                             "llm_summary needs an operator attestation; "
                             "job ",
                             job->id);
                else
                        fail(res, DQ_ERR_REJECTED,
                             "decay.llm_summary.no_backend",
                             "no LLM backend is configured; job ", job->id);
        }
}
