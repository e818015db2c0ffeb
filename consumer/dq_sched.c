/* Handlers off the loop, in scope order (G10, G11). A job whose handler is
 * not inline waits in its scope's queue; the head of a free scope is
 * claimed when it is about to run, not before, and its handler runs on a
 * worker of the pool with a copy of the job. The loop keeps polling Kafka
 * meanwhile, renews the running jobs' leases on a timer, gives up a handler
 * past handler.timeout (class timeout), and settles what finishes. At most
 * max.in.flight jobs are claimed or running, one per scope; a partition
 * whose held records reach max.pending.per.partition is paused. */
#include "dq_consumer_int.h"

#include <stdlib.h>
#include <string.h>

#include "dq_log.h"
#include "dq_pool.h"
#include "dq_time.h"
#include "banned.h"

#define BUCKETS 4096

static size_t bucket(const char *s)
{
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return (size_t)(h % BUCKETS);
}

static dq_scope_q_t *scope_q(dq_consumer_t *c, const char *scope, bool create)
{
        dq_sched_t *s = &c->sched;
        dq_scope_q_t **b = &s->table[bucket(scope)], *q;

        for (q = *b; q; q = q->hnext)
                if (!strcmp(q->scope, scope))
                        return q;
        if (!create)
                return NULL;
        if (!(q = calloc(1, sizeof(*q))) || !(q->scope = strdup(scope)))
                dq_oom();
        q->hnext = *b;
        *b = q;
        s->scopes++;
        return q;
}

static void scope_drop_if_idle(dq_consumer_t *c, dq_scope_q_t *q)
{
        dq_scope_q_t **pp = &c->sched.table[bucket(q->scope)];

        if (q->head || q->running)
                return;
        while (*pp != q)
                pp = &(*pp)->hnext;
        *pp = q->hnext;
        c->sched.scopes--;
        free(q->scope);
        free(q);
}

int dq_sched_init(dq_consumer_t *c, char *errstr, size_t errstr_size)
{
        int64_t threads = c->conf->handler_threads;

        if (!threads)
                threads = c->conf->max_in_flight < 1024 ? c->conf->max_in_flight
                                                        : 1024;
        if (!(c->sched.table = calloc(BUCKETS, sizeof(*c->sched.table))))
                dq_oom();
        c->sched.pool = dq_pool_new((int)threads, errstr, errstr_size);
        return c->sched.pool ? 0 : -1;
}

/* Counts one record more or fewer held for its partition, pausing it at
 * max.pending.per.partition and resuming it below half of that. */
static void part_count(dq_consumer_t *c, const dq_item_t *it, int delta)
{
        dq_part_t *p = dq_item_part(c, it);
        int64_t cap = c->conf->max_pending_per_partition;

        if (!p)
                return;
        p->pending += delta;
        if (!p->full_paused && p->pending >= cap) {
                p->full_paused = true;
                dq_part_pause(c, p);
                dq_info("consume",
                        "topic=%s partition=%d paused=full held=%lld", p->topic,
                        (int)p->partition, (long long)p->pending);
        } else if (p->full_paused && p->pending <= cap / 2) {
                p->full_paused = false;
                if (!c->paused_all && !p->delay_paused && !p->blocked)
                        dq_part_resume(c, p);
                dq_info("consume", "topic=%s partition=%d resumed=below_half",
                        p->topic, (int)p->partition);
        }
}

static void run_add(dq_sched_t *s, dq_item_t *it)
{
        if (s->run_cnt == s->run_cap) {
                size_t cap = s->run_cap ? s->run_cap * 2 : 64;
                dq_item_t **r = realloc(s->run, cap * sizeof(*r));
                if (!r)
                        dq_oom();
                s->run = r;
                s->run_cap = cap;
        }
        it->run_slot = s->run_cnt;
        s->run[s->run_cnt++] = it;
}

/* Takes it out of the scheduler: its scope is free, its partition holds
 * one record fewer. Safe to call twice. */
static void leave(dq_consumer_t *c, dq_item_t *it)
{
        dq_sched_t *s = &c->sched;
        dq_scope_q_t *q = it->scope_q;

        if (!q)
                return;
        if (it->llm_slot) {
                it->llm_slot = false;
                c->llm_running--;
        }
        if (it->llm_probe) {
                /* Its answer, if any, is judged next (prepare()); with
                 * none the next job probes. */
                it->llm_probe = false;
                dq_llm_jobs_probe_gone(c);
        }
        if (q->running == it) {
                q->running = NULL;
                s->run[it->run_slot] = s->run[--s->run_cnt];
                s->run[it->run_slot]->run_slot = it->run_slot;
        }
        it->scope_q = NULL;
        part_count(c, it, -1);
        scope_drop_if_idle(c, q);
}

void dq_sched_release(dq_consumer_t *c, dq_item_t *it)
{
        leave(c, it);
}

bool dq_sched_wants(dq_consumer_t *c, const dq_item_t *it)
{
        dq_scope_q_t *q;

        if (!dq_handler_is_inline(c->conf->debug_faults, it->job))
                return true;
        q = scope_q(c, it->job->scope, false);
        return q && (q->head || q->running);
}

static bool same_sources(const dq_job_t *a, const dq_job_t *b)
{
        if (a->kind != b->kind || a->source_cnt != b->source_cnt)
                return false;
        for (size_t i = 0; i < a->source_cnt; i++) {
                bool found = false;
                for (size_t j = 0; !found && j < b->source_cnt; j++)
                        found = !strcmp(a->source_ids[i], b->source_ids[j]);
                if (!found)
                        return false;
        }
        return true;
}

/* A first delivery from the jobs topic: no run of it can have happened
 * through this record's history but a crashed one. */
static bool first_delivery(dq_consumer_t *c, const dq_item_t *it)
{
        const dq_part_t *p = dq_item_part(c, it);
        return p && p->tier < 0 && it->attempts == 0;
}

/* Supersession: queued jobs over it's sources that have not started end
 * superseded by it, and are committed through. */
static void supersede(dq_consumer_t *c, dq_scope_q_t *q, dq_item_t *it)
{
        dq_item_t **pp = &q->head, *prev = NULL;

        if (!first_delivery(c, it))
                return;
        dq_batch_land(c, false); /* their replies come first */
        while (*pp) {
                dq_item_t *o = *pp;
                dq_err_t err;

                if (!first_delivery(c, o) || !same_sources(o->job, it->job) ||
                    !strcmp(o->job->id, it->job->id)) {
                        prev = o;
                        pp = &o->qnext;
                        continue;
                }
                err = dq_store_supersede(c->store, o->job, it->job->id,
                                         dq_now_ms());
                if (err != DQ_OK && err != DQ_ERR_TERMINAL) {
                        prev = o;
                        pp = &o->qnext;
                        continue;
                }
                *pp = o->qnext;
                if (q->tail == o)
                        q->tail = prev;
                c->sched.queued--;
                dq_info("settle", "job=%s scope=%s outcome=superseded by=%s",
                        o->job->id, o->job->scope, it->job->id);
                leave(c, o);
                dq_item_settle(c, o, DQ_OUTCOME_SUPERSEDED);
        }
}

void dq_sched_push(dq_consumer_t *c, dq_item_t *it)
{
        dq_scope_q_t *q = scope_q(c, it->job->scope, true);

        supersede(c, q, it);
        it->scope_q = q;
        it->qnext = NULL;
        if (q->tail)
                q->tail->qnext = it;
        else
                q->head = it;
        q->tail = it;
        c->sched.queued++;
        part_count(c, it, 1);
}

void dq_sched_started(dq_consumer_t *c, dq_item_t *it)
{
        dq_task_t *t =
            dq_task_new(it->job, it->attempts, c->conf->debug_faults);

        if (!t)
                dq_oom();
        if (it->job->method == DQ_METHOD_LLM_SUMMARY) {
                /* The task takes what the claim read for the prompt. */
                t->llm = c->llm;
                t->sources = it->claim.sources;
                it->claim.sources = NULL;
                snprintf(t->digest, sizeof(t->digest), "%s", it->claim.digest);
                if (it->claim.code[0]) {
                        snprintf(t->refusal, sizeof(t->refusal), "%s",
                                 it->claim.code);
                        snprintf(t->refusal_message, sizeof(t->refusal_message),
                                 "%s", it->claim.message);
                } else if (it->refusal[0]) {
                        snprintf(t->refusal, sizeof(t->refusal), "%s",
                                 it->refusal);
                        snprintf(t->refusal_message, sizeof(t->refusal_message),
                                 "%s", it->refusal_message);
                }
        }
        t->owner = it;
        t->started = dq_mono_ms();
        it->task = t;
        int err = dq_pool_submit(c->sched.pool, t);
        if (err && !c->sched.start_failed) {
                /* The task waits for the workers there are. */
                c->sched.start_failed = true;
                dq_warn("handler",
                        "event=thread_start_failed threads=%d error=\"%s\"",
                        dq_pool_threads(c->sched.pool), strerror(err));
        }
}

static dq_item_t *pop(dq_sched_t *s, dq_scope_q_t *q)
{
        dq_item_t *it = q->head;

        q->head = it->qnext;
        if (!q->head)
                q->tail = NULL;
        it->qnext = NULL;
        s->queued--;
        return it;
}

/* Starts the next jobs of the free scopes: inline ones at the head run
 * in one step each, the first one that needs its handler is claimed. */
static void dispatch(dq_consumer_t *c, dq_item_t **copies)
{
        dq_sched_t *s = &c->sched;
        size_t max = (size_t)c->conf->max_in_flight, ni = 0, nc = 0, nt = 0;
        dq_item_t **inl, **cl;
        dq_scope_q_t **touched;

        if (!s->queued || s->run_cnt >= max || dq_consumer_stopping(c) ||
            c->unavailable_at)
                return;
        inl = malloc(s->queued * sizeof(*inl));
        cl = malloc(s->queued * sizeof(*cl));
        touched = malloc(s->queued * sizeof(*touched));
        if (!inl || !cl || !touched)
                dq_oom();
        for (size_t b = 0; b < BUCKETS && s->run_cnt < max; b++) {
                for (dq_scope_q_t *q = s->table[b]; q; q = q->hnext) {
                        bool inline_head = false;

                        if (q->running || !q->head)
                                continue;
                        while (q->head &&
                               dq_handler_is_inline(c->conf->debug_faults,
                                                    q->head->job)) {
                                dq_item_t *it = pop(s, q);
                                /* Out of the scheduler now; the scope is
                                 * swept below, not freed under the loop. */
                                it->scope_q = NULL;
                                part_count(c, it, -1);
                                inl[ni++] = it;
                                inline_head = true;
                        }
                        if (q->head && s->run_cnt < max &&
                            dq_llm_jobs_is_llm(c, q->head)) {
                                int64_t until = 0;
                                dq_llm_gate_t g = dq_llm_jobs_gate(c, &until);
                                if (g == DQ_LLM_GATE_DEFER) {
                                        /* Circuit open: waits in a delay
                                         * tier, unclaimed. */
                                        dq_item_t *it = pop(s, q);
                                        it->scope_q = NULL;
                                        part_count(c, it, -1);
                                        dq_copy_to_delay(c, it, until,
                                                         DQ_OUTCOME_DEFERRED);
                                        dq_item_push(copies, it);
                                        touched[nt++] = q;
                                        continue;
                                }
                                if (g == DQ_LLM_GATE_WAIT) {
                                        if (inline_head)
                                                touched[nt++] = q;
                                        continue;
                                }
                                q->head->llm_slot = true;
                                q->head->llm_probe = g == DQ_LLM_GATE_PROBE;
                                c->llm_running++;
                        }
                        if (q->head && s->run_cnt < max) {
                                dq_item_t *it = pop(s, q);
                                q->running = it;
                                run_add(s, it);
                                cl[nc++] = it;
                        } else if (inline_head) {
                                touched[nt++] = q;
                        }
                }
        }
        for (size_t i = 0; i < nt; i++)
                scope_drop_if_idle(c, touched[i]);
        /* A scope's inline jobs complete before its next job is claimed:
         * two round trips, in this order, on one connection. */
        if (ni)
                dq_batch_run_inline(c, inl, ni, copies);
        if (nc)
                dq_batch_claim(c, cl, nc, copies);
        free(inl);
        free(cl);
        free(touched);
}

/* Settles what finished (items[0..n), with their results). */
static void finish(dq_consumer_t *c, dq_item_t **items,
                   dq_handler_result_t *res, size_t n, dq_item_t **copies)
{
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
                leave(c, items[i]);
                if (res[i].abandoned) {
                        dq_handler_result_release(&res[i]);
                        dq_item_abandon(c, items[i], "shutdown");
                        continue;
                }
                items[k] = items[i];
                if (k != i) {
                        res[k] = res[i];
                        res[i].content = NULL; /* moved */
                }
                k++;
        }
        if (k)
                dq_batch_finish(c, items, res, k, copies);
}

/* Collects the finished handlers and those past handler.timeout. */
static void collect(dq_consumer_t *c, dq_item_t **copies)
{
        dq_sched_t *s = &c->sched;
        dq_task_t *t = dq_pool_collect(s->pool), *next;
        size_t n = 0, cap = s->run_cnt + 1;
        dq_item_t **items;
        dq_handler_result_t *res;
        int64_t now = dq_mono_ms();

        /* The loop calls this after every batch: with no handler running
         * or finished there is nothing to do. */
        if (!t && !s->run_cnt)
                return;
        items = malloc(cap * sizeof(*items));
        res = malloc(cap * sizeof(*res));
        if (!items || !res)
                dq_oom();
        for (; t; t = next) {
                dq_item_t *it = t->owner;
                next = t->next;
                if (it && n < cap) {
                        it->task = NULL;
                        items[n] = it;
                        res[n] = t->res;
                        t->res.content = NULL; /* moved */
                        /* A refusal's code lives in the task, which goes
                         * now: the item keeps it. */
                        if (res[n].code == t->refusal) {
                                snprintf(it->refusal, sizeof(it->refusal), "%s",
                                         t->refusal);
                                res[n].code = it->refusal;
                        }
                        n++;
                }
                dq_task_free(t);
        }
        for (size_t i = 0; i < s->run_cnt && n < cap; i++) {
                dq_item_t *it = s->run[i];
                dq_task_t *task = it->task;

                if (!task || now - task->started < c->conf->handler_timeout_ms)
                        continue;
                /* Given up: the worker's answer, when it comes, is
                 * dropped with its task. */
                atomic_store(&task->cancel, true);
                task->owner = NULL;
                it->task = NULL;
                dq_warn("dispatch",
                        "job=%s scope=%s handler=timeout after_ms=%lld "
                        "attempt=%lld",
                        it->job->id, it->job->scope,
                        (long long)(now - task->started),
                        (long long)it->attempts);
                items[n] = it;
                res[n] = (dq_handler_result_t){.err = DQ_ERR_TIMEOUT,
                                               .code = "decay.handler.timeout"};
                snprintf(res[n].message, sizeof(res[n].message),
                         "handler ran past handler.timeout (%lld ms)",
                         (long long)c->conf->handler_timeout_ms);
                n++;
        }
        if (n)
                finish(c, items, res, n, copies);
        for (size_t i = 0; i < n; i++)
                dq_handler_result_release(&res[i]);
        free(items);
        free(res);
}

/* G11: the leases of running handlers are renewed from the loop, all in
 * one pipelined round trip. */
static void renew(dq_consumer_t *c)
{
        dq_sched_t *s = &c->sched;
        int64_t now = dq_mono_ms();
        dq_renew_t *rn;
        size_t n = 0;

        if (now < s->next_renew)
                return;
        s->next_renew = now + c->conf->lease_ms / 3;
        if (!s->run_cnt)
                return;
        if (!(rn = malloc(s->run_cnt * sizeof(*rn))))
                dq_oom();
        for (size_t i = 0; i < s->run_cnt; i++)
                if (s->run[i]->task)
                        rn[n++] = (dq_renew_t){.job = s->run[i]->job,
                                               .epoch = s->run[i]->epoch};
        if (n) {
                dq_batch_land(c, false); /* their replies come first */
                dq_store_renew_many(c->store, rn, n, dq_now_ms());
        }
        for (size_t i = 0; i < n; i++)
                dq_debug("claim", "job=%s lease=renewed result=%s",
                         rn[i].job->id, dq_err_name(rn[i].err));
        free(rn);
}

void dq_sched_poll(dq_consumer_t *c)
{
        dq_item_t *copies = NULL;

        collect(c, &copies);
        renew(c);
        dispatch(c, &copies);
        dq_copy_produce(c, copies);
}

size_t dq_sched_running(const dq_consumer_t *c)
{
        return c->sched.run_cnt;
}

size_t dq_sched_queued(const dq_consumer_t *c)
{
        return c->sched.queued;
}

static bool of(const dq_item_t *it, const char *topic, int32_t partition)
{
        return !topic ||
               (it->partition == partition && !strcmp(it->topic, topic));
}

/* Running handlers of topic/partition (all when topic is NULL). */
static size_t running_of(const dq_consumer_t *c, const char *topic,
                         int32_t partition)
{
        size_t n = 0;
        for (size_t i = 0; i < c->sched.run_cnt; i++)
                n += c->sched.run[i]->task &&
                     of(c->sched.run[i], topic, partition);
        return n;
}

void dq_sched_give_back(dq_consumer_t *c, const char *topic, int32_t partition,
                        int64_t budget_ms)
{
        dq_sched_t *s = &c->sched;
        int64_t deadline = dq_mono_ms() + budget_ms;
        dq_item_t *copies = NULL;

        if (!s->table)
                return;
        /* Queued: never started; the next owner reads them. */
        for (size_t b = 0; b < BUCKETS; b++) {
                dq_scope_q_t *q = s->table[b];
                while (q) {
                        dq_scope_q_t *nq = q->hnext;
                        dq_item_t **pp = &q->head, *prev = NULL;
                        while (*pp) {
                                dq_item_t *it = *pp;
                                if (!of(it, topic, partition)) {
                                        prev = it;
                                        pp = &it->qnext;
                                        continue;
                                }
                                *pp = it->qnext;
                                if (q->tail == it)
                                        q->tail = prev;
                                s->queued--;
                                it->scope_q = NULL;
                                part_count(c, it, -1);
                                dq_item_abandon(c, it,
                                                topic ? "revoked" : "shutdown");
                        }
                        scope_drop_if_idle(c, q);
                        q = nq;
                }
        }
        /* Running: they finish within the budget, or are handed back (the
         * epoch fences them if they finish later). */
        while (running_of(c, topic, partition) && dq_mono_ms() < deadline) {
                dq_pool_wait(s->pool, 50);
                collect(c, &copies);
        }
        for (size_t i = 0; i < s->run_cnt;) {
                dq_item_t *it = s->run[i];
                if (!it->task || !of(it, topic, partition)) {
                        i++;
                        continue;
                }
                atomic_store(&it->task->cancel, true);
                it->task->owner = NULL;
                it->task = NULL;
                leave(c, it); /* moves the last one into slot i */
                dq_item_abandon(c, it, topic ? "revoked" : "shutdown");
        }
        dq_copy_produce(c, copies);
}

void dq_sched_destroy(dq_consumer_t *c)
{
        dq_sched_t *s = &c->sched;

        /* The workers stop first: no task is answered after this. */
        dq_pool_destroy(s->pool);
        s->pool = NULL;
        for (size_t b = 0; s->table && b < BUCKETS; b++) {
                while (s->table[b]) {
                        dq_scope_q_t *q = s->table[b];
                        s->table[b] = q->hnext;
                        while (q->head) {
                                dq_item_t *it = q->head;
                                q->head = it->qnext;
                                dq_item_free(it);
                        }
                        free(q->scope);
                        free(q);
                }
        }
        free(s->table);
        s->table = NULL;
        free(s->run);
        s->run = NULL;
        s->run_cnt = 0;
}
