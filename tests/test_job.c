/* The job model against the fixture suites, plus ULIDs, timestamps and
 * serialization. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_job.h"
#include "dq_time.h"
#include "dq_ulid.h"
#include "dq_test.h"
#include "banned.h"

#define FIXTURES DQ_SOURCE_DIR "/tests/fixtures"

static char *slurp(const char *path, size_t *lenp)
{
        FILE *f = fopen(path, "rb");
        char *buf;
        long n;

        if (!f)
                return NULL;
        fseek(f, 0, SEEK_END);
        n = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = malloc((size_t)n + 1);
        cr_assert(buf);
        cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
        buf[n] = '\0';
        fclose(f);
        *lenp = (size_t)n;
        return buf;
}

/* Reads the first line of dir/name, without its newline. */
static char *read_word(const char *dir, const char *name)
{
        char path[1500];
        size_t len;
        char *s;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        s = slurp(path, &len);
        if (s)
                s[strcspn(s, "\r\n")] = '\0';
        return s;
}

typedef void (*case_fn)(const char *name, const char *dir);

static int for_each_case(const char *suite, case_fn fn)
{
        char path[1024];
        DIR *d;
        struct dirent *de;
        int n = 0;

        snprintf(path, sizeof(path), "%s/%s", FIXTURES, suite);
        d = opendir(path);
        cr_assert(d, "cannot open %s", path);
        while ((de = readdir(d))) {
                char dir[1400];
                if (de->d_name[0] == '.')
                        continue;
                snprintf(dir, sizeof(dir), "%s/%s", path, de->d_name);
                fn(de->d_name, dir);
                n++;
        }
        closedir(d);
        return n;
}

static void check_invalid(const char *name, const char *dir)
{
        char path[1500];
        size_t len, max = DQ_JOB_DEFAULT_MAX_BYTES;
        char *input, *code, *max_s;
        dq_reject_t rej = {0};
        dq_job_t *job;

        snprintf(path, sizeof(path), "%s/input", dir);
        input = slurp(path, &len);
        cr_assert(input, "%s: no input", name);
        code = read_word(dir, "code");
        cr_assert(code, "%s: no code file", name);
        if ((max_s = read_word(dir, "max_bytes")))
                max = strtoul(max_s, NULL, 10);

        job = dq_job_parse(input, len, max, &rej);
        cr_expect_null(job, "%s: accepted an invalid job", name);
        if (!job) {
                cr_expect_str_eq(rej.code, code, "%s: got %s (%s)", name,
                                 rej.code, rej.message);
                cr_expect(rej.message[0], "%s: empty message", name);
        }
        dq_job_destroy(job);
        free(input);
        free(code);
        free(max_s);
}

static void check_valid(const char *name, const char *dir)
{
        char path[1500];
        size_t len, olen;
        char *input, *out;
        dq_reject_t rej = {0};
        dq_job_t *job, *again;

        snprintf(path, sizeof(path), "%s/input", dir);
        input = slurp(path, &len);
        cr_assert(input, "%s: no input", name);
        job = dq_job_parse(input, len, DQ_JOB_DEFAULT_MAX_BYTES, &rej);
        cr_assert_not_null(job, "%s: rejected with %s: %s", name, rej.code,
                           rej.message);

        /* Serializing and parsing again gives the same job. */
        out = dq_job_serialize(job, &olen);
        cr_assert(out);
        again = dq_job_parse(out, olen, DQ_JOB_DEFAULT_MAX_BYTES, &rej);
        cr_assert_not_null(again, "%s: serialized form rejected: %s", name,
                           rej.message);
        cr_expect_str_eq(again->id, job->id);
        cr_expect_eq(again->kind, job->kind);
        cr_expect_str_eq(again->scope, job->scope);
        cr_expect_eq(again->source_cnt, job->source_cnt);
        for (size_t i = 0; i < job->source_cnt; i++)
                cr_expect_str_eq(again->source_ids[i], job->source_ids[i]);
        cr_expect_eq(again->method, job->method);
        cr_expect_eq(again->attestation_required, job->attestation_required);
        cr_expect_eq(again->scheduled_for_ms, job->scheduled_for_ms);
        cr_expect_eq(again->created_at_ms, job->created_at_ms);
        cr_expect_str_eq(again->created_by, job->created_by);
        cr_expect_eq(!again->idempotency_key, !job->idempotency_key);
        dq_job_destroy(again);
        dq_job_destroy(job);
        free(out);
        free(input);
}

Test(job, invalid_fixtures_give_their_reason_code)
{
        int n = for_each_case("invalid", check_invalid);
        cr_assert_geq(n, 40, "only %d invalid fixtures", n);
}

Test(job, valid_fixtures_parse_and_round_trip)
{
        int n = for_each_case("valid", check_valid);
        cr_assert_geq(n, 8, "only %d valid fixtures", n);
}

Test(job, parsed_fields_match_the_message)
{
        const char *msg =
            "{\"schema\":1,\"id\":\"01JD3Q6V2R8YB6K3ZKQ9T1M4XH\","
            "\"kind\":\"episode_compression\",\"scope\":\"t/a\","
            "\"source_ids\":[\"e1\",\"e2\"],"
            "\"summary_method\":{\"type\":\"deterministic_concatenate\"},"
            "\"scheduled_for\":\"2026-11-23T12:00:00Z\","
            "\"created_at\":\"2026-11-23T11:59:58.250Z\","
            "\"created_by\":\"svc\",\"idempotency_key\":\"k1\"}";
        dq_reject_t rej;
        dq_job_t *job = dq_job_parse(msg, strlen(msg), 4096, &rej);

        cr_assert_not_null(job, "%s", rej.message);
        cr_assert_str_eq(job->id, "01JD3Q6V2R8YB6K3ZKQ9T1M4XH");
        cr_assert_eq(job->kind, DQ_KIND_EPISODE_COMPRESSION);
        cr_assert_str_eq(job->scope, "t/a");
        cr_assert_eq(job->source_cnt, 2);
        cr_assert_str_eq(job->source_ids[1], "e2");
        cr_assert_eq(job->scheduled_for_ms, 1795435200000LL);
        cr_assert_eq(job->created_at_ms, 1795435198250LL);
        cr_assert_str_eq(job->idempotency_key, "k1");
        cr_assert_null(job->trace_id);
        dq_job_destroy(job);
}

Test(job, rejection_messages_name_the_field)
{
        const char *msg = "{\"schema\":1,\"id\":\"01JD3Q6V2R8YB6K3ZKQ9T1M4XH\","
                          "\"kind\":\"episode_compression\",\"scope\":\"t\","
                          "\"source_ids\":[\"e1\"],\"summary_method\":"
                          "{\"type\":\"llm_summary\"},\"created_at\":"
                          "\"2026-11-23T11:59:58Z\",\"created_by\":\"svc\","
                          "\"colour\":\"blue\"}";
        dq_reject_t rej;
        cr_assert_null(dq_job_parse(msg, strlen(msg), 4096, &rej));
        cr_assert_str_eq(rej.code, "decay.job.unknown_field");
        cr_assert(strstr(rej.message, "colour"), "message: %s", rej.message);
}

Test(ulid, new_ids_are_valid_unique_and_carry_the_time)
{
        char a[DQ_ULID_LEN + 1], b[DQ_ULID_LEN + 1];
        int64_t now = dq_now_ms();

        dq_ulid_new(now, a);
        dq_ulid_new(now, b);
        cr_assert(dq_ulid_valid(a, strlen(a)), "%s", a);
        cr_assert(dq_ulid_valid(b, strlen(b)), "%s", b);
        cr_assert_str_neq(a, b);
        cr_assert_eq(dq_ulid_time_ms(a), now);
        cr_assert_eq(dq_ulid_time_ms("01JD3Q6V2R8YB6K3ZKQ9T1M4XH"),
                     1732070567000LL);
}

Test(time, rfc3339_round_trips_and_rejects_nonsense)
{
        char buf[32];
        int64_t ms;
        const char *bad[] = {"2026-11-23T12:00:00",
                             "2026-13-01T00:00:00Z",
                             "2026-11-31T00:00:00Z",
                             "2026-11-23T12:60:00Z",
                             "2026-11-23t12:00:00Z",
                             "1969-12-31T23:59:59Z",
                             "2026-11-23T12:00:00.Z",
                             "2026-11-23T12:00:00ZZ",
                             "2026-11-23T12:00:00.1234567890Z"};

        cr_assert(dq_time_parse_rfc3339("1970-01-01T00:00:00Z", 20, &ms));
        cr_assert_eq(ms, 0);
        cr_assert(dq_time_parse_rfc3339("2000-02-29T23:59:59.999Z", 24, &ms));
        cr_assert_str_eq(dq_time_format_rfc3339(ms, buf, sizeof(buf)),
                         "2000-02-29T23:59:59.999Z");
        cr_assert_str_eq(
            dq_time_format_rfc3339(1795435200000LL, buf, sizeof(buf)),
            "2026-11-23T12:00:00Z");
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_expect_not(
                    dq_time_parse_rfc3339(bad[i], strlen(bad[i]), &ms),
                    "accepted %s", bad[i]);
}

Test(time, durations_parse_with_units)
{
        int64_t ms;
        cr_assert(dq_duration_parse("250ms", &ms) && ms == 250);
        cr_assert(dq_duration_parse("5s", &ms) && ms == 5000);
        cr_assert(dq_duration_parse("5m", &ms) && ms == 300000);
        cr_assert(dq_duration_parse("1h", &ms) && ms == 3600000);
        cr_assert(dq_duration_parse("7d", &ms) && ms == 604800000LL);
        cr_assert(dq_duration_parse("1500", &ms) && ms == 1500);
        cr_assert_not(dq_duration_parse("5 s", &ms));
        cr_assert_not(dq_duration_parse("-1s", &ms));
        cr_assert_not(dq_duration_parse("s", &ms));
        cr_assert_not(dq_duration_parse("5w", &ms));
}
