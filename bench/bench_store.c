/* Benchmark of the Redis store: jobs claimed and completed per second,
 * pipelined in batches versus one at a time, set against redis-benchmark
 * running the same claim function on the same server in the same run.
 *
 * usage: bench_store HOST PORT [JOBS] [BATCH] */
#define _GNU_SOURCE /* popen */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "dq_conf.h"
#include "dq_store.h"
#include "dq_time.h"
#include "banned.h"

static dq_job_t *make_job(const char *scope, const char *src)
{
        dq_job_t *job = dq_job_new();
        job->kind = DQ_KIND_CANDIDATE_COMPRESSION;
        job->method = DQ_METHOD_DETERMINISTIC_CONCATENATE;
        job->created_at_ms = dq_now_ms();
        dq_ulid_new(job->created_at_ms, job->id);
        job->scope = strdup(scope);
        job->created_by = strdup("bench");
        job->source_ids = calloc(1, sizeof(char *));
        job->source_ids[0] = strdup(src);
        job->source_cnt = 1;
        return job;
}

/* Preloads one candidate memory per job and returns the jobs. */
static dq_job_t **preload(dq_store_t *st, int n, const char *scope)
{
        dq_job_t **jobs = calloc((size_t)n, sizeof(*jobs));
        for (int i = 0; i < n; i++) {
                char id[32];
                const char *kv[] = {
                    "type",  "candidate",         "status",     "active",
                    "claim", "a remembered fact", "created_at", "1"};
                snprintf(id, sizeof(id), "m%d", i);
                if (dq_store_record_put(st, DQ_REC_MEMORY, scope, id, kv, 4)) {
                        fprintf(stderr, "error: preload failed\n");
                        exit(1);
                }
                jobs[i] = make_job(scope, id);
        }
        return jobs;
}

/* Claims and completes jobs[0..n) in batches; returns jobs per second. */
static double run(dq_store_t *st, dq_job_t **jobs, int n, int batch)
{
        dq_claim_t *claims = calloc((size_t)batch, sizeof(*claims));
        dq_settle_t *settles = calloc((size_t)batch, sizeof(*settles));
        int64_t t0 = dq_mono_ms();

        for (int b = 0; b < n; b += batch) {
                int m = n - b < batch ? n - b : batch;
                for (int i = 0; i < m; i++)
                        claims[i] = (dq_claim_t){.job = jobs[b + i]};
                if (dq_store_claim(st, claims, (size_t)m, dq_now_ms())) {
                        fprintf(stderr, "error: claim failed\n");
                        exit(1);
                }
                for (int i = 0; i < m; i++)
                        settles[i] = (dq_settle_t){.job = jobs[b + i],
                                                   .op = DQ_SETTLE_COMPLETE,
                                                   .epoch = claims[i].epoch};
                if (dq_store_settle(st, settles, (size_t)m, dq_now_ms())) {
                        fprintf(stderr, "error: settle failed\n");
                        exit(1);
                }
                for (int i = 0; i < m; i++)
                        if (settles[i].err) {
                                fprintf(stderr, "error: settle %s\n",
                                        dq_err_name(settles[i].err));
                                exit(1);
                        }
        }
        free(claims);
        free(settles);
        return n * 1000.0 / (double)(dq_mono_ms() - t0 + 1);
}

int main(int argc, char **argv)
{
        char errstr[512], host[128], port[32], ns[64];
        char *X[3] = {host, port, ns};
        int n = argc > 3 ? atoi(argv[3]) : 50000;
        int batch = argc > 4 ? atoi(argv[4]) : 500;
        int n_single = n / 10;
        dq_conf_t *conf;
        dq_store_t *st;
        dq_job_t **jobs;
        double piped, single, ceil_rps, ceil_jobs;

        if (argc < 3) {
                fprintf(stderr, "usage: bench_store HOST PORT [JOBS] "
                                "[BATCH]\n");
                return 2;
        }
        snprintf(host, sizeof(host), "redis.host=%s", argv[1]);
        snprintf(port, sizeof(port), "redis.port=%s", argv[2]);
        snprintf(ns, sizeof(ns), "redis.namespace=bench%d", (int)getpid());
        conf = dq_conf_load(NULL, X, 3, errstr, sizeof(errstr));
        if (!conf ||
            !(st = dq_store_new(conf, "bench", errstr, sizeof(errstr)))) {
                fprintf(stderr, "error: %s\n", errstr);
                return 1;
        }
        fprintf(stderr, "bench_store: preloading %d memories\n", n + n_single);
        jobs = preload(st, n + n_single, "bench/scope");

        fprintf(stderr, "bench_store: pipelined, batch %d\n", batch);
        piped = run(st, jobs, n, batch);
        fprintf(stderr, "bench_store: one at a time\n");
        single = run(st, jobs + n, n_single, 1);
        fprintf(stderr, "bench_store: redis-benchmark ceiling\n");
        ceil_rps = bench_redis_ceiling(argv[1], atoi(argv[2]), 0, "benchceil",
                                       200000, batch, 50);
        /* A job costs two function calls: claim and complete. */
        ceil_jobs = ceil_rps / 2;

        printf("%-34s %12s\n", "measure", "jobs/s");
        printf("%-34s %12.0f\n", "claim+complete, pipelined", piped);
        printf("%-34s %12.0f\n", "claim+complete, one at a time", single);
        printf("%-34s %12.0f\n", "ceiling: redis-benchmark claim / 2",
               ceil_jobs);
        printf("%-34s %12.2f\n", "pipelined / one at a time",
               single > 0 ? piped / single : 0);
        printf("%-34s %12.2f\n", "pipelined / ceiling",
               ceil_jobs > 0 ? piped / ceil_jobs : 0);
        printf("{\"jobs\":%d,\"batch\":%d,\"pipelined_jobs_per_s\":%.0f,"
               "\"single_jobs_per_s\":%.0f,\"ceiling_jobs_per_s\":%.0f,"
               "\"ratio_to_ceiling\":%.3f,\"pipelining_speedup\":%.2f}\n",
               n, batch, piped, single, ceil_jobs,
               ceil_jobs > 0 ? piped / ceil_jobs : 0,
               single > 0 ? piped / single : 0);
        for (int i = 0; i < n + n_single; i++)
                dq_job_destroy(jobs[i]);
        free(jobs);
        dq_store_destroy(st);
        dq_conf_destroy(conf);
        return 0;
}
