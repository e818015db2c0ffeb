/* Reading the dead-letter topic: record decoding, filters and a snapshot
 * reader. */
#include "dq_dlq.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_envelope.h"
#include "dq_kafka.h"
#include "dq_time.h"
#include "banned.h"

void dq_dlq_rec_decode(dq_dlq_rec_t *rec, const rd_kafka_message_t *msg,
                       size_t max_bytes)
{
        rd_kafka_timestamp_type_t tstype;
        dq_envelope_t e;
        size_t n;

        memset(rec, 0, sizeof(*rec));
        rec->msg = msg;
        rec->partition = msg->partition;
        rec->offset = msg->offset;
        rec->ts_ms = rd_kafka_message_timestamp(msg, &tstype);
        snprintf(rec->pos, sizeof(rec->pos), "%s/%d/%" PRId64,
                 rd_kafka_topic_name(msg->rkt), (int)msg->partition,
                 (int64_t)msg->offset);

        dq_envelope_decode_msg(&e, msg);
        snprintf(rec->err_class, sizeof(rec->err_class), "%s", e.err_class);
        snprintf(rec->err_code, sizeof(rec->err_code), "%s", e.err_code);
        snprintf(rec->err_message, sizeof(rec->err_message), "%s",
                 e.err_message);
        snprintf(rec->worker, sizeof(rec->worker), "%s", e.worker);
        snprintf(rec->group, sizeof(rec->group), "%s", e.group);
        snprintf(rec->orig_topic, sizeof(rec->orig_topic), "%s", e.orig_topic);
        rec->orig_partition = dq_envelope_has(&e, DQ_ENV_ORIGINAL_PARTITION)
                                  ? (int32_t)e.orig_partition
                                  : msg->partition;
        rec->orig_offset =
            dq_envelope_has(&e, DQ_ENV_ORIGINAL_OFFSET) ? e.orig_offset : -1;
        rec->orig_ts_ms = e.orig_ts;
        snprintf(rec->origin, sizeof(rec->origin), "%s/%d/%" PRId64,
                 *rec->orig_topic ? rec->orig_topic : rec->pos,
                 (int)rec->orig_partition, rec->orig_offset);
        rec->first_failed_ms = e.first_failed_at;
        rec->attempts = e.attempts;
        rec->replay_count = e.replay_count;

        rec->job = dq_job_parse(msg->payload, msg->len, max_bytes, &rec->rej);
        if (rec->job) {
                snprintf(rec->job_id, sizeof(rec->job_id), "%s", rec->job->id);
                snprintf(rec->scope, sizeof(rec->scope), "%s", rec->job->scope);
                snprintf(rec->kind, sizeof(rec->kind), "%s",
                         dq_kind_name(rec->job->kind));
        } else if (msg->key) {
                n = msg->key_len < sizeof(rec->scope) ? msg->key_len
                                                      : sizeof(rec->scope) - 1;
                memcpy(rec->scope, msg->key, n);
                rec->scope[n] = '\0';
        }
}

void dq_dlq_rec_release(dq_dlq_rec_t *rec)
{
        dq_job_destroy(rec->job);
        rec->job = NULL;
}

bool dq_dlq_match(const dq_dlq_filter_t *f, const dq_dlq_rec_t *rec)
{
        if (f->since_ms && rec->ts_ms < f->since_ms)
                return false;
        if (f->until_ms && rec->ts_ms >= f->until_ms)
                return false;
        if (f->code && strcmp(f->code, rec->err_code))
                return false;
        if (f->err_class && strcmp(f->err_class, rec->err_class))
                return false;
        if (f->kind && strcmp(f->kind, rec->kind))
                return false;
        if (f->scope && strcmp(f->scope, rec->scope))
                return false;
        if (f->job && strcmp(f->job, rec->job_id))
                return false;
        return true;
}

/* RFC 3339 UTC, or a duration back from now ("90m", "7d"). */
static bool parse_when(const char *s, int64_t now_ms, int64_t *msp)
{
        int64_t d;

        if (dq_time_parse_rfc3339(s, strlen(s), msp))
                return true;
        if (s[0] >= '0' && s[0] <= '9' && dq_duration_parse(s, &d) &&
            d <= now_ms) {
                *msp = now_ms - d;
                return true;
        }
        return false;
}

static bool code_valid(const char *s)
{
        if (!*s || strlen(s) > 127)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
                      *s == '.' || *s == '_'))
                        return false;
        return true;
}

bool dq_dlq_filter_set(dq_dlq_filter_t *f, const char *name, const char *value,
                       int64_t now_ms, char *errstr, size_t errstr_size)
{
        static const char *const classes[] = {"retryable", "fatal",
                                              "crash_loop", "timeout"};

        if (!strcmp(name, "since") || !strcmp(name, "until")) {
                int64_t *msp =
                    !strcmp(name, "since") ? &f->since_ms : &f->until_ms;
                if (!parse_when(value, now_ms, msp)) {
                        snprintf(errstr, errstr_size,
                                 "--%s: expected an RFC 3339 UTC time "
                                 "(2026-11-23T12:00:00Z) or a duration back "
                                 "from now (90m, 7d), got '%s'",
                                 name, value);
                        return false;
                }
                return true;
        }
        if (!strcmp(name, "code")) {
                if (!code_valid(value)) {
                        snprintf(errstr, errstr_size,
                                 "--code: expected a dotted reason code "
                                 "(decay.compress.source_missing), got '%s'",
                                 value);
                        return false;
                }
                f->code = value;
                return true;
        }
        if (!strcmp(name, "class")) {
                for (size_t i = 0; i < sizeof(classes) / sizeof(*classes); i++)
                        if (!strcmp(value, classes[i])) {
                                f->err_class = classes[i];
                                return true;
                        }
                snprintf(errstr, errstr_size,
                         "--class: expected retryable, fatal, crash_loop or "
                         "timeout, got '%s'",
                         value);
                return false;
        }
        if (!strcmp(name, "kind")) {
                if (dq_kind_parse(value) < 0) {
                        snprintf(errstr, errstr_size,
                                 "--kind: expected candidate_compression, "
                                 "episode_compression or "
                                 "expired_principle_review, got '%s'",
                                 value);
                        return false;
                }
                f->kind = value;
                return true;
        }
        if (!strcmp(name, "scope")) {
                if (!*value || strlen(value) > DQ_JOB_MAX_SCOPE) {
                        snprintf(errstr, errstr_size,
                                 "--scope: expected 1 to %d bytes",
                                 DQ_JOB_MAX_SCOPE);
                        return false;
                }
                f->scope = value;
                return true;
        }
        if (!strcmp(name, "job")) {
                if (!dq_ulid_valid(value, strlen(value))) {
                        snprintf(errstr, errstr_size,
                                 "--job: expected a job id (a ULID such as "
                                 "01JD3Q6V2R8YB6K3ZKQ9T1M4XH), got '%s'",
                                 value);
                        return false;
                }
                f->job = value;
                return true;
        }
        snprintf(errstr, errstr_size, "unknown filter '%s'", name);
        return false;
}

void dq_dlq_filter_describe(const dq_dlq_filter_t *f, char *buf, size_t size)
{
        char t[32];
        size_t n = 0;

        buf[0] = '\0';
#define ADD(fmt, v)                                                         \
        do {                                                                \
                int w_ =                                                    \
                    snprintf(buf + n, size - n, "%s" fmt, n ? " " : "", v); \
                if (w_ > 0 && (size_t)w_ < size - n)                        \
                        n += (size_t)w_;                                    \
        } while (0)
        if (f->since_ms)
                ADD("since=%s",
                    dq_time_format_rfc3339(f->since_ms, t, sizeof(t)));
        if (f->until_ms)
                ADD("until=%s",
                    dq_time_format_rfc3339(f->until_ms, t, sizeof(t)));
        if (f->code)
                ADD("code=%s", f->code);
        if (f->err_class)
                ADD("class=%s", f->err_class);
        if (f->kind)
                ADD("kind=%s", f->kind);
        if (f->scope)
                ADD("scope=%s", f->scope);
        if (f->job)
                ADD("job=%s", f->job);
#undef ADD
        if (!n)
                snprintf(buf, size, "all");
}

/*
 * The reader
 */

struct dq_dlq_reader_s {
        rd_kafka_t *rk;
        char *topic;
        size_t max_bytes;
        int cnt;        /* partitions */
        int64_t *start; /* first offset to read */
        int64_t *end;   /* snapshot: high watermark */
        int64_t *pos;   /* next offset */
        bool *active;   /* in the snapshot and not yet read to its end */
        bool *in_snap;  /* in the snapshot */
        int64_t total;
        int64_t done;
};

dq_dlq_reader_t *dq_dlq_reader_new(const dq_conf_t *conf, const char *group,
                                   char *errstr, size_t errstr_size)
{
        dq_dlq_reader_t *r = calloc(1, sizeof(*r));
        rd_kafka_conf_t *k = rd_kafka_conf_new();
        const rd_kafka_metadata_t *md = NULL;
        rd_kafka_topic_t *rkt = NULL;
        rd_kafka_resp_err_t err;

        if (!r || !k)
                goto fail;
        r->topic = strdup(conf->topic_dlq);
        r->max_bytes = (size_t)conf->job_max_bytes;
        if (!r->topic)
                goto fail;
        if (dq_conf_kafka_apply(conf, k, errstr, errstr_size) ||
            dq_kafka_set(k, "group.id", group ? group : "decayctl-reader",
                         errstr, errstr_size) ||
            dq_kafka_set(k, "enable.auto.commit", "false", errstr,
                         errstr_size) ||
            dq_kafka_set(k, "enable.auto.offset.store", "false", errstr,
                         errstr_size) ||
            dq_kafka_set(k, "enable.partition.eof", "true", errstr,
                         errstr_size) ||
            dq_kafka_set(k, "auto.offset.reset", "earliest", errstr,
                         errstr_size) ||
            dq_kafka_set(k, "isolation.level", "read_committed", errstr,
                         errstr_size))
                goto fail;
        r->rk = rd_kafka_new(RD_KAFKA_CONSUMER, k, errstr, errstr_size);
        if (!r->rk)
                goto fail;
        k = NULL;

        rkt = rd_kafka_topic_new(r->rk, r->topic, NULL);
        err = rd_kafka_metadata(r->rk, 0, rkt, &md, 10000);
        if (err) {
                snprintf(errstr, errstr_size,
                         "cannot read metadata of topic '%s': %s", r->topic,
                         rd_kafka_err2str(err));
                goto fail;
        }
        if (md->topic_cnt != 1 || md->topics[0].err ||
            md->topics[0].partition_cnt < 1) {
                snprintf(errstr, errstr_size, "topic '%s' does not exist (%s)",
                         r->topic,
                         md->topic_cnt == 1
                             ? rd_kafka_err2str(md->topics[0].err)
                             : "no metadata");
                goto fail;
        }
        r->cnt = md->topics[0].partition_cnt;
        rd_kafka_metadata_destroy(md);
        md = NULL;
        rd_kafka_topic_destroy(rkt);
        rkt = NULL;

        r->start = calloc((size_t)r->cnt, sizeof(*r->start));
        r->end = calloc((size_t)r->cnt, sizeof(*r->end));
        r->pos = calloc((size_t)r->cnt, sizeof(*r->pos));
        r->active = calloc((size_t)r->cnt, sizeof(*r->active));
        r->in_snap = calloc((size_t)r->cnt, sizeof(*r->in_snap));
        if (!r->start || !r->end || !r->pos || !r->active || !r->in_snap) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        return r;

fail:
        if (md)
                rd_kafka_metadata_destroy(md);
        if (rkt)
                rd_kafka_topic_destroy(rkt);
        if (k)
                rd_kafka_conf_destroy(k);
        dq_dlq_reader_destroy(r);
        return NULL;
}

void dq_dlq_reader_destroy(dq_dlq_reader_t *r)
{
        if (!r)
                return;
        if (r->rk) {
                rd_kafka_consumer_close(r->rk);
                rd_kafka_destroy(r->rk);
        }
        free(r->topic);
        free(r->start);
        free(r->end);
        free(r->pos);
        free(r->active);
        free(r->in_snap);
        free(r);
}

dq_err_t dq_dlq_reader_snapshot(dq_dlq_reader_t *r, bool from_committed,
                                int32_t only_partition, int64_t start_offset,
                                char *errstr, size_t errstr_size)
{
        rd_kafka_topic_partition_list_t *committed = NULL, *all;
        rd_kafka_resp_err_t err;
        int64_t *los, *his;

        if (only_partition >= r->cnt) {
                snprintf(errstr, errstr_size,
                         "topic '%s' has no partition %d (it has %d)", r->topic,
                         (int)only_partition, r->cnt);
                return DQ_ERR_NOT_FOUND;
        }
        if (from_committed) {
                committed = rd_kafka_topic_partition_list_new(r->cnt);
                for (int p = 0; p < r->cnt; p++)
                        rd_kafka_topic_partition_list_add(committed, r->topic,
                                                          p);
                err = rd_kafka_committed(r->rk, committed, 10000);
                if (err) {
                        snprintf(errstr, errstr_size,
                                 "cannot read the committed offsets: %s",
                                 rd_kafka_err2str(err));
                        rd_kafka_topic_partition_list_destroy(committed);
                        return DQ_ERR_UNAVAILABLE;
                }
        }
        los = calloc((size_t)r->cnt + 1, sizeof(*los));
        his = calloc((size_t)r->cnt + 1, sizeof(*his));
        if (!los || !his) {
                snprintf(errstr, errstr_size, "out of memory");
                if (committed)
                        rd_kafka_topic_partition_list_destroy(committed);
                free(los);
                free(his);
                return DQ_ERR_INTERNAL;
        }
        r->total = r->done = 0;
        all = rd_kafka_topic_partition_list_new(r->cnt);
        for (int p = 0; p < r->cnt; p++)
                rd_kafka_topic_partition_list_add(all, r->topic, p);
        dq_kafka_log_offsets(r->rk, all, RD_KAFKA_OFFSET_BEGINNING, 10000, los);
        dq_kafka_log_offsets(r->rk, all, RD_KAFKA_OFFSET_END, 10000, his);
        rd_kafka_topic_partition_list_destroy(all);
        for (int p = 0; p < r->cnt; p++) {
                int64_t lo = los[p], hi = his[p];

                r->active[p] = r->in_snap[p] = false;
                if (only_partition >= 0 && p != only_partition)
                        continue;
                if (lo < 0 || hi < 0) {
                        snprintf(errstr, errstr_size,
                                 "cannot read the end offsets of '%s' "
                                 "(partition %d) within 10 s",
                                 r->topic, p);
                        if (committed)
                                rd_kafka_topic_partition_list_destroy(
                                    committed);
                        free(los);
                        free(his);
                        return DQ_ERR_UNAVAILABLE;
                }
                r->start[p] = lo;
                if (committed && committed->elems[p].offset > lo)
                        r->start[p] = committed->elems[p].offset;
                if (only_partition >= 0) {
                        if (start_offset < lo || start_offset >= hi) {
                                if (lo == hi)
                                        snprintf(errstr, errstr_size,
                                                 "no record at %d:%" PRId64
                                                 " (partition %d is empty)",
                                                 (int)p, start_offset, (int)p);
                                else
                                        snprintf(errstr, errstr_size,
                                                 "no record at %d:%" PRId64
                                                 " (partition %d holds "
                                                 "offsets %" PRId64
                                                 " to %" PRId64 ")",
                                                 (int)p, start_offset, (int)p,
                                                 lo, hi - 1);
                                if (committed)
                                        rd_kafka_topic_partition_list_destroy(
                                            committed);
                                free(los);
                                free(his);
                                return DQ_ERR_NOT_FOUND;
                        }
                        r->start[p] = start_offset;
                        hi = start_offset + 1;
                }
                r->end[p] = hi;
                r->pos[p] = r->start[p];
                r->in_snap[p] = true;
                r->active[p] = r->start[p] < hi;
                if (r->active[p])
                        r->total += hi - r->start[p];
        }
        if (committed)
                rd_kafka_topic_partition_list_destroy(committed);
        free(los);
        free(his);
        return DQ_OK;
}

int64_t dq_dlq_reader_total(const dq_dlq_reader_t *r)
{
        return r->total;
}

int64_t dq_dlq_reader_done(const dq_dlq_reader_t *r)
{
        return r->done;
}

int dq_dlq_reader_partitions(const dq_dlq_reader_t *r)
{
        return r->cnt;
}

rd_kafka_t *dq_dlq_reader_handle(dq_dlq_reader_t *r)
{
        return r->rk;
}

rd_kafka_topic_partition_list_t *
dq_dlq_reader_positions(const dq_dlq_reader_t *r)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(r->cnt);

        for (int p = 0; p < r->cnt; p++)
                if (r->in_snap[p] && r->pos[p] > r->start[p])
                        rd_kafka_topic_partition_list_add(l, r->topic, p)
                            ->offset = r->pos[p];
        return l;
}

static int active_cnt(const dq_dlq_reader_t *r)
{
        int n = 0;
        for (int p = 0; p < r->cnt; p++)
                n += r->active[p];
        return n;
}

dq_err_t dq_dlq_reader_run(dq_dlq_reader_t *r, dq_dlq_cb_t *cb, void *opaque,
                           int64_t stall_ms, char *errstr, size_t errstr_size)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(r->cnt);
        int64_t last = dq_mono_ms();
        dq_err_t ret = DQ_OK;
        rd_kafka_resp_err_t err;

        for (int p = 0; p < r->cnt; p++)
                if (r->active[p])
                        rd_kafka_topic_partition_list_add(l, r->topic, p)
                            ->offset = r->start[p];
        err = rd_kafka_assign(r->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err) {
                snprintf(errstr, errstr_size, "cannot assign '%s': %s",
                         r->topic, rd_kafka_err2str(err));
                return DQ_ERR_UNAVAILABLE;
        }

        while (active_cnt(r) > 0) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(r->rk, 200);
                int32_t p;

                if (!m) {
                        if (dq_mono_ms() - last > stall_ms) {
                                snprintf(errstr, errstr_size,
                                         "no progress reading '%s' for "
                                         "%" PRId64 " ms",
                                         r->topic, stall_ms);
                                ret = DQ_ERR_UNAVAILABLE;
                                break;
                        }
                        continue;
                }
                p = m->partition;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        if (p >= 0 && p < r->cnt && r->active[p]) {
                                r->active[p] = false;
                                r->done += r->end[p] - r->pos[p];
                                r->pos[p] = r->end[p];
                        }
                        rd_kafka_message_destroy(m);
                        continue;
                }
                if (m->err) {
                        /* Transient (a broker restart): librdkafka retries;
                         * the stall clock bounds the wait. */
                        rd_kafka_message_destroy(m);
                        continue;
                }
                last = dq_mono_ms();
                if (p < 0 || p >= r->cnt || !r->active[p] ||
                    m->offset < r->pos[p]) {
                        rd_kafka_message_destroy(m);
                        continue;
                }
                if (m->offset >= r->end[p]) {
                        r->active[p] = false;
                        r->done += r->end[p] - r->pos[p];
                        r->pos[p] = r->end[p];
                        rd_kafka_message_destroy(m);
                        continue;
                }
                {
                        dq_dlq_rec_t rec;
                        int rc;

                        dq_dlq_rec_decode(&rec, m, r->max_bytes);
                        rc = cb(&rec, opaque);
                        dq_dlq_rec_release(&rec);
                        if (rc < 0) {
                                rd_kafka_message_destroy(m);
                                ret = DQ_ERR_INTERNAL;
                                break;
                        }
                        /* Offsets may have gaps (compaction, markers). */
                        r->done += m->offset + 1 - r->pos[p];
                        r->pos[p] = m->offset + 1;
                        if (r->pos[p] >= r->end[p])
                                r->active[p] = false;
                        rd_kafka_message_destroy(m);
                        if (rc > 0)
                                break;
                }
        }
        rd_kafka_assign(r->rk, NULL);
        return ret;
}
