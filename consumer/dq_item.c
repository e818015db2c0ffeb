/* One message, from its arrival to its settle or hand-back: the item that
 * carries it, its origin (a delay copy's provenance), its classification
 * (held, poison, not due, or to run) and the read of a batch. */
#include "dq_consumer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_envelope.h"
#include "dq_log.h"
#include "dq_time.h"
#include "banned.h"

void dq_oom(void)
{
        dq_error("consume", "out of memory: aborting; uncommitted messages "
                            "are read again after a restart");
        abort();
}

void dq_item_free(dq_item_t *it)
{
        if (!it)
                return;
        if (it->msg)
                rd_kafka_message_destroy(it->msg);
        dq_job_destroy(it->job);
        dq_sources_free(it->claim.sources);
        free(it->summary_content);
        free(it);
}

const char *dq_item_job_id(const dq_item_t *it)
{
        return it->job ? it->job->id : "-";
}

void dq_item_settle(dq_consumer_t *c, dq_item_t *it, dq_outcome_t outcome)
{
        dq_part_t *p = dq_item_part(c, it);
        const char *name = dq_outcome_names[outcome];
        int64_t next;

        dq_sched_release(c, it);

        if (!p) {
                /* Revoked meanwhile: the new owner reads it again. */
                dq_debug("settle",
                         "topic=%s partition=%d offset=%lld job=%s "
                         "outcome=%s owned=false",
                         it->topic, (int)it->partition, (long long)it->offset,
                         dq_item_job_id(it), name);
                dq_item_free(it);
                return;
        }
        dq_debug("settle",
                 "topic=%s partition=%d offset=%lld job=%s outcome=%s "
                 "attempts=%lld",
                 it->topic, (int)it->partition, (long long)it->offset,
                 dq_item_job_id(it), name, (long long)it->attempts);
        c->st.settled[outcome]++;
        if (c->metrics) {
                /* End to end: first produce to terminal; a retry or a
                 * deferral is not an end. */
                bool end = outcome != DQ_OUTCOME_RETRIED &&
                           outcome != DQ_OUTCOME_DEFERRED && it->orig_ts > 0;
                dq_metrics_settle(
                    c->metrics, name,
                    it->job ? dq_kind_name(it->job->kind) : NULL,
                    it->err_class ? it->err_code : NULL,
                    it->claimed_at ? (double)(dq_mono_ms() - it->claimed_at)
                                   : -1,
                    end ? (double)(dq_now_ms() - it->orig_ts) : -1);
        }
        if (dq_offsets_settle(&p->off, it->offset, &next))
                p->store_next = next; /* stored by the next dq_part_commit() */
        dq_item_free(it);
}

void dq_item_abandon(dq_consumer_t *c, dq_item_t *it, const char *why)
{
        dq_sched_release(c, it);
        dq_info("settle",
                "topic=%s partition=%d offset=%lld job=%s outcome=abandoned "
                "reason=%s",
                it->topic, (int)it->partition, (long long)it->offset,
                dq_item_job_id(it), why);
        c->st.abandoned++;
        dq_metrics_count(c->metrics, "abandoned",
                         it->job ? dq_kind_name(it->job->kind) : NULL, NULL);
        if (c->stop)
                c->handed_back = true;
        dq_item_free(it);
}

void dq_item_push(dq_item_t **list, dq_item_t *it)
{
        it->next = *list;
        *list = it;
}

void dq_item_backlog_push(dq_consumer_t *c, dq_item_t *it)
{
        if (c->backlog_cnt == c->backlog_cap) {
                size_t cap = c->backlog_cap ? c->backlog_cap * 2 : 64;
                dq_item_t **b = realloc(c->backlog, cap * sizeof(*b));
                if (!b)
                        dq_oom();
                c->backlog = b;
                c->backlog_cap = cap;
        }
        c->backlog[c->backlog_cnt++] = it;
}

dq_item_t *dq_item_new(dq_consumer_t *c, rd_kafka_message_t *m)
{
        dq_item_t *it;
        dq_part_t *p;

        if (m->err == RD_KAFKA_RESP_ERR__FATAL)
                dq_consumer_fatal(c, c->rk);
        if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                        dq_warn("consume", "err=%s detail=\"%s\"",
                                rd_kafka_err2name(m->err),
                                rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                return NULL;
        }
        c->st.consumed++;
        dq_metrics_count(c->metrics, "consumed", NULL, NULL);
        it = calloc(1, sizeof(*it));
        if (!it)
                dq_oom();
        it->msg = m;
        snprintf(it->topic, sizeof(it->topic), "%s",
                 rd_kafka_topic_name(m->rkt));
        it->partition = m->partition;
        it->offset = m->offset;
        p = dq_part_find(c, it->topic, it->partition);
        it->gen = p ? p->gen : 0;
        if (c->metrics && p && p->tier < 0) {
                /* How long Kafka took to hand it over: the part of the
                 * end-to-end time that lies before decayq. */
                int64_t ts = rd_kafka_message_timestamp(m, NULL);
                int64_t now = dq_now_ms();
                if (ts > 0)
                        dq_metrics_observe(c->metrics, DQ_HIST_READ_AGE,
                                           (double)(now > ts ? now - ts : 0));
        }
        return it;
}

/* Reads what a delay copy carries, or this record's own origin. */
static void item_origin(dq_item_t *it)
{
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(it->msg, &tstype);
        dq_envelope_t e;

        dq_envelope_decode_msg(&e, it->msg);
        if (!dq_envelope_has(&e, DQ_ENV_ORIGINAL_TOPIC)) {
                snprintf(it->orig_topic, sizeof(it->orig_topic), "%s",
                         it->topic);
                it->orig_partition = it->partition;
                it->orig_offset = it->offset;
                it->orig_ts = ts > 0 ? ts : dq_now_ms();
        } else {
                snprintf(it->orig_topic, sizeof(it->orig_topic), "%s",
                         e.orig_topic);
                it->orig_partition =
                    dq_envelope_has(&e, DQ_ENV_ORIGINAL_PARTITION)
                        ? (int32_t)e.orig_partition
                        : it->partition;
                it->orig_offset = dq_envelope_has(&e, DQ_ENV_ORIGINAL_OFFSET)
                                      ? e.orig_offset
                                      : it->offset;
                it->orig_ts = e.orig_ts;
        }
        it->first_failed_at = e.first_failed_at;
        it->replay_count = e.replay_count;
        it->attempts = e.attempts;
        it->not_before = e.not_before;
        snprintf(it->ref, sizeof(it->ref), "%s/%d/%lld", it->topic,
                 (int)it->partition, (long long)it->offset);
}

bool dq_item_classify(dq_consumer_t *c, dq_item_t *it, dq_item_t **copies)
{
        dq_part_t *p = dq_item_part(c, it);
        dq_reject_t rej;
        int64_t now = dq_now_ms(), wait;

        if (p && p->blocked && !p->delay_paused && !p->seek_pending) {
                /* Fetched before the pause: read again on resume. */
                p->seek_pending = true;
                p->paused_offset = it->offset;
        }
        if (!p || p->delay_paused || p->blocked) {
                /* Revoked, or behind a held record (read again from it on
                 * resume). */
                dq_item_free(it);
                return false;
        }

        if (p->tier >= 0) {
                rd_kafka_timestamp_type_t tstype;
                int64_t due = dq_route_tier_due(
                    rd_kafka_message_timestamp(it->msg, &tstype), now,
                    c->conf->delay_tier_ms[p->tier]);

                if (due > now) {
                        dq_part_hold(c, p, it->offset, due);
                        dq_item_free(it);
                        return false;
                }
        }

        if (dq_offsets_add(&p->off, it->offset) == -1) {
                dq_item_abandon(c, it, "offset_not_ascending");
                return false;
        }
        item_origin(it);

        it->job = dq_job_parse(it->msg->payload, it->msg->len,
                               (size_t)c->conf->job_max_bytes, &rej);
        if (it->job &&
            !dq_job_check_schedule(it->job, now, c->conf->schedule_max_ahead_ms,
                                   &rej)) {
                dq_job_destroy(it->job);
                it->job = NULL;
        }
        if (!it->job && dq_err_is_critical(rej.err))
                dq_oom(); /* the process's fault: never the message's */
        if (!it->job) {
                /* G7: contained, with its reason and original bytes. */
                dq_warn("dispatch",
                        "topic=%s partition=%d offset=%lld outcome=poison "
                        "code=%s",
                        it->topic, (int)it->partition, (long long)it->offset,
                        rej.code);
                dq_copy_to_dlq(it, "fatal", rej.code, rej.message, false);
                dq_item_push(copies, it);
                return false;
        }

        wait = dq_route_wait_until(p->tier >= 0, it->not_before,
                                   it->job->scheduled_for_ms, now);
        if (wait) {
                /* A tier copy hops down the tiers towards the exact time. */
                dq_copy_to_delay(c, it, wait, DQ_OUTCOME_DEFERRED);
                dq_item_push(copies, it);
                return false;
        }
        return true;
}

size_t dq_item_read(dq_consumer_t *c, dq_item_t **batch, size_t max,
                    int timeout_ms)
{
        size_t n = 0;

        /* Messages read while paused for Redis go first, in order. */
        if (c->backlog_cnt) {
                n = c->backlog_cnt < max ? c->backlog_cnt : max;
                memcpy(batch, c->backlog, n * sizeof(*batch));
                memmove(c->backlog, c->backlog + n,
                        (c->backlog_cnt - n) * sizeof(*batch));
                c->backlog_cnt -= n;
                if (c->backlog_cnt)
                        return n;
        }

        while (n < max) {
                unsigned seq = c->rebalance_seq;
                rd_kafka_message_t *m =
                    rd_kafka_consumer_poll(c->rk, n ? 0 : timeout_ms);
                if (!m)
                        break;
                if (seq != c->rebalance_seq) {
                        for (size_t i = 0; i < n; i++)
                                dq_item_free(batch[i]);
                        n = 0;
                }
                dq_item_t *it = dq_item_new(c, m);
                if (it)
                        batch[n++] = it;
        }
        return n;
}
