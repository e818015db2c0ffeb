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

void dq_handler_result_release(dq_handler_result_t *res)
{
        free(res->content);
        res->content = NULL;
}

/* An llm_summary job: fails closed. No summary without a verified
 * attestation (checked before the claim) and a backend. */
static void llm_summary(const dq_handler_ctx_t *ctx, const dq_job_t *job,
                        dq_handler_result_t *res)
{
        dq_llm_result_t lr;
        dq_llm_request_t req;

        if (ctx->refusal_code) {
                res->err = DQ_ERR_REJECTED;
                res->code = ctx->refusal_code;
                snprintf(res->message, sizeof(res->message), "%s",
                         ctx->refusal_message ? ctx->refusal_message : "");
                return;
        }
        if (!ctx->llm) {
                if (!job->attestation)
                        fail(res, DQ_ERR_REJECTED,
                             "decay.llm_summary.requires_operator_attestation",
                             "llm_summary needs an operator attestation; "
                             "job ",
                             job->id);
                else
                        fail(res, DQ_ERR_REJECTED,
                             "decay.llm_summary.no_backend",
                             "no LLM backend is configured (llm.base.url); "
                             "job ",
                             job->id);
                return;
        }
        if (job->kind == DQ_KIND_EXPIRED_PRINCIPLE_REVIEW) {
                fail(res, DQ_ERR_REJECTED,
                     "decay.llm_summary.not_a_compression",
                     "an expired_principle_review opens a review and "
                     "summarizes nothing; job ",
                     job->id);
                return;
        }
        if (!ctx->sources || !job->attestation) {
                fail(res, DQ_ERR_TRANSIENT, "decay.llm.no_sources",
                     "the claim read no sources; job ", job->id);
                return;
        }
        req = (dq_llm_request_t){
            .job_id = job->id,
            .scope = job->scope,
            .kind = job->kind,
            .sources = ctx->sources->v,
            .source_cnt = ctx->sources->cnt,
            .max_tokens = job->attestation->max_tokens,
            .salt = ctx->digest,
        };
        dq_llm_call(ctx->llm, &req, ctx->cancel, &lr);
        res->llm_called = lr.cls != DQ_LLM_CANCELLED;
        res->http_status = lr.http_status;
        res->llm_ms = lr.latency_ms;
        res->retry_after_ms = lr.retry_after_ms;
        res->prompt_tokens = lr.prompt_tokens;
        res->completion_tokens = lr.completion_tokens;
        snprintf(res->model, sizeof(res->model), "%s", lr.model);
        snprintf(res->fingerprint, sizeof(res->fingerprint), "%s",
                 lr.fingerprint);
        res->code = lr.code;
        snprintf(res->message, sizeof(res->message), "%s", lr.message);
        switch (lr.cls) {
        case DQ_LLM_OK:
                res->err = DQ_OK;
                res->content = lr.content;
                lr.content = NULL;
                break;
        case DQ_LLM_RETRYABLE:
                res->err = lr.code && !strcmp(lr.code, "decay.llm.timeout")
                               ? DQ_ERR_TIMEOUT
                               : DQ_ERR_TRANSIENT;
                break;
        case DQ_LLM_NO_BLAME:
                res->err = DQ_ERR_TRANSIENT;
                res->no_blame = true;
                break;
        case DQ_LLM_CANCELLED:
                res->abandoned = true;
                break;
        default:
                res->err = DQ_ERR_REJECTED;
                break;
        }
        dq_llm_result_release(&lr);
}

void dq_handler_run(const dq_handler_ctx_t *ctx, const dq_job_t *job,
                    int64_t attempt, dq_handler_result_t *res)
{
        memset(res, 0, sizeof(*res));
        res->err = DQ_OK;
        res->retry_after_ms = -1;
        res->prompt_tokens = res->completion_tokens = -1;

        if (ctx->faults && inject(ctx, job, attempt, res))
                return;

        if (job->method == DQ_METHOD_LLM_SUMMARY)
                llm_summary(ctx, job, res);
}
