/* The handler pool: workers start as tasks wait for them, never more than
 * the cap, and every task submitted finishes with its own answer. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_pool.h"
#include "dq_test.h"
#include "dq_test_store.h"
#include "banned.h"

/* A task whose handler runs ms milliseconds (the slow: fault), then
 * succeeds. */
static dq_task_t *slow_task(int ms)
{
        const char *src[] = {"m1"};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "t/a", src, 1);
        char trace[32];
        dq_task_t *t;

        snprintf(trace, sizeof(trace), "slow:%d", ms);
        job->trace_id = strdup(trace);
        t = dq_task_new(job, 1, true);
        cr_assert_not_null(t);
        dq_job_destroy(job);
        return t;
}

/* Collects until n tasks have finished; each must have succeeded. */
static void collect(dq_pool_t *p, int n)
{
        int got = 0;

        for (int i = 0; i < 600 && got < n; i++) {
                dq_pool_wait(p, 100);
                for (dq_task_t *t = dq_pool_collect(p), *next; t; t = next) {
                        next = t->next;
                        cr_expect_eq(t->res.err, DQ_OK, "%s", t->res.message);
                        dq_task_free(t);
                        got++;
                }
        }
        cr_assert_eq(got, n, "%d of %d tasks finished", got, n);
}

/* Submits n tasks of ms milliseconds each; every one must be queued
 * without error. */
static void submit(dq_pool_t *p, int n, int ms)
{
        for (int i = 0; i < n; i++)
                cr_assert_eq(dq_pool_submit(p, slow_task(ms)), 0);
}

static dq_pool_t *pool_of(int threads)
{
        char errstr[256];
        dq_pool_t *p = dq_pool_new(threads, errstr, sizeof(errstr));

        cr_assert_not_null(p, "%s", errstr);
        return p;
}

Test(pool, one_worker_until_tasks_wait_for_more)
{
        dq_pool_t *p = pool_of(256);

        cr_expect_eq(dq_pool_threads(p), 1, "one worker at start, not 256");
        /* One task at a time: the one worker takes each. */
        for (int i = 0; i < 5; i++) {
                submit(p, 1, 1);
                collect(p, 1);
        }
        cr_expect_eq(dq_pool_threads(p), 1);
        dq_pool_destroy(p);
}

Test(pool, workers_start_for_waiting_tasks_up_to_the_cap)
{
        dq_pool_t *p = pool_of(4);

        /* Three at once: one worker each, as none is idle for them. */
        submit(p, 3, 300);
        cr_expect_eq(dq_pool_threads(p), 3);
        /* Nine more: the cap holds, and they wait for the four. */
        submit(p, 9, 50);
        cr_expect_eq(dq_pool_threads(p), 4);
        collect(p, 12);
        cr_expect_eq(dq_pool_threads(p), 4, "workers stay for the next");
        dq_pool_destroy(p);
}

/* Shutdown with tasks queued and running: every worker started is joined,
 * nothing leaks (ASan). */
Test(pool, destroy_with_tasks_running_and_queued)
{
        dq_pool_t *p = pool_of(2);

        submit(p, 6, 200);
        cr_expect_eq(dq_pool_threads(p), 2);
        dq_pool_destroy(p);
}

/* A drain signal must reach the main loop's thread, which reads what the
 * handler sets: every worker, the first and those started later, blocks
 * the signals decay-consumer handles. */
Test(pool, workers_block_the_signals_the_main_loop_handles)
{
        long before[64];
        int nb = dq_test_tasks(before, 64);
        dq_pool_t *p = pool_of(4);

        submit(p, 3, 300);
        cr_assert_eq(dq_pool_threads(p), 3);
        cr_expect_eq(dq_test_expect_new_threads_block_signals(before, nb), 3);
        collect(p, 3);
        dq_pool_destroy(p);
}
