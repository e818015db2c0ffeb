/* decay-produce and the producer library against the real broker. */
#define _GNU_SOURCE /* asprintf */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dq_producer.h"
#include "dq_test.h"
#include "dq_time.h"
#include "banned.h"

#define PRODUCE_BIN DQ_BINARY_DIR "/producer/decay-produce"
#define N_LINES     10000

typedef struct line_s {
        char *text;       /* the line as written */
        const char *code; /* expected reason code, NULL when valid */
        char id[32];
        char scope[32];
        int seen;     /* times read back from the topic */
        int reported; /* times reported as rejected */
} line_t;

static const char *invalid_kinds[][2] = {
    {"{\"schema\":1,", "decay.job.malformed_json"},
    {"UNKNOWN", "decay.job.unknown_field"},
    {"BADID", "decay.job.invalid_id"},
    {"NOSRC", "decay.job.no_sources"},
    {"BIG", "decay.job.too_large"},
    {"UTF8", "decay.job.invalid_utf8"},
    {"[1,2]", "decay.job.not_object"},
    {"SCHEMA2", "decay.job.unsupported_schema"},
};

static char *valid_job(const char *id, const char *scope, const char *extra,
                       const char *sources)
{
        char *s;
        cr_assert(asprintf(&s,
                           "{\"schema\":%s,\"id\":\"%s\",\"kind\":"
                           "\"candidate_compression\",\"scope\":\"%s\","
                           "\"source_ids\":[%s],\"summary_method\":{\"type\":"
                           "\"deterministic_concatenate\"},\"created_at\":"
                           "\"2026-11-23T11:59:58Z\",\"created_by\":"
                           "\"svc:t\"%s}",
                           extra && !strcmp(extra, "SCHEMA2") ? "2" : "1", id,
                           scope, sources,
                           extra && *extra == ',' ? extra : "") > 0);
        return s;
}

static line_t *make_lines(int n)
{
        line_t *lines = calloc((size_t)n, sizeof(*lines));
        char big[3000];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        for (int i = 0; i < n; i++) {
                line_t *l = &lines[i];
                dq_ulid_new(dq_now_ms(), l->id);
                snprintf(l->scope, sizeof(l->scope), "tenant-%d/agent-%d",
                         i % 17, i % 5);
                if (i % 7 != 3) {
                        l->text = valid_job(l->id, l->scope, NULL,
                                            "\"m1\",\"m2\",\"m3\"");
                        continue;
                }
                int k = (i / 7) % 8;
                const char *what = invalid_kinds[k][0];
                l->code = invalid_kinds[k][1];
                if (!strcmp(what, "UNKNOWN"))
                        l->text = valid_job(l->id, l->scope, ",\"colour\":1",
                                            "\"m1\"");
                else if (!strcmp(what, "BADID"))
                        l->text = valid_job("job-1", l->scope, NULL, "\"m1\"");
                else if (!strcmp(what, "NOSRC"))
                        l->text = valid_job(l->id, l->scope, NULL, "");
                else if (!strcmp(what, "BIG")) {
                        char *extra;
                        cr_assert(
                            asprintf(&extra, ",\"trace_id\":\"%s\"", big) > 0);
                        l->text = valid_job(l->id, l->scope, extra, "\"m1\"");
                        free(extra);
                } else if (!strcmp(what, "UTF8")) {
                        l->text = valid_job(l->id, l->scope, NULL,
                                            "\"m1\",\"m\xff\"");
                } else if (!strcmp(what, "SCHEMA2"))
                        l->text =
                            valid_job(l->id, l->scope, "SCHEMA2", "\"m1\"");
                else
                        l->text = strdup(what);
        }
        return lines;
}

static void free_lines(line_t *lines, int n)
{
        for (int i = 0; i < n; i++)
                free(lines[i].text);
        free(lines);
}

/* Runs cmd through sh; returns its exit code and the time it took. */
static int run(const char *cmd, long long *ms)
{
        long long t0 = dq_test_now_ms();
        int st = system(cmd);
        if (ms)
                *ms = dq_test_now_ms() - t0;
        cr_assert(WIFEXITED(st), "%s did not exit normally", cmd);
        return WEXITSTATUS(st);
}

static char *slurp_file(const char *path)
{
        FILE *f = fopen(path, "r");
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        int c;
        cr_assert(f && m);
        while ((c = fgetc(f)) != EOF)
                fputc(c, m);
        fclose(f);
        fclose(m);
        return buf;
}

Test(produce, cli_sends_exactly_the_valid_lines_byte_identical, .timeout = 240)
{
        char topic[128], group[128], input[] = "/tmp/decayq-in-XXXXXX",
                                     errf[] = "/tmp/decayq-err-XXXXXX";
        char cmd[2048];
        line_t *lines = make_lines(N_LINES);
        int fd, rc, valid = 0, got = 0;
        FILE *fp;
        rd_kafka_t *p = dq_test_producer();

        dq_test_unique(topic, sizeof(topic), "produce");
        dq_test_unique(group, sizeof(group), "produce-g");
        dq_test_create_topic(p, topic, 3);
        rd_kafka_destroy(p);

        fd = mkstemp(input);
        fp = fdopen(fd, "w");
        for (int i = 0; i < N_LINES; i++) {
                fprintf(fp, "%s\n", lines[i].text);
                valid += !lines[i].code;
        }
        fclose(fp);
        close(mkstemp(errf));

        snprintf(cmd, sizeof(cmd),
                 "%s -X kafka.bootstrap.servers=%s -t %s -X "
                 "job.max.bytes=2048 --file %s -q 2>%s",
                 PRODUCE_BIN, dq_test_bootstrap(), topic, input, errf);
        rc = run(cmd, NULL);
        cr_assert_eq(rc, 1, "exit code %d, expected 1 (rejected lines)", rc);

        /* Every rejected line is reported with its number and code. */
        {
                char *err = slurp_file(errf), *save = NULL;
                cr_assert(strstr(err, "decay-produce: read=10000 sent=8571 "
                                      "delivered=8571 rejected=1429 failed=0"),
                          "%s", err);
                for (char *l = strtok_r(err, "\n", &save); l;
                     l = strtok_r(NULL, "\n", &save)) {
                        long n;
                        char code[128];
                        if (sscanf(l, "error: line %ld: %127[^:]:", &n, code) !=
                            2)
                                continue;
                        cr_assert(n >= 1 && n <= N_LINES, "%s", l);
                        line_t *ln = &lines[n - 1];
                        cr_assert_not_null(ln->code,
                                           "valid line %ld rejected: %s", n, l);
                        cr_assert_str_eq(code, ln->code, "line %ld: %s", n, l);
                        ln->reported++;
                }
                free(err);
        }
        for (int i = 0; i < N_LINES; i++)
                if (lines[i].code)
                        cr_assert_eq(lines[i].reported, 1,
                                     "line %d (%s) reported %d times", i + 1,
                                     lines[i].code, lines[i].reported);

        /* Read the topic back: exactly the valid lines, byte-identical,
         * keyed by scope. */
        {
                rd_kafka_t *c = dq_test_consumer(group);
                rd_kafka_topic_partition_list_t *subs =
                    rd_kafka_topic_partition_list_new(1);
                long long deadline = dq_test_now_ms() + 60000;

                rd_kafka_topic_partition_list_add(subs, topic,
                                                  RD_KAFKA_PARTITION_UA);
                rd_kafka_subscribe(c, subs);
                rd_kafka_topic_partition_list_destroy(subs);
                while (got < valid && dq_test_now_ms() < deadline) {
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
                        line_t *ln = NULL;
                        if (!m)
                                continue;
                        if (m->err) {
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        for (int i = 0; i < N_LINES && !ln; i++)
                                if (!lines[i].code &&
                                    strlen(lines[i].text) == m->len &&
                                    !memcmp(lines[i].text, m->payload, m->len))
                                        ln = &lines[i];
                        cr_assert_not_null(ln, "unexpected message on topic");
                        cr_assert_eq(m->key_len, strlen(ln->scope));
                        cr_assert(!memcmp(m->key, ln->scope, m->key_len));
                        ln->seen++;
                        got++;
                        rd_kafka_message_destroy(m);
                }
                rd_kafka_consumer_close(c);
                rd_kafka_destroy(c);
        }
        cr_assert_eq(got, valid, "read %d of %d valid jobs", got, valid);
        for (int i = 0; i < N_LINES; i++)
                if (!lines[i].code)
                        cr_assert_eq(lines[i].seen, 1, "line %d seen %d times",
                                     i + 1, lines[i].seen);
        unlink(input);
        unlink(errf);
        free_lines(lines, N_LINES);
}

Test(produce, unreachable_broker_names_undelivered_jobs, .timeout = 60)
{
        char input[] = "/tmp/decayq-in-XXXXXX",
             errf[] = "/tmp/decayq-err-XXXXXX";
        char cmd[1024];
        line_t *lines = make_lines(5);
        long long ms;
        int rc;
        FILE *fp = fdopen(mkstemp(input), "w");
        char *err;

        for (int i = 0; i < 5; i++)
                if (!lines[i].code)
                        fprintf(fp, "%s\n", lines[i].text);
        fclose(fp);
        close(mkstemp(errf));
        snprintf(cmd, sizeof(cmd),
                 "%s -X kafka.bootstrap.servers=127.0.0.1:1 -t nowhere "
                 "--timeout 3s --file %s 2>%s",
                 PRODUCE_BIN, input, errf);
        rc = run(cmd, &ms);
        err = slurp_file(errf);
        cr_assert_eq(rc, 3, "exit %d: %s", rc, err);
        cr_assert_lt(ms, 15000, "took %lld ms", ms);
        for (int i = 0; i < 5; i++)
                if (!lines[i].code)
                        cr_assert(strstr(err, lines[i].id),
                                  "job %s not named: %s", lines[i].id, err);
        cr_assert(strstr(err, "delivered=0"), "%s", err);
        free(err);
        unlink(input);
        unlink(errf);
        free_lines(lines, 5);
}

Test(produce, validate_only_reports_and_sends_nothing)
{
        char cmd[512];
        int rc;

        snprintf(cmd, sizeof(cmd),
                 "printf '%%s\\n' '{\"schema\":1}' 'nope' | %s "
                 "-X kafka.bootstrap.servers=127.0.0.1:1 --validate-only -q "
                 "2>/dev/null",
                 PRODUCE_BIN);
        rc = run(cmd, NULL);
        cr_assert_eq(rc, 1);
        cr_assert_eq(run(PRODUCE_BIN " --bogus 2>/dev/null", NULL), 2);
        cr_assert_eq(run(PRODUCE_BIN
                         " -X kafka.bootstrap.servers=127.0.0.1:1 --file "
                         "/nonexistent -q 2>/dev/null",
                         NULL),
                     4);
}

typedef struct {
        int ok, failed;
        int64_t offset;
} dr_t;

static void on_dr(const dq_delivery_t *d, void *opaque)
{
        dr_t *r = opaque;
        if (d->err == DQ_OK) {
                r->ok++;
                r->offset = d->offset;
        } else {
                r->failed++;
        }
}

Test(produce, library_reports_delivery_per_job_and_never_sends_invalid)
{
        char topic[128], errstr[512], *X[2], bs[256], tp[256];
        dq_conf_t *conf;
        dq_producer_t *p;
        dq_reject_t rej;
        dr_t r = {0};
        rd_kafka_t *admin = dq_test_producer();
        line_t *lines = make_lines(1);

        dq_test_unique(topic, sizeof(topic), "produce-lib");
        dq_test_create_topic(admin, topic, 1);
        rd_kafka_destroy(admin);
        snprintf(bs, sizeof(bs), "kafka.bootstrap.servers=%s",
                 dq_test_bootstrap());
        snprintf(tp, sizeof(tp), "topic.jobs=%s", topic);
        X[0] = bs;
        X[1] = tp;
        conf = dq_conf_load(NULL, X, 2, errstr, sizeof(errstr));
        cr_assert_not_null(conf, "%s", errstr);
        p = dq_producer_new(conf, on_dr, &r, errstr, sizeof(errstr));
        cr_assert_not_null(p, "%s", errstr);

        cr_assert_eq(dq_producer_send(p, "{}", 2, NULL, NULL, &rej, errstr,
                                      sizeof(errstr)),
                     DQ_ERR_INVALID);
        cr_assert_str_eq(rej.code, "decay.job.missing_field");
        cr_assert_eq(dq_producer_send(p, lines[0].text, strlen(lines[0].text),
                                      NULL, NULL, &rej, errstr, sizeof(errstr)),
                     DQ_OK, "%s", errstr);
        cr_assert_eq(dq_producer_flush(p, 20000), DQ_OK);
        cr_assert_eq(r.ok, 1);
        cr_assert_eq(r.failed, 0);
        cr_assert_eq(r.offset, 0, "the invalid job took an offset");
        dq_producer_destroy(p);
        dq_conf_destroy(conf);
        free_lines(lines, 1);
}

Test(produce, one_job_from_flags_arrives_with_generated_id, .timeout = 60)
{
        char topic[128], group[128], cmd[1024],
            out[] = "/tmp/decayq-out-XXXXXX";
        rd_kafka_t *p = dq_test_producer(), *c;
        rd_kafka_topic_partition_list_t *subs;
        char *id;
        dq_job_t *job = NULL;
        long long deadline;

        dq_test_unique(topic, sizeof(topic), "produce-flags");
        dq_test_unique(group, sizeof(group), "produce-flags-g");
        dq_test_create_topic(p, topic, 1);
        rd_kafka_destroy(p);
        close(mkstemp(out));
        snprintf(cmd, sizeof(cmd),
                 "%s -X kafka.bootstrap.servers=%s -t %s --kind "
                 "episode_compression --scope tenant-9/agent-1 --source ep_1 "
                 "--source ep_2 --scheduled-for 2027-06-01T00:00:00Z "
                 "--idempotency-key nightly-9 --created-by svc:cron -q "
                 ">%s 2>/dev/null",
                 PRODUCE_BIN, dq_test_bootstrap(), topic, out);
        cr_assert_eq(run(cmd, NULL), 0);
        id = slurp_file(out);
        id[strcspn(id, "\n")] = '\0';
        cr_assert(dq_ulid_valid(id, strlen(id)), "printed id '%s'", id);

        c = dq_test_consumer(group);
        subs = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_subscribe(c, subs);
        rd_kafka_topic_partition_list_destroy(subs);
        deadline = dq_test_now_ms() + 30000;
        while (!job && dq_test_now_ms() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
                dq_reject_t rej;
                if (!m)
                        continue;
                if (!m->err) {
                        job = dq_job_parse(m->payload, m->len, 1 << 20, &rej);
                        cr_assert_not_null(job, "%s", rej.message);
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
        cr_assert_not_null(job, "the job never arrived");
        cr_assert_str_eq(job->id, id);
        cr_assert_eq(job->kind, DQ_KIND_EPISODE_COMPRESSION);
        cr_assert_str_eq(job->scope, "tenant-9/agent-1");
        cr_assert_eq(job->source_cnt, 2);
        cr_assert_str_eq(job->source_ids[1], "ep_2");
        cr_assert_eq(job->scheduled_for_ms, 1811808000000LL);
        cr_assert_str_eq(job->idempotency_key, "nightly-9");
        cr_assert_str_eq(job->created_by, "svc:cron");
        cr_assert_gt(job->created_at_ms, 0);
        dq_job_destroy(job);
        free(id);
        unlink(out);
}

Test(produce, dump_config_masks_secrets)
{
        char out[] = "/tmp/decayq-out-XXXXXX", cmd[512];
        char *text;

        close(mkstemp(out));
        snprintf(cmd, sizeof(cmd),
                 "DECAYQ_KAFKA_SASL_PASSWORD=hunter2 %s -X "
                 "redis.password=s3cret -X kafka.bootstrap.servers=b:1 "
                 "--dump-config >%s",
                 PRODUCE_BIN, out);
        cr_assert_eq(run(cmd, NULL), 0);
        text = slurp_file(out);
        cr_assert(strstr(text, "kafka.bootstrap.servers=b:1"), "%s", text);
        cr_assert(strstr(text, "kafka.sasl.password=********"), "%s", text);
        cr_assert(strstr(text, "redis.password=********"), "%s", text);
        cr_assert_null(strstr(text, "hunter2"));
        cr_assert_null(strstr(text, "s3cret"));
        free(text);
        unlink(out);
}

/* The worst values first: each field given a byte that is not UTF-8 must
 * stop the job before it is sent, name the field, and send nothing;
 * --validate-only says the same. */
Test(produce, invalid_utf8_in_any_flag_is_rejected_and_nothing_is_sent,
     .timeout = 120)
{
        static const struct {
                const char *flags;
                const char *field;
        } cases[] = {
            {"--scope s/a --source m1 --source $'bad\\xff' --source m3",
             "source_ids[1]"},
            {"--scope s/a --source m1 --idempotency-key $'k\\xff'",
             "idempotency_key"},
            {"--scope s/a --source m1 --created-by $'svc\\xc0\\xaf'",
             "created_by"},
            {"--scope s/a --source m1 --trace-id $'t\\xed\\xa0\\x80'",
             "trace_id"},
            {"--scope $'s/\\xf8a' --source m1", "scope"},
        };
        char topic[128], cmd[1024], errf[] = "/tmp/decayq-err-XXXXXX";
        rd_kafka_t *admin = dq_test_producer();

        dq_test_unique(topic, sizeof(topic), "produce-utf8");
        dq_test_create_topic(admin, topic, 1);
        rd_kafka_destroy(admin);
        close(mkstemp(errf));
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                for (int validate = 0; validate < 2; validate++) {
                        char *err;
                        int rc;

                        snprintf(cmd, sizeof(cmd),
                                 "bash -c \"%s -X kafka.bootstrap.servers=%s "
                                 "-t %s -q --kind candidate_compression %s "
                                 "%s\" >/dev/null 2>%s",
                                 PRODUCE_BIN, dq_test_bootstrap(), topic,
                                 cases[i].flags,
                                 validate ? "--validate-only" : "", errf);
                        rc = run(cmd, NULL);
                        err = slurp_file(errf);
                        cr_assert_eq(rc, 2, "%s: exit %d: %s", cases[i].flags,
                                     rc, err);
                        cr_assert(strstr(err, "decay.job.invalid_utf8"),
                                  "%s: %s", cases[i].flags, err);
                        cr_assert(strstr(err, cases[i].field),
                                  "%s: field not named: %s", cases[i].flags,
                                  err);
                        free(err);
                }
        }
        cr_assert_eq(dq_test_high(topic, 0), 0, "a rejected job was sent");
        unlink(errf);
}

Test(produce, library_rejects_a_built_job_with_invalid_utf8)
{
        char errstr[512], *X[1], bs[256];
        dq_conf_t *conf;
        dq_producer_t *p;
        dq_reject_t rej;
        dq_job_t *job = dq_job_new();
        dr_t r = {0};
        size_t len;

        snprintf(bs, sizeof(bs), "kafka.bootstrap.servers=%s",
                 dq_test_bootstrap());
        X[0] = bs;
        conf = dq_conf_load(NULL, X, 1, errstr, sizeof(errstr));
        cr_assert_not_null(conf, "%s", errstr);
        p = dq_producer_new(conf, on_dr, &r, errstr, sizeof(errstr));
        cr_assert_not_null(p, "%s", errstr);
        dq_ulid_new(dq_now_ms(), job->id);
        job->scope = strdup("s/a");
        job->created_by = strdup("svc:t");
        job->created_at_ms = dq_now_ms();
        job->source_ids = calloc(2, sizeof(char *));
        job->source_ids[0] = strdup("m1");
        job->source_ids[1] = strdup("m\x80");
        job->source_cnt = 2;
        cr_assert_eq(
            dq_producer_send_job(p, job, NULL, &rej, errstr, sizeof(errstr)),
            DQ_ERR_INVALID);
        cr_assert_str_eq(rej.code, "decay.job.invalid_utf8");
        cr_assert(strstr(rej.message, "source_ids[1]"), "%s", rej.message);
        /* The encoder refuses too: nothing is ever left out. */
        cr_assert_null(dq_job_serialize(job, &len));
        cr_assert_eq(dq_producer_flush(p, 5000), DQ_OK);
        cr_assert_eq(r.ok + r.failed, 0);
        dq_producer_destroy(p);
        dq_conf_destroy(conf);
        dq_job_destroy(job);
}

Test(produce, bad_id_and_missing_bootstrap_fail_at_once)
{
        char errf[] = "/tmp/decayq-err-XXXXXX", cmd[1024], *err;
        long long ms;

        close(mkstemp(errf));
        snprintf(cmd, sizeof(cmd),
                 "%s -X kafka.bootstrap.servers=%s --kind "
                 "candidate_compression --scope s/a --source m1 --id "
                 "01JD3Q6V2R8YB6K3ZKQ9T1M4XHEXTRA 2>%s",
                 PRODUCE_BIN, dq_test_bootstrap(), errf);
        cr_assert_eq(run(cmd, NULL), 2);
        err = slurp_file(errf);
        cr_assert(strstr(err, "--id must be a 26-character ULID"), "%s", err);
        free(err);

        snprintf(cmd, sizeof(cmd),
                 "env -u DECAYQ_KAFKA_BOOTSTRAP_SERVERS %s --kind "
                 "candidate_compression --scope s/a --source m1 2>%s",
                 PRODUCE_BIN, errf);
        cr_assert_eq(run(cmd, &ms), 2);
        cr_assert_lt(ms, 3000, "took %lld ms", ms);
        err = slurp_file(errf);
        cr_assert(strstr(err, "kafka.bootstrap.servers is not set"), "%s", err);
        free(err);

        /* A job that was not delivered prints no id on stdout. */
        snprintf(cmd, sizeof(cmd),
                 "%s -X kafka.bootstrap.servers=127.0.0.1:1 --timeout 2s -q "
                 "--kind candidate_compression --scope s/a --source m1 >%s "
                 "2>/dev/null",
                 PRODUCE_BIN, errf);
        cr_assert_eq(run(cmd, NULL), 3);
        err = slurp_file(errf);
        cr_assert_str_eq(err, "");
        free(err);
        unlink(errf);
}

/* Low items of the hardening: every mistake is said, no secret leaks by
 * its spelling, and a job for the year 9999 is refused up front. */
Test(produce, configuration_mistakes_are_reported_and_far_schedules_refused,
     .timeout = 60)
{
        char errf[] = "/tmp/decayq-err-XXXXXX",
             outf[] = "/tmp/decayq-out-XXXXXX", cmd[1024], *err, *out;

        close(mkstemp(errf));
        close(mkstemp(outf));
        /* An unknown DECAYQ_ variable is named, not ignored. */
        snprintf(cmd, sizeof(cmd),
                 "DECAYQ_REDIS_PROT=1 %s -X kafka.bootstrap.servers=b:1 "
                 "--dump-config >/dev/null 2>%s",
                 PRODUCE_BIN, errf);
        cr_assert_eq(run(cmd, NULL), 0);
        err = slurp_file(errf);
        cr_assert(strstr(err, "env=DECAYQ_REDIS_PROT known=false"), "%s", err);
        free(err);

        /* A log level that does not exist. */
        snprintf(cmd, sizeof(cmd),
                 "%s -X log.level=verbose -X kafka.bootstrap.servers=b:1 "
                 "--validate-only </dev/null 2>%s",
                 PRODUCE_BIN, errf);
        cr_assert_eq(run(cmd, NULL), 2);
        err = slurp_file(errf);
        cr_assert(strstr(err, "log.level: expected error, warn, info or debug"),
                  "%s", err);
        free(err);

        /* A secret in any spelling is masked. */
        snprintf(cmd, sizeof(cmd),
                 "%s -X kafka.Sasl.Password=hunter2 -X "
                 "kafka.bootstrap.servers=b:1 --dump-config >%s",
                 PRODUCE_BIN, outf);
        cr_assert_eq(run(cmd, NULL), 0);
        out = slurp_file(outf);
        cr_assert_null(strstr(out, "hunter2"), "%s", out);
        free(out);

        /* Scheduled past schedule.max.ahead: refused, in a check and a
         * send alike. */
        for (int validate = 0; validate < 2; validate++) {
                snprintf(cmd, sizeof(cmd),
                         "%s -X kafka.bootstrap.servers=%s -q --kind "
                         "candidate_compression --scope s/a --source m1 "
                         "--scheduled-for 9999-01-01T00:00:00Z %s >%s 2>%s",
                         PRODUCE_BIN, dq_test_bootstrap(),
                         validate ? "--validate-only" : "", outf, errf);
                cr_assert_eq(run(cmd, NULL), 2);
                err = slurp_file(errf);
                cr_assert(strstr(err, "decay.job.scheduled_too_far"), "%s",
                          err);
                free(err);
        }

        /* --version everywhere; a group's --help is the group's. */
        snprintf(cmd, sizeof(cmd), "%s --version >%s", PRODUCE_BIN, outf);
        cr_assert_eq(run(cmd, NULL), 0);
        out = slurp_file(outf);
        cr_assert(!strncmp(out, "decay-produce ", 14), "%s", out);
        free(out);
        snprintf(cmd, sizeof(cmd), "%s/ctl/decayctl dlq --help >%s",
                 DQ_BINARY_DIR, outf);
        cr_assert_eq(run(cmd, NULL), 0);
        out = slurp_file(outf);
        cr_assert(strstr(out, "usage: decayctl dlq <command>"), "%s", out);
        cr_assert(strstr(out, "replay"), "%s", out);
        cr_assert_null(strstr(out, "memory"), "%s", out);
        free(out);
        snprintf(cmd, sizeof(cmd), "%s/ctl/decayctl --version >%s",
                 DQ_BINARY_DIR, outf);
        cr_assert_eq(run(cmd, NULL), 0);
        snprintf(cmd, sizeof(cmd), "%s/consumer/decay-consumer --version >%s",
                 DQ_BINARY_DIR, outf);
        cr_assert_eq(run(cmd, NULL), 0);
        unlink(errf);
        unlink(outf);
}
