/* The handler runner: a bounded pool of worker threads behind one
 * interface, submit a task and collect the finished ones. A task carries
 * its own copy of the job; a worker reads only its task and writes only its
 * result. Only the main loop touches items, Redis and Kafka. */
#ifndef DQ_POOL_H
#define DQ_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "dq_handler.h"
#include "dq_job.h"

typedef struct dq_pool_s dq_pool_t;

typedef struct dq_task_s {
        dq_job_t *job; /* the task's own copy, freed with the task */
        int64_t attempt;
        bool faults;
        /* Set by the main loop: give up (timeout, shutdown, revoke). The
         * handler sees it at its next heartbeat. */
        atomic_bool cancel;
        dq_handler_result_t res; /* the worker's answer */
        /* llm_summary: the backend (shared), the sources the claim read
         * (owned), their digest, and a refusal found before the run. */
        dq_llm_t *llm;
        dq_sources_t *sources;
        char digest[41];
        char refusal[64];
        char refusal_message[512];
        /* Main loop only: the item it runs for (NULL once the main loop
         * has given it up: its answer is then dropped), when it started
         * (mono ms). */
        void *owner;
        int64_t started;
        struct dq_task_s *next;
} dq_task_t;

/* A pool of up to threads workers; NULL when not even one can be started.
 * One starts at once, the others as tasks wait for them.
 * @locality main loop */
dq_pool_t *dq_pool_new(int threads, char *errstr, size_t errstr_size);

/* A task for a copy of job's attempt-th run; NULL when out of memory.
 * @locality any */
dq_task_t *dq_task_new(const dq_job_t *job, int64_t attempt, bool faults);
void dq_task_free(dq_task_t *t);

/* Queues t for a worker, and starts one more when no idle worker is left
 * for it and the cap allows. Returns 0, or the errno of a worker that could
 * not be started: t is queued anyway, for the workers there are.
 * @locality main loop */
int dq_pool_submit(dq_pool_t *p, dq_task_t *t);

/* Workers started so far. @locality any */
int dq_pool_threads(dq_pool_t *p);

/* The tasks finished since the last call, in no order (a list through
 * next); never blocks. @locality main loop */
dq_task_t *dq_pool_collect(dq_pool_t *p);

/* Waits up to ms for a task to finish; true when one has. @locality main
 * loop */
bool dq_pool_wait(dq_pool_t *p, int ms);

/* Cancels every task, joins the workers and frees what is left. NULL is a
 * no-op. @locality main loop */
void dq_pool_destroy(dq_pool_t *p);

#endif
