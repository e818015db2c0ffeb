/* The engine's pure decisions (dq_route.c), as tables: every claim status,
 * handler result and settle answer, with the worst neighbours of each. */
#include <criterion/criterion.h>
#include <string.h>

#include "dq_consumer_int.h"
#include "banned.h"

#define N(a) (sizeof(a) / sizeof(*(a)))

static const char *action(dq_route_action_t a)
{
        return dq_route_action_names[a];
}

Test(route, every_claim_answer_has_one_meaning)
{
        static const struct {
                dq_err_t err;
                dq_claim_status_t status;
                const char *state;
                dq_route_action_t want;
                dq_outcome_t outcome;
                const char *cls, *code;
        } t[] = {
            {DQ_OK, DQ_CLAIM_CLAIMED, "pending", DQ_ROUTE_RUN, 0, NULL, NULL},
            {DQ_OK, DQ_CLAIM_BUSY, "running", DQ_ROUTE_PARK, 0, NULL, NULL},
            {DQ_OK, DQ_CLAIM_NOT_DUE, "retrying", DQ_ROUTE_DEFER,
             DQ_OUTCOME_DEFERRED, NULL, NULL},
            {DQ_OK, DQ_CLAIM_STALE, "pending", DQ_ROUTE_SETTLE,
             DQ_OUTCOME_SUPERSEDED, NULL, NULL},
            {DQ_OK, DQ_CLAIM_DUPLICATE, "", DQ_ROUTE_SETTLE,
             DQ_OUTCOME_DUPLICATE, NULL, NULL},
            {DQ_OK, DQ_CLAIM_TERMINAL, "completed", DQ_ROUTE_SETTLE,
             DQ_OUTCOME_SKIPPED, NULL, NULL},
            {DQ_OK, DQ_CLAIM_TERMINAL, "cancelled", DQ_ROUTE_SETTLE,
             DQ_OUTCOME_CANCELLED, NULL, NULL},
            /* A state that only starts like "cancelled" is not it. */
            {DQ_OK, DQ_CLAIM_TERMINAL, "cancelledx", DQ_ROUTE_SETTLE,
             DQ_OUTCOME_SKIPPED, NULL, NULL},
            {DQ_OK, DQ_CLAIM_EXHAUSTED, "running", DQ_ROUTE_DLQ,
             DQ_OUTCOME_DEAD, "crash_loop", "decay.job.crash_loop"},
            /* The outcome is unknown: never the job's fault. */
            {DQ_ERR_UNAVAILABLE, DQ_CLAIM_CLAIMED, "", DQ_ROUTE_RESEND, 0, NULL,
             NULL},
            {DQ_ERR_INTERNAL, DQ_CLAIM_CLAIMED, "", DQ_ROUTE_RESEND, 0, NULL,
             NULL},
            /* Redis refused the command (a key of the wrong type): this
             * job alone, whatever the status field says. */
            {DQ_ERR_REJECTED, DQ_CLAIM_CLAIMED, "", DQ_ROUTE_DLQ,
             DQ_OUTCOME_DEAD, "fatal", DQ_STORE_COMMAND_ERROR},
            {DQ_ERR_REJECTED, DQ_CLAIM_BUSY, "", DQ_ROUTE_DLQ, DQ_OUTCOME_DEAD,
             "fatal", DQ_STORE_COMMAND_ERROR},
        };

        for (size_t i = 0; i < N(t); i++) {
                dq_claim_t cl = {
                    .err = t[i].err, .status = t[i].status, .until = 1234};
                dq_route_t r;

                snprintf(cl.state, sizeof(cl.state), "%s", t[i].state);
                snprintf(cl.message, sizeof(cl.message), "WRONGTYPE");
                r = dq_route_claim(&cl);
                cr_assert_eq(r.action, t[i].want, "row %zu: %s, want %s", i,
                             action(r.action), action(t[i].want));
                if (t[i].want == DQ_ROUTE_SETTLE ||
                    t[i].want == DQ_ROUTE_DEFER || t[i].want == DQ_ROUTE_DLQ)
                        cr_assert_eq(r.outcome, t[i].outcome, "row %zu", i);
                if (t[i].want == DQ_ROUTE_DEFER)
                        cr_assert_eq(r.until, 1234, "row %zu", i);
                if (t[i].cls) {
                        cr_assert_str_eq(r.err_class, t[i].cls, "row %zu", i);
                        cr_assert_str_eq(r.code, t[i].code, "row %zu", i);
                        cr_assert(r.dead_after, "row %zu", i);
                }
        }
}

Test(route, a_handler_result_retries_until_the_last_attempt)
{
        static const struct {
                dq_err_t err;
                int64_t attempt, max;
                dq_route_action_t want;
                const char *cls;
        } t[] = {
            {DQ_OK, 1, 5, DQ_ROUTE_COMPLETE, NULL},
            /* Success on the last attempt still completes. */
            {DQ_OK, 5, 5, DQ_ROUTE_COMPLETE, NULL},
            {DQ_ERR_TRANSIENT, 1, 5, DQ_ROUTE_RETRY, "retryable"},
            {DQ_ERR_TRANSIENT, 4, 5, DQ_ROUTE_RETRY, "retryable"},
            {DQ_ERR_TRANSIENT, 5, 5, DQ_ROUTE_DLQ, "retryable"},
            /* Past the bound (a crash lost a count): never a retry. */
            {DQ_ERR_TRANSIENT, 9, 5, DQ_ROUTE_DLQ, "retryable"},
            {DQ_ERR_TIMEOUT, 1, 5, DQ_ROUTE_RETRY, "timeout"},
            {DQ_ERR_TIMEOUT, 5, 5, DQ_ROUTE_DLQ, "timeout"},
            {DQ_ERR_REJECTED, 1, 5, DQ_ROUTE_DLQ, "fatal"},
            /* One attempt allowed: the first failure is the last. */
            {DQ_ERR_TRANSIENT, 1, 1, DQ_ROUTE_DLQ, "retryable"},
        };

        for (size_t i = 0; i < N(t); i++) {
                dq_handler_result_t res = {.err = t[i].err, .code = "c"};
                dq_route_t r;

                snprintf(res.message, sizeof(res.message), "m%zu", i);
                r = dq_route_result(&res, t[i].attempt, t[i].max);
                cr_assert_eq(r.action, t[i].want, "row %zu: %s, want %s", i,
                             action(r.action), action(t[i].want));
                if (!t[i].cls)
                        continue;
                cr_assert_str_eq(r.err_class, t[i].cls, "row %zu", i);
                cr_assert_str_eq(r.code, "c", "row %zu", i);
                cr_assert_eq(r.message, res.message, "row %zu", i);
                if (r.action == DQ_ROUTE_DLQ)
                        cr_assert(r.dead_after, "row %zu", i);
        }
}

Test(route, a_settle_answer_settles_copies_or_resends)
{
        static const struct {
                dq_err_t err;
                dq_settle_op_t op;
                dq_route_action_t want;
                dq_outcome_t outcome;
        } t[] = {
            {DQ_OK, DQ_SETTLE_COMPLETE, DQ_ROUTE_SETTLE, DQ_OUTCOME_COMPLETED},
            {DQ_OK, DQ_SETTLE_RETRY, DQ_ROUTE_DEFER, DQ_OUTCOME_RETRIED},
            {DQ_OK, DQ_SETTLE_DEAD, DQ_ROUTE_SETTLE, DQ_OUTCOME_DEAD},
            {DQ_ERR_FENCED, DQ_SETTLE_COMPLETE, DQ_ROUTE_SETTLE,
             DQ_OUTCOME_SUPERSEDED},
            {DQ_ERR_FENCED, DQ_SETTLE_DEAD, DQ_ROUTE_SETTLE,
             DQ_OUTCOME_SUPERSEDED},
            {DQ_ERR_TERMINAL, DQ_SETTLE_RETRY, DQ_ROUTE_SETTLE,
             DQ_OUTCOME_SUPERSEDED},
            /* The effect can never apply: this job is dead-lettered. */
            {DQ_ERR_REJECTED, DQ_SETTLE_COMPLETE, DQ_ROUTE_DLQ,
             DQ_OUTCOME_DEAD},
            {DQ_ERR_REJECTED, DQ_SETTLE_RETRY, DQ_ROUTE_DLQ, DQ_OUTCOME_DEAD},
            /* A dead settle refused: its DLQ copy exists (G9), so the
             * message settles, never a second copy. */
            {DQ_ERR_REJECTED, DQ_SETTLE_DEAD, DQ_ROUTE_SETTLE, DQ_OUTCOME_DEAD},
            {DQ_ERR_UNAVAILABLE, DQ_SETTLE_COMPLETE, DQ_ROUTE_RESEND, 0},
            {DQ_ERR_UNAVAILABLE, DQ_SETTLE_DEAD, DQ_ROUTE_RESEND, 0},
            {DQ_ERR_INTERNAL, DQ_SETTLE_RETRY, DQ_ROUTE_RESEND, 0},
        };

        for (size_t i = 0; i < N(t); i++) {
                dq_settle_t s = {
                    .err = t[i].err, .op = t[i].op, .not_before_ms = 777};
                dq_route_t r;

                snprintf(s.code, sizeof(s.code), "decay.compress.x");
                r = dq_route_settled(&s);
                cr_assert_eq(r.action, t[i].want, "row %zu: %s, want %s", i,
                             action(r.action), action(t[i].want));
                if (r.action != DQ_ROUTE_RESEND)
                        cr_assert_eq(r.outcome, t[i].outcome, "row %zu", i);
                if (r.action == DQ_ROUTE_DEFER)
                        cr_assert_eq(r.until, 777);
                if (r.action == DQ_ROUTE_DLQ) {
                        cr_assert_str_eq(r.err_class, "fatal");
                        cr_assert_str_eq(r.code, "decay.compress.x");
                }
        }
}

Test(route, a_delivery_waits_until_its_time_and_never_less)
{
        const int64_t now = 1000000;

        /* A tier's record is due its delay after its timestamp; one with
         * no timestamp counts from now (late, never early). */
        cr_assert_eq(dq_route_tier_due(now - 4000, now, 5000), now + 1000);
        cr_assert_eq(dq_route_tier_due(0, now, 5000), now + 5000);
        cr_assert_eq(dq_route_tier_due(-1, now, 5000), now + 5000);

        /* Not-before counts only on a tier copy; then scheduled_for. */
        cr_assert_eq(dq_route_wait_until(true, now + 10, now + 99, now),
                     now + 10);
        cr_assert_eq(dq_route_wait_until(false, now + 10, 0, now), 0,
                     "a header on the jobs topic is not the consumer's");
        cr_assert_eq(dq_route_wait_until(true, now, now + 5, now), now + 5,
                     "not-before exactly now is due");
        cr_assert_eq(dq_route_wait_until(true, 0, now, now), 0,
                     "scheduled exactly now runs now");
        cr_assert_eq(dq_route_wait_until(false, 0, now + 1, now), now + 1);
        cr_assert_eq(dq_route_wait_until(true, INT64_MAX, 0, now), INT64_MAX);
}

Test(route, every_outcome_and_action_has_a_name)
{
        for (int o = 0; o < DQ_OUTCOME__CNT; o++)
                cr_assert(dq_outcome_names[o] && *dq_outcome_names[o]);
        cr_assert_str_eq(dq_outcome_names[DQ_OUTCOME_SUPERSEDED], "superseded");
        for (int a = 0; a <= DQ_ROUTE_RESEND; a++)
                cr_assert(dq_route_action_names[a]);
}
