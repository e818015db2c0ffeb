/* librdkafka's callbacks of the group consumer (and errors of both
 * clients): assignments and revokes, errors, statistics and commit
 * results. They run inside a poll of the client (dq_consumer_int.h). */
#include "dq_consumer_int.h"

#include <stdio.h>
#include <string.h>

#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

void dq_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                  rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
        dq_consumer_t *c = opaque;

        (void)rk;
        if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
                return;
        for (int i = 0; offsets && i < offsets->cnt; i++) {
                const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
                rd_kafka_resp_err_t perr = err ? err : tp->err;

                if (tp->offset < 0)
                        continue;
                dq_metrics_event(c->metrics,
                                 perr ? DQ_EV_COMMIT_FAILED : DQ_EV_COMMIT);
                if (perr)
                        c->stored_since_commit = true; /* try again */
                if (perr)
                        dq_warn("commit",
                                "topic=%s partition=%d offset=%lld "
                                "result=failed err=%s",
                                tp->topic, (int)tp->partition,
                                (long long)tp->offset, rd_kafka_err2name(perr));
                else
                        dq_debug("commit",
                                 "topic=%s partition=%d offset=%lld "
                                 "result=ok",
                                 tp->topic, (int)tp->partition,
                                 (long long)tp->offset);
        }
}

void dq_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
        dq_consumer_t *c = opaque;

        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                dq_consumer_fatal(c, rk);
                return;
        }
        dq_warn("kafka", "client=%s err=%s reason=\"%s\"", rd_kafka_name(rk),
                rd_kafka_err2name(err), dq_esc(reason));
}

int dq_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
        dq_consumer_t *c = opaque;

        (void)rk;
        dq_metrics_stats(c->metrics, json, len);
        return 0; /* librdkafka frees json */
}

static void log_parts(const char *what,
                      const rd_kafka_topic_partition_list_t *l)
{
        char buf[1024];
        size_t off = 0;

        buf[0] = '\0';
        for (int i = 0; i < l->cnt && off < sizeof(buf) - 1; i++) {
                int w = snprintf(buf + off, sizeof(buf) - off, "%s%s[%d]",
                                 i ? "," : "", l->elems[i].topic,
                                 (int)l->elems[i].partition);
                if (w < 0)
                        break;
                off += (size_t)w;
        }
        dq_info("rebalance", "event=%s count=%d partitions=%s", what, l->cnt,
                buf);
}

/* Before partitions go: wait a bounded time for their pending copies,
 * finish what was delivered, and commit what is settled. Copies still
 * pending are dropped: their messages are read again by the new owner. */
static void revoke_parts(dq_consumer_t *c,
                         const rd_kafka_topic_partition_list_t *l)
{
        int64_t bound = c->conf->drain_timeout_ms < DQ_REVOKE_DRAIN_MAX
                            ? c->conf->drain_timeout_ms
                            : DQ_REVOKE_DRAIN_MAX;
        int64_t until = dq_mono_ms() + bound;

        if (c->drain_deadline && c->drain_deadline < until)
                until = c->drain_deadline;
        if (c->leave_deadline && c->leave_deadline < until)
                until = c->leave_deadline;

        /* What Redis was sent is read and settled first. */
        dq_batch_land(c, true);

        /* Running handlers of these partitions finish within the bound or
         * are handed back; queued jobs are left to the next owner. */
        for (int i = 0; i < l->cnt; i++)
                dq_sched_give_back(c, l->elems[i].topic, l->elems[i].partition,
                                   until - dq_mono_ms());
        while (c->outstanding > 0 && dq_mono_ms() < until && c->stop < 2)
                dq_copy_serve(c, 50);
        dq_copy_serve(c, 0);
        c->stored_since_commit = true;
        /* Its answer is waited for: librdkafka holds the rejoin until it
         * comes anyway. Only while leaving is the wait bounded, by what is
         * left of the leave's time and a second at least; what it did not
         * commit is read again by the next owner (G1). */
        if (c->leave_deadline)
                dq_part_commit(c, until - dq_mono_ms() > 1000
                                      ? until - dq_mono_ms()
                                      : 1000);
        else
                dq_part_commit(c, DQ_COMMIT_WAIT_ANSWER);
        for (int i = 0; i < l->cnt; i++)
                dq_part_remove(c, l->elems[i].topic, l->elems[i].partition);
        if (c->outstanding > 0)
                dq_warn("rebalance", "pending_copies=%d action=drop",
                        c->outstanding);
}

void dq_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
        dq_consumer_t *c = opaque;
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

        c->in_rebalance = true;
        c->rebalance_seq++;
        dq_metrics_event(c->metrics, DQ_EV_REBALANCE);
        switch (err) {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                c->joined = true;
                log_parts("assigned", partitions);
                dq_part_add(c, partitions);
                if (c->cooperative)
                        error = rd_kafka_incremental_assign(rk, partitions);
                else
                        aerr = rd_kafka_assign(rk, partitions);
                /* A fresh assignment is not paused, unless Redis is away
                 * or the consumer is draining. */
                rd_kafka_resume_partitions(rk, partitions);
                c->paused_all = false;
                if (c->unavailable_at)
                        dq_part_pause_all(c, "redis_unavailable");
                else if (c->drain_deadline)
                        dq_part_pause_all(c, "shutdown");
                dq_part_check(c);
                break;
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                log_parts("revoked", partitions);
                if (!c->cooperative)
                        c->joined = false; /* until the next assignment */
                revoke_parts(c, partitions);
                if (c->cooperative)
                        error = rd_kafka_incremental_unassign(rk, partitions);
                else
                        aerr = rd_kafka_assign(rk, NULL);
                break;
        default:
                dq_error("rebalance", "event=error err=%s",
                         rd_kafka_err2name(err));
                aerr = rd_kafka_assign(rk, NULL);
                break;
        }
        if (error) {
                dq_error("rebalance", "assign=failed err=%s",
                         rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else if (aerr) {
                dq_error("rebalance", "assign=failed err=%s",
                         rd_kafka_err2name(aerr));
        }
        c->in_rebalance = false;
}
