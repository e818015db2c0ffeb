/* The planner's side of the memory store against a real Redis: indexes
 * kept in the steps that write and compress memories, the all-compressed
 * job settled superseded, and one planning pass (decayq_plan): policy
 * boundaries, chunks, holds, ids derived from (scope, policy, window,
 * chunk), republishing what was never delivered, and bad entries. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_memory.h"
#include "dq_test.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

#define SCOPE "acme/bot"
#define HOUR  3600000LL

static redisReply *raw(dq_store_t *st, const char *fmt, const char *type,
                       const char *id)
{
        static redisContext *c;
        char key[512];
        redisReply *r;

        if (!c)
                c = dq_test_redis();
        dq_store_key(st, key, sizeof(key), type, SCOPE, id);
        r = redisCommand(c, fmt, key);
        cr_assert_not_null(r);
        return r;
}

/* The score of id in index which, or -1 when it is not there. */
static long long score(dq_store_t *st, const char *which, const char *id)
{
        static redisContext *c;
        char key[512];
        redisReply *r;
        long long s = -1;

        if (!c)
                c = dq_test_redis();
        dq_store_key(st, key, sizeof(key), "idx", SCOPE, which);
        r = redisCommand(c, "ZSCORE %s %s", key, id);
        if (r && r->type == REDIS_REPLY_STRING)
                s = atoll(r->str);
        freeReplyObject(r);
        return s;
}

static void put(dq_store_t *st, dq_rec_kind_t kind, const char *id,
                const char *const *kv, size_t pairs, const char *action,
                const char *reason)
{
        dq_index_result_t res;
        cr_assert_eq(dq_memory_put(st, kind, SCOPE, id, kv, pairs, &res),
                     DQ_OK);
        cr_assert_str_eq(res.action, action, "%s: %s, expected %s", id,
                         res.action, action);
        cr_assert_str_eq(res.reason, reason, "%s: reason %s", id, res.reason);
}

static void candidate(dq_store_t *st, const char *id, long long created)
{
        dq_test_memory(st, SCOPE, id, "candidate", "active", id, created);
}

Test(memory, writes_keep_the_index_and_say_what_they_could_not_index)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *cand[] = {"type",   "candidate",  "status",
                              "active", "created_at", "1000"};
        const char *gone[] = {"type",       "candidate",  "status",
                              "compressed", "created_at", "1000"};
        const char *notime[] = {"type", "candidate", "status", "active"};
        const char *badtime[] = {"type",   "candidate",  "status",
                                 "active", "created_at", "12abc"};
        const char *prin[] = {"type",   "principle",  "status",
                              "active", "expires_at", "5000"};
        const char *ep[] = {"status", "active", "created_at", "7000"};

        put(st, DQ_REC_MEMORY, "c1", cand, 3, "added", "");
        cr_assert_eq(score(st, "candidate", "c1"), 1000);
        put(st, DQ_REC_MEMORY, "c1", cand, 3, "unchanged", "");
        put(st, DQ_REC_MEMORY, "c1", gone, 3, "removed", "");
        cr_assert_eq(score(st, "candidate", "c1"), -1);
        put(st, DQ_REC_MEMORY, "c2", notime, 2, "skipped", "no_created_at");
        put(st, DQ_REC_MEMORY, "c3", badtime, 3, "skipped", "bad_created_at");
        cr_assert_eq(score(st, "candidate", "c3"), -1);
        put(st, DQ_REC_MEMORY, "p1", prin, 3, "added", "");
        cr_assert_eq(score(st, "principle", "p1"), 5000);
        /* The same id turned candidate moves to the other index. */
        put(st, DQ_REC_MEMORY, "p1", cand, 3, "fixed", "");
        cr_assert_eq(score(st, "principle", "p1"), -1);
        cr_assert_eq(score(st, "candidate", "p1"), 1000);
        put(st, DQ_REC_EPISODE, "e1", ep, 2, "added", "");
        cr_assert_eq(score(st, "episode", "e1"), 7000);
        dq_store_destroy(st);
}

Test(memory, reindex_fixes_what_other_writers_left)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        char *ids[] = {"c1", "c2", "gone"};
        dq_index_result_t res[3];

        candidate(st, "c1", 1000);
        candidate(st, "c2", 2000);
        /* Behind the index's back: c1 compressed, c2 re-dated, and an
         * entry for a memory that never existed. */
        freeReplyObject(raw(st, "HSET %s status compressed", "mem", "c1"));
        freeReplyObject(raw(st, "HSET %s created_at 3000", "mem", "c2"));
        freeReplyObject(raw(st, "ZADD %s 1 gone", "idx", "candidate"));
        cr_assert_eq(dq_memory_reindex(st, DQ_REC_MEMORY, SCOPE, ids, 3, res),
                     DQ_OK);
        cr_assert_str_eq(res[0].action, "removed");
        cr_assert_str_eq(res[1].action, "fixed");
        cr_assert_str_eq(res[2].action, "removed");
        cr_assert_str_eq(res[2].reason, "gone");
        cr_assert_eq(score(st, "candidate", "c2"), 3000);
        cr_assert_eq(score(st, "candidate", "gone"), -1);
        dq_store_destroy(st);
}

static dq_settle_t complete(dq_store_t *st, const dq_job_t *job)
{
        dq_claim_t c = {.job = job, .msg = "decay.jobs/0/1"};
        dq_settle_t s = {.job = job, .op = DQ_SETTLE_COMPLETE};
        int64_t now = dq_now_ms();

        cr_assert_eq(dq_store_claim(st, &c, 1, now), DQ_OK);
        cr_assert_eq(c.status, DQ_CLAIM_CLAIMED);
        s.epoch = c.epoch;
        cr_assert_eq(dq_store_settle(st, &s, 1, now), DQ_OK);
        return s;
}

Test(memory, complete_unindexes_and_a_job_with_nothing_left_is_superseded)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *src[] = {"c1", "c2"};
        const char *one[] = {"c1"};
        const char *mixed[] = {"c2", "c3"};
        dq_job_t *a = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 2);
        dq_job_t *b = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, one, 1);
        dq_job_t *m =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, mixed, 2);
        dq_settle_t s;
        dq_record_t rec;
        char want[64];

        candidate(st, "c1", 1000);
        candidate(st, "c2", 2000);
        candidate(st, "c3", 3000);
        s = complete(st, a);
        cr_assert_eq(s.err, DQ_OK);
        cr_assert_not(s.superseded);
        cr_assert_eq(score(st, "candidate", "c1"), -1);
        cr_assert_eq(score(st, "candidate", "c2"), -1);
        cr_assert_eq(score(st, "candidate", "c3"), 3000);
        /* Every source compressed by another job: superseded, nothing
         * written. */
        s = complete(st, b);
        cr_assert_eq(s.err, DQ_OK);
        cr_assert(s.superseded);
        cr_assert_eq(dq_store_job_get(st, SCOPE, b->id, &rec), DQ_OK);
        cr_assert_str_eq(dq_record_get(&rec, "state"), "superseded");
        snprintf(want, sizeof(want), "sum_%s", a->id);
        cr_assert_str_eq(dq_record_get(&rec, "superseded_by"), want);
        dq_record_release(&rec);
        /* Only some compressed: still the fatal source_inactive. */
        s = complete(st, m);
        cr_assert_eq(s.err, DQ_ERR_REJECTED);
        cr_assert_str_eq(s.code, "decay.compress.source_inactive");
        cr_assert_eq(score(st, "candidate", "c3"), 3000);
        dq_job_destroy(a);
        dq_job_destroy(b);
        dq_job_destroy(m);
        dq_store_destroy(st);
}

static const dq_plan_policy_t candidates = {
    .name = "candidates",
    .kind = DQ_KIND_CANDIDATE_COMPRESSION,
    .min_age_ms = HOUR,
    .min_sources = 3,
    .max_sources = 4,
    .method = DQ_METHOD_DETERMINISTIC_CONCATENATE,
};

/* The start of the current window of interval ms, by Redis TIME. */
static int64_t window_of(dq_store_t *st, int64_t interval)
{
        int64_t now;
        cr_assert_eq(dq_memory_time(st, &now), DQ_OK);
        return now - now % interval;
}

static dq_plan_t plan1(dq_store_t *st, const dq_plan_policy_t *pol,
                       int64_t interval)
{
        dq_plan_t p = {.scope = SCOPE, .policy = pol};
        cr_assert_eq(dq_memory_plan(st, &p, 1, interval, 100000), DQ_OK);
        cr_assert_eq(p.err, DQ_OK, "%s", p.message);
        return p;
}

static void published(dq_store_t *st, const dq_plan_t *p)
{
        char *ids[64];
        for (size_t i = 0; i < p->job_cnt; i++)
                ids[i] = (char *)p->jobs[i].id;
        cr_assert_eq(dq_memory_plan_published(st, SCOPE, ids, p->job_cnt),
                     DQ_OK);
}

/* Memories c0..c(n-1), created i ms after base. */
static void candidates_from(dq_store_t *st, int n, int64_t base)
{
        for (int i = 0; i < n; i++) {
                char id[16];
                snprintf(id, sizeof(id), "c%02d", i);
                candidate(st, id, base + i);
        }
}

Test(memory, age_exactly_at_the_limit_is_due_and_one_ms_less_is_not)
{
        /* A day-long window: the test cannot straddle two. */
        int64_t day = 24 * HOUR;
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        int64_t w = window_of(st, day);
        dq_plan_t p;

        candidate(st, "due1", w - HOUR);
        candidate(st, "due2", w - HOUR - 5);
        candidate(st, "due3", w - 2 * HOUR);
        candidate(st, "young", w - HOUR + 1);
        p = plan1(st, &candidates, day);
        cr_assert_eq(p.window, w);
        cr_assert_eq(p.due, 3);
        cr_assert_eq(p.job_cnt, 1);
        cr_assert_eq(p.jobs[0].source_cnt, 3);
        /* Oldest first. */
        cr_assert_str_eq(p.jobs[0].sources[0], "due3");
        cr_assert_str_eq(p.jobs[0].sources[1], "due2");
        cr_assert_str_eq(p.jobs[0].sources[2], "due1");
        /* young is due in the next window. */
        cr_assert_eq(p.next_due, w + day);
        dq_plan_release(&p);
        dq_store_destroy(st);
}

Test(memory, fewer_than_the_minimum_wait_and_more_than_the_maximum_chunk)
{
        int64_t day = 24 * HOUR;
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        int64_t w = window_of(st, day);
        dq_plan_t p;

        candidates_from(st, 2, w - 3 * HOUR);
        p = plan1(st, &candidates, day);
        cr_assert_eq(p.job_cnt, 0);
        cr_assert_eq(p.due, 2);
        cr_assert_eq(p.debt, 2);
        dq_plan_release(&p);

        /* 11 due, at most 4 a job and at least 3: 4 + 4 + 3. */
        candidates_from(st, 11, w - 3 * HOUR);
        p = plan1(st, &candidates, day);
        cr_assert_eq(p.job_cnt, 3);
        cr_assert_eq(p.jobs[0].source_cnt, 4);
        cr_assert_eq(p.jobs[1].source_cnt, 4);
        cr_assert_eq(p.jobs[2].source_cnt, 3);
        cr_assert_eq(p.proposed, 11);
        cr_assert_eq(p.debt, 0);
        cr_assert_str_eq(p.jobs[0].sources[0], "c00");
        cr_assert_str_eq(p.jobs[2].sources[2], "c10");
        cr_assert_str_neq(p.jobs[0].id, p.jobs[1].id);
        for (size_t i = 0; i < p.job_cnt; i++) {
                char want[96];
                snprintf(want, sizeof(want), "plan/candidates/%lld/%zu",
                         (long long)w, i);
                cr_assert_str_eq(p.jobs[i].idempotency_key, want);
        }
        dq_plan_release(&p);

        /* 13 due: 4 + 4 + 4, and 1 left to wait for more. */
        candidates_from(st, 13, w - 30 * HOUR);
        freeReplyObject(raw(st, "DEL %s", "held", NULL));
        freeReplyObject(raw(st, "DEL %s", "pjobs", "candidates"));
        p = plan1(st, &candidates, day);
        cr_assert_eq(p.job_cnt, 3);
        cr_assert_eq(p.jobs[2].source_cnt, 4);
        cr_assert_eq(p.debt, 1);
        dq_plan_release(&p);
        dq_store_destroy(st);
}

Test(memory,
     held_memories_are_not_proposed_twice_and_undelivered_jobs_come_back)
{
        int64_t day = 24 * HOUR;
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        int64_t w = window_of(st, day);
        dq_plan_t p, q;

        candidates_from(st, 4, w - 2 * HOUR);
        p = plan1(st, &candidates, day);
        cr_assert_eq(p.job_cnt, 1);
        /* Never marked delivered: the next pass proposes the same job. */
        q = plan1(st, &candidates, day);
        cr_assert_eq(q.job_cnt, 1);
        cr_assert_eq(q.republished, 1);
        cr_assert_eq(q.held, 4);
        cr_assert_eq(q.proposed, 0);
        cr_assert_str_eq(q.jobs[0].id, p.jobs[0].id);
        cr_assert_str_eq(q.jobs[0].idempotency_key, p.jobs[0].idempotency_key);
        cr_assert_eq(q.jobs[0].created_at, p.jobs[0].created_at);
        cr_assert_eq(q.jobs[0].source_cnt, 4);
        published(st, &q);
        dq_plan_release(&q);
        /* Delivered: held, nothing to publish. */
        q = plan1(st, &candidates, day);
        cr_assert_eq(q.job_cnt, 0);
        cr_assert_eq(q.open, 1);
        cr_assert_eq(q.held, 4);
        dq_plan_release(&q);

        /* The job dies: its memories are free again, in a new chunk. */
        {
                dq_job_t *job =
                    dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE,
                                (const char *const *)p.jobs[0].sources, 4);
                dq_settle_t s = {.job = job,
                                 .op = DQ_SETTLE_DEAD,
                                 .epoch = 0,
                                 .error_class = "fatal",
                                 .error_code = "decay.test.failed",
                                 .error_message = "x"};
                snprintf(job->id, sizeof(job->id), "%s", p.jobs[0].id);
                cr_assert_eq(dq_store_settle(st, &s, 1, dq_now_ms()), DQ_OK);
                cr_assert_eq(s.err, DQ_OK);
                dq_job_destroy(job);
        }
        q = plan1(st, &candidates, day);
        cr_assert_eq(q.released, 1);
        cr_assert_eq(q.job_cnt, 1);
        cr_assert_str_neq(q.jobs[0].id, p.jobs[0].id);
        {
                const char *k = q.jobs[0].idempotency_key;
                cr_assert_str_eq(k + strlen(k) - 2, "/1", "%s", k);
        }
        dq_plan_release(&q);
        dq_plan_release(&p);
        dq_store_destroy(st);
}

Test(memory, ids_derive_from_scope_policy_window_and_chunk_alone)
{
        int64_t day = 24 * HOUR;
        dq_store_t *a = dq_test_store("w1", NULL, 0, NULL);
        dq_store_t *b = dq_test_store("w2", NULL, 0, NULL);
        int64_t w = window_of(a, day);
        dq_plan_t p, q;

        /* Two stores (namespaces), different memories, same scope. */
        candidates_from(a, 3, w - 2 * HOUR);
        candidates_from(b, 4, w - 5 * HOUR);
        p = plan1(a, &candidates, day);
        q = plan1(b, &candidates, day);
        cr_assert_str_eq(p.jobs[0].id, q.jobs[0].id);
        /* A ULID whose time is the window start. */
        cr_assert(dq_ulid_valid(p.jobs[0].id, DQ_ULID_LEN));
        cr_assert_eq(dq_ulid_time_ms(p.jobs[0].id), w);
        dq_plan_release(&p);
        dq_plan_release(&q);
        dq_store_destroy(a);
        dq_store_destroy(b);
}

Test(memory, entries_of_gone_inactive_or_unnameable_memories_are_dropped)
{
        int64_t day = 24 * HOUR;
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        int64_t w = window_of(st, day);
        char cmd[64];
        dq_plan_t p;

        candidates_from(st, 3, w - 2 * HOUR);
        candidate(st, "old", w - 2 * HOUR);
        freeReplyObject(raw(st, "HSET %s status compressed", "mem", "old"));
        snprintf(cmd, sizeof(cmd), "ZADD %%s %lld gone",
                 (long long)(w - 2 * HOUR));
        freeReplyObject(raw(st, cmd, "idx", "candidate"));
        snprintf(cmd, sizeof(cmd), "ZADD %%s %lld {x}",
                 (long long)(w - 2 * HOUR));
        freeReplyObject(raw(st, cmd, "idx", "candidate"));
        p = plan1(st, &candidates, day);
        cr_assert_eq(p.gone, 1);
        cr_assert_eq(p.stale, 1);
        cr_assert_eq(p.bad, 1);
        cr_assert_eq(p.job_cnt, 1);
        cr_assert_eq(p.jobs[0].source_cnt, 3);
        cr_assert_eq(score(st, "candidate", "gone"), -1);
        cr_assert_eq(score(st, "candidate", "{x}"), -1);
        dq_plan_release(&p);
        dq_store_destroy(st);
}
