/* decay-consumer processes for tests; see dq_test_consumer.h. */
#include "dq_test_consumer.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dq_envelope.h"
#include "dq_job.h"
#include "dq_kafka.h"
#include "dq_kafka_produce.h"
#include "dq_test.h"
#include "banned.h"

void dq_tc_arg(dq_tc_t *tc, const char *kv)
{
        cr_assert_lt(tc->arg_cnt, DQ_TC_MAX_ARGS - 1);
        tc->args[tc->arg_cnt++] = strdup(kv);
}

static void argf(dq_tc_t *tc, const char *k, const char *v)
{
        char buf[512];
        snprintf(buf, sizeof(buf), "%s=%s", k, v);
        dq_tc_arg(tc, buf);
}

void dq_tc_init(dq_tc_t *tc, const char *name, int partitions)
{
        rd_kafka_t *rk = dq_test_producer();

        dq_tc_setup(tc, name, partitions, dq_test_bootstrap());
        const char *copies[] = {tc->dlq, tc->tier_topic[0], tc->tier_topic[1]};
        char errstr[512];

        dq_test_create_topic(rk, tc->topic, partitions);
        /* Topics of copies hold a job of job.max.bytes plus its headers. */
        cr_assert_eq(dq_kafka_create_topics(rk, copies, 3, partitions,
                                            DQ_COPY_MAX_BYTES(1 << 20), 15000,
                                            errstr, sizeof(errstr)),
                     DQ_OK, "%s", errstr);
        rd_kafka_destroy(rk);
}

void dq_tc_setup(dq_tc_t *tc, const char *name, int partitions,
                 const char *bootstrap)
{
        char port[16], tmpl[256];

        memset(tc, 0, sizeof(*tc));
        tc->partitions = partitions;
        dq_test_unique(tc->topic, sizeof(tc->topic), name);
        snprintf(tc->ns, sizeof(tc->ns), "%s", tc->topic);
        snprintf(tc->group, sizeof(tc->group), "%s-group", tc->topic);
        snprintf(tc->dlq, sizeof(tc->dlq), "%s.dlq", tc->topic);
        snprintf(tc->prefix, sizeof(tc->prefix), "%s.delay.", tc->topic);
        snprintf(tc->tiers, sizeof(tc->tiers), "1s,3s");
        snprintf(tc->tier_topic[0], sizeof(tc->tier_topic[0]), "%s1s",
                 tc->prefix);
        snprintf(tc->tier_topic[1], sizeof(tc->tier_topic[1]), "%s3s",
                 tc->prefix);
        snprintf(tmpl, sizeof(tmpl), "%s/decayq-%s-XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", name);
        cr_assert(mkdtemp(tmpl), "mkdtemp: %s", strerror(errno));
        snprintf(tc->dir, sizeof(tc->dir), "%s", tmpl);

        snprintf(port, sizeof(port), "%d", dq_test_redis_port());
        argf(tc, "kafka.bootstrap.servers", bootstrap);
        argf(tc, "redis.host", dq_test_redis_host());
        argf(tc, "redis.port", port);
        argf(tc, "redis.namespace", tc->ns);
        argf(tc, "topic.jobs", tc->topic);
        argf(tc, "topic.dlq", tc->dlq);
        argf(tc, "topic.delay.prefix", tc->prefix);
        argf(tc, "delay.tiers", tc->tiers);
        argf(tc, "kafka.group.id", tc->group);
        argf(tc, "kafka.session.timeout.ms", "6000");
        argf(tc, "kafka.heartbeat.interval.ms", "1000");
        argf(tc, "log.level", "debug");
        argf(tc, "debug.faults", "true");
        argf(tc, "backoff.base", "300ms");
        argf(tc, "backoff.max", "3s");
        argf(tc, "commit.interval", "500ms");
        argf(tc, "summary.interval", "5s");
}

void dq_tc_log_path(const dq_tc_t *tc, const char *worker, char *buf,
                    size_t size)
{
        snprintf(buf, size, "%s/%s.log", tc->dir, worker);
}

/* The consumers this test process spawned, for dq_tc_reap(). */
static pid_t spawned[256];
static size_t spawned_cnt;

void dq_tc_reap(void)
{
        for (size_t i = 0; i < spawned_cnt; i++) {
                int status;
                if (waitpid(spawned[i], &status, WNOHANG) != 0)
                        continue; /* gone, or reaped already */
                kill(spawned[i], SIGKILL);
                waitpid(spawned[i], &status, 0);
        }
        spawned_cnt = 0;
}

pid_t dq_tc_spawn(dq_tc_t *tc, const char *worker)
{
        return dq_tc_spawn_program(tc, "consumer/decay-consumer", worker, NULL,
                                   0);
}

pid_t dq_tc_spawn_program(dq_tc_t *tc, const char *program, const char *worker,
                          const char *const *extra, int extra_cnt)
{
        char path[512], wid[160], prog[1024];
        char *argv[2 * DQ_TC_MAX_ARGS + 16];
        int argc = 0, fd;
        pid_t pid;

        dq_tc_log_path(tc, worker, path, sizeof(path));
        snprintf(wid, sizeof(wid), "worker.id=%s", worker);
        dq_test_program(program, prog, sizeof(prog));
        argv[argc++] = prog;
        for (int i = 0; i < tc->arg_cnt; i++) {
                argv[argc++] = "-X";
                argv[argc++] = tc->args[i];
        }
        argv[argc++] = "-X";
        argv[argc++] = wid;
        for (int i = 0; i < extra_cnt && i < 10; i++)
                argv[argc++] = (char *)extra[i];
        argv[argc] = NULL;

        fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
        pid = fork();
        cr_assert(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR);
                dup2(null, 0);
                dup2(null, 1);
                dup2(fd, 2);
                execv(argv[0], argv);
                _exit(127);
        }
        close(fd);
        if (spawned_cnt < sizeof(spawned) / sizeof(*spawned))
                spawned[spawned_cnt++] = pid;
        return pid;
}

int dq_tc_wait(pid_t pid, long timeout_ms)
{
        long long deadline = dq_test_now_ms() + timeout_ms;
        int status;

        for (;;) {
                pid_t r = waitpid(pid, &status, WNOHANG);
                if (r == pid)
                        break;
                cr_assert(r == 0, "waitpid: %s", strerror(errno));
                if (dq_test_now_ms() > deadline) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                        cr_assert_fail("process %d did not exit within %ld ms",
                                       (int)pid, timeout_ms);
                }
                dq_test_sleep_ms(20);
        }
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return WEXITSTATUS(status);
}

void dq_tc_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
        int64_t *out = m->_private;

        (void)rk;
        (void)opaque;
        if (out)
                *out = m->err ? -2 : m->offset;
}

rd_kafka_t *dq_tc_producer(void)
{
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        char errstr[256];
        rd_kafka_t *rk;

        cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers",
                                       dq_test_bootstrap(), errstr,
                                       sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
        cr_assert_eq(rd_kafka_conf_set(conf, "enable.idempotence", "true",
                                       errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
        rd_kafka_conf_set_dr_msg_cb(conf, dq_tc_dr_cb);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        cr_assert(rk, "producer: %s", errstr);
        return rk;
}

void dq_tc_send(rd_kafka_t *rk, const char *topic, int32_t partition,
                const char *key, const void *value, size_t len,
                int64_t *offsetp)
{
        rd_kafka_resp_err_t err;

        if (offsetp)
                *offsetp = -1;
        err = dq_kafka_produce(
            rk,
            &(dq_kafka_record_t){
                .topic = topic,
                .partition = partition < 0 ? RD_KAFKA_PARTITION_UA : partition,
                .key = key,
                .key_len = key ? strlen(key) : 0,
                .value = value,
                .len = len,
                .opaque = offsetp,
            });
        cr_assert_eq(err, 0, "produce: %s", rd_kafka_err2str(err));
}

void dq_tc_flush(rd_kafka_t *rk)
{
        cr_assert_eq(rd_kafka_flush(rk, 30000), 0, "flush timed out");
}

int64_t dq_tc_produce(rd_kafka_t *rk, const char *topic, int32_t partition,
                      const char *key, const void *value, size_t len)
{
        int64_t offset;

        dq_tc_send(rk, topic, partition, key, value, len, &offset);
        dq_tc_flush(rk);
        cr_assert_geq(offset, 0, "delivery to %s failed", topic);
        return offset;
}

void dq_tc_wait_caught_up(const dq_tc_t *tc, const char *topic, long ms)
{
        rd_kafka_t *ck = dq_test_consumer(tc->group);
        long long deadline = dq_test_now_ms() + ms;

        while (!dq_tc_caught_up(ck, tc, topic)) {
                cr_assert_lt(dq_test_now_ms(), deadline,
                             "the group never committed every message of %s",
                             topic);
                dq_test_sleep_ms(100);
        }
        rd_kafka_destroy(ck);
}

int dq_tc_caught_up(rd_kafka_t *rk, const dq_tc_t *tc, const char *topic)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(tc->partitions);
        int ok = 1;

        for (int p = 0; p < tc->partitions; p++)
                rd_kafka_topic_partition_list_add(l, topic, p);
        if (rd_kafka_committed(rk, l, 10000)) {
                rd_kafka_topic_partition_list_destroy(l);
                return 0;
        }
        for (int p = 0; p < tc->partitions && ok; p++) {
                int64_t lo, hi;
                if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi,
                                                     5000)) {
                        ok = 0;
                        break;
                }
                int64_t c = l->elems[p].offset;
                if (hi > 0 && c != hi)
                        ok = 0;
        }
        rd_kafka_topic_partition_list_destroy(l);
        return ok;
}

int dq_tc_read_dlq(const dq_tc_t *tc, dq_tc_dlq_t *recs, int max)
{
        int64_t hi = dq_test_high(tc->dlq, 0), n = 0;
        rd_kafka_t *ck = dq_test_consumer("dlq-reader");
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        long long deadline = dq_test_now_ms() + 20000;

        rd_kafka_topic_partition_list_add(l, tc->dlq, 0)->offset = 0;
        cr_assert_eq(rd_kafka_assign(ck, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        while (n < hi && dq_test_now_ms() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(ck, 200);
                rd_kafka_headers_t *h;
                const void *v;
                size_t len;
                dq_reject_t rej;
                dq_job_t *job;

                if (!m)
                        continue;
                if (m->err || n >= max) {
                        rd_kafka_message_destroy(m);
                        continue;
                }
                memset(&recs[n], 0, sizeof(recs[n]));
                job = dq_job_parse(m->payload, m->len, 1 << 20, &rej);
                if (job)
                        snprintf(recs[n].job, sizeof(recs[n].job), "%s",
                                 job->id);
                dq_job_destroy(job);
                if (!rd_kafka_message_headers(m, &h)) {
                        if (!rd_kafka_header_get_last(h, DQ_HDR_ERROR_CODE, &v,
                                                      &len))
                                snprintf(recs[n].code, sizeof(recs[n].code),
                                         "%.*s", (int)len, (const char *)v);
                        if (!rd_kafka_header_get_last(h, DQ_HDR_ERROR_MESSAGE,
                                                      &v, &len))
                                snprintf(recs[n].message,
                                         sizeof(recs[n].message), "%.*s",
                                         (int)len, (const char *)v);
                }
                n++;
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(ck);
        rd_kafka_destroy(ck);
        cr_assert_eq(n, hi, "read %lld of %lld DLQ records", (long long)n,
                     (long long)hi);
        return (int)n;
}

const dq_tc_dlq_t *dq_tc_dlq_find(const dq_tc_dlq_t *recs, int n,
                                  const char *id)
{
        for (int i = 0; i < n; i++)
                if (!strcmp(recs[i].job, id))
                        return &recs[i];
        return NULL;
}
