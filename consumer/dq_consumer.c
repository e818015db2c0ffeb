/* The decay-consumer engine; see dq_consumer.h, and dq_consumer_int.h for
 * its rooms. This one holds the lifecycle: start, the loop, the drain and
 * the exit.
 *
 * One thread runs everything: consume a batch, claim its runnable jobs in
 * one pipelined Redis round trip, run the handlers, settle in one more round
 * trip, and hand retries and dead letters to a producer. A message is
 * settled when its job is terminal in Redis, or when its delay or DLQ copy
 * has a successful delivery report; only then may its partition's stored
 * offset move past it (dq_offsets.h). */
#define _GNU_SOURCE
#include "dq_consumer_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

/* Leaves the group: the revoke it brings commits what is settled
 * (dq_rebalance.c). librdkafka 2.0's own close can wait for ever (for a
 * commit the coordinator never answers, or an assignment that arrives
 * while it closes), so its events are served here up to DQ_LEAVE_MAX, or
 * DQ_AT_ONCE_WAIT after a second signal. Past that the group notices by
 * session.timeout.ms, and the client is not destroyed, which would wait as
 * long. Returns false then. */
static bool leave_group(dq_consumer_t *c)
{
        bool at_once = c->stop >= 2;
        int64_t bound = at_once ? DQ_AT_ONCE_WAIT : DQ_LEAVE_MAX;
        int64_t t0 = dq_mono_ms();
        rd_kafka_error_t *error;
        rd_kafka_queue_t *q;

        if (c->left)
                return !c->left_unfinished;
        c->left = true;
        c->leave_deadline = t0 + bound; /* bounds the revoke it brings */
        q = rd_kafka_queue_new(c->rk);
        if ((error = rd_kafka_consumer_close_queue(c->rk, q))) {
                /* After a fatal error rd_kafka_destroy() closes quietly. */
                dq_debug("drain", "leave=refused err=\"%s\"",
                         dq_esc(rd_kafka_error_string(error)));
                rd_kafka_error_destroy(error);
                rd_kafka_queue_destroy(q);
                return true;
        }
        while (!rd_kafka_consumer_closed(c->rk) && (at_once || c->stop < 2) &&
               dq_mono_ms() - t0 < bound) {
                rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 50);

                if (!ev)
                        continue;
                /* Messages fetched before the pause go with the partitions:
                 * nothing of them was committed (G1). */
                if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                        dq_rebalance_cb(c->rk, rd_kafka_event_error(ev),
                                        rd_kafka_event_topic_partition_list(ev),
                                        c);
                else if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_ERROR)
                        dq_error_cb(c->rk,
                                    rd_kafka_event_error_is_fatal(ev)
                                        ? RD_KAFKA_RESP_ERR__FATAL
                                        : rd_kafka_event_error(ev),
                                    rd_kafka_event_error_string(ev), c);
                rd_kafka_event_destroy(ev);
        }
        /* What librdkafka forwards to it from now on is dropped. */
        rd_kafka_queue_destroy(q);
        if (!rd_kafka_consumer_closed(c->rk)) {
                c->left_unfinished = true;
                dq_error("drain",
                         "state=leave_unfinished waited_ms=%lld reason=%s",
                         (long long)(dq_mono_ms() - t0),
                         c->stop >= 2 && !at_once ? "second_signal"
                                                  : "close_did_not_finish");
                return false;
        }
        dq_info("drain", "state=left waited_ms=%lld",
                (long long)(dq_mono_ms() - t0));
        return true;
}

uint64_t dq_consumer_rand(dq_consumer_t *c)
{
        /* xorshift64*: only spreads retry times, needs no strength. */
        c->rnd ^= c->rnd >> 12;
        c->rnd ^= c->rnd << 25;
        c->rnd ^= c->rnd >> 27;
        return c->rnd * 2685821657736338717ULL;
}

bool dq_consumer_stopping(dq_consumer_t *c)
{
        if (c->stop == 1 && !c->drain_deadline)
                c->drain_deadline = dq_mono_ms() + c->conf->drain_timeout_ms;
        return c->stop >= 2 ||
               (c->drain_deadline && dq_mono_ms() >= c->drain_deadline);
}

void dq_consumer_publish(dq_consumer_t *c)
{
        dq_gauges_t g = {0};

        if (!c->metrics)
                return;
        for (dq_part_t *p = c->parts; p; p = p->next) {
                g.assigned++;
                g.paused += c->paused_all || p->delay_paused || p->blocked;
                g.parts_blocked += p->blocked;
                g.in_flight += (int)dq_offsets_pending(&p->off);
        }
        g.in_flight += (int)c->backlog_cnt;
        for (const dq_item_t *it = c->redeliver; it; it = it->next)
                g.copies_failing++;
        g.joined = c->joined;
        g.redis_ok = !c->unavailable_at;
        g.critical = c->critical;
        g.draining = c->stop != 0;
        g.fatal = c->fatal;
        g.llm_circuit_open = c->circuit.open;
        snprintf(g.llm_circuit_code, sizeof(g.llm_circuit_code), "%s",
                 c->circuit.code);
        dq_metrics_gauges(c->metrics, &g);
        dq_metrics_tick(c->metrics);
}

void dq_consumer_fatal(dq_consumer_t *c, rd_kafka_t *rk)
{
        char why[512];
        rd_kafka_resp_err_t err = rd_kafka_fatal_error(rk, why, sizeof(why));

        if (c->fatal)
                return;
        dq_error("kafka",
                 "client=%s fatal=true err=%s reason=\"%s\" "
                 "action=exit_without_commit",
                 rd_kafka_name(rk), rd_kafka_err2name(err), dq_esc(why));
        c->fatal = true;
        c->stop = 2;
}

static void summary(dq_consumer_t *c, const char *when)
{
        const int64_t *n = c->st.settled;

        dq_info("summary",
                "when=%s consumed=%lld claimed=%lld completed=%lld "
                "retried=%lld dead=%lld duplicate=%lld skipped=%lld "
                "deferred=%lld abandoned=%lld",
                when, (long long)c->st.consumed, (long long)c->st.claimed,
                (long long)n[DQ_OUTCOME_COMPLETED],
                (long long)n[DQ_OUTCOME_RETRIED], (long long)n[DQ_OUTCOME_DEAD],
                (long long)n[DQ_OUTCOME_DUPLICATE],
                (long long)(n[DQ_OUTCOME_SKIPPED] + n[DQ_OUTCOME_CANCELLED] +
                            n[DQ_OUTCOME_SUPERSEDED]),
                (long long)n[DQ_OUTCOME_DEFERRED], (long long)c->st.abandoned);
}

/* Logs the signals the handler saw, from the loop (logging is not
 * async-signal-safe). */
static void log_signal(dq_consumer_t *c)
{
        for (int sig = 1; sig < 32; sig++) {
                if (!c->signals[sig])
                        continue;
                c->signals[sig] = 0;
                dq_info("signal", "signal=%s action=%s", sigabbrev_np(sig),
                        sig == SIGUSR1   ? "summary"
                        : sig == SIGUSR2 ? "ignored"
                        : c->stop >= 2   ? "stop_now"
                                         : "drain");
                if (sig == SIGUSR1)
                        summary(c, "signal");
        }
}

dq_consumer_t *dq_consumer_new(const dq_conf_t *conf, int create_topics,
                               char *errstr, size_t errstr_size)
{
        dq_consumer_t *c = calloc(1, sizeof(*c));
        const char *gid, *inst;
        rd_kafka_topic_partition_list_t *sub;
        rd_kafka_resp_err_t err;
        char host[64];

        if (!c) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        c->conf = conf;
        c->rnd = (uint64_t)dq_now_ms() ^ ((uint64_t)getpid() << 32) ^
                 0x9e3779b97f4a7c15ULL;

        gid = dq_conf_kafka_get(conf, "group.id");
        snprintf(c->group, sizeof(c->group), "%s", gid ? gid : "decayq");
        inst = dq_conf_kafka_get(conf, "group.instance.id");
        if (conf->worker_id && *conf->worker_id)
                snprintf(c->worker, sizeof(c->worker), "%s", conf->worker_id);
        else if (inst && *inst)
                snprintf(c->worker, sizeof(c->worker), "%s", inst);
        else {
                if (gethostname(host, sizeof(host)) == -1)
                        snprintf(host, sizeof(host), "localhost");
                host[sizeof(host) - 1] = '\0';
                snprintf(c->worker, sizeof(c->worker), "%s:%d", host,
                         (int)getpid());
        }

        if (dq_setup_tiers(c) == -1) {
                snprintf(errstr, errstr_size, "out of memory");
                goto err;
        }
        c->store = dq_store_new(conf, c->worker, errstr, errstr_size);
        if (!c->store)
                goto err;
        c->lanes[c->lane_cnt++] = c->store;
        while (c->lane_cnt < (size_t)conf->redis_connections) {
                dq_store_t *st =
                    dq_store_new(conf, c->worker, errstr, errstr_size);
                if (!st)
                        goto err;
                c->lanes[c->lane_cnt++] = st;
        }
        if (conf->http_port > 0) {
                /* Metrics are kept only when someone can read them. A loop
                 * silent for longer than a lease's renewal period plus a
                 * poll is stuck. */
                c->metrics = dq_metrics_new();
                if (!c->metrics) {
                        snprintf(errstr, errstr_size, "out of memory");
                        goto err;
                }
                dq_http_limits_t lim = {
                    .max_connections = (unsigned)conf->http_max_connections,
                    .max_per_ip = (unsigned)conf->http_max_connections_per_ip,
                    .timeout_s =
                        (unsigned)((conf->http_timeout_ms + 999) / 1000),
                };
                dq_http_probe_t probe = dq_metrics_probe(c->metrics);
                c->http = dq_http_start(
                    conf->http_address, (int)conf->http_port, &lim, &probe,
                    conf->lease_ms + 30000, errstr, errstr_size);
                if (!c->http)
                        goto err;
                dq_info("start",
                        "http=%s:%lld endpoints=/metrics,/healthz,"
                        "/readyz",
                        conf->http_address, (long long)conf->http_port);
        }
        if (dq_sched_init(c, errstr, errstr_size))
                goto err;
        if (dq_llm_jobs_init(c, errstr, errstr_size))
                goto err;
        c->pk = dq_setup_producer(c, errstr, errstr_size);
        if (!c->pk)
                goto err;
        if (dq_setup_topics(c, create_topics, errstr, errstr_size) == -1)
                goto err;
        c->rk = dq_setup_consumer(c, errstr, errstr_size);
        if (!c->rk)
                goto err;
        c->cooperative =
            !strcmp(rd_kafka_rebalance_protocol(c->rk), "COOPERATIVE");
        rd_kafka_poll_set_consumer(c->rk);

        sub = rd_kafka_topic_partition_list_new(c->tier_cnt + 1);
        rd_kafka_topic_partition_list_add(sub, conf->topic_jobs,
                                          RD_KAFKA_PARTITION_UA);
        for (int i = 0; i < c->tier_cnt; i++)
                rd_kafka_topic_partition_list_add(sub, c->tier_topics[i],
                                                  RD_KAFKA_PARTITION_UA);
        err = rd_kafka_subscribe(c->rk, sub);
        rd_kafka_topic_partition_list_destroy(sub);
        if (err) {
                snprintf(errstr, errstr_size, "subscribe: %s",
                         rd_kafka_err2str(err));
                goto err;
        }
        dq_info("start",
                "worker=%s group=%s topic=%s tiers=%s dlq=%s "
                "max_attempts=%lld batch=%lld redis_connections=%zu",
                c->worker, c->group, conf->topic_jobs, conf->delay_tiers,
                conf->topic_dlq, (long long)conf->max_attempts,
                (long long)conf->batch_size, c->lane_cnt);
        return c;
err:
        dq_consumer_destroy(c);
        return NULL;
}

dq_run_t dq_consumer_run(dq_consumer_t *c)
{
        size_t max = (size_t)c->conf->batch_size;
        dq_item_t **batch = calloc(max, sizeof(*batch));

        if (!batch) {
                dq_error("start", "out of memory");
                return DQ_RUN_HANDED_BACK;
        }
        c->next_commit = dq_mono_ms() + c->conf->commit_interval_ms;
        c->next_summary = dq_mono_ms() + c->conf->summary_interval_ms;

        while (c->stop < 2) {
                int64_t now;

                log_signal(c);
                if (c->stop == 1 && !c->draining) {
                        /* G8: stop fetching, finish what is in flight. */
                        dq_consumer_stopping(c); /* starts the drain's clock */
                        c->draining = true;
                        dq_info("drain",
                                "state=draining pending_copies=%d "
                                "timeout_ms=%lld",
                                c->outstanding,
                                (long long)c->conf->drain_timeout_ms);
                        dq_part_pause_all(c, "shutdown");
                }
                dq_consumer_publish(c);
                if (c->draining) {
                        dq_batch_land(c, true);
                        dq_copy_serve(c, dq_sched_running(c) ? 5 : 50);
                        dq_batch_unpark(c);
                        dq_sched_poll(c);
                        if (c->outstanding == 0 && !c->delivered &&
                            !c->redeliver && !c->parked &&
                            !dq_sched_running(c) && !dq_sched_queued(c))
                                break;
                        if (dq_mono_ms() >= c->drain_deadline)
                                break;
                        /* Keep serving the group while draining. */
                        rd_kafka_message_t *m =
                            rd_kafka_consumer_poll(c->rk, 0);
                        if (m)
                                rd_kafka_message_destroy(m);
                        continue;
                }

                if (c->unavailable_at && !dq_outage_recovered(c))
                        continue;
                /* While handlers run, their answers are collected
                 * promptly. */
                int timeout = dq_part_next_timeout(c);
                if (dq_sched_running(c) && timeout > 5)
                        timeout = 5;
                /* A batch in flight: its replies are read as soon as
                 * nothing more is fetched. */
                if (c->flight_cnt)
                        timeout = 0;
                size_t n = dq_item_read(c, batch, max, timeout);
                if (n) {
                        dq_batch_process(c, batch, n);
                        c->next_ping = dq_mono_ms() + DQ_IDLE_PING_MS;
                } else if (c->flight_cnt) {
                        dq_batch_land(c, true);
                } else if (dq_mono_ms() >= c->next_ping) {
                        /* Idle: learn of an outage before work arrives,
                         * so that readiness tells the truth. */
                        int tries = 0;
                        c->next_ping = dq_mono_ms() + DQ_IDLE_PING_MS;
                        if (dq_store_ping(c->store) != DQ_OK)
                                dq_outage_wait(c, &tries);
                }
                dq_copy_serve(c, 0);
                dq_batch_unpark(c);
                dq_sched_poll(c);
                dq_part_release_due(c);
                if (dq_mono_ms() >= c->next_part_check &&
                    dq_part_any_blocked(c))
                        dq_part_check(c);

                if (c->flight_copies) /* answers landed meanwhile */
                        dq_batch_land(c, true);
                now = dq_mono_ms();
                if (now >= c->next_commit) {
                        dq_part_commit(c, 0);
                        c->next_commit = now + c->conf->commit_interval_ms;
                }
                if (c->conf->summary_interval_ms > 0 &&
                    now >= c->next_summary) {
                        summary(c, "interval");
                        c->next_summary = now + c->conf->summary_interval_ms;
                }
        }

        log_signal(c);
        dq_batch_land(c, true);
        if (c->stop >= 2)
                dq_warn("drain", "state=stopped_at_once pending_copies=%d",
                        c->outstanding);
        else if (c->outstanding > 0)
                dq_warn("drain", "state=timed_out pending_copies=%d",
                        c->outstanding);
        if (c->outstanding > 0) {
                /* Unsettled: read again by the next owner (G1). */
                c->st.abandoned += c->outstanding;
                c->handed_back = true;
        }
        /* What still runs or waits for its scope is handed back. */
        dq_sched_give_back(c, NULL, 0, 0);
        for (size_t i = 0; i < c->backlog_cnt; i++)
                dq_item_abandon(c, c->backlog[i], "shutdown");
        c->backlog_cnt = 0;
        while (c->parked) {
                dq_item_t *it = c->parked;
                c->parked = it->next;
                dq_item_abandon(c, it, "shutdown");
        }
        while (c->redeliver) {
                dq_item_t *it = c->redeliver;
                c->redeliver = it->next;
                dq_item_abandon(c, it, "shutdown");
        }
        c->stored_since_commit = true;
        c->commit_failed = !dq_part_commit(c, DQ_FINAL_COMMIT_MAX);
        dq_consumer_publish(c);
        dq_info("drain", "state=closing handed_back=%s commit=%s fatal=%s",
                c->handed_back ? "true" : "false",
                c->commit_failed ? "failed" : "ok",
                c->fatal ? "true" : "false");
        free(batch);
        if (c->fatal)
                return DQ_RUN_FATAL;
        if (!leave_group(c))
                return DQ_RUN_HANDED_BACK;
        return c->handed_back || c->commit_failed ? DQ_RUN_HANDED_BACK
                                                  : DQ_RUN_DRAINED;
}

void dq_consumer_stop(dq_consumer_t *c)
{
        if (c->stop < 2)
                c->stop++;
}

void dq_consumer_signal(dq_consumer_t *c, int sig)
{
        if (sig > 0 && sig < 32)
                c->signals[sig] = 1;
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT)
                dq_consumer_stop(c);
}

void dq_consumer_destroy(dq_consumer_t *c)
{
        if (!c)
                return;
        /* Not ready from here on; the listener goes last but one. */
        if (c->metrics)
                dq_consumer_publish(c);
        /* The handlers stop, and their items go, before the clients. */
        dq_sched_destroy(c);
        dq_llm_jobs_destroy(c);
        if (c->rk && leave_group(c))
                rd_kafka_destroy(c->rk);
        if (c->pk) {
                /* Copies never confirmed leave their messages unsettled. */
                int64_t until = dq_mono_ms() + 2000;
                rd_kafka_purge(c->pk, RD_KAFKA_PURGE_F_QUEUE |
                                          RD_KAFKA_PURGE_F_INFLIGHT);
                while (c->outstanding > 0 && dq_mono_ms() < until)
                        rd_kafka_poll(c->pk, 50);
                dq_item_t *it, *next;
                for (it = c->delivered; it; it = next) {
                        next = it->next;
                        dq_item_free(it);
                }
                for (it = c->redeliver; it; it = next) {
                        next = it->next;
                        dq_item_free(it);
                }
                rd_kafka_destroy(c->pk);
        }
        summary(c, "exit");
        while (c->parts) {
                dq_part_t *p = c->parts;
                c->parts = p->next;
                dq_offsets_release(&p->off);
                free(p);
        }
        for (size_t i = 0; i < c->backlog_cnt; i++)
                dq_item_free(c->backlog[i]);
        free(c->backlog);
        while (c->parked) {
                dq_item_t *it = c->parked;
                c->parked = it->next;
                dq_item_free(it);
        }
        for (int i = 0; c->tier_topics && i < c->tier_cnt; i++)
                free(c->tier_topics[i]);
        free(c->tier_topics);
        for (size_t i = 1; i < c->lane_cnt; i++)
                dq_store_destroy(c->lanes[i]);
        dq_store_destroy(c->store);
        dq_http_stop(c->http);
        dq_metrics_destroy(c->metrics);
        free(c);
}
