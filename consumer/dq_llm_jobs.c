/* llm_summary jobs: the attestation checked before the claim (G12), the
 * backend's concurrency cap, and its circuit. A 401, a 403 or a 429
 * insufficient_quota is the backend's fault, not the job's: the circuit
 * opens, the job goes back without spending its attempt, and LLM jobs wait
 * in a delay tier until one probe finds the backend answering again. */
#include "dq_consumer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

#define NONCE_KEEP_MS  (24 * 3600 * 1000LL) /* past expires_at */
#define CIRCUIT_GROWTH 10 /* the longest opening, in llm.circuit.open */

int dq_llm_jobs_init(dq_consumer_t *c, char *errstr, size_t errstr_size)
{
        const dq_conf_t *conf = c->conf;

        c->circuit.backoff = conf->llm_circuit_open_ms;
        c->llm = dq_llm_new(conf, errstr, errstr_size);
        if (!c->llm) {
                if (errstr[0])
                        return -1;
                dq_info("start", "llm=none llm_summary=dead_letter "
                                 "code=decay.llm_summary.no_backend");
                return 0;
        }
        if (!conf->llm_allowed_signers || !*conf->llm_allowed_signers) {
                snprintf(errstr, errstr_size,
                         "llm.base.url is set but llm.allowed.signers is not: "
                         "no llm_summary job could ever run (decayctl attest "
                         "keygen makes a signer)");
                return -1;
        }
        if (conf->llm_timeout_ms >= conf->handler_timeout_ms)
                dq_warn("start",
                        "llm.timeout=%lldms is not below "
                        "handler.timeout=%lldms: slow calls end as "
                        "decay.handler.timeout rather than decay.llm.timeout",
                        (long long)conf->llm_timeout_ms,
                        (long long)conf->handler_timeout_ms);
        if (!dq_attest_init()) {
                snprintf(errstr, errstr_size, "libsodium: cannot start");
                return -1;
        }
        c->signers =
            dq_signers_load(conf->llm_allowed_signers, errstr, errstr_size);
        if (!c->signers)
                return -1;
        dq_info("start",
                "llm=%s model=%s concurrency=%lld signers=%zu "
                "token_field=%s",
                dq_esc(conf->llm_base_url), dq_esc(conf->llm_model),
                (long long)conf->llm_concurrency, dq_signers_count(c->signers),
                conf->llm_max_tokens_field);
        return 0;
}

void dq_llm_jobs_destroy(dq_consumer_t *c)
{
        dq_llm_destroy(c->llm);
        c->llm = NULL;
        dq_signers_destroy(c->signers);
        c->signers = NULL;
}

bool dq_llm_jobs_is_llm(const dq_consumer_t *c, const dq_item_t *it)
{
        return c->llm && it->job && it->job->method == DQ_METHOD_LLM_SUMMARY;
}

void dq_llm_jobs_prepare_claim(dq_consumer_t *c, dq_item_t *it, dq_claim_t *cl)
{
        const dq_job_t *job = it->job;
        const char *code;

        it->refusal[0] = '\0';
        if (!dq_llm_jobs_is_llm(c, it) ||
            job->kind == DQ_KIND_EXPIRED_PRINCIPLE_REVIEW)
                return; /* the handler says why it cannot run */
        code =
            dq_attest_verify(c->signers, job, dq_llm_model(c->llm), dq_now_ms(),
                             it->refusal_message, sizeof(it->refusal_message));
        if (code) {
                snprintf(it->refusal, sizeof(it->refusal), "%s", code);
                dq_warn("attest", "job=%s scope=%s code=%s key=%s operator=%s",
                        job->id, dq_esc(job->scope), code,
                        job->attestation && job->attestation->key_id
                            ? job->attestation->key_id
                            : "-",
                        job->attestation
                            ? dq_esc(job->attestation->operator_name)
                            : "-");
                return;
        }
        cl->nonce = job->attestation->nonce;
        cl->nonce_until_ms = job->attestation->expires_at_ms + NONCE_KEEP_MS;
        dq_debug("attest", "job=%s key=%s operator=%s result=valid", job->id,
                 job->attestation->key_id,
                 dq_esc(job->attestation->operator_name));
}

dq_llm_gate_t dq_llm_jobs_gate(dq_consumer_t *c, int64_t *until)
{
        if (c->llm_running >= (size_t)c->conf->llm_concurrency)
                return DQ_LLM_GATE_WAIT;
        if (!c->circuit.open)
                return DQ_LLM_GATE_RUN;
        if (dq_now_ms() < c->circuit.until) {
                *until = c->circuit.until;
                return DQ_LLM_GATE_DEFER;
        }
        if (c->circuit.probing)
                return DQ_LLM_GATE_WAIT;
        c->circuit.probing = true;
        dq_info("llm", "circuit=half_open probe=1");
        return DQ_LLM_GATE_PROBE;
}

void dq_llm_jobs_probe_gone(dq_consumer_t *c)
{
        c->circuit.probing = false;
}

static const char *class_name(const dq_handler_result_t *res)
{
        if (res->err == DQ_OK)
                return "ok";
        if (res->no_blame)
                return "no_blame";
        return dq_err_is_retryable(res->err) ? "retryable" : "fatal";
}

static void publish_circuit(dq_consumer_t *c)
{
        dq_consumer_publish(c);
}

int64_t dq_llm_jobs_result(dq_consumer_t *c, const dq_item_t *it,
                           const dq_handler_result_t *res)
{
        int64_t now = dq_now_ms();

        if (!res->llm_called)
                return 0;
        dq_metrics_llm_call(c->metrics, class_name(res),
                            res->code ? res->code : "", res->llm_ms,
                            res->model[0] ? res->model : dq_llm_model(c->llm),
                            res->prompt_tokens, res->completion_tokens);
        dq_info("llm",
                "job=%s scope=%s status=%ld class=%s code=%s ms=%.0f "
                "prompt_tokens=%lld completion_tokens=%lld",
                it->job->id, dq_esc(it->job->scope), res->http_status,
                class_name(res), res->code ? res->code : "-", res->llm_ms,
                (long long)res->prompt_tokens,
                (long long)res->completion_tokens);
        if (!res->no_blame) {
                if (c->circuit.open) {
                        dq_info("llm", "circuit=closed after=%s",
                                c->circuit.code);
                        c->circuit.open = c->circuit.probing = false;
                        c->circuit.code[0] = '\0';
                        c->circuit.backoff = c->conf->llm_circuit_open_ms;
                        publish_circuit(c);
                }
                return 0;
        }
        /* The backend refused us: every LLM job waits. A failed probe
         * doubles the wait, up to CIRCUIT_GROWTH openings. */
        if (!c->circuit.open || c->circuit.probing || now >= c->circuit.until) {
                int64_t cap = c->conf->llm_circuit_open_ms * CIRCUIT_GROWTH;
                if (c->circuit.open)
                        c->circuit.backoff = c->circuit.backoff * 2 < cap
                                                 ? c->circuit.backoff * 2
                                                 : cap;
                c->circuit.open = true;
                c->circuit.probing = false;
                c->circuit.until = now + c->circuit.backoff;
                snprintf(c->circuit.code, sizeof(c->circuit.code), "%s",
                         res->code ? res->code : "decay.llm.no_blame");
                dq_warn("llm", "circuit=open code=%s for_ms=%lld error=\"%s\"",
                        c->circuit.code, (long long)c->circuit.backoff,
                        dq_esc(res->message));
                publish_circuit(c);
        }
        return c->circuit.until;
}

void dq_llm_jobs_summary(dq_item_t *it, dq_handler_result_t *res)
{
        const dq_attestation_t *a = it->job->attestation;

        free(it->summary_content);
        it->summary_content = res->content;
        res->content = NULL;
        snprintf(it->summary_model, sizeof(it->summary_model), "%s",
                 res->model);
        snprintf(it->summary_fingerprint, sizeof(it->summary_fingerprint), "%s",
                 res->fingerprint);
        it->summary = (dq_summary_t){
            .content = it->summary_content,
            .digest = it->claim.digest,
            .model = it->summary_model,
            .fingerprint = it->summary_fingerprint,
            .prompt_tokens = res->prompt_tokens,
            .completion_tokens = res->completion_tokens,
            .operator_name = a ? a->operator_name : "",
            .key_id = a ? a->key_id : "",
        };
}
