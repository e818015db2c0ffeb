/* The worker pool; see dq_pool.h. One mutex guards the two queues; workers
 * sleep on one condition, the main loop on another. Workers start as the
 * queue needs them: each idle thread holds its stack and thread-local
 * storage (about 32 KiB resident), and a consumer whose jobs all run
 * inside Redis needs none of them. */
#define _GNU_SOURCE
#include "dq_pool.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "banned.h"

struct dq_pool_s {
        pthread_mutex_t lock;
        pthread_cond_t work; /* a task queued, or stop */
        pthread_cond_t done; /* a task finished */
        dq_task_t *queue, *queue_tail;
        dq_task_t **active; /* the task each worker runs, or NULL */
        dq_task_t *finished;
        bool stop;
        int threads, max; /* started, and the most there may be */
        int idle;         /* started and running no task */
        int queued;       /* tasks in queue */
        pthread_t *tids;
};

dq_task_t *dq_task_new(const dq_job_t *job, int64_t attempt, bool faults)
{
        dq_task_t *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        if (!(t->job = dq_job_dup(job))) {
                free(t);
                return NULL;
        }
        t->attempt = attempt;
        t->faults = faults;
        atomic_init(&t->cancel, false);
        return t;
}

void dq_task_free(dq_task_t *t)
{
        if (!t)
                return;
        dq_job_destroy(t->job);
        dq_sources_free(t->sources);
        dq_handler_result_release(&t->res);
        free(t);
}

/* The handler's heartbeat: false once the main loop gave the task up. */
static bool still_wanted(void *opaque)
{
        dq_task_t *t = opaque;
        return !atomic_load(&t->cancel);
}

typedef struct slot_s {
        dq_pool_t *pool;
        int index;
} slot_t;

static void *worker(void *arg)
{
        slot_t slot = *(slot_t *)arg;
        dq_pool_t *p = slot.pool;

        free(arg);
        pthread_mutex_lock(&p->lock);
        for (;;) {
                dq_task_t *t;
                dq_handler_ctx_t ctx;

                while (!p->queue && !p->stop)
                        pthread_cond_wait(&p->work, &p->lock);
                p->idle--;
                if (p->stop)
                        break;
                t = p->queue;
                p->queue = t->next;
                p->queued--;
                if (!p->queue)
                        p->queue_tail = NULL;
                p->active[slot.index] = t;
                pthread_mutex_unlock(&p->lock);

                ctx = (dq_handler_ctx_t){
                    .faults = t->faults,
                    .heartbeat = still_wanted,
                    .opaque = t,
                    .llm = t->llm,
                    .sources = t->sources,
                    .digest = t->digest,
                    .cancel = &t->cancel,
                    .refusal_code = t->refusal[0] ? t->refusal : NULL,
                    .refusal_message = t->refusal_message,
                };
                dq_handler_run(&ctx, t->job, t->attempt, &t->res);

                pthread_mutex_lock(&p->lock);
                p->active[slot.index] = NULL;
                t->next = p->finished;
                p->finished = t;
                p->idle++;
                pthread_cond_signal(&p->done);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* Starts one more worker; 0 or an errno. Called with the lock held. The
 * worker starts with every signal blocked, so that a drain signal reaches
 * the main loop's thread, the one that reads what the handler set. */
static int start_worker(dq_pool_t *p)
{
        slot_t *slot = malloc(sizeof(*slot));
        sigset_t all, mask;
        int err;

        if (!slot)
                return ENOMEM;
        *slot = (slot_t){p, p->threads};
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &mask);
        err = pthread_create(&p->tids[p->threads], NULL, worker, slot);
        pthread_sigmask(SIG_SETMASK, &mask, NULL);
        if (err) {
                free(slot);
                return err;
        }
        p->threads++;
        p->idle++;
        return 0;
}

dq_pool_t *dq_pool_new(int threads, char *errstr, size_t errstr_size)
{
        dq_pool_t *p = calloc(1, sizeof(*p));
        int err;

        if (!p || !(p->tids = calloc((size_t)threads, sizeof(*p->tids))) ||
            !(p->active = calloc((size_t)threads, sizeof(*p->active)))) {
                if (p)
                        free(p->tids);
                free(p);
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        p->max = threads;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->work, NULL);
        pthread_cond_init(&p->done, NULL);
        /* One at once: a process that cannot start a thread learns it
         * before it takes any work. */
        pthread_mutex_lock(&p->lock);
        err = start_worker(p);
        pthread_mutex_unlock(&p->lock);
        if (err) {
                snprintf(errstr, errstr_size,
                         "cannot start a handler thread: %s", strerror(err));
                dq_pool_destroy(p);
                return NULL;
        }
        return p;
}

int dq_pool_submit(dq_pool_t *p, dq_task_t *t)
{
        int err = 0;

        t->next = NULL;
        pthread_mutex_lock(&p->lock);
        if (p->queue_tail)
                p->queue_tail->next = t;
        else
                p->queue = t;
        p->queue_tail = t;
        p->queued++;
        /* Every queued task has an idle worker to take it, or a new one. */
        if (p->queued > p->idle && p->threads < p->max)
                err = start_worker(p);
        pthread_cond_signal(&p->work);
        pthread_mutex_unlock(&p->lock);
        return err;
}

int dq_pool_threads(dq_pool_t *p)
{
        int n;

        pthread_mutex_lock(&p->lock);
        n = p->threads;
        pthread_mutex_unlock(&p->lock);
        return n;
}

dq_task_t *dq_pool_collect(dq_pool_t *p)
{
        dq_task_t *t;

        pthread_mutex_lock(&p->lock);
        t = p->finished;
        p->finished = NULL;
        pthread_mutex_unlock(&p->lock);
        return t;
}

bool dq_pool_wait(dq_pool_t *p, int ms)
{
        struct timespec ts;
        bool any;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&p->lock);
        while (!p->finished &&
               pthread_cond_timedwait(&p->done, &p->lock, &ts) != ETIMEDOUT)
                ;
        any = p->finished != NULL;
        pthread_mutex_unlock(&p->lock);
        return any;
}

void dq_pool_destroy(dq_pool_t *p)
{
        dq_task_t *t, *next;

        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        for (t = p->queue; t; t = t->next)
                atomic_store(&t->cancel, true);
        for (int i = 0; i < p->threads; i++)
                if (p->active[i])
                        atomic_store(&p->active[i]->cancel, true);
        p->stop = true;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->threads; i++)
                pthread_join(p->tids[i], NULL);
        for (t = p->queue; t; t = next) {
                next = t->next;
                dq_task_free(t);
        }
        for (t = p->finished; t; t = next) {
                next = t->next;
                dq_task_free(t);
        }
        pthread_cond_destroy(&p->work);
        pthread_cond_destroy(&p->done);
        pthread_mutex_destroy(&p->lock);
        free(p->tids);
        free(p->active);
        free(p);
}
