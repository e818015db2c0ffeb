/* decayctl dlq list | inspect | stats | replay */
#define _GNU_SOURCE
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "dq_dlq.h"
#include "dq_envelope.h"
#include "dq_kafka.h"
#include "dq_kafka_produce.h"
#include "dq_text.h"
#include "dq_time.h"
#include "dq_ulid.h"
#include "banned.h"

/* A DLQ read that sees no record for this long gives up (exit 3). */
#define STALL_MS 30000

enum {
        OPT_SINCE = CTL_OPT__FIRST_OWN,
        OPT_UNTIL,
        OPT_CODE,
        OPT_CLASS,
        OPT_KIND,
        OPT_SCOPE,
        OPT_JOB,
        OPT_LIMIT,
        OPT_EXECUTE,
        OPT_DRY_RUN,
        OPT_RATE,
        OPT_CANARY,
        OPT_CANARY_TIMEOUT,
        OPT_MAX_REPLAYS,
        OPT_GROUP,
};

/* Which options a command takes. */
#define TAKES_FILTERS 0x1
#define TAKES_LIMIT   0x2
#define TAKES_REPLAY  0x4

typedef struct dlq_opts_s {
        dq_dlq_filter_t f;
        char canon[1024]; /* the filters as given, for the default group */
        long limit;
        bool execute;
        double rate; /* records/s; 0: unlimited */
        long canary;
        int64_t canary_timeout_ms;
        long max_replays;
        const char *group;
} dlq_opts_t;

/* Which TAKES_* a command must have for option opt. */
static unsigned option_group(int opt)
{
        if (opt >= OPT_SINCE && opt <= OPT_JOB)
                return TAKES_FILTERS;
        return opt == OPT_LIMIT ? TAKES_LIMIT : TAKES_REPLAY;
}

static bool parse_long(const char *s, long min, long max, long *out)
{
        char *end;
        long v = strtol(s, &end, 10);
        if (!*s || *end || v < min || v > max)
                return false;
        *out = v;
        return true;
}

static int parse_dlq(ctl_t *ctl, int argc, char **argv, unsigned takes,
                     dlq_opts_t *o)
{
        static const struct option longopts[] = {
            CTL_COMMON_LONGOPTS,
            {"since", required_argument, NULL, OPT_SINCE},
            {"until", required_argument, NULL, OPT_UNTIL},
            {"code", required_argument, NULL, OPT_CODE},
            {"class", required_argument, NULL, OPT_CLASS},
            {"kind", required_argument, NULL, OPT_KIND},
            {"scope", required_argument, NULL, OPT_SCOPE},
            {"job", required_argument, NULL, OPT_JOB},
            {"limit", required_argument, NULL, OPT_LIMIT},
            {"execute", no_argument, NULL, OPT_EXECUTE},
            {"dry-run", no_argument, NULL, OPT_DRY_RUN},
            {"rate", required_argument, NULL, OPT_RATE},
            {"canary", required_argument, NULL, OPT_CANARY},
            {"canary-timeout", required_argument, NULL, OPT_CANARY_TIMEOUT},
            {"max-replays", required_argument, NULL, OPT_MAX_REPLAYS},
            {"group", required_argument, NULL, OPT_GROUP},
            {NULL, 0, NULL, 0},
        };
        static const char *const filter_names[] = {
            "since", "until", "code", "class", "kind", "scope", "job"};
        int64_t now = dq_now_ms();
        size_t canon_len = 0;
        char errstr[300], *end;
        int opt, rc;

        memset(o, 0, sizeof(*o));
        o->max_replays = 3;
        o->canary_timeout_ms = 120000;
        while ((opt = getopt_long(argc, argv, CTL_COMMON_SHORTOPTS, longopts,
                                  NULL)) != -1) {
                const char *name = argv[optind - 1];

                if ((rc = ctl_common(ctl, opt, optarg)) != -1) {
                        if (rc != CTL_GO_ON)
                                return rc;
                        continue;
                }
                if (!(takes & option_group(opt)))
                        return ctl_usage_error(
                            ctl, "option '%s' does not apply here", name);
                if (opt >= OPT_SINCE && opt <= OPT_JOB) {
                        const char *fname = filter_names[opt - OPT_SINCE];
                        int w;

                        if (!dq_dlq_filter_set(&o->f, fname, optarg, now,
                                               errstr, sizeof(errstr)))
                                return ctl_usage_error(ctl, "%s", errstr);
                        w = snprintf(o->canon + canon_len,
                                     sizeof(o->canon) - canon_len, "%s=%s;",
                                     fname, optarg);
                        if (w > 0 && (size_t)w < sizeof(o->canon) - canon_len)
                                canon_len += (size_t)w;
                        continue;
                }
                switch (opt) {
                case OPT_LIMIT:
                        if (!parse_long(optarg, 1, 1000000000L, &o->limit))
                                return ctl_usage_error(
                                    ctl,
                                    "--limit: expected a count of 1 or "
                                    "more, got '%s'",
                                    optarg);
                        continue;
                case OPT_EXECUTE:
                case OPT_DRY_RUN:
                        o->execute = opt == OPT_EXECUTE;
                        continue;
                case OPT_RATE:
                        o->rate = strtod(optarg, &end);
                        if (end == optarg || (*end && strcmp(end, "/s")) ||
                            !(o->rate > 0 && o->rate <= 1e6))
                                return ctl_usage_error(
                                    ctl,
                                    "--rate: expected records a second "
                                    "such as 50/s, got '%s'",
                                    optarg);
                        continue;
                case OPT_CANARY:
                        if (!parse_long(optarg, 1, 10000, &o->canary))
                                return ctl_usage_error(
                                    ctl,
                                    "--canary: expected a count from 1 "
                                    "to 10000, got '%s'",
                                    optarg);
                        continue;
                case OPT_CANARY_TIMEOUT:
                        if (!dq_duration_parse(optarg, &o->canary_timeout_ms) ||
                            o->canary_timeout_ms <= 0)
                                return ctl_usage_error(
                                    ctl,
                                    "--canary-timeout: expected a "
                                    "duration such as 2m, got '%s'",
                                    optarg);
                        continue;
                case OPT_MAX_REPLAYS:
                        if (!parse_long(optarg, 1, 1000, &o->max_replays))
                                return ctl_usage_error(
                                    ctl,
                                    "--max-replays: expected a count "
                                    "from 1 to 1000, got '%s'",
                                    optarg);
                        continue;
                case OPT_GROUP:
                        if (!*optarg || strlen(optarg) > 200)
                                return ctl_usage_error(
                                    ctl, "--group: expected 1 to 200 bytes");
                        o->group = optarg;
                        continue;
                }
        }
        if (o->f.since_ms && o->f.until_ms && o->f.since_ms >= o->f.until_ms)
                return ctl_usage_error(ctl, "--since must be before --until");
        return CTL_GO_ON;
}

/* Opens a reader with its snapshot; prints why not. */
static int open_reader(const ctl_t *ctl, const char *group, bool committed,
                       int32_t partition, int64_t offset, dq_dlq_reader_t **rp)
{
        char errstr[512];
        dq_err_t err;

        *rp = dq_dlq_reader_new(ctl->cli.conf, group, errstr, sizeof(errstr));
        if (!*rp) {
                fprintf(stderr, "error: kafka: %s\n", errstr);
                return CTL_EXIT_UNAVAILABLE;
        }
        err = dq_dlq_reader_snapshot(*rp, committed, partition, offset, errstr,
                                     sizeof(errstr));
        if (err) {
                fprintf(stderr, "error: %s\n", errstr);
                dq_dlq_reader_destroy(*rp);
                *rp = NULL;
                return err == DQ_ERR_NOT_FOUND ? CTL_EXIT_NOT_FOUND
                                               : CTL_EXIT_UNAVAILABLE;
        }
        return CTL_GO_ON;
}

static int run_reader(dq_dlq_reader_t *r, dq_dlq_cb_t *cb, void *opaque)
{
        char errstr[512];
        dq_err_t err =
            dq_dlq_reader_run(r, cb, opaque, STALL_MS, errstr, sizeof(errstr));
        if (err == DQ_ERR_UNAVAILABLE)
                fprintf(stderr, "error: kafka: %s\n", errstr);
        return err ? CTL_EXIT_UNAVAILABLE : CTL_EXIT_OK;
}

static const char *or_dash(const char *s)
{
        return s && *s ? s : "-";
}

static json_t *rec_json(const dq_dlq_rec_t *rec)
{
        char t[32];
        json_t *o = json_object(), *v;

        ctl_jset(o, "partition", json_integer(rec->partition));
        ctl_jset(o, "offset", json_integer(rec->offset));
        ctl_jset(o, "time",
                 json_string(dq_time_format_rfc3339(rec->ts_ms, t, sizeof(t))));
        ctl_jset(o, "scope", ctl_jstr(rec->scope));
        ctl_jset(o, "job_id",
                 *rec->job_id ? ctl_jstr(rec->job_id) : json_null());
        ctl_jset(o, "kind", *rec->kind ? ctl_jstr(rec->kind) : json_null());
        ctl_jset(o, "error_class", ctl_jstr(rec->err_class));
        ctl_jset(o, "error_code", ctl_jstr(rec->err_code));
        ctl_jset(o, "error_message", ctl_jstr(rec->err_message));
        ctl_jset(o, "attempts", json_integer(rec->attempts));
        ctl_jset(o, "replay_count", json_integer(rec->replay_count));
        ctl_jset(o, "original", v = json_object());
        ctl_jset(v, "topic", ctl_jstr(rec->orig_topic));
        ctl_jset(v, "partition", json_integer(rec->orig_partition));
        ctl_jset(v, "offset", json_integer(rec->orig_offset));
        if (!rec->job)
                ctl_jset(o, "not_a_job", json_string(rec->rej.code));
        return o;
}

/*
 * dlq list
 */

typedef struct list_s {
        const ctl_t *ctl;
        const dlq_opts_t *o;
        long shown;
} list_t;

static int list_cb(dq_dlq_rec_t *rec, void *opaque)
{
        list_t *l = opaque;
        char t[32], po[48];

        if (!dq_dlq_match(&l->o->f, rec))
                return 0;
        if (l->ctl->json) {
                ctl_json_print(rec_json(rec));
        } else {
                snprintf(po, sizeof(po), "%d:%" PRId64, (int)rec->partition,
                         rec->offset);
                printf(
                    "%-24s %-10s %-24s %-26s %-24s %-10s %-44s %3lld %3lld\n",
                    dq_time_format_rfc3339(rec->ts_ms, t, sizeof(t)), po,
                    dq_esc(or_dash(rec->scope)), dq_esc(or_dash(rec->job_id)),
                    dq_esc(or_dash(rec->kind)), dq_esc(or_dash(rec->err_class)),
                    dq_esc(or_dash(rec->err_code)), (long long)rec->attempts,
                    (long long)rec->replay_count);
        }
        l->shown++;
        return l->o->limit && l->shown >= l->o->limit ? 1 : 0;
}

int ctl_dlq_list(ctl_t *ctl, int argc, char **argv)
{
        dlq_opts_t o;
        list_t l = {ctl, &o, 0};
        dq_dlq_reader_t *r;
        char desc[512];
        int rc;

        if ((rc = parse_dlq(ctl, argc, argv, TAKES_FILTERS | TAKES_LIMIT,
                            &o)) != CTL_GO_ON ||
            (rc = ctl_check_operands(ctl, argc, argv, 0)) != CTL_GO_ON ||
            (rc = ctl_load(ctl)) != CTL_GO_ON)
                return rc;
        if ((rc = open_reader(ctl, NULL, false, -1, 0, &r)) != CTL_GO_ON)
                return rc;
        if (!ctl->json)
                printf("%-24s %-10s %-24s %-26s %-24s %-10s %-44s %3s %3s\n",
                       "TIME", "P:OFFSET", "SCOPE", "JOB", "KIND", "CLASS",
                       "CODE", "ATT", "RPL");
        rc = run_reader(r, list_cb, &l);
        dq_dlq_filter_describe(&o.f, desc, sizeof(desc));
        fprintf(stderr, "dlq list: %ld shown of %lld read (filters: %s)\n",
                l.shown, (long long)dq_dlq_reader_done(r), desc);
        dq_dlq_reader_destroy(r);
        return rc;
}

/*
 * dlq inspect
 */

static json_t *headers_json(const rd_kafka_message_t *m)
{
        rd_kafka_headers_t *h = NULL;
        json_t *o = json_object();
        const char *name;
        const void *v;
        size_t len;

        if (rd_kafka_message_headers(m, &h) || !h)
                return o;
        for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &v, &len);
             i++) {
                ctl_jset(o, name, v ? ctl_jtext(v, len) : json_null());
        }
        return o;
}

typedef struct inspect_s {
        const ctl_t *ctl;
        const char *job;
        long found;
} inspect_t;

static int inspect_cb(dq_dlq_rec_t *rec, void *opaque)
{
        inspect_t *in = opaque;
        const rd_kafka_message_t *m = rec->msg;
        rd_kafka_headers_t *h = NULL;
        char t[32];

        if (in->job && strcmp(in->job, rec->job_id))
                return 0;
        in->found++;
        if (in->ctl->json) {
                json_t *o = rec_json(rec);
                json_t *p = dq_utf8_valid(m->payload, m->len)
                                ? json_stringn(m->payload, m->len)
                                : NULL;
                ctl_jset(o, "key",
                         m->key ? ctl_jtext(m->key, m->key_len) : json_null());
                ctl_jset(o, "headers", headers_json(m));
                if (p) {
                        ctl_jset(o, "payload", p);
                } else {
                        char *hex = malloc(2 * m->len + 1);
                        if (!hex)
                                abort();
                        for (size_t i = 0; i < m->len; i++)
                                snprintf(
                                    hex + 2 * i, 3, "%02x",
                                    ((const unsigned char *)m->payload)[i]);
                        hex[2 * m->len] = '\0';
                        ctl_jset(o, "payload_hex", json_string(hex));
                        free(hex);
                }
                ctl_json_print(o);
                return 0;
        }
        if (in->found > 1)
                putchar('\n');
        printf("record     %s\n", rec->pos);
        printf("time       %s\n",
               dq_time_format_rfc3339(rec->ts_ms, t, sizeof(t)));
        printf("key        ");
        if (m->key)
                ctl_print_text(m->key, m->key_len);
        printf("\nheaders:\n");
        if (!rd_kafka_message_headers(m, &h) && h) {
                const char *name;
                const void *v;
                size_t len;
                for (size_t i = 0;
                     !rd_kafka_header_get_all(h, i, &name, &v, &len); i++) {
                        printf("  %-28s ", dq_esc(name));
                        if (v)
                                ctl_print_text(v, len);
                        putchar('\n');
                }
        }
        if (!rec->job)
                printf("not a job  %s: %s\n", rec->rej.code,
                       dq_esc(rec->rej.message));
        printf("payload (%zu bytes):\n", m->len);
        ctl_print_text(m->payload, m->len);
        putchar('\n');
        return 0;
}

int ctl_dlq_inspect(ctl_t *ctl, int argc, char **argv)
{
        dlq_opts_t o;
        inspect_t in = {ctl, NULL, 0};
        dq_dlq_reader_t *r;
        const char *what, *colon;
        long part = -1;
        int64_t offset = 0;
        int rc;

        if ((rc = parse_dlq(ctl, argc, argv, 0, &o)) != CTL_GO_ON ||
            (rc = ctl_check_operands(ctl, argc, argv, 1)) != CTL_GO_ON)
                return rc;
        what = argv[optind];
        colon = strchr(what, ':');
        if (colon) {
                char pbuf[16], *end;
                long long off;
                size_t n = (size_t)(colon - what);

                if (n == 0 || n >= sizeof(pbuf))
                        goto bad;
                memcpy(pbuf, what, n);
                pbuf[n] = '\0';
                if (!parse_long(pbuf, 0, 1000000, &part))
                        goto bad;
                off = strtoll(colon + 1, &end, 10);
                if (!colon[1] || *end || off < 0)
                        goto bad;
                offset = (int64_t)off;
        } else if (dq_ulid_valid(what, strlen(what))) {
                in.job = what;
        } else {
        bad:
                return ctl_usage_error(ctl,
                                       "'%s' is neither a job id (ULID) nor "
                                       "PARTITION:OFFSET",
                                       what);
        }
        if ((rc = ctl_load(ctl)) != CTL_GO_ON)
                return rc;
        if ((rc = open_reader(ctl, NULL, false, (int32_t)part, offset, &r)) !=
            CTL_GO_ON)
                return rc;
        rc = run_reader(r, inspect_cb, &in);
        dq_dlq_reader_destroy(r);
        if (rc == CTL_EXIT_OK && !in.found) {
                fprintf(stderr, "error: no DLQ record %s %s\n",
                        in.job ? "of job" : "at", what);
                rc = CTL_EXIT_NOT_FOUND;
        }
        return rc;
}

/*
 * dlq stats
 */

static const struct {
        const char *name;
        int64_t below_ms;
} age_buckets[] = {
    {"<5m", 5 * 60000LL},      {"5m-1h", 3600000LL}, {"1h-1d", 86400000LL},
    {"1d-7d", 7 * 86400000LL}, {">=7d", INT64_MAX},
};

#define AGE_CNT (sizeof(age_buckets) / sizeof(*age_buckets))

typedef struct stats_s {
        const dlq_opts_t *o;
        int64_t now;
        int64_t matched, not_a_job, replayed_before, copies;
        int64_t oldest, newest;
        char oldest_pos[300], newest_pos[300];
        int64_t age[AGE_CNT];
        ctl_counts_t code, cls, kind, scope, originals;
} stats_t;

static int stats_cb(dq_dlq_rec_t *rec, void *opaque)
{
        stats_t *s = opaque;
        int64_t age;

        if (!dq_dlq_match(&s->o->f, rec))
                return 0;
        s->matched++;
        ctl_counts_add(&s->code, or_dash(rec->err_code), 1);
        ctl_counts_add(&s->cls, or_dash(rec->err_class), 1);
        ctl_counts_add(&s->kind, rec->job ? rec->kind : "(not a job)", 1);
        ctl_counts_add(&s->scope, or_dash(rec->scope), 1);
        if (ctl_counts_add(&s->originals, rec->origin, 1) > 1)
                s->copies++;
        s->not_a_job += !rec->job;
        s->replayed_before += rec->replay_count > 0;
        if (!s->oldest || rec->ts_ms < s->oldest) {
                s->oldest = rec->ts_ms;
                snprintf(s->oldest_pos, sizeof(s->oldest_pos), "%s", rec->pos);
        }
        if (rec->ts_ms > s->newest) {
                s->newest = rec->ts_ms;
                snprintf(s->newest_pos, sizeof(s->newest_pos), "%s", rec->pos);
        }
        age = s->now - rec->ts_ms;
        for (size_t i = 0; i < AGE_CNT; i++)
                if (age < age_buckets[i].below_ms) {
                        s->age[i]++;
                        break;
                }
        return 0;
}

int ctl_dlq_stats(ctl_t *ctl, int argc, char **argv)
{
        dlq_opts_t o;
        stats_t s;
        dq_dlq_reader_t *r;
        char desc[512], t1[32], t2[32];
        int rc;

        if ((rc = parse_dlq(ctl, argc, argv, TAKES_FILTERS, &o)) != CTL_GO_ON ||
            (rc = ctl_check_operands(ctl, argc, argv, 0)) != CTL_GO_ON ||
            (rc = ctl_load(ctl)) != CTL_GO_ON)
                return rc;
        if ((rc = open_reader(ctl, NULL, false, -1, 0, &r)) != CTL_GO_ON)
                return rc;
        memset(&s, 0, sizeof(s));
        s.o = &o;
        s.now = dq_now_ms();
        rc = run_reader(r, stats_cb, &s);
        dq_dlq_filter_describe(&o.f, desc, sizeof(desc));
        if (rc == CTL_EXIT_OK && ctl->json) {
                json_t *out = json_object(), *ages = json_object();
                ctl_jset(out, "filters", json_string(desc));
                ctl_jset(out, "read", json_integer(dq_dlq_reader_done(r)));
                ctl_jset(out, "records", json_integer(s.matched));
                ctl_jset(out, "extra_copies", json_integer(s.copies));
                ctl_jset(out, "not_a_job", json_integer(s.not_a_job));
                ctl_jset(out, "replayed_before",
                         json_integer(s.replayed_before));
                ctl_jset(out, "by_code", ctl_counts_json(&s.code));
                ctl_jset(out, "by_class", ctl_counts_json(&s.cls));
                ctl_jset(out, "by_kind", ctl_counts_json(&s.kind));
                ctl_jset(out, "by_scope", ctl_counts_json(&s.scope));
                ctl_jset(out, "oldest",
                         s.matched ? json_string(dq_time_format_rfc3339(
                                         s.oldest, t1, sizeof(t1)))
                                   : json_null());
                ctl_jset(out, "newest",
                         s.matched ? json_string(dq_time_format_rfc3339(
                                         s.newest, t2, sizeof(t2)))
                                   : json_null());
                for (size_t i = 0; i < AGE_CNT; i++)
                        ctl_jset(ages, age_buckets[i].name,
                                 json_integer(s.age[i]));
                ctl_jset(out, "age", ages);
                ctl_json_print(out);
        } else if (rc == CTL_EXIT_OK) {
                int64_t max = 1;
                printf("dead letters: %lld (of %lld read; filters: %s)\n",
                       (long long)s.matched, (long long)dq_dlq_reader_done(r),
                       desc);
                printf("  extra copies of one original: %lld, not a job: "
                       "%lld, replayed before: %lld\n",
                       (long long)s.copies, (long long)s.not_a_job,
                       (long long)s.replayed_before);
                if (s.matched) {
                        printf("  oldest: %s (%s)\n  newest: %s (%s)\n",
                               dq_time_format_rfc3339(s.oldest, t1, sizeof(t1)),
                               s.oldest_pos,
                               dq_time_format_rfc3339(s.newest, t2, sizeof(t2)),
                               s.newest_pos);
                }
                ctl_counts_print(&s.code, "by error code", 20);
                ctl_counts_print(&s.cls, "by error class", 10);
                ctl_counts_print(&s.kind, "by kind", 10);
                ctl_counts_print(&s.scope, "by scope", 10);
                printf("  by age:\n");
                for (size_t i = 0; i < AGE_CNT; i++)
                        if (s.age[i] > max)
                                max = s.age[i];
                for (size_t i = 0; i < AGE_CNT; i++) {
                        int bar = (int)(40 * s.age[i] / max);
                        printf("    %-8s %8lld %.*s\n", age_buckets[i].name,
                               (long long)s.age[i], bar,
                               "########################################");
                }
        }
        ctl_counts_release(&s.code);
        ctl_counts_release(&s.cls);
        ctl_counts_release(&s.kind);
        ctl_counts_release(&s.scope);
        ctl_counts_release(&s.originals);
        dq_dlq_reader_destroy(r);
        return rc;
}

/*
 * dlq replay
 */

/* A transaction is committed after this many records or this long. */
#define TXN_MAX_RECORDS 500
#define TXN_MAX_MS      1000

typedef struct replay_s {
        const ctl_t *ctl;
        const dlq_opts_t *o;
        const char *group;
        dq_store_t *st;
        dq_dlq_reader_t *rd;
        rd_kafka_t *pk; /* transactional producer; NULL in a dry run */
        int rc;         /* set when the run must stop */

        int64_t matched, replayed;
        ctl_counts_t originals, by_code, by_kind, skipped, refused;

        int64_t start_us; /* the rate's clock */
        int64_t txn_records;
        int64_t txn_start_ms;
        bool txn_open;

        char (*canary_ids)[DQ_ULID_LEN + 1];
        char **canary_scopes;
        long canary_cnt;
        bool canary_checked;

        int64_t last_progress;
        char errstr[512];
} replay_t;

static int64_t now_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Reports a failed transactional call; returns false. */
static bool txn_failed(replay_t *rp, const char *what, rd_kafka_error_t *e)
{
        fprintf(stderr,
                "error: kafka: %s: %s%s\n"
                "Nothing of the open transaction was published; run the same "
                "command again to resume.\n",
                what, rd_kafka_error_string(e),
                rd_kafka_error_is_fatal(e)
                    ? " (another replay with the same group took over?)"
                    : "");
        if (rd_kafka_error_txn_requires_abort(e))
                rd_kafka_error_destroy(
                    rd_kafka_abort_transaction(rp->pk, 30000));
        rd_kafka_error_destroy(e);
        rp->rc = CTL_EXIT_UNAVAILABLE;
        rp->txn_open = false;
        return false;
}

static bool txn_begin(replay_t *rp)
{
        rd_kafka_error_t *e = rd_kafka_begin_transaction(rp->pk);
        if (e)
                return txn_failed(rp, "begin transaction", e);
        rp->txn_open = true;
        rp->txn_records = 0;
        rp->txn_start_ms = dq_mono_ms();
        return true;
}

/* Commits what was produced together with the group's progress: every
 * record read so far. */
static bool txn_commit(replay_t *rp)
{
        rd_kafka_topic_partition_list_t *pos;
        rd_kafka_consumer_group_metadata_t *md;
        rd_kafka_error_t *e;

        if (!rp->txn_open && !txn_begin(rp))
                return false;
        pos = dq_dlq_reader_positions(rp->rd);
        if (pos->cnt) {
                md = rd_kafka_consumer_group_metadata(
                    dq_dlq_reader_handle(rp->rd));
                e = rd_kafka_send_offsets_to_transaction(rp->pk, pos, md,
                                                         30000);
                rd_kafka_consumer_group_metadata_destroy(md);
                if (e) {
                        rd_kafka_topic_partition_list_destroy(pos);
                        return txn_failed(rp, "send offsets", e);
                }
        }
        rd_kafka_topic_partition_list_destroy(pos);
        e = rd_kafka_commit_transaction(rp->pk, 60000);
        if (e)
                return txn_failed(rp, "commit transaction", e);
        rp->txn_open = false;
        return true;
}

static const char *job_state(replay_t *rp, const char *scope, const char *id,
                             char *buf, size_t size)
{
        dq_record_t rec;
        const char *s;
        dq_err_t err = dq_store_job_get(rp->st, scope, id, &rec);

        if (err == DQ_ERR_NOT_FOUND)
                return "gone";
        if (err)
                return NULL;
        s = dq_record_get(&rec, "state");
        snprintf(buf, size, "%s", s ? s : "");
        dq_record_release(&rec);
        return buf;
}

/* Waits for the canary jobs to settle; false (and rp->rc) if one failed
 * again or they did not settle in time. */
static bool canary_wait(replay_t *rp)
{
        int64_t deadline = dq_mono_ms() + rp->o->canary_timeout_ms;
        long settled = 0;

        rp->canary_checked = true;
        fprintf(stderr,
                "replay: canary of %ld published; waiting up to %lld s for "
                "the consumers to settle it\n",
                rp->canary_cnt, (long long)rp->o->canary_timeout_ms / 1000);
        while (settled < rp->canary_cnt) {
                settled = 0;
                for (long i = 0; i < rp->canary_cnt; i++) {
                        char buf[32];
                        const char *s =
                            job_state(rp, rp->canary_scopes[i],
                                      rp->canary_ids[i], buf, sizeof(buf));
                        if (!s) {
                                fprintf(stderr, "error: redis unavailable "
                                                "while watching the canary\n");
                                rp->rc = CTL_EXIT_UNAVAILABLE;
                                return false;
                        }
                        if (!strcmp(s, "dead")) {
                                fprintf(stderr,
                                        "error: canary job %s failed again "
                                        "(see: decayctl job status %s "
                                        "--scope %s); replay stopped\n",
                                        rp->canary_ids[i], rp->canary_ids[i],
                                        rp->canary_scopes[i]);
                                rp->rc = CTL_EXIT_CANARY;
                                return false;
                        }
                        settled += !strcmp(s, "completed") ||
                                   !strcmp(s, "cancelled") ||
                                   !strcmp(s, "duplicate");
                }
                if (settled < rp->canary_cnt) {
                        if (dq_mono_ms() > deadline) {
                                fprintf(stderr,
                                        "error: canary: %ld of %ld settled "
                                        "within %lld s; replay stopped (are "
                                        "consumers running?)\n",
                                        settled, rp->canary_cnt,
                                        (long long)rp->o->canary_timeout_ms /
                                            1000);
                                rp->rc = CTL_EXIT_CANARY;
                                return false;
                        }
                        struct timespec ts = {0, 200 * 1000000L};
                        nanosleep(&ts, NULL);
                }
        }
        fprintf(stderr, "replay: canary settled; going on\n");
        rp->start_us = now_us() - (int64_t)(1e6 * (double)rp->replayed /
                                            (rp->o->rate ? rp->o->rate : 1));
        return true;
}

/* Waits for the rate's next slot, serving the producer meanwhile. */
static void rate_wait(replay_t *rp)
{
        int64_t due, left;

        if (!rp->o->rate)
                return;
        due =
            rp->start_us + (int64_t)(1e6 * (double)rp->replayed / rp->o->rate);
        while ((left = due - now_us()) > 0)
                rd_kafka_poll(rp->pk,
                              (int)(left / 1000 > 100 ? 100 : left / 1000));
}

/* The envelope of a replay: the provenance of the original, one more
 * replay, and where and by whom it was replayed. Attempts, errors and
 * not-before start afresh. */
static const dq_env_field_t kept[] = {
    DQ_ENV_SCHEMA,          DQ_ENV_TRACE_ID,
    DQ_ENV_ORIGINAL_TOPIC,  DQ_ENV_ORIGINAL_PARTITION,
    DQ_ENV_ORIGINAL_OFFSET, DQ_ENV_ORIGINAL_TIMESTAMP,
    DQ_ENV_FIRST_FAILED_AT,
};

static bool republish(replay_t *rp, const dq_dlq_rec_t *rec)
{
        const rd_kafka_message_t *m = rec->msg;
        const dq_conf_t *conf = rp->ctl->cli.conf;
        rd_kafka_headers_t *h = rd_kafka_headers_new(DQ_ENV__CNT);
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__FAIL;
        dq_envelope_t in, out;

        dq_envelope_decode_msg(&in, m);
        out = in;
        out.has = 0;
        for (size_t i = 0; i < sizeof(kept) / sizeof(*kept); i++)
                if (dq_envelope_has(&in, kept[i]))
                        out.has |= DQ_ENV_BIT(kept[i]);
        dq_envelope_set_int(&out, DQ_ENV_REPLAY_COUNT, rec->replay_count + 1);
        dq_envelope_set_str(&out, DQ_ENV_REPLAYED_FROM, rec->pos);
        dq_envelope_set_str(&out, DQ_ENV_REPLAYED_BY, ctl_who());
        if (dq_envelope_encode(&out, h) == 0)
                err = dq_kafka_produce(
                    rp->pk,
                    &(dq_kafka_record_t){
                        .topic = conf->topic_jobs,
                        /* One scope, one partition: back where it came
                         * from. */
                        .partition = !strcmp(rec->orig_topic, conf->topic_jobs)
                                         ? rec->orig_partition
                                         : RD_KAFKA_PARTITION_UA,
                        .key = m->key,
                        .key_len = m->key_len,
                        .value = m->payload,
                        .len = m->len,
                        .headers = h,
                    });
        if (err) {
                rd_kafka_headers_destroy(h);
                fprintf(stderr, "error: kafka: cannot publish %s: %s\n",
                        rec->pos, rd_kafka_err2str(err));
                rp->rc = CTL_EXIT_UNAVAILABLE;
                return false;
        }
        rd_kafka_poll(rp->pk, 0);
        return true;
}

static void replay_progress(replay_t *rp, bool force)
{
        if (!force && dq_mono_ms() - rp->last_progress < 1000)
                return;
        rp->last_progress = dq_mono_ms();
        fprintf(stderr, "replay: read %lld/%lld, %s %lld\n",
                (long long)dq_dlq_reader_done(rp->rd),
                (long long)dq_dlq_reader_total(rp->rd),
                rp->pk ? "replayed" : "would replay", (long long)rp->replayed);
}

static int replay_cb(dq_dlq_rec_t *rec, void *opaque)
{
        replay_t *rp = opaque;
        const dlq_opts_t *o = rp->o;
        char state[32];
        dq_err_t err;

        replay_progress(rp, false);
        /* Between records every position read is one to commit. */
        if (rp->pk) {
                if (rp->canary_cnt == o->canary && o->canary &&
                    !rp->canary_checked &&
                    (!txn_commit(rp) || !canary_wait(rp)))
                        return -1;
                if (rp->txn_open &&
                    (rp->txn_records >= TXN_MAX_RECORDS ||
                     dq_mono_ms() - rp->txn_start_ms >= TXN_MAX_MS) &&
                    !txn_commit(rp))
                        return -1;
                if (!rp->txn_open && !txn_begin(rp))
                        return -1;
        }
        if (!dq_dlq_match(&o->f, rec))
                return 0;
        rp->matched++;
        if (ctl_counts_add(&rp->originals, rec->origin, 1) > 1) {
                ctl_counts_add(&rp->skipped, "extra_copy", 1);
                return 0;
        }
        if (rec->replay_count >= o->max_replays) {
                ctl_counts_add(&rp->refused, "max_replays", 1);
                return 0;
        }
        if (!rec->job) {
                ctl_counts_add(&rp->refused, "not_a_job", 1);
                return 0;
        }
        err = dq_store_replay(rp->st, rec->job->scope, rec->job_id, rec->pos,
                              rec->replay_count + 1, rp->pk == NULL,
                              dq_now_ms(), state, sizeof(state));
        if (err == DQ_ERR_TERMINAL) {
                ctl_counts_add(&rp->skipped, state, 1);
                return 0;
        }
        if (err) {
                fprintf(stderr, "error: redis: %s while replaying %s\n",
                        dq_err_str(err), rec->pos);
                rp->rc = CTL_EXIT_UNAVAILABLE;
                return -1;
        }
        if (rp->pk) {
                rate_wait(rp);
                if (!republish(rp, rec))
                        return -1;
                rp->txn_records++;
                if (o->canary && rp->canary_cnt < o->canary) {
                        memcpy(rp->canary_ids[rp->canary_cnt], rec->job_id,
                               sizeof(rec->job_id));
                        rp->canary_scopes[rp->canary_cnt] =
                            strdup(rec->job->scope);
                        if (!rp->canary_scopes[rp->canary_cnt])
                                abort();
                        rp->canary_cnt++;
                }
        }
        rp->replayed++;
        ctl_counts_add(&rp->by_code, or_dash(rec->err_code), 1);
        ctl_counts_add(&rp->by_kind, rec->kind, 1);
        return o->limit && rp->replayed >= o->limit ? 1 : 0;
}

static rd_kafka_t *txn_producer(const ctl_t *ctl, const char *group)
{
        rd_kafka_conf_t *k = rd_kafka_conf_new();
        char errstr[512];
        rd_kafka_error_t *e;
        rd_kafka_t *pk;

        if (dq_kafka_producer_conf(ctl->cli.conf, k, errstr, sizeof(errstr))) {
                fprintf(stderr, "error: %s\n", dq_esc(errstr));
                rd_kafka_conf_destroy(k);
                return NULL;
        }
        if (dq_kafka_set(k, "transactional.id", group, errstr,
                         sizeof(errstr))) {
                fprintf(stderr, "error: kafka: %s\n", dq_esc(errstr));
                rd_kafka_conf_destroy(k);
                return NULL;
        }
        pk = rd_kafka_new(RD_KAFKA_PRODUCER, k, errstr, sizeof(errstr));
        if (!pk) {
                fprintf(stderr, "error: kafka: %s\n", dq_esc(errstr));
                rd_kafka_conf_destroy(k);
                return NULL;
        }
        /* Fences an earlier run of this group and aborts what it left
         * open. */
        e = rd_kafka_init_transactions(pk, 60000);
        if (e) {
                fprintf(stderr,
                        "error: kafka: cannot start transactions: "
                        "%s\n",
                        rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
                rd_kafka_destroy(pk);
                return NULL;
        }
        return pk;
}

static void audit(replay_t *rp, const char *run, const char *event,
                  const char *result, char *id_out, size_t id_size)
{
        char desc[512], num[8][32];
        const char *kv[40];
        size_t n = 0;
        char *counts = NULL;
        json_t *c = json_object();

        dq_dlq_filter_describe(&rp->o->f, desc, sizeof(desc));
#define KV(k, v) (kv[n++] = (k), kv[n++] = (v))
        KV("run", run);
        KV("event", event);
        KV("who", ctl_who());
        snprintf(num[0], sizeof(num[0]), "%lld", (long long)dq_now_ms());
        KV("at", num[0]);
        KV("group", rp->group);
        KV("filters", desc);
        snprintf(num[1], sizeof(num[1]), "%ld", rp->o->max_replays);
        KV("max_replays", num[1]);
        snprintf(num[2], sizeof(num[2]), "%g", rp->o->rate);
        KV("rate", num[2]);
        snprintf(num[3], sizeof(num[3]), "%ld", rp->o->canary);
        KV("canary", num[3]);
        snprintf(num[4], sizeof(num[4]), "%ld", rp->o->limit);
        KV("limit", num[4]);
        snprintf(num[5], sizeof(num[5]), "%lld",
                 (long long)dq_dlq_reader_total(rp->rd));
        KV("snapshot_records", num[5]);
        if (result) {
                KV("result", result);
                ctl_jset(c, "read", json_integer(dq_dlq_reader_done(rp->rd)));
                ctl_jset(c, "matched", json_integer(rp->matched));
                ctl_jset(c, "replayed", json_integer(rp->replayed));
                ctl_jset(c, "skipped", ctl_counts_json(&rp->skipped));
                ctl_jset(c, "refused", ctl_counts_json(&rp->refused));
                counts = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
                KV("counts", counts ? counts : "{}");
        }
#undef KV
        if (dq_store_audit(rp->st, kv, n / 2, id_out, id_size))
                fprintf(stderr, "warning: could not append to the audit "
                                "stream\n");
        free(counts);
        json_decref(c);
}

int ctl_dlq_replay(ctl_t *ctl, int argc, char **argv)
{
        dlq_opts_t o;
        replay_t rp;
        char group[256], run[DQ_ULID_LEN + 1], audit_id[64] = "";
        const char *result;
        int rc;

        if ((rc = parse_dlq(ctl, argc, argv,
                            TAKES_FILTERS | TAKES_LIMIT | TAKES_REPLAY, &o)) !=
                CTL_GO_ON ||
            (rc = ctl_check_operands(ctl, argc, argv, 0)) != CTL_GO_ON ||
            (rc = ctl_load(ctl)) != CTL_GO_ON)
                return rc;
        if (o.group) {
                snprintf(group, sizeof(group), "%s", o.group);
        } else {
                /* One group per filter set: its progress is only valid for
                 * the records those filters select. */
                uint64_t h = ctl_fnv1a(ctl_fnv1a(CTL_FNV_BASIS, o.canon),
                                       ctl->cli.conf->topic_dlq);
                snprintf(group, sizeof(group), "decayctl-replay.%016llx",
                         (unsigned long long)h);
        }

        memset(&rp, 0, sizeof(rp));
        rp.ctl = ctl;
        rp.o = &o;
        rp.group = group;
        rp.rc = CTL_EXIT_OK;
        if (o.canary) {
                rp.canary_ids =
                    calloc((size_t)o.canary, sizeof(*rp.canary_ids));
                rp.canary_scopes = calloc((size_t)o.canary, sizeof(char *));
                if (!rp.canary_ids || !rp.canary_scopes)
                        abort();
        }
        if (!(rp.st = ctl_store(ctl, !o.execute))) {
                rc = CTL_EXIT_UNAVAILABLE;
                goto out;
        }
        if ((rc = open_reader(ctl, group, true, -1, 0, &rp.rd)) != CTL_GO_ON)
                goto out;
        fprintf(stderr,
                "replay: %s, group %s, %lld records to read (snapshot of "
                "the end offsets now)\n",
                o.execute ? "executing" : "dry run", group,
                (long long)dq_dlq_reader_total(rp.rd));
        dq_ulid_new(dq_now_ms(), run);
        if (o.execute) {
                if (!(rp.pk = txn_producer(ctl, group))) {
                        rc = CTL_EXIT_UNAVAILABLE;
                        goto out;
                }
                audit(&rp, run, "start", NULL, NULL, 0);
        }
        rp.start_us = now_us();
        rp.last_progress = dq_mono_ms();

        rc = run_reader(rp.rd, replay_cb, &rp);
        if (rp.rc == CTL_EXIT_OK && rc == CTL_EXIT_OK && rp.pk) {
                if (o.canary && rp.canary_cnt && !rp.canary_checked) {
                        /* Fewer records than the canary: check them too. */
                        if (txn_commit(&rp))
                                canary_wait(&rp);
                } else {
                        txn_commit(&rp);
                }
        }
        if (rp.rc != CTL_EXIT_OK)
                rc = rp.rc;
        replay_progress(&rp, true);
        result = rc == CTL_EXIT_OK       ? "done"
                 : rc == CTL_EXIT_CANARY ? "canary_failed"
                                         : "failed";
        if (rp.pk)
                audit(&rp, run, "finish", result, audit_id, sizeof(audit_id));

        if (ctl->json) {
                json_t *out = json_object();
                ctl_jset(out, "mode",
                         json_string(o.execute ? "execute" : "dry_run"));
                ctl_jset(out, "result", json_string(result));
                ctl_jset(out, "group", json_string(group));
                ctl_jset(out, "run", json_string(run));
                ctl_jset(out, "snapshot_records",
                         json_integer(dq_dlq_reader_total(rp.rd)));
                ctl_jset(out, "read", json_integer(dq_dlq_reader_done(rp.rd)));
                ctl_jset(out, "matched", json_integer(rp.matched));
                ctl_jset(out, o.execute ? "replayed" : "would_replay",
                         json_integer(rp.replayed));
                ctl_jset(out, "by_code", ctl_counts_json(&rp.by_code));
                ctl_jset(out, "by_kind", ctl_counts_json(&rp.by_kind));
                ctl_jset(out, "skipped", ctl_counts_json(&rp.skipped));
                ctl_jset(out, "refused", ctl_counts_json(&rp.refused));
                if (*audit_id)
                        ctl_jset(out, "audit_id", json_string(audit_id));
                ctl_json_print(out);
        } else {
                printf("%s: %lld of %lld matching records%s\n",
                       o.execute ? "replayed" : "dry run: would replay",
                       (long long)rp.replayed, (long long)rp.matched,
                       o.execute ? "" : " (nothing was changed)");
                ctl_counts_print(&rp.by_code, "by error code", 20);
                ctl_counts_print(&rp.by_kind, "by kind", 10);
                ctl_counts_print(&rp.skipped,
                                 "skipped (job state, or an extra copy)", 10);
                ctl_counts_print(&rp.refused, "refused", 10);
                if (!o.execute)
                        printf("Run again with --execute to replay.\n");
                else if (*audit_id)
                        printf("audit entry %s\n", audit_id);
        }

out:
        if (rp.pk) {
                if (rp.txn_open)
                        rd_kafka_error_destroy(
                            rd_kafka_abort_transaction(rp.pk, 30000));
                rd_kafka_destroy(rp.pk);
        }
        dq_dlq_reader_destroy(rp.rd);
        dq_store_destroy(rp.st);
        for (long i = 0; i < rp.canary_cnt; i++)
                free(rp.canary_scopes[i]);
        free(rp.canary_scopes);
        free(rp.canary_ids);
        ctl_counts_release(&rp.originals);
        ctl_counts_release(&rp.by_code);
        ctl_counts_release(&rp.by_kind);
        ctl_counts_release(&rp.skipped);
        ctl_counts_release(&rp.refused);
        return rc;
}
