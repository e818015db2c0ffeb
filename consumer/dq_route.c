/* Pure decisions of the engine: what each answer means for a job. No I/O,
 * no clock, no handle; tests/test_route.c holds their tables. */
#include "dq_consumer_int.h"

#include <string.h>

#include "banned.h"

const char *const dq_outcome_names[DQ_OUTCOME__CNT] = {
    [DQ_OUTCOME_COMPLETED] = "completed",
    [DQ_OUTCOME_RETRIED] = "retried",
    [DQ_OUTCOME_DEFERRED] = "deferred",
    [DQ_OUTCOME_DEAD] = "dead",
    [DQ_OUTCOME_DUPLICATE] = "duplicate",
    [DQ_OUTCOME_CANCELLED] = "cancelled",
    [DQ_OUTCOME_SKIPPED] = "skipped",
    [DQ_OUTCOME_SUPERSEDED] = "superseded",
};

const char *const dq_route_action_names[] = {
    [DQ_ROUTE_RUN] = "run",     [DQ_ROUTE_PARK] = "park",
    [DQ_ROUTE_DEFER] = "defer", [DQ_ROUTE_SETTLE] = "settle",
    [DQ_ROUTE_DLQ] = "dlq",     [DQ_ROUTE_COMPLETE] = "complete",
    [DQ_ROUTE_RETRY] = "retry", [DQ_ROUTE_RESEND] = "resend",
};

static dq_route_t settle_as(dq_outcome_t o)
{
        return (dq_route_t){.action = DQ_ROUTE_SETTLE, .outcome = o};
}

static dq_route_t dlq(const char *cls, const char *code, const char *message,
                      bool dead_after)
{
        return (dq_route_t){.action = DQ_ROUTE_DLQ,
                            .outcome = DQ_OUTCOME_DEAD,
                            .err_class = cls,
                            .code = code,
                            .message = message,
                            .dead_after = dead_after};
}

dq_route_t dq_route_claim(const dq_claim_t *cl)
{
        if (dq_err_is_critical(cl->err))
                return (dq_route_t){.action = DQ_ROUTE_RESEND};
        if (dq_err_is_fatal(cl->err))
                /* H6: Redis refused the claim itself (a key of the wrong
                 * type): this job only is dead-lettered. */
                return dlq("fatal", DQ_STORE_COMMAND_ERROR, cl->message, true);
        switch (cl->status) {
        case DQ_CLAIM_CLAIMED:
                break;
        case DQ_CLAIM_BUSY:
                /* G4: a copy never takes a live claim over; it waits,
                 * unsettled, for that run to end. */
                return (dq_route_t){.action = DQ_ROUTE_PARK};
        case DQ_CLAIM_NOT_DUE:
                /* G6: in backoff; this delivery waits in the tiers until
                 * the job's not-before time. */
                return (dq_route_t){.action = DQ_ROUTE_DEFER,
                                    .outcome = DQ_OUTCOME_DEFERRED,
                                    .until = cl->until};
        case DQ_CLAIM_STALE:
                return settle_as(DQ_OUTCOME_SUPERSEDED);
        case DQ_CLAIM_DUPLICATE:
                return settle_as(DQ_OUTCOME_DUPLICATE);
        case DQ_CLAIM_TERMINAL:
                return settle_as(!strcmp(cl->state, "cancelled")
                                     ? DQ_OUTCOME_CANCELLED
                                     : DQ_OUTCOME_SKIPPED);
        case DQ_CLAIM_EXHAUSTED:
                /* G4: it already ran max_attempts times; the worker died in
                 * its last run. */
                return dlq("crash_loop", "decay.job.crash_loop",
                           "attempts exhausted by runs that never settled "
                           "(worker crashed mid-run)",
                           true);
        }
        return (dq_route_t){.action = DQ_ROUTE_RUN};
}

dq_route_t dq_route_result(const dq_handler_result_t *res, int64_t attempt,
                           int64_t max_attempts)
{
        const char *cls;

        if (res->err == DQ_OK)
                return (dq_route_t){.action = DQ_ROUTE_COMPLETE,
                                    .outcome = DQ_OUTCOME_COMPLETED};
        if (!dq_err_is_retryable(res->err))
                return dlq("fatal", res->code, res->message, true);
        cls = res->err == DQ_ERR_TIMEOUT ? "timeout" : "retryable";
        if (attempt >= max_attempts)
                /* G4: the last attempt failed. */
                return dlq(cls, res->code, res->message, true);
        return (dq_route_t){.action = DQ_ROUTE_RETRY,
                            .outcome = DQ_OUTCOME_RETRIED,
                            .err_class = cls,
                            .code = res->code,
                            .message = res->message};
}

dq_route_t dq_route_settled(const dq_settle_t *s)
{
        if (dq_err_is_critical(s->err))
                return (dq_route_t){.action = DQ_ROUTE_RESEND};
        switch (s->err) {
        case DQ_OK:
                if (s->op == DQ_SETTLE_DEAD)
                        return settle_as(DQ_OUTCOME_DEAD);
                if (s->op == DQ_SETTLE_COMPLETE)
                        /* Other jobs compressed every source first. */
                        return settle_as(s->superseded ? DQ_OUTCOME_SUPERSEDED
                                                       : DQ_OUTCOME_COMPLETED);
                return (dq_route_t){.action = DQ_ROUTE_DEFER,
                                    .outcome = s->op == DQ_SETTLE_RELEASE
                                                   ? DQ_OUTCOME_DEFERRED
                                                   : DQ_OUTCOME_RETRIED,
                                    .until = s->not_before_ms};
        case DQ_ERR_FENCED:
        case DQ_ERR_TERMINAL:
                /* Superseded (G5) or already terminal: another claim owns
                 * the outcome. */
                return settle_as(DQ_OUTCOME_SUPERSEDED);
        default:
                /* Its DLQ copy exists (G9): the message is settled though
                 * the state could not be written. */
                if (s->op == DQ_SETTLE_DEAD)
                        return settle_as(DQ_OUTCOME_DEAD);
                /* The effect can never apply (a source missing or
                 * inactive), or Redis refused the command: this job only is
                 * dead-lettered. */
                return dlq("fatal", s->code, s->message, true);
        }
}

int64_t dq_route_tier_due(int64_t ts, int64_t now, int64_t tier_ms)
{
        return (ts > 0 ? ts : now) + tier_ms;
}

int64_t dq_route_wait_until(bool from_tier, int64_t not_before,
                            int64_t scheduled_for, int64_t now)
{
        if (from_tier && not_before > now)
                return not_before;
        return scheduled_for > now ? scheduled_for : 0;
}
