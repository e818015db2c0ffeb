/* Partitions: the assignment's records, holds of delay tiers, pauses
 * (Redis outages, blocked partitions), and offsets. A partition's stored
 * offset moves only over its settled prefix (dq_offsets.h); stored offsets
 * are committed every commit.interval, on revoke and on shutdown (G3). */
#include "dq_consumer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_kafka.h"
#include "dq_log.h"
#include "dq_time.h"
#include "banned.h"

dq_part_t *dq_part_find(dq_consumer_t *c, const char *topic, int32_t partition)
{
        for (dq_part_t *p = c->parts; p; p = p->next)
                if (p->partition == partition && !strcmp(p->topic, topic))
                        return p;
        return NULL;
}

dq_part_t *dq_item_part(dq_consumer_t *c, const dq_item_t *it)
{
        dq_part_t *p = dq_part_find(c, it->topic, it->partition);
        return p && p->gen == it->gen ? p : NULL;
}

static int topic_tier(const dq_consumer_t *c, const char *topic)
{
        for (int i = 0; i < c->tier_cnt; i++)
                if (!strcmp(c->tier_topics[i], topic))
                        return i;
        return -1;
}

/* Stores each partition's settled prefix that moved since the last call,
 * in one call for all of them. */
static void store_offsets(dq_consumer_t *c)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(8);
        rd_kafka_resp_err_t err;

        for (dq_part_t *p = c->parts; p; p = p->next) {
                if (p->store_next < 0)
                        continue;
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)
                    ->offset = p->store_next;
                p->store_next = -1;
        }
        if (l->cnt == 0) {
                rd_kafka_topic_partition_list_destroy(l);
                return;
        }
        err = rd_kafka_offsets_store(c->rk, l);
        for (int i = 0; i < l->cnt; i++) {
                rd_kafka_resp_err_t perr = err ? err : l->elems[i].err;
                if (perr)
                        /* Not assigned any more (__STATE): expected around
                         * a rebalance, the new owner reads it again. */
                        dq_debug("commit",
                                 "topic=%s partition=%d offset=%lld "
                                 "store=failed err=%s",
                                 l->elems[i].topic, (int)l->elems[i].partition,
                                 (long long)l->elems[i].offset,
                                 rd_kafka_err2name(perr));
                else
                        c->stored_since_commit = true;
        }
        rd_kafka_topic_partition_list_destroy(l);
}

/* The answer of one waited-for commit; see dq_part_commit(). */
typedef struct {
        dq_consumer_t *c;
        bool answered;
        rd_kafka_resp_err_t err;
} commit_wait_t;

static void commit_answered(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *offsets,
                            void *opaque)
{
        commit_wait_t *w = opaque;

        dq_commit_cb(rk, err, offsets, w->c);
        w->err = err;
        w->answered = true;
}

/* librdkafka's synchronous commit waits without a bound: for a
 * coordinator that does not answer (a broker frozen or partitioned away),
 * for ever, and no signal reaches the loop meanwhile. The commit's answer
 * is waited for on a queue of its own instead, up to wait_ms or a second
 * signal (after one, up to DQ_AT_ONCE_WAIT). An answer that comes later goes
 * with the queue; the offsets are read again by the next owner (G1). */
static bool commit_wait(dq_consumer_t *c, int64_t wait_ms,
                        rd_kafka_resp_err_t *err)
{
        rd_kafka_queue_t *q = rd_kafka_queue_new(c->rk);
        commit_wait_t w = {.c = c};
        int64_t t0 = dq_mono_ms();
        bool at_once = c->stop >= 2;

        if (at_once && wait_ms > DQ_AT_ONCE_WAIT)
                wait_ms = DQ_AT_ONCE_WAIT;
        *err = rd_kafka_commit_queue(c->rk, NULL, q, commit_answered, &w);
        if (*err)
                w.answered = true; /* refused at once */
        while (!w.answered && (at_once || c->stop < 2) &&
               dq_mono_ms() - t0 < wait_ms)
                rd_kafka_queue_poll_callback(q, 50);
        rd_kafka_queue_poll_callback(q, 0); /* not to be served after w */
        rd_kafka_queue_destroy(q);
        if (!w.answered) {
                dq_warn("commit", "result=unanswered waited_ms=%lld reason=%s",
                        (long long)(dq_mono_ms() - t0),
                        c->stop >= 2 ? "second_signal"
                                     : "no_answer_from_coordinator");
                return false;
        }
        if (!*err)
                *err = w.err;
        return true;
}

bool dq_part_commit(dq_consumer_t *c, int64_t wait_ms)
{
        rd_kafka_resp_err_t err;

        if (c->fatal)
                return false;
        store_offsets(c);
        if (!c->stored_since_commit)
                return true;
        if (wait_ms <= 0)
                err = rd_kafka_commit(c->rk, NULL, 1);
        else if (!commit_wait(c, wait_ms, &err))
                return false; /* said; stored_since_commit stays */
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
                dq_warn("commit", "result=failed sync=%s err=%s",
                        wait_ms > 0 ? "true" : "false", rd_kafka_err2name(err));
                return false;
        }
        c->stored_since_commit = false;
        return true;
}

static rd_kafka_topic_partition_list_t *parts_list(dq_consumer_t *c)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(8);
        for (dq_part_t *p = c->parts; p; p = p->next)
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        return l;
}

void dq_part_pause_all(dq_consumer_t *c, const char *why)
{
        rd_kafka_topic_partition_list_t *l;

        if (c->paused_all)
                return;
        l = parts_list(c);
        rd_kafka_pause_partitions(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        c->paused_all = true;
        dq_info("consume", "paused=all reason=%s", why);
}

void dq_part_resume(dq_consumer_t *c, dq_part_t *p)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_error_t *error;

        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset =
            p->paused_offset;
        rd_kafka_resume_partitions(c->rk, l);
        if (p->seek_pending) {
                error = rd_kafka_seek_partitions(c->rk, l, 5000);
                if (error) {
                        dq_error("consume",
                                 "topic=%s partition=%d seek=failed err=%s",
                                 p->topic, (int)p->partition,
                                 rd_kafka_error_string(error));
                        rd_kafka_error_destroy(error);
                } else {
                        p->seek_pending = false;
                        dq_debug("consume",
                                 "topic=%s partition=%d resumed_at=%lld",
                                 p->topic, (int)p->partition,
                                 (long long)p->paused_offset);
                }
        }
        rd_kafka_topic_partition_list_destroy(l);
}

void dq_part_resume_all(dq_consumer_t *c)
{
        if (!c->paused_all)
                return;
        for (dq_part_t *p = c->parts; p; p = p->next)
                if (!p->delay_paused && !p->blocked && !p->full_paused)
                        dq_part_resume(c, p);
        c->paused_all = false;
        dq_info("consume", "resumed=all");
}

/* Holds a delay-tier partition at offset until due_ms (G6: the tier's
 * records come due in order, so nothing behind it is due earlier). */
void dq_part_pause(dq_consumer_t *c, const dq_part_t *p)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);

        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        rd_kafka_pause_partitions(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
}

void dq_part_hold(dq_consumer_t *c, dq_part_t *p, int64_t offset,
                  int64_t due_ms)
{
        dq_part_pause(c, p);
        p->delay_paused = true;
        p->seek_pending = true;
        p->paused_offset = offset;
        p->resume_at = due_ms;
        dq_debug(
            "consume", "topic=%s partition=%d offset=%lld paused_until=%lld",
            p->topic, (int)p->partition, (long long)offset, (long long)due_ms);
}

void dq_part_release_due(dq_consumer_t *c)
{
        int64_t now = dq_now_ms();

        for (dq_part_t *p = c->parts; p; p = p->next) {
                if (!p->delay_paused || p->resume_at > now)
                        continue;
                p->delay_paused = false;
                /* Else dq_part_resume_all() or dq_part_check() takes it back.
                 */
                if (!c->paused_all && !p->blocked && !p->full_paused)
                        dq_part_resume(c, p);
        }
}

int dq_part_next_timeout(dq_consumer_t *c)
{
        int64_t now = dq_now_ms(), t = 100;

        for (dq_part_t *p = c->parts; p; p = p->next)
                if (p->delay_paused && p->resume_at - now < t)
                        t = p->resume_at - now;
        return t < 0 ? 0 : (int)t;
}

/* The fewest partitions among the DLQ and the tiers, or -1 when the
 * metadata cannot be read. */
static int copy_partitions(dq_consumer_t *c)
{
        const struct rd_kafka_metadata *md = NULL;
        int least = -1;

        if (rd_kafka_metadata(c->pk, 1, NULL, &md, 2000))
                return -1;
        for (int t = 0; t < md->topic_cnt; t++) {
                const char *name = md->topics[t].topic;
                if (md->topics[t].err || (strcmp(name, c->conf->topic_dlq) &&
                                          topic_tier(c, name) < 0))
                        continue;
                if (least < 0 || md->topics[t].partition_cnt < least)
                        least = md->topics[t].partition_cnt;
        }
        rd_kafka_metadata_destroy(md);
        return least;
}

/* The lags of the blocked partitions, which statistics do not cover
 * (never fetched): the log's end less the group's committed offset (the
 * log's start when none). Each check makes one bounded lookup per kind, so
 * that a broker outage never holds the loop: the first finds where each
 * log starts, the later ones where it ends. (A second offset lookup right
 * after a first times out under librdkafka 2.0 on an assigned partition.)
 * -1 while unknown. */
static void blocked_lags(dq_consumer_t *c, dq_part_t **bp,
                         rd_kafka_topic_partition_list_t *l, int64_t *lags)
{
        int64_t *got = calloc((size_t)l->cnt + 1, sizeof(*got));
        bool starts = false;

        if (!got)
                dq_oom();
        for (int i = 0; i < l->cnt; i++)
                starts |= bp[i]->log_start < 0;
        dq_kafka_log_offsets(
            c->rk, l, starts ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END,
            DQ_LAG_LOOKUP_MS, got);
        if (rd_kafka_committed(c->rk, l, DQ_LAG_LOOKUP_MS))
                for (int i = 0; i < l->cnt; i++)
                        l->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
        for (int i = 0; i < l->cnt; i++) {
                dq_part_t *p = bp[i];
                int64_t from;

                if (starts && p->log_start < 0)
                        p->log_start = got[i];
                else if (!starts)
                        p->log_end = got[i];
                from =
                    l->elems[i].offset >= 0 ? l->elems[i].offset : p->log_start;
                lags[i] = p->log_end >= 0 && from >= 0 ? p->log_end - from : -1;
        }
        free(got);
}

void dq_part_check(dq_consumer_t *c)
{
        int n = copy_partitions(c);
        const char **topics;
        int32_t *parts;
        int64_t *lags;
        rd_kafka_topic_partition_list_t *blocked;
        dq_part_t **bp;
        size_t cnt = 0;

        c->next_part_check = dq_mono_ms() + 5000;
        if (n < 0)
                return; /* unknown: keep what is known */
        for (dq_part_t *p = c->parts; p; p = p->next) {
                bool want = p->partition >= n;

                cnt += want;
                if (want == p->blocked)
                        continue;
                p->blocked = want;
                if (!want) {
                        dq_info("consume",
                                "topic=%s partition=%d blocked=false", p->topic,
                                (int)p->partition);
                        if (!c->paused_all && !p->delay_paused &&
                            !p->full_paused)
                                dq_part_resume(c, p);
                        continue;
                }
                dq_part_pause(c, p);
                dq_error("consume",
                         "topic=%s partition=%d blocked=true reason=\"the "
                         "DLQ or a delay tier has only %d partitions; a copy "
                         "keeps its partition number\" fix=\"add "
                         "partitions to %s and every %s* topic\"",
                         p->topic, (int)p->partition, n, c->conf->topic_dlq,
                         c->conf->topic_delay_prefix);
        }
        if (!c->metrics)
                return;
        blocked = rd_kafka_topic_partition_list_new((int)cnt + 1);
        topics = calloc(cnt + 1, sizeof(*topics));
        parts = calloc(cnt + 1, sizeof(*parts));
        lags = calloc(cnt + 1, sizeof(*lags));
        bp = calloc(cnt + 1, sizeof(*bp));
        if (!topics || !parts || !lags || !bp)
                dq_oom();
        for (dq_part_t *p = c->parts; p; p = p->next) {
                if (!p->blocked || blocked->cnt >= (int)cnt)
                        continue;
                bp[blocked->cnt] = p;
                rd_kafka_topic_partition_list_add(blocked, p->topic,
                                                  p->partition);
        }
        if (blocked->cnt)
                blocked_lags(c, bp, blocked, lags);
        for (int i = 0; i < blocked->cnt; i++) {
                topics[i] = blocked->elems[i].topic;
                parts[i] = blocked->elems[i].partition;
        }
        dq_metrics_extra_lags(c->metrics, topics, parts, lags,
                              (size_t)blocked->cnt);
        rd_kafka_topic_partition_list_destroy(blocked);
        free(topics);
        free(parts);
        free(lags);
        free(bp);
}

bool dq_part_any_blocked(const dq_consumer_t *c)
{
        for (const dq_part_t *p = c->parts; p; p = p->next)
                if (p->blocked)
                        return true;
        return false;
}

void dq_part_add(dq_consumer_t *c, const rd_kafka_topic_partition_list_t *l)
{
        for (int i = 0; i < l->cnt; i++) {
                dq_part_t *p = calloc(1, sizeof(*p));
                if (!p)
                        continue; /* dq_item_part() fails: messages dropped */
                snprintf(p->topic, sizeof(p->topic), "%s", l->elems[i].topic);
                p->partition = l->elems[i].partition;
                p->tier = topic_tier(c, p->topic);
                p->gen = ++c->gen_seq;
                p->store_next = -1;
                p->log_start = p->log_end = -1;
                dq_offsets_init(&p->off);
                p->next = c->parts;
                c->parts = p;
        }
}

void dq_part_remove(dq_consumer_t *c, const char *topic, int32_t partition)
{
        for (dq_part_t **pp = &c->parts; *pp; pp = &(*pp)->next) {
                dq_part_t *p = *pp;
                if (p->partition == partition && !strcmp(p->topic, topic)) {
                        *pp = p->next;
                        dq_offsets_release(&p->off);
                        free(p);
                        return;
                }
        }
}
