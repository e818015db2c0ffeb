/* The Redis store against the real Redis: every transition, allowed and
 * refused; fencing; idempotency keys; the memory effects; start-up checks
 * and authentication. */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "dq_test.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

#define SCOPE "tenant-1/agent-1"

/* Claims job for the delivery of record msg (a delay copy made at
 * copy_attempts when copy_attempts >= 0). */
static dq_claim_t claim_msg(dq_store_t *st, const dq_job_t *job, int64_t now,
                            const char *msg, int64_t copy_attempts)
{
        dq_claim_t c = {.job = job,
                        .msg = msg,
                        .is_copy = copy_attempts >= 0,
                        .copy_attempts = copy_attempts};
        cr_assert_eq(dq_store_claim(st, &c, 1, now), DQ_OK);
        cr_assert_eq(c.err, DQ_OK);
        return c;
}

/* A claim by one and the same record each time: as after a worker died
 * and its partition's next owner read the record again. */
static dq_claim_t claim1(dq_store_t *st, const dq_job_t *job, int64_t now)
{
        return claim_msg(st, job, now, "decay.jobs/0/1", -1);
}

static dq_settle_t settle1(dq_store_t *st, const dq_job_t *job,
                           dq_settle_op_t op, int64_t epoch, int64_t now)
{
        dq_settle_t s = {.job = job,
                         .op = op,
                         .epoch = epoch,
                         .error_class = "retryable",
                         .error_code = "decay.test.failed",
                         .error_message = "test failure",
                         .not_before_ms = now + 5000};
        cr_assert_eq(dq_store_settle(st, &s, 1, now), DQ_OK);
        return s;
}

static char *job_field(dq_store_t *st, const dq_job_t *job, const char *f)
{
        static char buf[256];
        dq_record_t rec;
        buf[0] = '\0';
        if (dq_store_job_get(st, job->scope, job->id, &rec) == DQ_OK) {
                const char *v = dq_record_get(&rec, f);
                snprintf(buf, sizeof(buf), "%s", v ? v : "");
                dq_record_release(&rec);
        }
        return buf;
}

static char *mem_field(dq_store_t *st, const char *id, const char *f)
{
        static char buf[1024];
        dq_record_t rec;
        buf[0] = '\0';
        if (dq_store_record_get(st, DQ_REC_MEMORY, SCOPE, id, &rec) == DQ_OK) {
                const char *v = dq_record_get(&rec, f);
                snprintf(buf, sizeof(buf), "%s", v ? v : "");
                dq_record_release(&rec);
        }
        return buf;
}

Test(store, ping_answers_while_redis_is_up)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        cr_assert_eq(dq_store_ping(st), DQ_OK);
        dq_store_destroy(st);
}

Test(store, complete_writes_summary_and_marks_sources_at_once)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *src[] = {"m_c", "m_a", "m_b"};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 3);
        int64_t now = dq_now_ms();
        char sum_id[64];

        /* created_at order is b, c, a; a and c tie and sort by id. */
        dq_test_memory(st, SCOPE, "m_a", "candidate", "active", "alpha", 200);
        dq_test_memory(st, SCOPE, "m_b", "candidate", "active", "bravo", 100);
        dq_test_memory(st, SCOPE, "m_c", "candidate", "active", "charlie", 200);

        dq_claim_t c = claim1(st, job, now);
        cr_assert_eq(c.status, DQ_CLAIM_CLAIMED);
        cr_assert_eq(c.attempts, 1);
        cr_assert_eq(c.epoch, 1);
        cr_assert_str_eq(job_field(st, job, "state"), "in_progress");
        cr_assert_str_eq(job_field(st, job, "claimed_by"), "w1");

        dq_settle_t s = settle1(st, job, DQ_SETTLE_COMPLETE, c.epoch, now);
        cr_assert_eq(s.err, DQ_OK, "%s %s", s.code, s.message);
        snprintf(sum_id, sizeof(sum_id), "sum_%s", job->id);
        cr_assert_str_eq(s.result, sum_id);
        cr_assert_str_eq(job_field(st, job, "state"), "completed");
        cr_assert_str_eq(job_field(st, job, "result_memory_id"), sum_id);

        cr_assert_str_eq(mem_field(st, sum_id, "claim"),
                         "bravo\nalpha\ncharlie");
        cr_assert_str_eq(mem_field(st, sum_id, "type"), "summary");
        cr_assert_str_eq(mem_field(st, sum_id, "job_id"), job->id);
        cr_assert_str_eq(mem_field(st, sum_id, "method"),
                         "deterministic_concatenate");
        cr_assert_str_eq(mem_field(st, sum_id, "source_ids"),
                         "[\"m_b\",\"m_a\",\"m_c\"]");
        for (int i = 0; i < 3; i++) {
                cr_assert_str_eq(mem_field(st, src[i], "status"), "compressed");
                cr_assert_str_eq(mem_field(st, src[i], "compressed_into"),
                                 sum_id);
        }

        /* Running it again is a no-op that reports the state. */
        c = claim1(st, job, now + 1);
        cr_assert_eq(c.status, DQ_CLAIM_TERMINAL);
        cr_assert_str_eq(c.state, "completed");
        cr_assert_str_eq(c.ref, sum_id);
        s = settle1(st, job, DQ_SETTLE_COMPLETE, 1, now + 1);
        cr_assert_eq(s.err, DQ_ERR_TERMINAL);
        dq_job_destroy(job);
        dq_store_destroy(st);
}

Test(store, settles_with_a_stale_epoch_are_fenced)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *src[] = {"m1"};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        int64_t now = dq_now_ms();

        dq_test_memory(st, SCOPE, "m1", "candidate", "active", "x", 1);
        dq_claim_t old = claim1(st, job, now);
        dq_claim_t cur = claim1(st, job, now + 10);
        cr_assert_eq(cur.epoch, old.epoch + 1);
        cr_assert(cur.took_over, "a live lease was taken over silently");

        cr_assert_eq(settle1(st, job, DQ_SETTLE_COMPLETE, old.epoch, now).err,
                     DQ_ERR_FENCED);
        cr_assert_eq(settle1(st, job, DQ_SETTLE_RETRY, old.epoch, now).err,
                     DQ_ERR_FENCED);
        cr_assert_eq(settle1(st, job, DQ_SETTLE_DEAD, old.epoch, now).err,
                     DQ_ERR_FENCED);
        cr_assert_eq(dq_store_renew(st, job, old.epoch, now), DQ_ERR_FENCED);
        cr_assert_str_eq(mem_field(st, "m1", "status"), "active");
        cr_assert_str_eq(job_field(st, job, "state"), "in_progress");

        cr_assert_eq(dq_store_renew(st, job, cur.epoch, now), DQ_OK);
        /* Many leases in one round trip: each answered on its own. */
        {
                dq_renew_t rn[] = {{.job = job, .epoch = cur.epoch},
                                   {.job = job, .epoch = old.epoch},
                                   {.job = job, .epoch = cur.epoch}};
                cr_assert_eq(dq_store_renew_many(st, rn, 3, now + 20), DQ_OK);
                cr_expect_eq(rn[0].err, DQ_OK);
                cr_expect_eq(rn[1].err, DQ_ERR_FENCED);
                cr_expect_eq(rn[2].err, DQ_OK);
                /* The default lease, 30 s, from the renewal's time. */
                cr_expect_eq(atoll(job_field(st, job, "lease_until")),
                             now + 20 + 30000);
        }
        cr_assert_eq(settle1(st, job, DQ_SETTLE_COMPLETE, cur.epoch, now).err,
                     DQ_OK);
        dq_job_destroy(job);
        dq_store_destroy(st);
}

Test(store, zombie_with_expired_lease_cannot_complete)
{
        const char *x[] = {"lease=1s"};
        dq_store_t *zombie = dq_test_store("zombie", x, 1, NULL);
        dq_conf_t *conf;
        dq_store_t *st = dq_test_store("fresh", x, 1, &conf);
        const char *src[] = {"m1"};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        int64_t now = dq_now_ms();

        dq_store_destroy(zombie);
        /* Both handles must share a namespace: reuse the second's. */
        zombie = dq_store_new(conf, "zombie", NULL, 0);
        cr_assert_not_null(zombie);
        dq_test_memory(st, SCOPE, "m1", "candidate", "active", "x", 1);

        dq_claim_t zc = claim1(zombie, job, now);
        /* The zombie stalls past its lease; another worker re-claims. */
        dq_claim_t fc = claim1(st, job, now + 1500);
        cr_assert_eq(fc.status, DQ_CLAIM_CLAIMED);
        cr_assert_not(fc.took_over, "the lease had expired");
        cr_assert_eq(fc.attempts, 2);

        cr_assert_eq(dq_store_renew(zombie, job, zc.epoch, now + 1600),
                     DQ_ERR_FENCED);
        cr_assert_eq(
            settle1(zombie, job, DQ_SETTLE_COMPLETE, zc.epoch, now + 1600).err,
            DQ_ERR_FENCED);
        cr_assert_str_eq(mem_field(st, "m1", "status"), "active");
        cr_assert_eq(
            settle1(st, job, DQ_SETTLE_COMPLETE, fc.epoch, now + 1700).err,
            DQ_OK);
        cr_assert_str_eq(job_field(st, job, "claimed_by"), "fresh");
        dq_job_destroy(job);
        dq_store_destroy(zombie);
        dq_store_destroy(st);
        dq_conf_destroy(conf);
}

Test(store, attempts_are_bounded_then_dead)
{
        const char *x[] = {"max.attempts=2"};
        dq_store_t *st = dq_test_store("w1", x, 1, NULL);
        const char *src[] = {"m1"};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        int64_t now = dq_now_ms();

        dq_claim_t c = claim1(st, job, now);
        dq_settle_t s = settle1(st, job, DQ_SETTLE_RETRY, c.epoch, now);
        cr_assert_eq(s.err, DQ_OK);
        cr_assert_str_eq(job_field(st, job, "state"), "retry_wait");
        cr_assert_str_eq(job_field(st, job, "last_error"), "decay.test.failed");
        /* A retry is not allowed twice on the same claim. */
        cr_assert_eq(settle1(st, job, DQ_SETTLE_RETRY, c.epoch, now).err,
                     DQ_ERR_FENCED);

        c = claim1(st, job, now + 5001);
        cr_assert_eq(c.status, DQ_CLAIM_CLAIMED);
        cr_assert_eq(c.attempts, 2);
        /* The worker dies mid-run: the next claim finds attempts spent. */
        c = claim1(st, job, now + 5002);
        cr_assert_eq(c.status, DQ_CLAIM_EXHAUSTED);
        cr_assert_eq(c.attempts, 2, "a refused claim counted an attempt");
        cr_assert_str_eq(c.state, "in_progress");

        dq_settle_t d = {.job = job,
                         .op = DQ_SETTLE_DEAD,
                         .epoch = c.epoch,
                         .error_class = "crash_loop",
                         .error_code = "decay.job.crash_loop",
                         .error_message = "attempts exhausted"};
        cr_assert_eq(dq_store_settle(st, &d, 1, now + 3), DQ_OK);
        cr_assert_eq(d.err, DQ_OK);
        cr_assert_str_eq(job_field(st, job, "state"), "dead");
        cr_assert_str_eq(job_field(st, job, "error_class"), "crash_loop");
        c = claim1(st, job, now + 4);
        cr_assert_eq(c.status, DQ_CLAIM_TERMINAL);
        cr_assert_str_eq(c.state, "dead");
        dq_job_destroy(job);
        dq_store_destroy(st);
}

Test(store, missing_inactive_or_wrong_sources_are_rejected_unchanged)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *missing[] = {"m_ok", "m_gone"};
        const char *inactive[] = {"m_ok", "m_old"};
        const char *wrong[] = {"m_ok", "p_1"};
        struct {
                const char *const *src;
                const char *code;
        } cases[] = {{missing, "decay.compress.source_missing"},
                     {inactive, "decay.compress.source_inactive"},
                     {wrong, "decay.compress.source_wrong_type"}};
        int64_t now = dq_now_ms();

        dq_test_memory(st, SCOPE, "m_ok", "candidate", "active", "x", 1);
        dq_test_memory(st, SCOPE, "m_old", "candidate", "compressed", "y", 1);
        dq_test_memory(st, SCOPE, "p_1", "principle", "active", "z", 1);
        for (int i = 0; i < 3; i++) {
                dq_job_t *job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION,
                                            SCOPE, cases[i].src, 2);
                dq_claim_t c = claim1(st, job, now);
                dq_settle_t s =
                    settle1(st, job, DQ_SETTLE_COMPLETE, c.epoch, now);
                cr_assert_eq(s.err, DQ_ERR_REJECTED);
                cr_assert(dq_err_is_fatal(s.err));
                cr_assert_str_eq(s.code, cases[i].code);
                cr_assert(strstr(s.message, cases[i].src[1]), "%s", s.message);
                cr_assert_str_eq(job_field(st, job, "state"), "in_progress");
                cr_assert_str_eq(mem_field(st, "m_ok", "status"), "active");
                dq_job_destroy(job);
        }
        dq_store_destroy(st);
}

Test(store, episode_compression_and_principle_review)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *eps[] = {"ep_2", "ep_1"};
        const char *pr[] = {"p_9"};
        const char *kv1[] = {"status", "active",     "content",
                             "walked", "created_at", "1"};
        const char *kv2[] = {"status", "active",     "content",
                             "talked", "created_at", "2"};
        dq_job_t *ej = dq_test_job(DQ_KIND_EPISODE_COMPRESSION, SCOPE, eps, 2);
        dq_job_t *rj =
            dq_test_job(DQ_KIND_EXPIRED_PRINCIPLE_REVIEW, SCOPE, pr, 1);
        int64_t now = dq_now_ms();
        dq_record_t rec;
        char sum_id[64];

        cr_assert_eq(
            dq_store_record_put(st, DQ_REC_EPISODE, SCOPE, "ep_1", kv1, 3),
            DQ_OK);
        cr_assert_eq(
            dq_store_record_put(st, DQ_REC_EPISODE, SCOPE, "ep_2", kv2, 3),
            DQ_OK);
        dq_test_memory(st, SCOPE, "p_9", "principle", "active", "be kind", 1);

        dq_claim_t c = claim1(st, ej, now);
        cr_assert_eq(settle1(st, ej, DQ_SETTLE_COMPLETE, c.epoch, now).err,
                     DQ_OK);
        snprintf(sum_id, sizeof(sum_id), "sum_%s", ej->id);
        cr_assert_str_eq(mem_field(st, sum_id, "claim"), "walked\ntalked");
        cr_assert_eq(
            dq_store_record_get(st, DQ_REC_EPISODE, SCOPE, "ep_1", &rec),
            DQ_OK);
        cr_assert_str_eq(dq_record_get(&rec, "status"), "compressed");
        dq_record_release(&rec);

        c = claim1(st, rj, now);
        dq_settle_t s = settle1(st, rj, DQ_SETTLE_COMPLETE, c.epoch, now);
        cr_assert_eq(s.err, DQ_OK);
        cr_assert(strchr(s.result, '-'), "stream entry id: %s", s.result);
        cr_assert_str_eq(mem_field(st, "p_9", "review_state"), "open");
        cr_assert_str_eq(mem_field(st, "p_9", "status"), "active");
        cr_assert_str_eq(job_field(st, rj, "result_review_id"), s.result);
        dq_job_destroy(ej);
        dq_job_destroy(rj);
        dq_store_destroy(st);
}

Test(store, cancel_fences_workers_and_skips_later_claims)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *src[] = {"m1"};
        dq_job_t *a = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        dq_job_t *b = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        int64_t now = dq_now_ms();
        char state[32];

        dq_test_memory(st, SCOPE, "m1", "candidate", "active", "x", 1);
        /* A job never seen is cancelled ahead of its message only when
         * forced: without, it may be a mistyped scope (M5). */
        cr_assert_eq(dq_store_cancel(st, SCOPE, a->id, "operator", false, now,
                                     state, sizeof(state)),
                     DQ_ERR_NOT_FOUND);
        cr_assert_str_eq(job_field(st, a, "state"), "");
        cr_assert_eq(dq_store_cancel(st, SCOPE, a->id, "operator", true, now,
                                     state, sizeof(state)),
                     DQ_OK);
        dq_claim_t c = claim1(st, a, now);
        cr_assert_eq(c.status, DQ_CLAIM_TERMINAL);
        cr_assert_str_eq(c.state, "cancelled");

        /* A running job: the worker's settle is fenced. */
        c = claim1(st, b, now);
        cr_assert_eq(dq_store_cancel(st, SCOPE, b->id, "operator", false, now,
                                     state, sizeof(state)),
                     DQ_OK);
        cr_assert_str_eq(state, "in_progress");
        cr_assert_eq(settle1(st, b, DQ_SETTLE_COMPLETE, c.epoch, now).err,
                     DQ_ERR_TERMINAL);
        cr_assert_str_eq(mem_field(st, "m1", "status"), "active");
        cr_assert_eq(dq_store_cancel(st, SCOPE, b->id, "again", false, now,
                                     state, sizeof(state)),
                     DQ_ERR_TERMINAL);
        cr_assert_str_eq(state, "cancelled");
        dq_job_destroy(a);
        dq_job_destroy(b);
        dq_store_destroy(st);
}

Test(store, idempotency_key_makes_later_jobs_duplicates_until_it_expires)
{
        const char *x[] = {"idempotency.retention=1s"};
        dq_store_t *st = dq_test_store("w1", x, 1, NULL);
        const char *src[] = {"m1"};
        dq_job_t *a = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        dq_job_t *b = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        dq_job_t *c3 =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        int64_t now = dq_now_ms();

        a->idempotency_key = strdup("batch-7");
        b->idempotency_key = strdup("batch-7");
        c3->idempotency_key = strdup("batch-7");
        cr_assert_eq(claim1(st, a, now).status, DQ_CLAIM_CLAIMED);
        /* a's own redelivery is not its own duplicate. */
        cr_assert_eq(claim1(st, a, now).status, DQ_CLAIM_CLAIMED);
        dq_claim_t c = claim1(st, b, now);
        cr_assert_eq(c.status, DQ_CLAIM_DUPLICATE);
        cr_assert_str_eq(c.ref, a->id);
        cr_assert_str_eq(job_field(st, b, "state"), "duplicate");
        cr_assert_str_eq(job_field(st, b, "duplicate_of"), a->id);
        c = claim1(st, b, now);
        cr_assert_eq(c.status, DQ_CLAIM_TERMINAL);
        cr_assert_str_eq(c.state, "duplicate");

        dq_test_sleep_ms(1300);
        c = claim1(st, c3, dq_now_ms());
        cr_assert_eq(c.status, DQ_CLAIM_CLAIMED, "the key should have expired");
        dq_job_destroy(a);
        dq_job_destroy(b);
        dq_job_destroy(c3);
        dq_store_destroy(st);
}

Test(store, batches_claim_and_settle_in_one_round_trip)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        enum { N = 200 };
        dq_job_t *jobs[N];
        dq_claim_t claims[N];
        dq_settle_t settles[N];
        int64_t now = dq_now_ms();

        for (int i = 0; i < N; i++) {
                char id[32];
                const char *src[] = {id};
                snprintf(id, sizeof(id), "bm_%d", i);
                dq_test_memory(st, SCOPE, id, "candidate", "active", id, i);
                jobs[i] =
                    dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
                claims[i] = (dq_claim_t){.job = jobs[i]};
        }
        cr_assert_eq(dq_store_claim(st, claims, N, now), DQ_OK);
        for (int i = 0; i < N; i++) {
                cr_assert_eq(claims[i].status, DQ_CLAIM_CLAIMED);
                settles[i] = (dq_settle_t){.job = jobs[i],
                                           .op = i % 2 ? DQ_SETTLE_COMPLETE
                                                       : DQ_SETTLE_RETRY,
                                           .epoch = claims[i].epoch,
                                           .not_before_ms = now + 1000};
        }
        cr_assert_eq(dq_store_settle(st, settles, N, now), DQ_OK);
        for (int i = 0; i < N; i++) {
                cr_assert_eq(settles[i].err, DQ_OK);
                cr_assert_str_eq(job_field(st, jobs[i], "state"),
                                 i % 2 ? "completed" : "retry_wait");
                dq_job_destroy(jobs[i]);
        }
        dq_store_destroy(st);
}

/* A private redis-server with extra arguments, in a folder of its own: an
 * append-only file left in a shared folder by another run would be loaded
 * into it (with whatever functions library that run had). */
typedef struct {
        pid_t pid;
        int port;
        char dir[64];
} private_redis_t;

/* Starts one on a port found free a moment ago: another process may take it
 * first, and then redis-server exits at once. Such a start is tried again on
 * a new port; a start that fails otherwise shows what redis-server said. */
static void private_redis(private_redis_t *r, const char *a1, const char *a2,
                          const char *a3, const char *a4)
{
        char p[16], log[96], said[512] = "";
        int status = 0;

        snprintf(r->dir, sizeof(r->dir), "%s", "/tmp/decayq-redis-XXXXXX");
        cr_assert_not_null(mkdtemp(r->dir));
        snprintf(log, sizeof(log), "%s/log", r->dir);
        for (int attempt = 0; attempt < 5; attempt++) {
                r->port = dq_test_free_port();
                snprintf(p, sizeof(p), "%d", r->port);
                r->pid = fork();
                cr_assert_geq(r->pid, 0);
                if (r->pid == 0) {
                        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                        if (fd >= 0) {
                                dup2(fd, 1);
                                dup2(fd, 2);
                        }
                        execlp("redis-server", "redis-server", "--port", p,
                               "--save", "", "--dir", r->dir, a1, a2, a3, a4,
                               (char *)NULL);
                        _exit(127);
                }
                for (int i = 0; i < 200; i++) {
                        redisContext *c = redisConnect("127.0.0.1", r->port);
                        bool up = c && !c->err;
                        redisFree(c);
                        if (up)
                                return;
                        if (waitpid(r->pid, &status, WNOHANG) == r->pid)
                                break;
                        dq_test_sleep_ms(100);
                }
                if (waitpid(r->pid, &status, WNOHANG) == 0) {
                        kill(r->pid, SIGKILL);
                        waitpid(r->pid, &status, 0);
                        break; /* it ran and never listened: not a port */
                }
        }
        FILE *f = fopen(log, "r");
        if (f) {
                size_t n = fread(said, 1, sizeof(said) - 1, f);
                said[n] = '\0';
                fclose(f);
        }
        cr_assert_fail("private redis-server did not start (status %d): %s",
                       status, said);
}

static void private_redis_stop(private_redis_t *r)
{
        char cmd[128];

        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
        cr_expect_eq(system(cmd), 0);
}

static dq_store_t *store_on(int port, const char *extra, char *errstr,
                            size_t size)
{
        char p[64];
        char *X[3] = {p, (char *)extra};
        dq_conf_t *conf;
        dq_store_t *st;
        snprintf(p, sizeof(p), "redis.port=%d", port);
        conf = dq_conf_load(NULL, X, extra ? 2 : 1, errstr, size);
        cr_assert_not_null(conf, "%s", errstr);
        st = dq_store_new(conf, "w", errstr, size);
        dq_conf_destroy(conf);
        return st;
}

Test(store, refuses_unsafe_redis_unless_told_otherwise)
{
        private_redis_t r;
        char errstr[512];
        dq_store_t *st;

        private_redis(&r, "--appendonly", "no", "--maxmemory-policy",
                      "allkeys-lru");
        st = store_on(r.port, NULL, errstr, sizeof(errstr));
        cr_expect_null(st);
        cr_expect(strstr(errstr, "maxmemory-policy is 'allkeys-lru'"), "%s",
                  errstr);
        st =
            store_on(r.port, "redis.allow.unsafe=true", errstr, sizeof(errstr));
        cr_expect_not_null(st, "%s", errstr);
        dq_store_destroy(st);
        private_redis_stop(&r);

        private_redis(&r, "--appendonly", "no", "--maxmemory-policy",
                      "noeviction");
        st = store_on(r.port, NULL, errstr, sizeof(errstr));
        cr_expect_null(st);
        cr_expect(strstr(errstr, "appendonly is 'no'"), "%s", errstr);
        private_redis_stop(&r);
}

Test(store, authenticates_and_never_reveals_the_password)
{
        private_redis_t r;
        char errstr[512];
        dq_store_t *st;

        private_redis(&r, "--appendonly", "yes", "--requirepass",
                      "correct-horse");
        st = store_on(r.port, "redis.password=wrong-battery", errstr,
                      sizeof(errstr));
        cr_expect_null(st);
        cr_expect(strstr(errstr, "AUTH: WRONGPASS"), "%s", errstr);
        cr_expect_null(strstr(errstr, "wrong-battery"), "%s", errstr);
        st = store_on(r.port, "redis.password=correct-horse", errstr,
                      sizeof(errstr));
        cr_expect_not_null(st, "%s", errstr);
        dq_store_destroy(st);
        private_redis_stop(&r);
}

Test(store, copies_wait_for_a_live_claim_and_never_run_early_or_stale)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *src[] = {"m1"};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        int64_t now = dq_now_ms();
        dq_claim_t c;

        dq_test_memory(st, SCOPE, "m1", "candidate", "active", "x", 1);
        c = claim_msg(st, job, now, "jobs/0/7", -1);
        cr_assert_eq(c.status, DQ_CLAIM_CLAIMED);
        /* Another record of the same job, the claim live: it waits, and
         * costs no attempt (H7). */
        c = claim_msg(st, job, now + 1, "jobs/0/9", -1);
        cr_assert_eq(c.status, DQ_CLAIM_BUSY);
        cr_assert_geq(c.until, now + 1);
        cr_assert_str_eq(job_field(st, job, "attempts"), "1");
        /* The record that holds the claim, read again: it takes over. */
        c = claim_msg(st, job, now + 2, "jobs/0/7", -1);
        cr_assert_eq(c.status, DQ_CLAIM_CLAIMED);
        cr_assert_eq(c.attempts, 2);
        cr_assert(c.took_over);
        cr_assert_eq(settle1(st, job, DQ_SETTLE_RETRY, c.epoch, now).err,
                     DQ_OK);
        /* In backoff until now + 5000: no record runs it early (H8). */
        c = claim_msg(st, job, now + 10, "jobs/0/9", -1);
        cr_assert_eq(c.status, DQ_CLAIM_NOT_DUE);
        cr_assert_eq(c.until, now + 5000);
        c = claim_msg(st, job, now + 4999, "jobs/0/7", -1);
        cr_assert_eq(c.status, DQ_CLAIM_NOT_DUE);
        cr_assert_str_eq(job_field(st, job, "attempts"), "2");
        /* Due: a delay copy from before the last attempt is stale; the
         * current one runs. */
        c = claim_msg(st, job, now + 6000, "decay.jobs.delay.5s/0/3", 1);
        cr_assert_eq(c.status, DQ_CLAIM_STALE);
        c = claim_msg(st, job, now + 6000, "decay.jobs.delay.5s/0/4", 2);
        cr_assert_eq(c.status, DQ_CLAIM_CLAIMED);
        cr_assert_eq(c.attempts, 3);
        cr_assert_eq(settle1(st, job, DQ_SETTLE_COMPLETE, c.epoch, now).err,
                     DQ_OK);
        /* Completed: every later record is told so, none runs it. */
        c = claim_msg(st, job, now + 7000, "jobs/0/9", -1);
        cr_assert_eq(c.status, DQ_CLAIM_TERMINAL);
        cr_assert_str_eq(job_field(st, job, "attempts"), "3");
        cr_assert_str_eq(job_field(st, job, "claimed_msg"), "",
                         "a terminal state keeps its claim");
        dq_job_destroy(job);
        dq_store_destroy(st);
}

static dq_store_run_t run1(dq_store_t *st, const dq_job_t *job, int64_t now)
{
        dq_store_run_t r = {.claim = {.job = job, .msg = "decay.jobs/0/7"}};
        cr_assert_eq(dq_store_run(st, &r, 1, now), DQ_OK);
        cr_assert_eq(r.claim.err, DQ_OK);
        return r;
}

Test(store, run_claims_and_completes_a_job_in_one_step)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *src[] = {"r1", "r2"};
        const char *gone[] = {"r3", "r404"};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 2);
        dq_job_t *bad =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, gone, 2);
        int64_t now = dq_now_ms();
        dq_store_run_t r;

        dq_test_memory(st, SCOPE, "r1", "candidate", "active", "one", 1);
        dq_test_memory(st, SCOPE, "r2", "candidate", "active", "two", 2);
        dq_test_memory(st, SCOPE, "r3", "candidate", "active", "three", 3);
        r = run1(st, job, now);
        cr_assert_eq(r.claim.status, DQ_CLAIM_CLAIMED);
        cr_assert_eq(r.claim.attempts, 1);
        cr_assert_eq(r.settle.err, DQ_OK);
        cr_assert_str_eq(job_field(st, job, "state"), "completed");
        cr_assert_str_eq(job_field(st, job, "attempts"), "1");
        /* The same record again: terminal, no attempt spent. */
        r = run1(st, job, now);
        cr_assert_eq(r.claim.status, DQ_CLAIM_TERMINAL);
        cr_assert_str_eq(job_field(st, job, "attempts"), "1");
        /* A missing source: the attempt counted, the claim held for the
         * dead settle, nothing written. */
        r = run1(st, bad, now);
        cr_assert_eq(r.claim.status, DQ_CLAIM_CLAIMED);
        cr_assert_eq(r.settle.err, DQ_ERR_REJECTED);
        cr_assert_str_eq(r.settle.code, "decay.compress.source_missing");
        cr_assert_str_eq(job_field(st, bad, "state"), "in_progress");
        {
                dq_settle_t d = {.job = bad,
                                 .op = DQ_SETTLE_DEAD,
                                 .epoch = r.claim.epoch,
                                 .error_class = "fatal",
                                 .error_code = r.settle.code,
                                 .error_message = r.settle.message};
                cr_assert_eq(dq_store_settle(st, &d, 1, now), DQ_OK);
                cr_assert_eq(d.err, DQ_OK);
        }
        cr_assert_str_eq(job_field(st, bad, "state"), "dead");
        dq_job_destroy(job);
        dq_job_destroy(bad);
        dq_store_destroy(st);
}

/* The calls of one command in INFO commandstats, e.g. "hset". */
static long cmd_calls(redisContext *c, const char *cmd)
{
        redisReply *r = redisCommand(c, "INFO commandstats");
        char pat[64];
        const char *p;
        long n = 0;

        cr_assert(r && r->type == REDIS_REPLY_STRING);
        snprintf(pat, sizeof(pat), "cmdstat_%s:calls=", cmd);
        if ((p = strstr(r->str, pat)))
                n = atol(p + strlen(pat));
        freeReplyObject(r);
        return n;
}

static json_t *source_ids(dq_store_t *st, const char *sum)
{
        json_error_t err;
        json_t *v = json_loads(mem_field(st, sum, "source_ids"), 0, &err);
        cr_assert_not_null(v, "source_ids: %s", err.text);
        return v;
}

/* What a deterministic job costs Redis, on a server of its own so that the
 * command counts are this job's: a first run of a compression of two
 * sources with an idempotency key is 11 commands, one per key and access
 * (the state read, the key taken, each source read and marked, the
 * summary, the index and holds, the state written and its TTL), and none
 * undoes another: a first claim leaves no claim fields to delete, no TTL
 * to clear and no created_at to keep. The summary lists its sources in
 * the order they were remembered, whatever their ids are made of. */
Test(store, a_first_run_costs_one_command_per_key_it_must_touch)
{
        private_redis_t pr;
        char errstr[512], sum[64];
        const char *src[] = {"a.1", "b:2"};
        const char *odd[] = {"y\"\\1", "x/2"};
        const char *cmds[] = {"hsetnx", "persist", "hget", "exists", "del"};
        dq_job_t *job, *oddj;
        dq_store_t *st;
        redisContext *c;
        dq_store_run_t r;
        json_t *ids;

        private_redis(&pr, "--appendonly", "yes", NULL, NULL);
        st = store_on(pr.port, NULL, errstr, sizeof(errstr));
        cr_assert_not_null(st, "%s", errstr);
        c = redisConnect("127.0.0.1", pr.port);
        cr_assert(c && !c->err);
        job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 2);
        job->idempotency_key = strdup("order-7");
        oddj = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, odd, 2);
        dq_test_memory(st, SCOPE, "a.1", "candidate", "active", "one", 1);
        dq_test_memory(st, SCOPE, "b:2", "candidate", "active", "two", 2);
        /* Named by the job in the order opposite to their memory. */
        dq_test_memory(st, SCOPE, odd[1], "candidate", "active", "first", 1);
        dq_test_memory(st, SCOPE, odd[0], "candidate", "active", "second", 2);
        freeReplyObject(redisCommand(c, "CONFIG RESETSTAT"));

        r = run1(st, job, dq_now_ms());
        cr_assert_eq(r.claim.status, DQ_CLAIM_CLAIMED);
        cr_assert_eq(r.settle.err, DQ_OK);
        cr_expect_eq(cmd_calls(c, "hmget"), 3, "state and two sources");
        cr_expect_eq(cmd_calls(c, "set"), 1, "the idempotency key");
        cr_expect_eq(cmd_calls(c, "hset"), 4,
                     "summary, two sources, the state");
        cr_expect_eq(cmd_calls(c, "zrem"), 1);
        cr_expect_eq(cmd_calls(c, "hdel"), 1, "the holds, not the state");
        cr_expect_eq(cmd_calls(c, "pexpire"), 1);
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
                cr_expect_eq(cmd_calls(c, cmds[i]), 0, "%s", cmds[i]);
        cr_expect_str_eq(job_field(st, job, "state"), "completed");
        cr_expect_str_eq(job_field(st, job, "created_at"),
                         job_field(st, job, "started_at"));
        cr_expect_str_eq(job_field(st, job, "lease_until"), "");
        snprintf(sum, sizeof(sum), "sum_%s", job->id);
        cr_expect_str_eq(mem_field(st, sum, "claim"), "one\ntwo");
        ids = source_ids(st, sum);
        cr_expect_eq(json_array_size(ids), 2);
        cr_expect_str_eq(json_string_value(json_array_get(ids, 0)), "a.1");
        cr_expect_str_eq(json_string_value(json_array_get(ids, 1)), "b:2");
        json_decref(ids);

        r = run1(st, oddj, dq_now_ms());
        cr_assert_eq(r.settle.err, DQ_OK);
        snprintf(sum, sizeof(sum), "sum_%s", oddj->id);
        cr_expect_str_eq(mem_field(st, sum, "claim"), "first\nsecond");
        ids = source_ids(st, sum);
        cr_expect_str_eq(json_string_value(json_array_get(ids, 0)), odd[1]);
        cr_expect_str_eq(json_string_value(json_array_get(ids, 1)), odd[0]);
        json_decref(ids);

        redisFree(c);
        dq_job_destroy(job);
        dq_job_destroy(oddj);
        dq_store_destroy(st);
        private_redis_stop(&pr);
}

/* The two halves of dq_store_run(): batches sent one after another are
 * answered in order; a batch whose replies another call would read is
 * dropped with its connection, reads as unknown, and runs once when sent
 * again. */
Test(store, runs_sent_in_halves_are_answered_in_order)
{
        dq_store_t *st = dq_test_store("w1", NULL, 0, NULL);
        const char *s1[] = {"h1"}, *s2[] = {"h2"}, *s3[] = {"h3"};
        dq_job_t *jobs[3] = {
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, s1, 1),
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, s2, 1),
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, s3, 1)};
        int64_t now = dq_now_ms();
        dq_store_run_t a[2] = {{.claim = {.job = jobs[0], .msg = "j/0/1"}},
                               {.claim = {.job = jobs[1], .msg = "j/0/2"}}};
        dq_store_run_t b[1] = {{.claim = {.job = jobs[0], .msg = "j/0/3"}}};
        dq_store_run_t c[1] = {{.claim = {.job = jobs[2], .msg = "j/0/4"}}};
        dq_store_ticket_t ta, tb, tc;

        dq_test_memory(st, SCOPE, "h1", "candidate", "active", "one", 1);
        dq_test_memory(st, SCOPE, "h2", "candidate", "active", "two", 2);
        dq_test_memory(st, SCOPE, "h3", "candidate", "active", "three", 3);
        /* b repeats a's first job: it runs after a, so it finds it done. */
        dq_store_run_send(st, a, 2, now, &ta);
        dq_store_run_send(st, b, 1, now, &tb);
        cr_assert_neq(ta.conn, 0);
        cr_assert_eq(tb.conn, ta.conn);
        cr_assert_eq(dq_store_run_recv(st, a, 2, &ta), DQ_OK);
        cr_assert_eq(dq_store_run_recv(st, b, 1, &tb), DQ_OK);
        for (int i = 0; i < 2; i++) {
                cr_expect_eq(a[i].claim.status, DQ_CLAIM_CLAIMED);
                cr_expect_eq(a[i].settle.err, DQ_OK);
                cr_expect_str_eq(job_field(st, jobs[i], "state"), "completed");
        }
        cr_expect_eq(b[0].claim.status, DQ_CLAIM_TERMINAL);

        /* Another call while c's reply is owed: c is given up, not read
         * as that call's reply. */
        dq_store_run_send(st, c, 1, now, &tc);
        cr_assert_neq(tc.conn, 0);
        cr_assert_eq(dq_store_ping(st), DQ_OK);
        cr_assert_eq(dq_store_run_recv(st, c, 1, &tc), DQ_ERR_UNAVAILABLE);
        cr_expect_eq(c[0].claim.err, DQ_ERR_UNAVAILABLE);
        /* Sent again, whether or not it ran: done once, one attempt. */
        cr_assert_eq(dq_store_run(st, c, 1, now), DQ_OK);
        cr_expect(c[0].claim.status == DQ_CLAIM_CLAIMED ||
                  c[0].claim.status == DQ_CLAIM_TERMINAL);
        cr_expect_str_eq(job_field(st, jobs[2], "state"), "completed");
        cr_expect_str_eq(job_field(st, jobs[2], "attempts"), "1");

        /* Nothing sent: the batch reads as unknown at once. */
        dq_store_run_send(st, c, 0, now, &tc);
        cr_expect_eq(tc.conn, 0);
        for (int i = 0; i < 3; i++)
                dq_job_destroy(jobs[i]);
        dq_store_destroy(st);
}
