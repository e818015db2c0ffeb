/* A Chat Completions server for tests, on a free loopback port. It answers
 * POST <base>/chat/completions as OpenAI-compatible servers do, errors
 * included, and checks each request the way they would (model, messages,
 * temperature, the token-cap field, the bearer key).
 *
 * What it answers is chosen by a marker anywhere in the request (put it in
 * a source memory's text): [[llm:SCENARIO]], where SCENARIO is one of
 *   ok (the default)     200, content "summary of <record ids in order>"
 *   length               200, finish_reason "length"
 *   empty / null         200, content "" / null
 *   over_cap             200, usage.completion_tokens past the cap
 *   malformed            200, a body that is not JSON
 *   retry_after:S        429 rate_limit_exceeded with Retry-After: S
 *   retry_after_ms:MS    429 with retry-after-ms: MS
 *   quota                429 insufficient_quota (OpenAI's body)
 *   unauthorized         401 (OpenAI's body, which echoes the key)
 *   forbidden            403
 *   server_error         500 (OpenAI's body)
 *   unavailable          503 (vLLM's body)
 *   context_openai       400 context_length_exceeded (OpenAI)
 *   context_vllm         400 (vLLM's body: object "error", code 400)
 *   context_llamacpp     400 exceed_context_size_error (llama.cpp)
 *   model_not_found      404 (Ollama's body)
 *   hang                 no answer until the client gives up
 *   reset                the connection is closed without an answer
 *   fail_until:N         503 for the first N calls of the job, then ok
 *   slow:MS              ok, after MS milliseconds
 * A forced mode (dq_test_llm_force()) overrides every marker: the circuit
 * tests use it to make the whole backend refuse, then recover. */
#ifndef DQ_TEST_LLM_H
#define DQ_TEST_LLM_H

#include <stdbool.h>
#include <stdint.h>

typedef struct dq_test_llm_s dq_test_llm_t;

typedef struct dq_test_llm_opts_s {
        const char *model;   /* the model it serves ("test-model") */
        const char *api_key; /* required bearer key; NULL: none */
        int delay_ms;        /* every answer waits this long */
        int port;            /* 0: a free one */
} dq_test_llm_opts_t;

dq_test_llm_t *dq_test_llm_start(const dq_test_llm_opts_t *opts);
int dq_test_llm_port(const dq_test_llm_t *s);
/* "http://127.0.0.1:<port>/v1" */
const char *dq_test_llm_url(const dq_test_llm_t *s);
void dq_test_llm_stop(dq_test_llm_t *s);

/* Every request so far (NULL scenario clears the forced mode). */
void dq_test_llm_force(dq_test_llm_t *s, const char *scenario);
/* Calls answered so far, in all, and for one job id (from the prompt). */
int64_t dq_test_llm_calls(dq_test_llm_t *s);
int64_t dq_test_llm_calls_of(dq_test_llm_t *s, const char *needle);
/* The most calls running at once. */
int64_t dq_test_llm_peak(dq_test_llm_t *s);
/* The wall ms of the k-th (0-based) call whose body held needle; 0: none. */
int64_t dq_test_llm_call_at(dq_test_llm_t *s, const char *needle, int k);
/* The body of the last request, malloc'ed ("" when none). */
char *dq_test_llm_last_body(dq_test_llm_t *s);

#endif
