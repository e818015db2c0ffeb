/* The LLM summary backend: one OpenAI-compatible Chat Completions call
 * (libcurl), as OpenAI, vLLM, llama.cpp's server and Ollama serve it, and
 * the classification of every answer (DESIGN.md, "LLM summary backend").
 *
 * A call is blocking and runs on a handler worker; calls are independent
 * (each has its own curl handle), so any number may run at once. */
#ifndef DQ_LLM_H
#define DQ_LLM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dq_conf.h"
#include "dq_job.h"

typedef struct dq_llm_s dq_llm_t;

/* How a call ended. */
typedef enum dq_llm_class_e {
        DQ_LLM_OK,        /* a summary, validated */
        DQ_LLM_RETRYABLE, /* 408, 409, 429, 5xx, connection errors, timeouts */
        DQ_LLM_FATAL,     /* this job can never succeed as it stands */
        /* 401, 403, 429 insufficient_quota: the backend's fault, not the
         * job's. The circuit opens; the job costs no attempt. */
        DQ_LLM_NO_BLAME,
        DQ_LLM_CANCELLED, /* stopped by *cancel: nothing to settle */
} dq_llm_class_t;

/* One source memory, in prompt order. */
typedef struct dq_llm_source_s {
        const char *id;
        const char *text;
        int64_t created_at_ms;
} dq_llm_source_t;

typedef struct dq_llm_request_s {
        const char *job_id;
        const char *scope;
        dq_kind_t kind;
        const dq_llm_source_t *sources; /* (created_at, id) order */
        size_t source_cnt;
        int64_t max_tokens;
        /* Makes the data block's delimiter: unknown to whoever wrote the
         * memories (the sources' digest). */
        const char *salt;
} dq_llm_request_t;

typedef struct dq_llm_result_s {
        dq_llm_class_t cls;
        const char *code;  /* decay.llm.*, static; NULL when DQ_LLM_OK */
        char message[512]; /* escaped, the API key never in it */
        long http_status;  /* 0: no answer */
        /* RETRYABLE: the server's Retry-After or retry-after-ms, in ms
         * from now; -1 when it gave none. */
        int64_t retry_after_ms;
        char *content; /* DQ_LLM_OK: the summary claim, malloc'ed */
        char model[128];
        char fingerprint[128];
        int64_t prompt_tokens, completion_tokens; /* -1: not reported */
        double latency_ms;
} dq_llm_result_t;

/* A backend per conf's llm.* keys; NULL with errstr set when they are bad
 * (an unknown llm.max.tokens.field, a prompt file that cannot be read) or
 * when llm.base.url is empty (errstr then empty). Call from one thread,
 * before any call. */
dq_llm_t *dq_llm_new(const dq_conf_t *conf, char *errstr, size_t errstr_size);
void dq_llm_destroy(dq_llm_t *llm);
const char *dq_llm_model(const dq_llm_t *llm);

/* Calls the backend for req; fills *res (free with dq_llm_result_release()).
 * cancel, when not NULL, is watched during the call and stops it.
 * @locality any thread */
void dq_llm_call(dq_llm_t *llm, const dq_llm_request_t *req,
                 const atomic_bool *cancel, dq_llm_result_t *res);
void dq_llm_result_release(dq_llm_result_t *res);

/* The request body of req (for tests): JSON, malloc'ed. */
char *dq_llm_request_body(const dq_llm_t *llm, const dq_llm_request_t *req);

/* Classifies an HTTP answer (pure, for tests): status, the body, the
 * Retry-After and retry-after-ms header values (NULL when absent), and the
 * cap that was sent. */
void dq_llm_classify(long status, const char *body, size_t len,
                     const char *retry_after, const char *retry_after_ms,
                     int64_t max_tokens, int64_t now_ms, dq_llm_result_t *res);

#endif
