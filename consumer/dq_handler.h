/* Job handlers: what runs between a job's claim and its settle. The
 * deterministic kinds do their work inside the settle itself (the Redis
 * complete function writes the effect and the state in one step), so their
 * handler only decides whether the job may complete. */
#ifndef DQ_HANDLER_H
#define DQ_HANDLER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dq_err.h"
#include "dq_job.h"
#include "dq_llm.h"
#include "dq_store.h"

typedef struct dq_handler_ctx_s {
        /* Obey the fault-injection trace ids (debug.faults). */
        bool faults;
        /* Called at least every 100 ms while a handler runs long; renews
         * leases. Returns false when the job must be abandoned (shutdown). */
        bool (*heartbeat)(void *opaque);
        void *opaque;
        /* llm_summary: the backend (NULL: none), the sources the claim
         * read and their digest, the flag that stops a call, and a
         * refusal found before the run (refusal_code NULL: none). */
        dq_llm_t *llm;
        const dq_sources_t *sources;
        const char *digest;
        const atomic_bool *cancel;
        const char *refusal_code;
        const char *refusal_message;
} dq_handler_ctx_t;

typedef struct dq_handler_result_s {
        /* DQ_OK: complete the job. DQ_ERR_TRANSIENT or DQ_ERR_TIMEOUT:
         * retry. DQ_ERR_REJECTED: dead-letter now (fatal). */
        dq_err_t err;
        bool abandoned; /* stopped by shutdown: hand back, settle nothing */
        const char *code;
        char message[512];

        /* llm_summary: whether the backend was called, and its answer.
         * content (err DQ_OK) is malloc'ed and owned by whoever holds the
         * result. retry_after_ms: the server's Retry-After, a floor of the
         * retry's not-before time; -1 none. no_blame: the backend, not
         * the job, failed (401, 403, insufficient quota): the job is handed
         * back without spending its attempt. */
        bool llm_called;
        bool no_blame;
        int64_t retry_after_ms;
        char *content;
        char model[128];
        char fingerprint[128];
        int64_t prompt_tokens, completion_tokens;
        double llm_ms;
        long http_status;
} dq_handler_result_t;

/* True when job's handler does nothing but let it complete: the
 * deterministic kinds, unless debug.faults (faults) gives its trace id a
 * fault to inject. Such a job is claimed and completed in one Redis step
 * (dq_store_run()). */
bool dq_handler_is_inline(bool faults, const dq_job_t *job);

/* Frees what res owns (its content). */
void dq_handler_result_release(dq_handler_result_t *res);

/* Runs job's handler for its attempt-th run (1-based). */
void dq_handler_run(const dq_handler_ctx_t *ctx, const dq_job_t *job,
                    int64_t attempt, dq_handler_result_t *res);

#endif
