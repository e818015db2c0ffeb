/* kill -9 of redis-server mid-run, then a restart with the shipped config:
 * acknowledged states and memories come back, an operation during the
 * outage is reported unknown (never success), and the store reconnects. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "dq_test.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

#define JOBS  300
#define SCOPE "restart/agent"

static void run_jobs(dq_store_t *st, dq_job_t **jobs, int from, int to)
{
        for (int i = from; i < to; i++) {
                dq_claim_t c = {.job = jobs[i]};
                cr_assert_eq(dq_store_claim(st, &c, 1, dq_now_ms()), DQ_OK);
                if (c.status == DQ_CLAIM_TERMINAL)
                        continue;
                cr_assert_eq(c.status, DQ_CLAIM_CLAIMED);
                dq_settle_t s = {
                    .job = jobs[i], .op = DQ_SETTLE_COMPLETE, .epoch = c.epoch};
                cr_assert_eq(dq_store_settle(st, &s, 1, dq_now_ms()), DQ_OK);
                cr_assert_eq(s.err, DQ_OK, "job %d: %s", i, dq_err_name(s.err));
        }
}

Test(store_restart, kill9_then_restart_keeps_acknowledged_state, .timeout = 120)
{
        const char *x[] = {"redis.timeout=1s"};
        dq_conf_t *conf;
        dq_store_t *st = dq_test_store("w", x, 1, &conf);
        dq_job_t *jobs[JOBS];
        dq_claim_t during[50];
        long long deadline;
        dq_err_t err;

        for (int i = 0; i < JOBS; i++) {
                char id[32];
                const char *src[] = {id};
                snprintf(id, sizeof(id), "k%d", i);
                dq_test_memory(st, SCOPE, id, "candidate", "active", id, i);
                jobs[i] =
                    dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, SCOPE, src, 1);
        }
        run_jobs(st, jobs, 0, 100);

        dq_test_services("redis-kill");
        for (int i = 0; i < 50; i++)
                during[i] = (dq_claim_t){.job = jobs[100 + i]};
        err = dq_store_claim(st, during, 50, dq_now_ms());
        cr_assert_eq(err, DQ_ERR_UNAVAILABLE);
        for (int i = 0; i < 50; i++)
                cr_assert_eq(during[i].err, DQ_ERR_UNAVAILABLE,
                             "claim %d reported a result while Redis was "
                             "down",
                             i);
        cr_assert(dq_err_is_critical(err));

        dq_test_services("redis-start");
        /* The library came back from the AOF, before anyone reloads it. */
        {
                redisContext *c = dq_test_redis();
                redisReply *r = redisCommand(c, "FCALL decayq_version 0");
                cr_assert(r && r->type == REDIS_REPLY_STRING, "functions lost");
                cr_assert_str_eq(r->str, dq_store_functions_version());
                freeReplyObject(r);
                redisFree(c);
        }
        deadline = dq_test_now_ms() + 30000;
        do {
                dq_claim_t probe = {.job = jobs[0]};
                err = dq_store_claim(st, &probe, 1, dq_now_ms());
                if (err == DQ_OK) {
                        cr_assert_eq(probe.status, DQ_CLAIM_TERMINAL);
                        cr_assert_str_eq(probe.state, "completed");
                        break;
                }
                dq_test_sleep_ms(100);
        } while (dq_test_now_ms() < deadline);
        cr_assert_eq(err, DQ_OK, "store never reconnected");

        for (int i = 0; i < 100; i++) {
                dq_record_t rec;
                char sum[64];
                snprintf(sum, sizeof(sum), "sum_%s", jobs[i]->id);
                cr_assert_eq(dq_store_job_get(st, SCOPE, jobs[i]->id, &rec),
                             DQ_OK);
                cr_assert_str_eq(dq_record_get(&rec, "state"), "completed",
                                 "job %d lost its state", i);
                dq_record_release(&rec);
                cr_assert_eq(
                    dq_store_record_get(st, DQ_REC_MEMORY, SCOPE, sum, &rec),
                    DQ_OK, "summary of job %d lost", i);
                dq_record_release(&rec);
                cr_assert_eq(dq_store_record_get(st, DQ_REC_MEMORY, SCOPE,
                                                 jobs[i]->source_ids[0], &rec),
                             DQ_OK);
                cr_assert_str_eq(dq_record_get(&rec, "status"), "compressed");
                dq_record_release(&rec);
        }
        run_jobs(st, jobs, 100, JOBS);
        for (int i = 0; i < JOBS; i++)
                dq_job_destroy(jobs[i]);
        dq_store_destroy(st);
        dq_conf_destroy(conf);
}
