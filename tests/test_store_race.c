/* Concurrent claims: 8 processes race to claim and complete the same 1,000
 * jobs. Every job completes exactly once, with one summary memory, and every
 * settle of a superseded claim is refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dq_test.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

#define PROCS 8
#define JOBS  1000
#define BATCH 50
#define SCOPE "race/agent"

typedef struct result_s {
        long completed; /* complete returned ok */
        long fenced;    /* complete refused: claim superseded */
        long terminal;  /* claim or complete found the job done */
        long other;
} result_t;

static void race(dq_conf_t *conf, dq_job_t **jobs, int proc, int fd)
{
        char worker[32], errstr[512];
        dq_store_t *st;
        result_t r = {0};
        int order[JOBS];

        snprintf(worker, sizeof(worker), "racer-%d", proc);
        st = dq_store_new(conf, worker, errstr, sizeof(errstr));
        if (!st)
                _exit(2);
        /* Each racer walks the jobs in its own order. */
        srand((unsigned)(proc * 7919 + 1));
        for (int i = 0; i < JOBS; i++)
                order[i] = i;
        for (int i = JOBS - 1; i > 0; i--) {
                int j = rand() % (i + 1), t = order[i];
                order[i] = order[j];
                order[j] = t;
        }
        for (int b = 0; b < JOBS; b += BATCH) {
                dq_claim_t claims[BATCH];
                dq_settle_t settles[BATCH];
                int n = 0;
                for (int i = 0; i < BATCH; i++)
                        /* Each job's one record, read by every racer:
                         * as in a storm of rebalances. */
                        claims[i] = (dq_claim_t){.job = jobs[order[b + i]],
                                                 .msg = jobs[order[b + i]]->id};
                if (dq_store_claim(st, claims, BATCH, dq_now_ms()))
                        _exit(3);
                for (int i = 0; i < BATCH; i++) {
                        if (claims[i].status == DQ_CLAIM_TERMINAL) {
                                r.terminal++;
                                continue;
                        }
                        if (claims[i].status != DQ_CLAIM_CLAIMED) {
                                r.other++;
                                continue;
                        }
                        settles[n++] = (dq_settle_t){.job = claims[i].job,
                                                     .op = DQ_SETTLE_COMPLETE,
                                                     .epoch = claims[i].epoch};
                }
                if (dq_store_settle(st, settles, (size_t)n, dq_now_ms()))
                        _exit(4);
                for (int i = 0; i < n; i++) {
                        if (settles[i].err == DQ_OK)
                                r.completed++;
                        else if (settles[i].err == DQ_ERR_FENCED)
                                r.fenced++;
                        else if (settles[i].err == DQ_ERR_TERMINAL)
                                r.terminal++;
                        else
                                r.other++;
                }
        }
        if (write(fd, &r, sizeof(r)) != sizeof(r))
                _exit(5);
        dq_store_destroy(st);
        _exit(0);
}

Test(store_race, eight_processes_complete_each_job_exactly_once, .timeout = 180)
{
        const char *x[] = {"max.attempts=100"};
        dq_conf_t *conf;
        dq_store_t *st = dq_test_store("setup", x, 1, &conf);
        dq_job_t **jobs = calloc(JOBS, sizeof(*jobs));
        int fds[2];
        pid_t pids[PROCS];
        result_t total = {0};

        for (int i = 0; i < JOBS; i++) {
                char a[32], b[32];
                const char *src[] = {a, b};
                snprintf(a, sizeof(a), "r%d_a", i);
                snprintf(b, sizeof(b), "r%d_b", i);
                dq_test_memory(st, SCOPE, a, "candidate", "active", "A", 1);
                dq_test_memory(st, SCOPE, b, "candidate", "active", "B", 2);
                jobs[i] =
                    dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 2);
        }
        cr_assert_eq(pipe(fds), 0);
        for (int p = 0; p < PROCS; p++) {
                pids[p] = fork();
                cr_assert(pids[p] >= 0);
                if (pids[p] == 0)
                        race(conf, jobs, p, fds[1]);
        }
        close(fds[1]);
        for (int p = 0; p < PROCS; p++) {
                int status;
                result_t r;
                waitpid(pids[p], &status, 0);
                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                          "racer %d failed (%d)", p, status);
                cr_assert_eq(read(fds[0], &r, sizeof(r)), (ssize_t)sizeof(r));
                total.completed += r.completed;
                total.fenced += r.fenced;
                total.terminal += r.terminal;
                total.other += r.other;
        }
        close(fds[0]);
        cr_log_info("race: completed=%ld fenced=%ld terminal=%ld other=%ld",
                    total.completed, total.fenced, total.terminal, total.other);
        cr_assert_eq(total.completed, JOBS, "jobs completed %ld times",
                     total.completed);
        cr_assert_eq(total.other, 0);
        cr_assert_eq(total.completed + total.fenced + total.terminal,
                     (long)PROCS * JOBS);

        /* The store agrees: each job completed with exactly its summary. */
        for (int i = 0; i < JOBS; i++) {
                dq_record_t rec;
                char sum[64];
                snprintf(sum, sizeof(sum), "sum_%s", jobs[i]->id);
                cr_assert_eq(dq_store_job_get(st, SCOPE, jobs[i]->id, &rec),
                             DQ_OK);
                cr_assert_str_eq(dq_record_get(&rec, "state"), "completed");
                cr_assert_str_eq(dq_record_get(&rec, "result_memory_id"), sum);
                dq_record_release(&rec);
                for (size_t s = 0; s < 2; s++) {
                        cr_assert_eq(
                            dq_store_record_get(st, DQ_REC_MEMORY, SCOPE,
                                                jobs[i]->source_ids[s], &rec),
                            DQ_OK);
                        cr_assert_str_eq(dq_record_get(&rec, "compressed_into"),
                                         sum);
                        dq_record_release(&rec);
                }
                cr_assert_eq(
                    dq_store_record_get(st, DQ_REC_MEMORY, SCOPE, sum, &rec),
                    DQ_OK);
                cr_assert_str_eq(dq_record_get(&rec, "claim"), "A\nB");
                dq_record_release(&rec);
                dq_job_destroy(jobs[i]);
        }
        /* Exactly one summary per job: no stray sum_ keys. */
        {
                redisContext *c = dq_test_redis();
                char pattern[256];
                long keys = 0;
                char cursor[32] = "0";
                dq_store_key(st, pattern, sizeof(pattern), "mem", SCOPE,
                             "sum_*");
                do {
                        redisReply *r = redisCommand(
                            c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
                        cr_assert(r && r->type == REDIS_REPLY_ARRAY);
                        snprintf(cursor, sizeof(cursor), "%s",
                                 r->element[0]->str);
                        keys += (long)r->element[1]->elements;
                        freeReplyObject(r);
                } while (strcmp(cursor, "0"));
                cr_assert_eq(keys, JOBS, "%ld summary memories", keys);
                redisFree(c);
        }
        free(jobs);
        dq_store_destroy(st);
        dq_conf_destroy(conf);
}
