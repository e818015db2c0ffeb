/* The configuration loader: files, environment, overrides and the dump. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq_conf.h"
#include "dq_kafka.h"
#include "dq_kafka_produce.h"
#include "dq_test.h"
#include "banned.h"

static void write_file(char *path, size_t size, const char *text)
{
        int fd;
        snprintf(path, size, "/tmp/decayq-conf-XXXXXX");
        fd = mkstemp(path);
        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
}

/* Loading text fails, with want in the error. */
static void load_fails(dq_conf_t *conf, const char *text, const char *want)
{
        char path[64], errstr[512];

        write_file(path, sizeof(path), text);
        cr_assert_eq(dq_conf_load_file(conf, path, errstr, sizeof(errstr)),
                     DQ_ERR_INVALID, "%s", text);
        cr_assert(strstr(errstr, want), "%s", errstr);
        unlink(path);
}

Test(conf, defaults_match_the_design)
{
        dq_conf_t *conf = dq_conf_new();
        cr_assert_str_eq(conf->topic_jobs, "decay.jobs");
        cr_assert_str_eq(conf->topic_dlq, "decay.jobs.dlq");
        cr_assert_eq(conf->delay_tier_cnt, 4);
        cr_assert_eq(conf->delay_tier_ms[0], 5000);
        cr_assert_eq(conf->delay_tier_ms[3], 3600000);
        cr_assert_eq(conf->max_attempts, 4);
        cr_assert_eq(conf->backoff_base_ms, 1000);
        cr_assert_eq(conf->backoff_max_ms, 300000);
        cr_assert_eq(conf->job_max_bytes, 1048576);
        cr_assert_eq(conf->idempotency_retention_ms, 7LL * 86400 * 1000);
        cr_assert_eq(conf->redis_connections, 4);
        dq_conf_destroy(conf);
}

Test(conf, properties_file_sets_keys_and_kafka_passes_through)
{
        char path[64], errstr[512];
        dq_conf_t *conf = dq_conf_new();

        write_file(path, sizeof(path),
                   "# comment\n"
                   "! another comment\n"
                   "\n"
                   "redis.port = 7001\n"
                   "redis.namespace: prod\n"
                   "max.attempts 6\n"
                   "delay.tiers=1s,\\\n"
                   "    10s\n"
                   "kafka.bootstrap.servers=broker:9092\n"
                   "kafka.sasl.password=hunter2\n"
                   "redis.password=s3cret\n");
        cr_assert_eq(dq_conf_load_file(conf, path, errstr, sizeof(errstr)),
                     DQ_OK, "%s", errstr);
        cr_assert_eq(conf->redis_port, 7001);
        cr_assert_str_eq(conf->redis_namespace, "prod");
        cr_assert_eq(conf->max_attempts, 6);
        cr_assert_eq(conf->delay_tier_cnt, 2);
        cr_assert_eq(conf->delay_tier_ms[1], 10000);
        cr_assert_str_eq(dq_conf_kafka_get(conf, "bootstrap.servers"),
                         "broker:9092");

        {
                char *buf = NULL;
                size_t len = 0;
                FILE *fp = open_memstream(&buf, &len);
                dq_conf_dump(conf, fp);
                fclose(fp);
                cr_assert(strstr(buf, "redis.port=7001\n"), "%s", buf);
                cr_assert(strstr(buf, "kafka.bootstrap.servers=broker:9092"));
                cr_assert(strstr(buf, "redis.password=********"), "%s", buf);
                cr_assert(strstr(buf, "kafka.sasl.password=********"));
                cr_assert_null(strstr(buf, "hunter2"), "secret in dump");
                cr_assert_null(strstr(buf, "s3cret"), "secret in dump");
                free(buf);
        }
        unlink(path);
        dq_conf_destroy(conf);
}

Test(conf, errors_name_file_and_line)
{
        char path[64], errstr[512];
        dq_conf_t *conf = dq_conf_new();

        write_file(path, sizeof(path), "redis.port=1\n\nredis.prot=2\n");
        cr_assert_eq(dq_conf_load_file(conf, path, errstr, sizeof(errstr)),
                     DQ_ERR_INVALID);
        cr_assert(strstr(errstr, ":3: unknown key 'redis.prot'"), "%s", errstr);
        unlink(path);

        write_file(path, sizeof(path), "max.attempts=lots\n");
        cr_assert_eq(dq_conf_load_file(conf, path, errstr, sizeof(errstr)),
                     DQ_ERR_INVALID);
        cr_assert(strstr(errstr, ":1: max.attempts: expected an integer"), "%s",
                  errstr);
        unlink(path);

        /* One connection at least, and not one per scope. */
        load_fails(conf, "redis.connections=0\n", ":1: redis.connections");
        load_fails(conf, "redis.connections=17\n", ":1: redis.connections");
        write_file(path, sizeof(path), "redis.connections=16\n");
        cr_assert_eq(dq_conf_load_file(conf, path, errstr, sizeof(errstr)),
                     DQ_OK, "%s", errstr);
        cr_assert_eq(conf->redis_connections, 16);
        unlink(path);

        write_file(path, sizeof(path), "delay.tiers=30s,5s\n");
        cr_assert_eq(dq_conf_load_file(conf, path, errstr, sizeof(errstr)),
                     DQ_ERR_INVALID);
        cr_assert(strstr(errstr, "ascending"), "%s", errstr);
        unlink(path);

        cr_assert_eq(dq_conf_load_file(conf, "/nonexistent/x.properties",
                                       errstr, sizeof(errstr)),
                     DQ_ERR_INVALID);
        cr_assert(strstr(errstr, "cannot open '/nonexistent/x.properties'"),
                  "%s", errstr);
        dq_conf_destroy(conf);
}

Test(conf, environment_overrides_file_and_flags_override_both)
{
        char path[64], errstr[512];
        char *overrides[] = {"redis.port=7003", "kafka.linger.ms=7"};
        dq_conf_t *conf;

        write_file(path, sizeof(path),
                   "redis.port=7001\nredis.host=file-host\n");
        setenv("DECAYQ_REDIS_PORT", "7002", 1);
        setenv("DECAYQ_REDIS_HOST", "env-host", 1);
        setenv("DECAYQ_KAFKA_SASL_USERNAME", "svc", 1);
        conf = dq_conf_load(path, overrides, 2, errstr, sizeof(errstr));
        cr_assert_not_null(conf, "%s", errstr);
        cr_assert_str_eq(conf->redis_host, "env-host");
        cr_assert_eq(conf->redis_port, 7003);
        cr_assert_str_eq(dq_conf_kafka_get(conf, "sasl.username"), "svc");
        cr_assert_str_eq(dq_conf_kafka_get(conf, "linger.ms"), "7");
        dq_conf_destroy(conf);

        setenv("DECAYQ_REDIS_PORT", "not-a-port", 1);
        conf = dq_conf_load(path, NULL, 0, errstr, sizeof(errstr));
        cr_assert_null(conf);
        cr_assert(strstr(errstr, "env DECAYQ_REDIS_PORT"), "%s", errstr);
        unsetenv("DECAYQ_REDIS_PORT");
        unsetenv("DECAYQ_REDIS_HOST");
        unsetenv("DECAYQ_KAFKA_SASL_USERNAME");
        unlink(path);
}

/* A conf of defaults and the one override arg. */
static dq_conf_t *conf_of(char *arg)
{
        char errstr[512];
        char *overrides[] = {arg};
        dq_conf_t *conf =
            dq_conf_load(NULL, overrides, 1, errstr, sizeof(errstr));

        cr_assert_not_null(conf, "%s", errstr);
        return conf;
}

/* A reason that says want, on one line. */
static void assert_reason(const char *errstr, const char *want)
{
        cr_assert(strstr(errstr, want), "%s", errstr);
        cr_assert(!strpbrk(errstr, "\r\n"), "%s", errstr);
}

/* A bad kafka.* key or value is refused with its origin and librdkafka's
 * reason, by the consumer's reading of the keys and by the producers'.
 * librdkafka ends some reasons with a line end; a reason is one line in a
 * log record or on a terminal, so none reaches one. */
Test(conf, bad_kafka_property_is_reported_with_its_origin_on_one_line)
{
        static const struct {
                char *arg;
                const char *want;
        } bad[] = {
            {"kafka.no.such.property=1", "-X: kafka.no.such.property"},
            {"kafka.linger.ms=-5", "-X: kafka.linger.ms: "},
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char errstr[512];
                dq_conf_t *conf = conf_of(bad[i].arg);
                rd_kafka_conf_t *rk = rd_kafka_conf_new();

                cr_assert_eq(
                    dq_conf_kafka_apply(conf, rk, errstr, sizeof(errstr)),
                    DQ_ERR_INVALID);
                assert_reason(errstr, bad[i].want);
                errstr[0] = '\0';
                cr_assert_eq(
                    dq_kafka_producer_conf(conf, rk, errstr, sizeof(errstr)),
                    DQ_ERR_INVALID);
                assert_reason(errstr, bad[i].want);
                rd_kafka_conf_destroy(rk);
                dq_conf_destroy(conf);
        }
}

/* A key that would loosen a guarantee is refused, naming itself and where
 * it was set, never overridden without a word: the producers' idempotence
 * and acks=all (an alias too), the consumer's offsets. */
Test(conf, a_key_that_loosens_a_guarantee_is_refused_not_overridden)
{
        /* name, value: the consumer's requirement dq_setup.c sets; NULL:
         * the producers' rule. */
        static const struct {
                char *arg;
                const char *name, *value, *want;
        } bad[] = {
            {"kafka.acks=0", NULL, NULL,
             "-X: kafka.acks=0: decayq keeps acks=all: "},
            {"kafka.request.required.acks=1", NULL, NULL,
             "-X: kafka.request.required.acks=1: decayq keeps acks=all"},
            {"kafka.enable.idempotence=false", NULL, NULL,
             "-X: kafka.enable.idempotence=false: decayq keeps "
             "enable.idempotence=true"},
            {"kafka.enable.auto.commit=true", "enable.auto.commit", "false",
             "-X: kafka.enable.auto.commit=true: decayq keeps "
             "enable.auto.commit=false: why"},
            {"kafka.enable.auto.offset.store=1", "enable.auto.offset.store",
             "false",
             "-X: kafka.enable.auto.offset.store=1: decayq keeps "
             "enable.auto.offset.store=false"},
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char errstr[512];
                dq_conf_t *conf = conf_of(bad[i].arg);
                rd_kafka_conf_t *k = rd_kafka_conf_new();
                dq_err_t err;

                err = bad[i].name
                          ? dq_kafka_require(conf, k, bad[i].name, bad[i].value,
                                             "why", errstr, sizeof(errstr))
                          : dq_kafka_producer_conf(conf, k, errstr,
                                                   sizeof(errstr));
                cr_assert_eq(err, DQ_ERR_INVALID, "%s", bad[i].arg);
                assert_reason(errstr, bad[i].want);
                rd_kafka_conf_destroy(k);
                dq_conf_destroy(conf);
        }
}

/* The one rule for every producer: all kafka.* keys but the consumer's
 * and transactional.id, and always idempotence and acks=all (a key that
 * asks otherwise is refused: see the next test). */
Test(conf,
     a_producer_takes_every_key_but_the_consumers_and_keeps_its_guarantees)
{
        char errstr[512], v[64];
        size_t n;
        char *overrides[] = {
            "kafka.linger.ms=7",
            "kafka.client.id=pod-1",
            "kafka.group.id=g",
            "kafka.fetch.max.bytes=1024",
            "kafka.queued.min.messages=5",
            "kafka.auto.offset.reset=latest",
            "kafka.transactional.id=stolen",
            "kafka.enable.idempotence=true",
            "kafka.acks=-1",
        };
        dq_conf_t *conf = dq_conf_load(
            NULL, overrides, (int)(sizeof(overrides) / sizeof(*overrides)),
            errstr, sizeof(errstr));
        rd_kafka_conf_t *k = rd_kafka_conf_new();

        cr_assert_not_null(conf, "%s", errstr);
        cr_assert_eq(dq_kafka_producer_conf(conf, k, errstr, sizeof(errstr)),
                     DQ_OK, "%s", errstr);
        n = sizeof(v);
        cr_assert_eq(rd_kafka_conf_get(k, "linger.ms", v, &n),
                     RD_KAFKA_CONF_OK);
        cr_assert_str_eq(v, "7");
        n = sizeof(v);
        cr_assert_eq(rd_kafka_conf_get(k, "client.id", v, &n),
                     RD_KAFKA_CONF_OK);
        cr_assert_str_eq(v, "pod-1");
        n = sizeof(v);
        cr_assert_eq(rd_kafka_conf_get(k, "enable.idempotence", v, &n),
                     RD_KAFKA_CONF_OK);
        cr_assert_str_eq(v, "true");
        n = sizeof(v);
        cr_assert_eq(rd_kafka_conf_get(k, "acks", v, &n), RD_KAFKA_CONF_OK);
        cr_assert_str_eq(v, "-1", "acks=all");
        /* Consumer-only keys and transactional.id keep their defaults. */
        n = sizeof(v);
        cr_assert(rd_kafka_conf_get(k, "group.id", v, &n) != RD_KAFKA_CONF_OK ||
                      !*v,
                  "group.id reached the producer: %s", v);
        n = sizeof(v);
        cr_assert(rd_kafka_conf_get(k, "transactional.id", v, &n) !=
                          RD_KAFKA_CONF_OK ||
                      !*v,
                  "transactional.id reached the producer: %s", v);
        n = sizeof(v);
        cr_assert_eq(rd_kafka_conf_get(k, "fetch.max.bytes", v, &n),
                     RD_KAFKA_CONF_OK);
        cr_assert_neq(strcmp(v, "1024"), 0);
        rd_kafka_conf_destroy(k);
        dq_conf_destroy(conf);
}

/* Whether librdkafka would start a consumer of these kafka.* keys, set as
 * decay-consumer sets them (errstr says why not), with its fetch.max.bytes
 * in fetch. */
static bool consumer_starts(char **overrides, int cnt, char *fetch,
                            size_t fetch_size, char *errstr, size_t errstr_size)
{
        dq_conf_t *conf =
            dq_conf_load(NULL, overrides, cnt, errstr, errstr_size);
        rd_kafka_conf_t *k = rd_kafka_conf_new();
        rd_kafka_t *rk = NULL;

        cr_assert_not_null(conf, "%s", errstr);
        cr_assert_eq(rd_kafka_conf_set(k, "group.id", "g", errstr, errstr_size),
                     RD_KAFKA_CONF_OK);
        if (dq_kafka_consumer_conf(conf, k, errstr, errstr_size) == DQ_OK) {
                cr_assert_eq(
                    rd_kafka_conf_get(k, "fetch.max.bytes", fetch, &fetch_size),
                    RD_KAFKA_CONF_OK);
                rk = rd_kafka_new(RD_KAFKA_CONSUMER, k, errstr, errstr_size);
        }
        if (rk)
                rd_kafka_destroy(rk);
        else
                rd_kafka_conf_destroy(k);
        dq_conf_destroy(conf);
        return rk != NULL;
}

/* kafka.* keys reach the consumer too, and librdkafka refuses to start a
 * consumer whose fetch.max.bytes is below its message.max.bytes. One of
 * them set alone, for the producers or for the fetch, starts the consumer
 * all the same; both set in conflict, or a size librdkafka cannot take,
 * are refused with a reason. */
Test(conf, one_message_or_fetch_size_set_alone_never_stops_the_consumer)
{
        /* fetch is the consumer's fetch.max.bytes when it starts; NULL when
         * it must not, with reason in the error. */
        static const struct {
                char *keys[2];
                const char *fetch;
                const char *reason;
        } cases[] = {
            {{"kafka.message.max.bytes=1000000000"}, "1000000000", NULL},
            {{"kafka.message.max.bytes=2000000"}, "2000000", NULL},
            {{"kafka.message.max.bytes=100000"}, "262144", NULL},
            {{NULL}, "262144", NULL},
            /* A fetch of nothing cannot be: message.max.bytes is at least
             * 1000. The reason names the key the user set. */
            {{"kafka.fetch.max.bytes=0"}, NULL, "kafka.fetch.max.bytes=0"},
            {{"kafka.fetch.max.bytes=100000"}, "100000", NULL},
            {{"kafka.message.max.bytes=2000000",
              "kafka.fetch.max.bytes=1048576"},
             NULL,
             "fetch.max.bytes"},
        };

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char errstr[512], fetch[32] = "";
                char *keys[2] = {cases[i].keys[0], cases[i].keys[1]};
                int cnt = !keys[0] ? 0 : !keys[1] ? 1 : 2;
                bool started = consumer_starts(keys, cnt, fetch, sizeof(fetch),
                                               errstr, sizeof(errstr));

                if (cases[i].fetch) {
                        cr_assert(started, "case %zu: %s", i, errstr);
                        cr_assert_str_eq(fetch, cases[i].fetch, "case %zu", i);
                } else {
                        cr_assert_not(started, "case %zu started", i);
                        cr_assert(strstr(errstr, cases[i].reason),
                                  "case %zu: %s", i, errstr);
                }
        }
}
