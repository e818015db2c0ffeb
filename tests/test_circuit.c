/* The LLM backend's circuit and concurrency cap (dq_llm_jobs.c), step by
 * step: when a job at the head of its scope may start, waits, or is
 * deferred, and how refusals, probes and answers move the circuit. */
#include <criterion/criterion.h>
#include <string.h>

#include "dq_consumer_int.h"
#include "dq_time.h"
#include "banned.h"

static dq_conf_t *conf;
static dq_consumer_t c;
static dq_item_t it;
static dq_job_t *job;

static void setup(void)
{
        char err[256];

        conf = dq_conf_new();
        cr_assert(conf);
        cr_assert_eq(
            dq_conf_set(conf, "llm.concurrency", "2", "t", err, sizeof(err)),
            DQ_OK);
        cr_assert_eq(
            dq_conf_set(conf, "llm.circuit.open", "1s", "t", err, sizeof(err)),
            DQ_OK);
        memset(&c, 0, sizeof(c));
        c.conf = conf;
        c.circuit.backoff = conf->llm_circuit_open_ms;
        job = dq_job_new();
        job->scope = strdup("s");
        memcpy(job->id, "01JD3Q6V2R8YB6K3ZKQ9T1M4XH", 27);
        memset(&it, 0, sizeof(it));
        it.job = job;
}

static void teardown(void)
{
        dq_job_destroy(job);
        dq_conf_destroy(conf);
}

TestSuite(circuit, .init = setup, .fini = teardown);

static dq_llm_gate_t gate(int64_t *until)
{
        int64_t u = 0;
        dq_llm_gate_t g = dq_llm_jobs_gate(&c, &u);
        if (until)
                *until = u;
        return g;
}

/* A call's answer: a no-blame refusal (401) or any other. */
static int64_t answer(bool refused)
{
        dq_handler_result_t res = {.llm_called = true,
                                   .no_blame = refused,
                                   .err = refused ? DQ_ERR_TRANSIENT : DQ_OK,
                                   .code = refused ? "decay.llm.unauthorized"
                                                   : NULL};
        return dq_llm_jobs_result(&c, &it, &res);
}

Test(circuit, a_refusal_defers_every_llm_job_until_one_probe_answers)
{
        int64_t until, back, now = dq_now_ms();

        cr_assert_eq(gate(NULL), DQ_LLM_GATE_RUN);
        back = answer(true);
        cr_assert(c.circuit.open);
        cr_expect_str_eq(c.circuit.code, "decay.llm.unauthorized");
        /* Handed back until the circuit's first probe, 1 s from now. */
        cr_expect_geq(back, now + 1000);
        cr_expect_lt(back, now + 1500);
        cr_assert_eq(gate(&until), DQ_LLM_GATE_DEFER);
        cr_expect_eq(until, back);
        /* Another job refused while it is open changes nothing. */
        cr_expect_eq(answer(true), back);

        /* Due: one probe, the others wait for its answer. */
        c.circuit.until = dq_now_ms() - 1;
        cr_assert_eq(gate(NULL), DQ_LLM_GATE_PROBE);
        cr_assert_eq(gate(NULL), DQ_LLM_GATE_WAIT);
        cr_assert_eq(gate(NULL), DQ_LLM_GATE_WAIT);
        /* The probe's job left unanswered (its claim said not to run
         * it): the next job probes. */
        dq_llm_jobs_probe_gone(&c);
        cr_assert_eq(gate(NULL), DQ_LLM_GATE_PROBE);
        /* Its answer closes the circuit. */
        dq_llm_jobs_probe_gone(&c);
        cr_expect_eq(answer(false), 0);
        cr_expect_not(c.circuit.open);
        cr_expect_eq(gate(NULL), DQ_LLM_GATE_RUN);
}

Test(circuit, failed_probes_double_the_wait_up_to_ten_times)
{
        int64_t want = 1000;

        answer(true);
        for (int i = 0; i < 6; i++) {
                int64_t now, back;
                c.circuit.until = dq_now_ms() - 1;
                cr_assert_eq(gate(NULL), DQ_LLM_GATE_PROBE, "round %d", i);
                dq_llm_jobs_probe_gone(&c);
                now = dq_now_ms();
                back = answer(true);
                want = want * 2 < 10000 ? want * 2 : 10000;
                cr_expect_geq(back - now, want - 50, "round %d: %lld", i,
                              (long long)(back - now));
                cr_expect_leq(back - now, want + 50, "round %d: %lld", i,
                              (long long)(back - now));
        }
        /* An answer resets it to llm.circuit.open. */
        c.circuit.until = dq_now_ms() - 1;
        cr_assert_eq(gate(NULL), DQ_LLM_GATE_PROBE);
        dq_llm_jobs_probe_gone(&c);
        answer(false);
        cr_expect_eq(c.circuit.backoff, 1000);
}

Test(circuit, llm_concurrency_caps_the_calls_in_flight)
{
        c.llm_running = 1;
        cr_expect_eq(gate(NULL), DQ_LLM_GATE_RUN);
        c.llm_running = 2;
        cr_expect_eq(gate(NULL), DQ_LLM_GATE_WAIT);
        /* A full cap waits even while the circuit is due to probe. */
        answer(true);
        c.circuit.until = dq_now_ms() - 1;
        cr_expect_eq(gate(NULL), DQ_LLM_GATE_WAIT);
        c.llm_running = 0;
        cr_expect_eq(gate(NULL), DQ_LLM_GATE_PROBE);
}

Test(circuit, an_answer_without_a_call_moves_nothing)
{
        dq_handler_result_t res = {.err = DQ_ERR_REJECTED,
                                   .code = "decay.attest.bad_signature"};

        answer(true);
        cr_expect_eq(dq_llm_jobs_result(&c, &it, &res), 0);
        cr_expect(c.circuit.open);
}
