/* Benchmark of one planning pass: SCOPES scopes of MEMORIES due candidates
 * each, planned by decay-planner --once and published to Kafka, in
 * scopes/s and memories/s, with the Redis CPU the pass cost. The ceiling,
 * measured in the same run on the same data, is the reads any pass must
 * do: every scope's index range and every memory's status, pipelined.
 * A second pass, over memories all held by the first pass's jobs, is the
 * steady-state cost of a pass that finds nothing new.
 *
 * usage: bench_plan BIN_DIR HOST PORT BOOTSTRAP [SCOPES] [MEMORIES] */
#define _GNU_SOURCE /* popen */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "dq_conf.h"
#include "dq_store.h"
#include "dq_time.h"
#include "banned.h"

static redisContext *rc;

static double info_num(const char *section, const char *key)
{
        redisReply *r = redisCommand(rc, "INFO %s", section);
        char *p;
        double v = 0;

        if (r && r->type == REDIS_REPLY_STRING && (p = strstr(r->str, key)))
                v = atof(p + strlen(key) + 1);
        freeReplyObject(r);
        return v;
}

static double redis_cpu(void)
{
        return info_num("cpu", "used_cpu_user") +
               info_num("cpu", "used_cpu_sys");
}

/* Reads n pipelined replies, failing on an error reply. */
static void drain(int n)
{
        for (int i = 0; i < n; i++) {
                redisReply *r;
                if (redisGetReply(rc, (void **)&r) != REDIS_OK ||
                    r->type == REDIS_REPLY_ERROR) {
                        fprintf(stderr, "error: redis: %s\n",
                                r ? r->str : rc->errstr);
                        exit(1);
                }
                freeReplyObject(r);
        }
}

/* Loads the memories with the same function decayctl memory load uses,
 * pipelined 1,000 deep. */
static void load(const char *ns, int scopes, int memories, int64_t created)
{
        int pending = 0;
        int64_t t0 = bench_mono_us();

        for (int s = 0; s < scopes; s++) {
                redisAppendCommand(rc, "SADD %s:scopes s%d", ns, s);
                pending++;
                for (int m = 0; m < memories; m++) {
                        redisAppendCommand(
                            rc,
                            "FCALL decayq_put 3 %s:mem:{s%d}:m%d "
                            "%s:idx:{s%d}:candidate %s:idx:{s%d}:principle "
                            "mem m%d s%d type candidate status active claim "
                            "%s created_at %lld",
                            ns, s, m, ns, s, ns, s, m, s,
                            "a remembered fact of about forty bytes",
                            (long long)(created + m));
                        if (++pending == 1000) {
                                drain(pending);
                                pending = 0;
                        }
                }
                if (s % 1000 == 999)
                        fprintf(stderr, "  loaded %d of %d scopes\n", s + 1,
                                scopes);
        }
        drain(pending);
        fprintf(stderr, "  loaded %d memories in %.1f s\n", scopes * memories,
                (double)(bench_mono_us() - t0) / 1e6);
}

/* The reads a pass cannot avoid, pipelined: seconds. */
static double floor_reads(const char *ns, int scopes, int memories)
{
        int64_t t0 = bench_mono_us();
        int pending = 0;

        for (int s = 0; s < scopes; s++) {
                redisAppendCommand(rc,
                                   "ZRANGEBYSCORE %s:idx:{s%d}:candidate -inf "
                                   "+inf",
                                   ns, s);
                pending++;
                for (int m = 0; m < memories; m++) {
                        redisAppendCommand(rc,
                                           "HMGET %s:mem:{s%d}:m%d status type "
                                           "review_state",
                                           ns, s, m);
                        if (++pending == 1000) {
                                drain(pending);
                                pending = 0;
                        }
                }
        }
        drain(pending);
        return (double)(bench_mono_us() - t0) / 1e6;
}

/* Runs decay-planner --once; returns wall seconds, and its pass line. */
static double pass(const char *bin, const char *host, int port,
                   const char *bootstrap, const char *ns, const char *topic,
                   char *line, size_t size)
{
        char cmd[2048];
        int64_t t0 = bench_mono_us();
        FILE *p;
        int st;

        snprintf(cmd, sizeof(cmd),
                 "%s/planner/decay-planner --once -X redis.host=%s -X "
                 "redis.port=%d -X redis.namespace=%s -X "
                 "kafka.bootstrap.servers=%s -X topic.jobs=%s -X "
                 "plan.candidates.min.age=1d -X plan.candidates.min.sources=2 "
                 "-X plan.candidates.max.sources=100 -X plan.batch=64 2>&1",
                 bin, host, port, ns, bootstrap, topic);
        line[0] = '\0';
        if (!(p = popen(cmd, "r"))) {
                perror("popen");
                exit(1);
        }
        while (fgets(cmd, sizeof(cmd), p))
                if (strstr(cmd, "stage=pass"))
                        snprintf(line, size, "%s", cmd);
        st = pclose(p);
        if (!WIFEXITED(st) || WEXITSTATUS(st)) {
                fprintf(stderr, "error: decay-planner failed (%d): %s\n", st,
                        line);
                exit(1);
        }
        return (double)(bench_mono_us() - t0) / 1e6;
}

static long long field(const char *line, const char *key)
{
        char k[64];
        const char *p;
        snprintf(k, sizeof(k), " %s=", key);
        p = strstr(line, k);
        return p ? atoll(p + strlen(k)) : -1;
}

int main(int argc, char **argv)
{
        const char *bin, *host, *bootstrap;
        int port, scopes, memories;
        char ns[64], topic[64], line[2048];
        double cpu0, cpu1, cpu2, t_floor, t1, t2;
        long long proposed;

        if (argc < 5) {
                fprintf(stderr, "usage: bench_plan BIN_DIR HOST PORT "
                                "BOOTSTRAP [SCOPES] [MEMORIES]\n");
                return 2;
        }
        bin = argv[1];
        host = argv[2];
        port = atoi(argv[3]);
        bootstrap = argv[4];
        scopes = argc > 5 ? atoi(argv[5]) : 10000;
        memories = argc > 6 ? atoi(argv[6]) : 100;
        snprintf(ns, sizeof(ns), "benchplan%d", (int)getpid());
        snprintf(topic, sizeof(topic), "bench.plan.%d", (int)getpid());
        if (!(rc = redisConnect(host, port)) || rc->err) {
                fprintf(stderr, "error: redis %s:%d\n", host, port);
                return 1;
        }
        printf("decayq planner benchmark: %s\n", bench_machine());
        printf("%d scopes x %d memories = %d memories, all due\n", scopes,
               memories, scopes * memories);
        /* A store at start loads the functions library. */
        {
                char h[160], p[32], n[96], errstr[256];
                char *X[] = {h, p, n};
                dq_conf_t *conf;
                dq_store_t *st;
                snprintf(h, sizeof(h), "redis.host=%s", host);
                snprintf(p, sizeof(p), "redis.port=%d", port);
                snprintf(n, sizeof(n), "redis.namespace=%s", ns);
                conf = dq_conf_load(NULL, X, 3, errstr, sizeof(errstr));
                st = conf ? dq_store_new(conf, "bench", errstr, sizeof(errstr))
                          : NULL;
                if (!st) {
                        fprintf(stderr, "error: %s\n", errstr);
                        return 1;
                }
                dq_store_destroy(st);
                dq_conf_destroy(conf);
        }
        load(ns, scopes, memories, dq_now_ms() - 30LL * 86400000);

        t_floor = floor_reads(ns, scopes, memories);
        cpu0 = redis_cpu();
        t1 = pass(bin, host, port, bootstrap, ns, topic, line, sizeof(line));
        cpu1 = redis_cpu();
        proposed = field(line, "proposed");
        if (proposed != (long long)scopes * memories) {
                fprintf(stderr, "error: the pass proposed %lld of %d: %s\n",
                        proposed, scopes * memories, line);
                return 1;
        }
        t2 = pass(bin, host, port, bootstrap, ns, topic, line, sizeof(line));
        cpu2 = redis_cpu();
        if (field(line, "held") != (long long)scopes * memories) {
                fprintf(stderr, "error: the second pass: %s\n", line);
                return 1;
        }

        printf("\n| measure | value |\n|---|---:|\n");
        printf("| first pass, whole process (plan, publish %d jobs, mark) "
               "| %.1f s |\n",
               scopes, t1);
        printf("| first pass | %.0f scopes/s, %.0f memories/s |\n", scopes / t1,
               scopes * memories / t1);
        printf("| Redis CPU, first pass | %.2f CPU-s (%.3f per 1,000 "
               "memories) |\n",
               cpu1 - cpu0, (cpu1 - cpu0) * 1000 / (scopes * memories));
        printf("| ceiling: the reads alone, pipelined | %.1f s, %.0f "
               "memories/s |\n",
               t_floor, scopes * memories / t_floor);
        printf("| **ratio to the ceiling** | **%.2f** |\n", t_floor / t1);
        printf("| second pass, all held (steady state) | %.1f s, %.0f "
               "scopes/s |\n",
               t2, scopes / t2);
        printf("| Redis CPU, second pass | %.2f CPU-s |\n", cpu2 - cpu1);
        printf("| target: a pass over 1,000,000 memories | under 60 s: "
               "%s |\n",
               scopes * memories >= 1000000 ? (t1 < 60 ? "met" : "MISSED")
                                            : "not measured at this size");
        redisFree(rc);
        return 0;
}
