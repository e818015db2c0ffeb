/* Redis outages: a call whose outcome is unknown pauses consumption and
 * waits with capped backoff, serving the group meanwhile, and the calls
 * that got no answer are sent again in order. A job is never blamed for
 * an outage. */
#define _GNU_SOURCE
#include "dq_consumer_int.h"

#include <errno.h>
#include <time.h>

#include "dq_log.h"
#include "dq_time.h"
#include "banned.h"

static void sleep_ms(int64_t ms)
{
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

int64_t dq_capped_backoff(int tries, int64_t max_ms)
{
        int64_t ms = 100LL << (tries < 10 ? tries : 10);
        return ms < max_ms ? ms : max_ms;
}

bool dq_outage_wait(dq_consumer_t *c, int *tries)
{
        int64_t backoff = dq_capped_backoff((*tries)++, DQ_REDIS_BACKOFF_MAX);
        int64_t until;

        if (!c->unavailable_at) {
                c->unavailable_at = dq_mono_ms();
                dq_warn("redis", "state=unavailable action=pause_and_retry");
        }
        if (!c->critical &&
            dq_mono_ms() - c->unavailable_at >= c->conf->critical_after_ms) {
                c->critical = true;
                dq_error("redis",
                         "state=critical unavailable_ms=%lld "
                         "action=paused_until_redis_returns",
                         (long long)(dq_mono_ms() - c->unavailable_at));
        }
        if (!c->in_rebalance)
                dq_part_pause_all(c, "redis_unavailable");

        until = dq_mono_ms() + backoff;
        while (dq_mono_ms() < until) {
                dq_consumer_publish(
                    c); /* waiting for Redis is the loop's work now */
                if (dq_consumer_stopping(c))
                        return false;
                if (c->in_rebalance) {
                        sleep_ms(50);
                        continue;
                }
                /* Serves rebalances and keeps the member alive; with every
                 * partition paused, a message is rare but kept in order. */
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 50);
                if (m) {
                        dq_item_t *it = dq_item_new(c, m);
                        if (it)
                                dq_item_backlog_push(c, it);
                }
                rd_kafka_poll(c->pk, 0);
        }
        return true;
}

void dq_outage_over(dq_consumer_t *c)
{
        if (!c->unavailable_at)
                return;
        dq_info("redis", "state=available outage_ms=%lld",
                (long long)(dq_mono_ms() - c->unavailable_at));
        c->unavailable_at = 0;
        c->critical = false;
        if (!c->in_rebalance)
                dq_part_resume_all(c);
}

bool dq_outage_recovered(dq_consumer_t *c)
{
        int tries = 0;

        dq_batch_land(c, false);
        while (dq_store_ping(c->store) != DQ_OK)
                if (!dq_outage_wait(c, &tries))
                        return false;
        dq_outage_over(c);
        return true;
}

void dq_outage_round(dq_consumer_t *c, dq_item_t **items, size_t n,
                     dq_round_fn *round, void *opaque)
{
        int tries = 0;

        dq_batch_land(c, false); /* their replies come first */
        while (n > 0) {
                bool heard = false;

                n = round(c, items, n, &heard, opaque);
                if (n == 0) {
                        /* All answered; a round whose items were all
                         * revoked heard nothing, and ends no outage. */
                        if (heard)
                                dq_outage_over(c);
                        return;
                }
                if (!dq_outage_wait(c, &tries))
                        break;
        }
        for (size_t i = 0; i < n; i++)
                dq_item_abandon(c, items[i], "shutdown");
}
