/* Store helpers shared by the Redis store tests. */
#include "dq_test_store.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_test.h"
#include "dq_time.h"
#include "banned.h"

dq_store_t *dq_test_store(const char *worker, const char *const *extra,
                          int extra_cnt, dq_conf_t **confp)
{
        char host[128], port[64], ns[192], errstr[512];
        char *X[32];
        int n = 0;
        dq_conf_t *conf;
        dq_store_t *st;
        static char nsbuf[128];

        snprintf(host, sizeof(host), "redis.host=%s", dq_test_redis_host());
        snprintf(port, sizeof(port), "redis.port=%d", dq_test_redis_port());
        dq_test_unique(nsbuf, sizeof(nsbuf), "t");
        snprintf(ns, sizeof(ns), "redis.namespace=%s", nsbuf);
        X[n++] = host;
        X[n++] = port;
        X[n++] = ns;
        for (int i = 0; i < extra_cnt && n < 32; i++)
                X[n++] = (char *)extra[i];
        conf = dq_conf_load(NULL, X, n, errstr, sizeof(errstr));
        cr_assert_not_null(conf, "%s", errstr);
        st = dq_store_new(conf, worker, errstr, sizeof(errstr));
        cr_assert_not_null(st, "store: %s", errstr);
        if (confp)
                *confp = conf;
        else
                dq_conf_destroy(conf);
        return st;
}

dq_job_t *dq_test_job(dq_kind_t kind, const char *scope,
                      const char *const *sources, size_t cnt)
{
        dq_job_t *job = dq_job_new();
        dq_reject_t rej;

        job->kind = kind;
        job->method = DQ_METHOD_DETERMINISTIC_CONCATENATE;
        job->created_at_ms = dq_now_ms();
        dq_ulid_new(job->created_at_ms, job->id);
        job->scope = strdup(scope);
        job->created_by = strdup("test");
        job->source_ids = calloc(cnt, sizeof(char *));
        for (size_t i = 0; i < cnt; i++)
                job->source_ids[job->source_cnt++] = strdup(sources[i]);
        cr_assert(dq_job_validate(job, &rej), "%s", rej.message);
        return job;
}

void dq_test_memory(dq_store_t *st, const char *scope, const char *id,
                    const char *type, const char *status, const char *claim,
                    long long created_at)
{
        char ts[32];
        const char *kv[] = {"type",  type,  "status",     status,
                            "claim", claim, "created_at", ts};
        snprintf(ts, sizeof(ts), "%lld", created_at);
        cr_assert_eq(dq_store_record_put(st, DQ_REC_MEMORY, scope, id, kv, 4),
                     DQ_OK);
}

void dq_test_wait_state(dq_store_t *st, const dq_job_t *job, const char *want,
                        long ms)
{
        long long deadline = dq_test_now_ms() + ms;
        char last[32] = "";

        while (dq_test_now_ms() < deadline) {
                dq_record_t rec = {0};
                if (dq_store_job_get(st, job->scope, job->id, &rec) == DQ_OK) {
                        const char *s = dq_record_get(&rec, "state");
                        snprintf(last, sizeof(last), "%s", s ? s : "");
                        dq_record_release(&rec);
                        if (!strcmp(last, want))
                                return;
                }
                dq_test_sleep_ms(50);
        }
        cr_assert_fail("job %s: state '%s', expected '%s' within %ld ms",
                       job->id, last, want, ms);
}

int64_t dq_test_job_int(dq_store_t *st, const dq_job_t *job, const char *field)
{
        dq_record_t rec = {0};
        int64_t v = 0;

        if (dq_store_job_get(st, job->scope, job->id, &rec) == DQ_OK) {
                const char *s = dq_record_get(&rec, field);
                v = s ? atoll(s) : 0;
                dq_record_release(&rec);
        }
        return v;
}
