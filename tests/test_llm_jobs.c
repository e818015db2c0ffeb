/* llm_summary jobs end to end: decay-consumer against the broker, Redis and
 * the test Chat Completions server. A signed job writes one summary with
 * its provenance; every attestation failure and every backend answer ends
 * the way DESIGN.md says, with its code; Retry-After is a floor; the
 * circuit costs no attempt; a source changed under a call writes nothing;
 * the API key shows nowhere. Assertions read what a user would: Redis
 * records, the DLQ, the server's calls, logs and /readyz. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_attest.h"
#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_test_llm.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

#define KEY   "sk-live-9b1f0c7e2a5d4c38b6e1"
#define MODEL "test-model"

static dq_store_t *store;
static dq_conf_t *conf;
static dq_test_llm_t *srv;
static dq_attest_key_t key;
static char signers[512];

static void teardown(void)
{
        dq_tc_reap();
        dq_store_destroy(store);
        dq_conf_destroy(conf);
        dq_test_llm_stop(srv);
        store = NULL;
        conf = NULL;
        srv = NULL;
}

/* The fixture: topics, a store on its namespace, the test server, a key
 * of alice@ops in an allowed-signers file (with opts on its line), and
 * the -X pairs that point the consumers at the server. */
static void fixture(dq_tc_t *tc, const char *name, const char *opts)
{
        char ns[200], kv[600], line[256];
        const char *x[] = {ns};
        unsigned char pk[DQ_ATTEST_PK_LEN];
        dq_test_llm_opts_t o = {.model = MODEL, .api_key = KEY};
        FILE *fp;

        dq_tc_init(tc, name, 1);
        snprintf(ns, sizeof(ns), "redis.namespace=%s", tc->ns);
        store = dq_test_store("test", x, 1, &conf);
        cr_assert((srv = dq_test_llm_start(&o)));
        cr_assert(dq_attest_keygen("alice@ops", &key, pk));
        cr_assert(dq_attest_signers_line(&key, line, sizeof(line)));
        snprintf(signers, sizeof(signers), "%s/allowed_signers", tc->dir);
        cr_assert((fp = fopen(signers, "w")));
        fprintf(fp, "# test operators\n%s%s\n", line, opts ? opts : "");
        fclose(fp);
        snprintf(kv, sizeof(kv), "llm.base.url=%s", dq_test_llm_url(srv));
        dq_tc_arg(tc, kv);
        dq_tc_arg(tc, "llm.model=" MODEL);
        dq_tc_arg(tc, "llm.api.key=" KEY);
        snprintf(kv, sizeof(kv), "llm.allowed.signers=%s", signers);
        dq_tc_arg(tc, kv);
        dq_tc_arg(tc, "llm.timeout=2s");
        dq_tc_arg(tc, "llm.circuit.open=1s");
        dq_tc_arg(tc, "backoff.base=100ms");
        dq_tc_arg(tc, "backoff.max=200ms");
}

/* An llm_summary job over sources (written active, texts[i] their claims,
 * created in order), signed by the fixture's key for model. */
static dq_job_t *llm_job(const char *scope, const char *const *ids,
                         const char *const *texts, size_t n, const char *model)
{
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, scope, ids, n);
        int64_t now = dq_now_ms();
        char err[256];

        for (size_t i = 0; i < n; i++)
                dq_test_memory(store, scope, ids[i], "candidate", "active",
                               texts[i], 1000 + (long long)i);
        job->method = DQ_METHOD_LLM_SUMMARY;
        if (model)
                cr_assert(dq_attest_sign(job, &key, model, 64, now - 60000,
                                         now + 3600000, err, sizeof(err)),
                          "%s", err);
        return job;
}

/* A one-source job whose source text is text. */
static dq_job_t *one(const char *scope, const char *text)
{
        const char *ids[] = {"m1"}, *texts[] = {text};
        return llm_job(scope, ids, texts, 1, MODEL);
}

static void send_job(rd_kafka_t *pk, const dq_tc_t *tc, const dq_job_t *job)
{
        size_t len;
        char *json = dq_job_serialize(job, &len);

        cr_assert(json);
        dq_tc_send(pk, tc->topic, 0, job->scope, json, len, NULL);
        free(json);
}

static char *job_field(const dq_job_t *job, const char *f)
{
        dq_record_t rec = {0};
        const char *v;
        char *out;

        cr_assert_eq(dq_store_job_get(store, job->scope, job->id, &rec), DQ_OK);
        v = dq_record_get(&rec, f);
        out = strdup(v ? v : "");
        dq_record_release(&rec);
        return out;
}

static char *mem_field(const char *scope, const char *id, const char *f)
{
        dq_record_t rec = {0};
        const char *v;
        char *out;

        if (dq_store_record_get(store, DQ_REC_MEMORY, scope, id, &rec) != DQ_OK)
                return strdup("");
        v = dq_record_get(&rec, f);
        out = strdup(v ? v : "");
        dq_record_release(&rec);
        return out;
}

static void expect_mem(const char *scope, const char *id, const char *f,
                       const char *want)
{
        char *v = mem_field(scope, id, f);
        cr_expect_str_eq(v, want, "%s %s.%s", scope, id, f);
        free(v);
}

/* Text of worker's log and of its --dump-config: the key is in neither. */
static void expect_no_key(const dq_tc_t *tc, const char *worker)
{
        char path[512], prog[512], cmd[2048], *text;
        FILE *fp;
        size_t n;

        dq_tc_log_path(tc, worker, path, sizeof(path));
        text = dq_test_slurp(path);
        cr_expect_null(strstr(text, KEY), "the API key is in %s", path);
        cr_expect_null(strstr(text, "9b1f0c7e2a5d"), "part of the key in %s",
                       path);
        free(text);
        snprintf(
            cmd, sizeof(cmd),
            "%s -X llm.api.key=" KEY " -X llm.base.url=http://x/v1 "
            "--dump-config 2>&1",
            dq_test_program("consumer/decay-consumer", prog, sizeof(prog)));
        cr_assert((fp = popen(cmd, "r")));
        text = calloc(1, 1 << 16);
        n = fread(text, 1, (1 << 16) - 1, fp);
        pclose(fp);
        cr_expect_gt(n, 0);
        cr_expect_null(strstr(text, KEY), "the key is in --dump-config");
        cr_expect(strstr(text, "llm.api.key=********"), "%s", text);
        free(text);
}

Test(llm_jobs, a_signed_job_writes_one_summary_with_its_provenance,
     .fini = teardown, .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        const char *ids[] = {"m3", "m1", "m2"};
        const char *texts[] = {"prefers email", "likes tea", "works in UTC"};
        dq_job_t *job;
        char sum[64], *v, kv[64], body[1 << 16];
        int port = dq_test_free_port();
        pid_t pid;

        fixture(&tc, "llmok", NULL);
        snprintf(kv, sizeof(kv), "http.port=%d", port);
        dq_tc_arg(&tc, kv);
        job = llm_job("llm/ok", ids, texts, 3, MODEL);
        snprintf(sum, sizeof(sum), "sum_%s", job->id);
        pid = dq_tc_spawn(&tc, "w");
        send_job(pk, &tc, job);
        dq_tc_flush(pk);
        dq_test_wait_state(store, job, "completed", 30000);

        /* The prompt held the records in (created_at, id) order. */
        expect_mem("llm/ok", sum, "claim", "summary of m3, m1, m2");
        expect_mem("llm/ok", sum, "type", "summary");
        expect_mem("llm/ok", sum, "method", "llm_summary");
        expect_mem("llm/ok", sum, "model", MODEL);
        expect_mem("llm/ok", sum, "system_fingerprint", "fp_test");
        expect_mem("llm/ok", sum, "operator", "alice@ops");
        expect_mem("llm/ok", sum, "key_id", key.key_id);
        expect_mem("llm/ok", sum, "completion_tokens", "12");
        expect_mem("llm/ok", sum, "job_id", job->id);
        expect_mem("llm/ok", sum, "source_ids", "[\"m3\",\"m1\",\"m2\"]");
        v = mem_field("llm/ok", sum, "prompt_tokens");
        cr_expect_gt(atoll(v), 0);
        free(v);
        for (size_t i = 0; i < 3; i++) {
                expect_mem("llm/ok", ids[i], "status", "compressed");
                expect_mem("llm/ok", ids[i], "compressed_into", sum);
        }
        v = job_field(job, "attempts");
        cr_expect_str_eq(v, "1");
        free(v);
        cr_expect_eq(dq_test_llm_calls(srv), 1);
        /* The call's class, its tokens by model, and the circuit. */
        cr_assert_eq(dq_test_http_get(port, "/metrics", body, sizeof(body)),
                     200);
        cr_expect(strstr(body, "decayq_llm_calls_total{class=\"ok\","
                               "code=\"\"} 1\n"),
                  "%s", body);
        cr_expect(strstr(body, "decayq_llm_tokens_total{model=\"" MODEL
                               "\",type=\"completion\"} 12\n"),
                  "%s", body);
        cr_expect(strstr(body, "decayq_llm_call_seconds_count 1\n"), "%s",
                  body);
        cr_expect(strstr(body, "decayq_llm_circuit_open{code=\"\"} 0\n"), "%s",
                  body);
        dq_tc_wait_caught_up(&tc, tc.topic, 20000);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        expect_no_key(&tc, "w");
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

/* A copy of job as another job: id changed, attestation kept. */
static dq_job_t *moved(const dq_job_t *job, const char *scope, const char *src)
{
        dq_job_t *m = dq_job_dup(job);
        dq_job_t *fresh = dq_test_job(
            DQ_KIND_CANDIDATE_COMPRESSION, scope ? scope : job->scope,
            (const char *const *)job->source_ids, job->source_cnt);

        cr_assert(m && fresh);
        memcpy(m->id, fresh->id, sizeof(m->id));
        if (scope) {
                free(m->scope);
                m->scope = strdup(scope);
                dq_test_memory(store, scope, "m1", "candidate", "active", "x",
                               1000);
        }
        if (src) {
                free(m->source_ids[0]);
                m->source_ids[0] = strdup(src);
                dq_test_memory(store, m->scope, src, "candidate", "active", "y",
                               1000);
        }
        dq_job_destroy(fresh);
        return m;
}

Test(llm_jobs, every_attestation_failure_dead_letters_with_its_code,
     .fini = teardown, .timeout = 120)
{
        enum { N = 12 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[N];
        const char *want[N];
        dq_tc_dlq_t recs[2 * N];
        dq_attest_key_t other;
        unsigned char pk2[DQ_ATTEST_PK_LEN];
        char err[256];
        int64_t now = dq_now_ms();
        dq_job_t *base;
        int n, k = 0;
        pid_t pid;

        fixture(&tc, "llmatt", " scopes=att/*");

        /* No attestation; the wave-1 form. */
        jobs[k] = llm_job("att/none", (const char *[]){"m1"},
                          (const char *[]){"a"}, 1, NULL);
        want[k++] = "decay.llm_summary.requires_operator_attestation";
        jobs[k] = llm_job("att/wave1", (const char *[]){"m1"},
                          (const char *[]){"a"}, 1, NULL);
        jobs[k]->attestation = calloc(1, sizeof(dq_attestation_t));
        jobs[k]->attestation->operator_name = strdup("alice@ops");
        jobs[k]->attestation->attested_at_ms = now;
        want[k++] = "decay.attest.unsigned";
        /* Signed by a key nobody allowed. */
        cr_assert(dq_attest_keygen("mallory", &other, pk2));
        jobs[k] = llm_job("att/unknown", (const char *[]){"m1"},
                          (const char *[]){"a"}, 1, NULL);
        cr_assert(dq_attest_sign(jobs[k], &other, MODEL, 64, now - 1000,
                                 now + 60000, err, sizeof(err)));
        want[k++] = "decay.attest.unknown_key";
        /* A valid signature moved to another job, scope and source set;
         * a forged signature. */
        base = one("att/base", "a");
        jobs[k] = moved(base, NULL, NULL);
        want[k++] = "decay.attest.bad_signature";
        jobs[k] = moved(base, "att/other", NULL);
        want[k++] = "decay.attest.bad_signature";
        jobs[k] = moved(base, NULL, "m9");
        want[k++] = "decay.attest.bad_signature";
        jobs[k] = one("att/forged", "a");
        jobs[k]->attestation->sig[5] =
            jobs[k]->attestation->sig[5] == 'A' ? 'B' : 'A';
        want[k++] = "decay.attest.bad_signature";
        /* Outside its window; another model; a scope the key may not
         * approve. */
        jobs[k] = llm_job("att/expired", (const char *[]){"m1"},
                          (const char *[]){"a"}, 1, NULL);
        cr_assert(dq_attest_sign(jobs[k], &key, MODEL, 64, now - 120000,
                                 now - 60000, err, sizeof(err)));
        want[k++] = "decay.attest.expired";
        jobs[k] = llm_job("att/early", (const char *[]){"m1"},
                          (const char *[]){"a"}, 1, NULL);
        cr_assert(dq_attest_sign(jobs[k], &key, MODEL, 64, now + 600000,
                                 now + 900000, err, sizeof(err)));
        want[k++] = "decay.attest.not_yet_valid";
        jobs[k] = llm_job("att/model", (const char *[]){"m1"},
                          (const char *[]){"a"}, 1, "gpt-4o");
        want[k++] = "decay.attest.model_mismatch";
        jobs[k] = llm_job("elsewhere/x", (const char *[]){"m1"},
                          (const char *[]){"a"}, 1, MODEL);
        want[k++] = "decay.attest.scope_not_allowed";
        /* The same nonce on a second job of the scope, properly signed:
         * replayed. */
        jobs[k] = llm_job("att/base", (const char *[]){"m2"},
                          (const char *[]){"b"}, 1, MODEL);
        free(jobs[k]->attestation->nonce);
        jobs[k]->attestation->nonce = strdup(base->attestation->nonce);
        cr_assert(dq_attest_seal(jobs[k], &key));
        want[k++] = "decay.attest.replayed";
        cr_assert_eq(k, N);

        pid = dq_tc_spawn(&tc, "w");
        /* The base job first: it runs, and takes its nonce. */
        send_job(pk, &tc, base);
        dq_tc_flush(pk);
        dq_test_wait_state(store, base, "completed", 30000);
        for (int i = 0; i < N; i++)
                send_job(pk, &tc, jobs[i]);
        dq_tc_flush(pk);
        for (int i = 0; i < N; i++)
                dq_test_wait_state(store, jobs[i], "dead", 30000);
        n = dq_tc_read_dlq(&tc, recs, 2 * N);
        cr_expect_eq(n, N, "%d DLQ records", n);
        for (int i = 0; i < N; i++) {
                const dq_tc_dlq_t *r = dq_tc_dlq_find(recs, n, jobs[i]->id);
                cr_expect(r, "job %d not in the DLQ", i);
                if (r)
                        cr_expect_str_eq(r->code, want[i], "job %d: %s", i,
                                         r->message);
                /* The log names the key and operator, never the sig. */
                if (r && jobs[i]->attestation && jobs[i]->attestation->sig)
                        cr_expect_null(
                            strstr(r->message, jobs[i]->attestation->sig));
        }
        /* Only the base job reached the backend. */
        cr_expect_eq(dq_test_llm_calls(srv), 1);
        /* The log names keys and operators, never a signature. */
        {
                char path[512], *text;
                dq_tc_log_path(&tc, "w", path, sizeof(path));
                text = dq_test_slurp(path);
                cr_expect(strstr(text, "code=decay.attest.bad_signature"));
                cr_expect(strstr(text, key.key_id));
                for (int i = 0; i < N; i++)
                        if (jobs[i]->attestation && jobs[i]->attestation->sig)
                                cr_expect_null(
                                    strstr(text, jobs[i]->attestation->sig),
                                    "job %d's signature is in the log", i);
                free(text);
        }
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        for (int i = 0; i < N; i++)
                dq_job_destroy(jobs[i]);
        dq_job_destroy(base);
        rd_kafka_destroy(pk);
}

typedef struct answer_s {
        const char *marker;
        const char *state; /* completed or dead */
        const char *code;  /* its DLQ code */
        const char *attempts;
} answer_t;

Test(llm_jobs, every_backend_answer_ends_as_it_should, .fini = teardown,
     .timeout = 180)
{
        static const answer_t a[] = {
            {"[[llm:length]]", "dead", "decay.llm.truncated", "1"},
            {"[[llm:over_cap]]", "dead", "decay.llm.truncated", "1"},
            {"[[llm:empty]]", "dead", "decay.llm.empty", "1"},
            {"[[llm:malformed]]", "dead", "decay.llm.malformed_response", "1"},
            {"[[llm:context_openai]]", "dead", "decay.llm.context_too_long",
             "1"},
            {"[[llm:context_vllm]]", "dead", "decay.llm.context_too_long", "1"},
            {"[[llm:context_llamacpp]]", "dead", "decay.llm.context_too_long",
             "1"},
            {"[[llm:model_not_found]]", "dead", "decay.llm.model_not_found",
             "1"},
            {"[[llm:server_error]]", "dead", "decay.llm.server_error", "2"},
            {"[[llm:unavailable]]", "dead", "decay.llm.server_error", "2"},
            {"[[llm:reset]]", "dead", "decay.llm.connection", "2"},
            {"[[llm:hang]]", "dead", "decay.llm.timeout", "2"},
            {"[[llm:fail_until:1]]", "completed", NULL, "2"},
        };
        enum { N = sizeof(a) / sizeof(*a) };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[N];
        dq_tc_dlq_t recs[2 * N];
        pid_t pid;
        int n;

        fixture(&tc, "llmans", NULL);
        dq_tc_arg(&tc, "max.attempts=2");
        pid = dq_tc_spawn(&tc, "w");
        for (int i = 0; i < N; i++) {
                char scope[32];
                snprintf(scope, sizeof(scope), "ans/%d", i);
                jobs[i] = one(scope, a[i].marker);
                send_job(pk, &tc, jobs[i]);
        }
        dq_tc_flush(pk);
        for (int i = 0; i < N; i++) {
                char *v;
                dq_test_wait_state(store, jobs[i], a[i].state, 60000);
                v = job_field(jobs[i], "attempts");
                cr_expect_str_eq(v, a[i].attempts, "%s", a[i].marker);
                free(v);
        }
        n = dq_tc_read_dlq(&tc, recs, 2 * N);
        cr_expect_eq(n, N - 1, "%d DLQ records", n);
        for (int i = 0; i < N; i++) {
                const dq_tc_dlq_t *r = dq_tc_dlq_find(recs, n, jobs[i]->id);
                if (!a[i].code) {
                        cr_expect_null(r, "%s", a[i].marker);
                        continue;
                }
                cr_expect(r, "%s: not in the DLQ", a[i].marker);
                if (r)
                        cr_expect_str_eq(r->code, a[i].code, "%s: %s",
                                         a[i].marker, r->message);
        }
        /* Fatal answers cost one call, retryable ones one per attempt. */
        cr_expect_eq(dq_test_llm_calls_of(srv, "[[llm:length]]"), 1);
        cr_expect_eq(dq_test_llm_calls_of(srv, "[[llm:server_error]]"), 2);
        cr_expect_eq(dq_test_llm_calls_of(srv, "[[llm:fail_until:1]]"), 2);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        expect_no_key(&tc, "w");
        for (int i = 0; i < N; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
}

/* 429 with Retry-After: 3 (and retry-after-ms: 2500) while the backoff is
 * 100 ms: the second call comes no earlier than the server asked. */
Test(llm_jobs, a_retry_after_floor_is_never_run_early, .fini = teardown,
     .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *s, *ms;
        int64_t a0, a1, b0, b1;
        pid_t pid;

        fixture(&tc, "llmra", NULL);
        dq_tc_arg(&tc, "max.attempts=2");
        s = one("ra/s", "[[llm:retry_after:3]]");
        ms = one("ra/ms", "[[llm:retry_after_ms:2500]]");
        pid = dq_tc_spawn(&tc, "w");
        send_job(pk, &tc, s);
        send_job(pk, &tc, ms);
        dq_tc_flush(pk);
        dq_test_wait_state(store, s, "dead", 60000);
        dq_test_wait_state(store, ms, "dead", 60000);
        a0 = dq_test_llm_call_at(srv, "retry_after:3", 0);
        a1 = dq_test_llm_call_at(srv, "retry_after:3", 1);
        b0 = dq_test_llm_call_at(srv, "retry_after_ms:2500", 0);
        b1 = dq_test_llm_call_at(srv, "retry_after_ms:2500", 1);
        cr_assert(a0 && a1 && b0 && b1);
        cr_expect_geq(a1 - a0, 3000, "ran %lld ms after a Retry-After of 3 s",
                      (long long)(a1 - a0));
        cr_expect_geq(b1 - b0, 2500, "ran %lld ms after 2500 ms",
                      (long long)(b1 - b0));
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(s);
        dq_job_destroy(ms);
        rd_kafka_destroy(pk);
}

/* The backend refuses the key: the circuit opens, /readyz says so, the jobs
 * wait without spending attempts, and a probe closes it once the backend
 * answers again. */
static void circuit(const char *scenario, const char *code)
{
        enum { N = 4 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[N];
        char kv[128], body[1 << 16];
        int port = dq_test_free_port(), status = 0;
        long long deadline;
        pid_t pid;

        fixture(&tc, scenario, NULL);
        snprintf(kv, sizeof(kv), "http.port=%d", port);
        dq_tc_arg(&tc, kv);
        dq_tc_arg(&tc, "max.attempts=2");
        dq_test_llm_force(srv, scenario);
        pid = dq_tc_spawn(&tc, "w");
        for (int i = 0; i < N; i++) {
                char scope[32];
                snprintf(scope, sizeof(scope), "cb/%d", i);
                jobs[i] = one(scope, "likes tea");
                send_job(pk, &tc, jobs[i]);
        }
        dq_tc_flush(pk);
        deadline = dq_test_now_ms() + 30000;
        while (dq_test_now_ms() < deadline) {
                status = dq_test_http_get(port, "/readyz", body, sizeof(body));
                if (status == 503 && strstr(body, "llm: circuit open"))
                        break;
                dq_test_sleep_ms(100);
        }
        cr_assert_eq(status, 503, "%s", body);
        cr_expect(strstr(body, code), "%s", body);
        cr_assert_eq(dq_test_http_get(port, "/metrics", body, sizeof(body)),
                     200);
        snprintf(kv, sizeof(kv), "decayq_llm_circuit_open{code=\"%s\"} 1",
                 code);
        cr_expect(strstr(body, kv), "%s", body);
        /* Probes fail a few times, then the backend comes back. */
        dq_test_sleep_ms(3000);
        dq_test_llm_force(srv, NULL);
        for (int i = 0; i < N; i++) {
                char *v;
                dq_test_wait_state(store, jobs[i], "completed", 60000);
                /* No attempt was spent on the backend's refusals. */
                v = job_field(jobs[i], "attempts");
                cr_expect_str_eq(v, "1", "job %d", i);
                free(v);
        }
        cr_expect_geq(dq_test_llm_calls_of(srv, "likes tea"), N + 1);
        cr_assert_eq(dq_test_http_get(port, "/readyz", body, sizeof(body)), 200,
                     "%s", body);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        expect_no_key(&tc, "w");
        for (int i = 0; i < N; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
}

Test(llm_jobs, the_circuit_opens_on_a_refused_key_and_closes, .fini = teardown,
     .timeout = 120)
{
        circuit("unauthorized", "decay.llm.unauthorized");
}

Test(llm_jobs, the_circuit_opens_on_insufficient_quota_and_closes,
     .fini = teardown, .timeout = 120)
{
        circuit("quota", "decay.llm.insufficient_quota");
}

/* A source edited while the model writes its summary: nothing is written,
 * and the job is dead-lettered as decay.compress.source_changed. */
Test(llm_jobs, a_source_changed_under_the_call_writes_nothing, .fini = teardown,
     .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        const char *ids[] = {"m1", "m2"};
        const char *texts[] = {"likes tea [[llm:slow:1500]]", "works late"};
        dq_job_t *job;
        dq_tc_dlq_t recs[4];
        char sum[64];
        pid_t pid;
        int n;

        fixture(&tc, "llmchanged", NULL);
        job = llm_job("chg/1", ids, texts, 2, MODEL);
        snprintf(sum, sizeof(sum), "sum_%s", job->id);
        pid = dq_tc_spawn(&tc, "w");
        send_job(pk, &tc, job);
        dq_tc_flush(pk);
        while (!dq_test_llm_calls(srv))
                dq_test_sleep_ms(20);
        dq_test_memory(store, "chg/1", "m2", "candidate", "active",
                       "works early now", 1001);
        dq_test_wait_state(store, job, "dead", 30000);
        n = dq_tc_read_dlq(&tc, recs, 4);
        cr_assert_eq(n, 1);
        cr_expect_str_eq(recs[0].code, "decay.compress.source_changed");
        expect_mem("chg/1", sum, "type", "");
        expect_mem("chg/1", "m1", "status", "active");
        expect_mem("chg/1", "m2", "status", "active");
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

/* kill -9 of a consumer with LLM calls in flight, and a second consumer
 * taking over: every job completes, each summary is written once, and no
 * job ran past its attempts. */
Test(llm_jobs, a_consumer_killed_during_calls_writes_each_summary_once,
     .fini = teardown, .timeout = 180)
{
        enum { N = 24 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[N];
        pid_t a, b;
        long long deadline;

        fixture(&tc, "llmkill", NULL);
        dq_tc_arg(&tc, "lease=3s");
        dq_tc_arg(&tc, "llm.concurrency=8");
        a = dq_tc_spawn(&tc, "a");
        for (int i = 0; i < N; i++) {
                char scope[32];
                snprintf(scope, sizeof(scope), "kill/%d", i);
                jobs[i] = one(scope, "note [[llm:slow:800]]");
                send_job(pk, &tc, jobs[i]);
        }
        dq_tc_flush(pk);
        deadline = dq_test_now_ms() + 30000;
        while (dq_test_llm_calls(srv) < 6 && dq_test_now_ms() < deadline)
                dq_test_sleep_ms(20);
        kill(a, SIGKILL);
        dq_tc_wait(a, 10000);
        b = dq_tc_spawn(&tc, "b");
        for (int i = 0; i < N; i++) {
                char *v;
                dq_test_wait_state(store, jobs[i], "completed", 60000);
                v = job_field(jobs[i], "attempts");
                cr_expect_leq(atoi(v), 2, "job %d: attempts %s", i, v);
                free(v);
        }
        /* One summary per job, over its source. */
        for (int i = 0; i < N; i++) {
                char sum[64];
                snprintf(sum, sizeof(sum), "sum_%s", jobs[i]->id);
                expect_mem(jobs[i]->scope, sum, "job_id", jobs[i]->id);
                expect_mem(jobs[i]->scope, "m1", "compressed_into", sum);
        }
        cr_expect_leq(dq_test_llm_peak(srv), 8);
        dq_tc_wait_caught_up(&tc, tc.topic, 30000);
        kill(b, SIGTERM);
        cr_assert_eq(dq_tc_wait(b, 30000), 0);
        for (int i = 0; i < N; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
}
