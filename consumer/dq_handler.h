/* Job handlers: what runs between a job's claim and its settle. The
 * deterministic kinds do their work inside the settle itself (the Redis
 * complete function writes the effect and the state in one step), so their
 * handler only decides whether the job may complete. */
#ifndef DQ_HANDLER_H
#define DQ_HANDLER_H

#include <stdbool.h>
#include <stdint.h>

#include "dq_err.h"
#include "dq_job.h"

typedef struct dq_handler_ctx_s {
        /* Obey the fault-injection trace ids (debug.faults). */
        bool faults;
        /* Called at least every 100 ms while a handler runs long; renews
         * leases. Returns false when the job must be abandoned (shutdown). */
        bool (*heartbeat)(void *opaque);
        void *opaque;
} dq_handler_ctx_t;

typedef struct dq_handler_result_s {
        /* DQ_OK: complete the job. DQ_ERR_TRANSIENT or DQ_ERR_TIMEOUT:
         * retry. DQ_ERR_REJECTED: dead-letter now (fatal). */
        dq_err_t err;
        bool abandoned; /* stopped by shutdown: hand back, settle nothing */
        const char *code;
        char message[256];
} dq_handler_result_t;

/* True when job's handler does nothing but let it complete: the
 * deterministic kinds, unless debug.faults (faults) gives its trace id a
 * fault to inject. Such a job is claimed and completed in one Redis step
 * (dq_store_run()). */
bool dq_handler_is_inline(bool faults, const dq_job_t *job);

/* Runs job's handler for its attempt-th run (1-based). */
void dq_handler_run(const dq_handler_ctx_t *ctx, const dq_job_t *job,
                    int64_t attempt, dq_handler_result_t *res);

#endif
