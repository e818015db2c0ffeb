/* The Chat Completions test server; see dq_test_llm.h. */
#define _GNU_SOURCE
#include "dq_test_llm.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "banned.h"

#define BODY_MAX (8 * 1024 * 1024)

typedef struct call_s {
        int64_t at;
        char *body;
} call_t;

struct dq_test_llm_s {
        struct MHD_Daemon *d;
        char *model, *api_key;
        int delay_ms, port;
        char url[64];
        pthread_mutex_t lock;
        char forced[64];
        call_t *calls;
        size_t call_cnt, call_cap;
        int64_t running, peak;
        volatile bool stopping;
};

typedef struct req_s {
        char *body;
        size_t len;
        bool too_big;
} req_t;

static int64_t wall_ms(void)
{
        struct timeval tv;
        gettimeofday(&tv, NULL);
        return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, unsigned status,
                                  const char *body, const char *h1,
                                  const char *v1)
{
        struct MHD_Response *r = MHD_create_response_from_buffer(
            strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
        enum MHD_Result ret;

        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "application/json");
        if (h1)
                MHD_add_response_header(r, h1, v1);
        ret = MHD_queue_response(conn, status, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result openai_error(struct MHD_Connection *conn,
                                    unsigned status, const char *type,
                                    const char *code, const char *msg,
                                    const char *h1, const char *v1)
{
        json_t *o = json_pack("{s:{s:s, s:s, s:n, s:s?}}", "error", "message",
                              msg, "type", type, "param", "code", code);
        char *s = json_dumps(o, JSON_COMPACT);
        enum MHD_Result ret = send_reply(conn, status, s ? s : "{}", h1, v1);

        free(s);
        json_decref(o);
        return ret;
}

/* The record ids of the prompt, in order, joined by ", ". */
static char *record_ids(const char *user)
{
        char *out = NULL;
        size_t size = 0;
        FILE *fp = open_memstream(&out, &size);
        const char *p = user;
        bool first = true;

        if (!fp)
                return NULL;
        while ((p = strstr(p, "--- record "))) {
                const char *id = strstr(p, " id="), *end;
                if (!id)
                        break;
                id += 4;
                end = strchr(id, ' ');
                if (!end)
                        break;
                fprintf(fp, "%s%.*s", first ? "" : ", ", (int)(end - id), id);
                first = false;
                p = end;
        }
        fclose(fp);
        return out;
}

static enum MHD_Result success(dq_test_llm_t *s, struct MHD_Connection *conn,
                               const char *user, int64_t cap,
                               const char *scenario)
{
        char *ids = record_ids(user), *body;
        char content[4096];
        const char *finish = "stop";
        json_t *msg, *o;
        int64_t completion = 12;
        enum MHD_Result ret;

        snprintf(content, sizeof(content), "summary of %s", ids ? ids : "");
        free(ids);
        msg = json_pack("{s:s, s:s}", "role", "assistant", "content", content);
        if (!strcmp(scenario, "length")) {
                finish = "length";
                completion = cap;
        } else if (!strcmp(scenario, "empty")) {
                json_object_set_new(msg, "content", json_string(""));
        } else if (!strcmp(scenario, "null")) {
                json_object_set_new(msg, "content", json_null());
        } else if (!strcmp(scenario, "over_cap")) {
                completion = cap + 100;
        }
        o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:n, s:s}], "
                      "s:{s:I, s:I, s:I}}",
                      "id", "chatcmpl-test", "object", "chat.completion",
                      "created", (json_int_t)(wall_ms() / 1000), "model",
                      s->model, "system_fingerprint", "fp_test", "choices",
                      "index", 0, "message", msg, "logprobs", "finish_reason",
                      finish, "usage", "prompt_tokens",
                      (json_int_t)(strlen(user) / 4), "completion_tokens",
                      (json_int_t)completion, "total_tokens",
                      (json_int_t)(strlen(user) / 4 + completion));
        body = json_dumps(o, JSON_COMPACT);
        ret = send_reply(conn, 200, body ? body : "{}", NULL, NULL);
        free(body);
        json_decref(o);
        return ret;
}

/* Calls so far whose body holds needle. */
static int64_t count_of(dq_test_llm_t *s, const char *needle)
{
        int64_t n = 0;
        for (size_t i = 0; i < s->call_cnt; i++)
                n += strstr(s->calls[i].body, needle) != NULL;
        return n;
}

static enum MHD_Result reply_for(dq_test_llm_t *s, struct MHD_Connection *conn,
                                 const char *scenario, const char *user,
                                 int64_t cap, int64_t calls_before);

static enum MHD_Result answer(dq_test_llm_t *s, struct MHD_Connection *conn,
                              const char *body, size_t len)
{
        json_error_t jerr;
        json_t *root = json_loadb(body, len, 0, &jerr), *msgs, *tok;
        const char *model = NULL, *user = "", *m, *auth;
        char scenario[64] = "ok", expect[300], first[128] = "";
        int64_t cap = 0, calls_before;
        const char *field = NULL;

        auth =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
        if (s->api_key) {
                snprintf(expect, sizeof(expect), "Bearer %s", s->api_key);
                if (!auth || strcmp(auth, expect)) {
                        char msg[400];
                        snprintf(msg, sizeof(msg),
                                 "Incorrect API key provided: %s. You can "
                                 "find your API key at "
                                 "https://platform.openai.com/account/"
                                 "api-keys.",
                                 auth && !strncmp(auth, "Bearer ", 7)
                                     ? auth + 7
                                     : "(none)");
                        json_decref(root);
                        return openai_error(conn, 401, "invalid_request_error",
                                            "invalid_api_key", msg, NULL, NULL);
                }
        }
        if (!json_is_object(root)) {
                json_decref(root);
                return openai_error(conn, 400, "invalid_request_error", NULL,
                                    "We could not parse the JSON body of your "
                                    "request.",
                                    NULL, NULL);
        }
        model = json_string_value(json_object_get(root, "model"));
        msgs = json_object_get(root, "messages");
        tok = json_object_get(root, "max_tokens");
        field = "max_tokens";
        if (!tok) {
                tok = json_object_get(root, "max_completion_tokens");
                field = "max_completion_tokens";
        }
        cap = json_integer_value(tok);
        for (size_t i = 0; i < json_array_size(msgs); i++) {
                json_t *e = json_array_get(msgs, i);
                if (!strcmp(json_string_value(json_object_get(e, "role")) ?: "",
                            "user"))
                        user = json_string_value(json_object_get(e, "content"))
                                   ?: "";
        }
        if (!model || !json_array_size(msgs) || !*user ||
            !json_is_integer(tok) || cap < 1 ||
            !json_equal(json_object_get(root, "temperature"),
                        json_integer(0))) {
                json_decref(root);
                return openai_error(conn, 400, "invalid_request_error", NULL,
                                    "model, messages, temperature 0 and "
                                    "max_tokens are required",
                                    NULL, NULL);
        }
        (void)field;
        if (strcmp(model, s->model)) {
                char msg[300];
                snprintf(msg, sizeof(msg),
                         "model \"%.200s\" not found, try pulling it first",
                         model);
                json_decref(root);
                return openai_error(conn, 404, "api_error", NULL, msg, NULL,
                                    NULL);
        }
        if ((m = strstr(user, "[[llm:"))) {
                const char *end = strstr(m, "]]");
                if (end && end - m - 6 < (long)sizeof(scenario))
                        snprintf(scenario, sizeof(scenario), "%.*s",
                                 (int)(end - m - 6), m + 6);
        }
        pthread_mutex_lock(&s->lock);
        if (s->forced[0])
                snprintf(scenario, sizeof(scenario), "%s", s->forced);
        {
                /* A job's calls share the data block's delimiter (from
                 * its id and sources). */
                const char *r = strstr(user, "\n<<<DATA "), *end;
                if (r && (end = strstr(r, ">>>")))
                        snprintf(first, sizeof(first), "%.*s",
                                 (int)(end - r - 1), r + 1);
        }
        calls_before = first[0] ? count_of(s, first) - 1 : 0;
        pthread_mutex_unlock(&s->lock);
        {
                char *copy = strdup(user);
                enum MHD_Result ret;

                json_decref(root);
                if (!copy)
                        return MHD_NO;
                ret = reply_for(s, conn, scenario, copy, cap, calls_before);
                free(copy);
                return ret;
        }
}

static enum MHD_Result reply_for(dq_test_llm_t *s, struct MHD_Connection *conn,
                                 const char *scenario, const char *user,
                                 int64_t cap, int64_t calls_before)
{
        if (!strncmp(scenario, "retry_after:", 12))
                return openai_error(conn, 429, "requests",
                                    "rate_limit_exceeded",
                                    "Rate limit reached for requests",
                                    "Retry-After", scenario + 12);
        if (!strncmp(scenario, "retry_after_ms:", 15))
                return openai_error(conn, 429, "requests",
                                    "rate_limit_exceeded",
                                    "Rate limit reached for requests",
                                    "retry-after-ms", scenario + 15);
        if (!strcmp(scenario, "quota"))
                return openai_error(conn, 429, "insufficient_quota",
                                    "insufficient_quota",
                                    "You exceeded your current quota, please "
                                    "check your plan and billing details.",
                                    NULL, NULL);
        if (!strcmp(scenario, "unauthorized"))
                return openai_error(conn, 401, "invalid_request_error",
                                    "invalid_api_key",
                                    "Incorrect API key provided.", NULL, NULL);
        if (!strcmp(scenario, "forbidden"))
                return openai_error(conn, 403, "invalid_request_error",
                                    "unsupported_country_region_territory",
                                    "Country, region, or territory not "
                                    "supported",
                                    NULL, NULL);
        if (!strcmp(scenario, "server_error"))
                return openai_error(conn, 500, "server_error", NULL,
                                    "The server had an error while processing "
                                    "your request. Sorry about that!",
                                    NULL, NULL);
        if (!strcmp(scenario, "unavailable"))
                return send_reply(conn, 503,
                                  "{\"object\":\"error\",\"message\":\"The "
                                  "engine is overloaded\",\"type\":"
                                  "\"ServiceUnavailableError\",\"param\":"
                                  "null,\"code\":503}",
                                  NULL, NULL);
        if (!strcmp(scenario, "context_openai"))
                return openai_error(
                    conn, 400, "invalid_request_error",
                    "context_length_exceeded",
                    "This model's maximum context length is 128000 tokens. "
                    "However, your messages resulted in 130412 tokens.",
                    NULL, NULL);
        if (!strcmp(scenario, "context_vllm"))
                return send_reply(
                    conn, 400,
                    "{\"object\":\"error\",\"message\":\"This model's maximum "
                    "context length is 4096 tokens. However, you requested "
                    "5120 tokens (4608 in the messages, 512 in the "
                    "completion).\",\"type\":\"BadRequestError\",\"param\":"
                    "null,\"code\":400}",
                    NULL, NULL);
        if (!strcmp(scenario, "context_llamacpp"))
                return send_reply(
                    conn, 400,
                    "{\"error\":{\"code\":400,\"message\":\"the request "
                    "exceeds the available context size, try increasing it\","
                    "\"type\":\"exceed_context_size_error\",\"n_prompt_"
                    "tokens\":"
                    "5000,\"n_ctx\":4096}}",
                    NULL, NULL);
        if (!strcmp(scenario, "model_not_found"))
                return openai_error(conn, 404, "api_error", NULL,
                                    "model \"llama9\" not found, try pulling "
                                    "it first",
                                    NULL, NULL);
        if (!strcmp(scenario, "malformed"))
                return send_reply(conn, 200, "{\"choices\": [ {\"mess", NULL,
                                  NULL);
        if (!strcmp(scenario, "hang")) {
                while (!s->stopping)
                        sleep_ms(50);
                return MHD_NO;
        }
        if (!strcmp(scenario, "reset"))
                return MHD_NO;
        if (!strncmp(scenario, "slow:", 5))
                sleep_ms(atol(scenario + 5));
        if (!strncmp(scenario, "fail_until:", 11) &&
            calls_before < atoll(scenario + 11))
                return openai_error(conn, 503, "server_error", NULL,
                                    "The server is overloaded", NULL, NULL);
        return success(s, conn, user, cap, scenario);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **state)
{
        dq_test_llm_t *s = cls;
        req_t *r = *state;
        enum MHD_Result ret;

        (void)version;
        if (!r) {
                if (!(r = calloc(1, sizeof(*r))))
                        return MHD_NO;
                *state = r;
                return MHD_YES;
        }
        if (*upload_size) {
                if (r->len + *upload_size > BODY_MAX) {
                        r->too_big = true;
                } else {
                        char *b = realloc(r->body, r->len + *upload_size + 1);
                        if (!b)
                                return MHD_NO;
                        memcpy(b + r->len, upload, *upload_size);
                        r->len += *upload_size;
                        b[r->len] = '\0';
                        r->body = b;
                }
                *upload_size = 0;
                return MHD_YES;
        }
        if (strcmp(method, "POST") || strcmp(url, "/v1/chat/completions"))
                return openai_error(conn, 404, "invalid_request_error", NULL,
                                    "Unknown request URL", NULL, NULL);
        if (r->too_big || !r->body)
                return openai_error(conn, 400, "invalid_request_error", NULL,
                                    "request body missing or too large", NULL,
                                    NULL);
        pthread_mutex_lock(&s->lock);
        if (s->call_cnt == s->call_cap) {
                size_t cap = s->call_cap ? s->call_cap * 2 : 64;
                call_t *v = realloc(s->calls, cap * sizeof(*v));
                if (v) {
                        s->calls = v;
                        s->call_cap = cap;
                }
        }
        if (s->call_cnt < s->call_cap) {
                s->calls[s->call_cnt].at = wall_ms();
                s->calls[s->call_cnt].body = strdup(r->body);
                if (s->calls[s->call_cnt].body)
                        s->call_cnt++;
        }
        if (++s->running > s->peak)
                s->peak = s->running;
        pthread_mutex_unlock(&s->lock);
        if (s->delay_ms)
                sleep_ms(s->delay_ms);
        ret = answer(s, conn, r->body, r->len);
        pthread_mutex_lock(&s->lock);
        s->running--;
        pthread_mutex_unlock(&s->lock);
        return ret;
}

static void done(void *cls, struct MHD_Connection *conn, void **state,
                 enum MHD_RequestTerminationCode code)
{
        req_t *r = *state;

        (void)cls, (void)conn, (void)code;
        if (r) {
                free(r->body);
                free(r);
        }
        *state = NULL;
}

dq_test_llm_t *dq_test_llm_start(const dq_test_llm_opts_t *opts)
{
        dq_test_llm_t *s = calloc(1, sizeof(*s));
        const union MHD_DaemonInfo *info;

        if (!s)
                return NULL;
        s->model = strdup(opts->model ? opts->model : "test-model");
        s->api_key = opts->api_key ? strdup(opts->api_key) : NULL;
        s->delay_ms = opts->delay_ms;
        pthread_mutex_init(&s->lock, NULL);
        s->d = MHD_start_daemon(
            MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD,
            (uint16_t)opts->port, NULL, NULL, handle, s,
            MHD_OPTION_NOTIFY_COMPLETED, done, s, MHD_OPTION_CONNECTION_LIMIT,
            (unsigned)4096, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
            MHD_OPTION_END);
        if (!s->d) {
                dq_test_llm_stop(s);
                return NULL;
        }
        info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
        s->port = info ? info->port : 0;
        snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%d/v1", s->port);
        return s;
}

int dq_test_llm_port(const dq_test_llm_t *s)
{
        return s->port;
}

const char *dq_test_llm_url(const dq_test_llm_t *s)
{
        return s->url;
}

void dq_test_llm_stop(dq_test_llm_t *s)
{
        if (!s)
                return;
        s->stopping = true;
        if (s->d)
                MHD_stop_daemon(s->d);
        for (size_t i = 0; i < s->call_cnt; i++)
                free(s->calls[i].body);
        free(s->calls);
        free(s->model);
        free(s->api_key);
        pthread_mutex_destroy(&s->lock);
        free(s);
}

void dq_test_llm_force(dq_test_llm_t *s, const char *scenario)
{
        pthread_mutex_lock(&s->lock);
        snprintf(s->forced, sizeof(s->forced), "%s", scenario ? scenario : "");
        pthread_mutex_unlock(&s->lock);
}

int64_t dq_test_llm_calls(dq_test_llm_t *s)
{
        int64_t n;
        pthread_mutex_lock(&s->lock);
        n = (int64_t)s->call_cnt;
        pthread_mutex_unlock(&s->lock);
        return n;
}

int64_t dq_test_llm_calls_of(dq_test_llm_t *s, const char *needle)
{
        int64_t n;
        pthread_mutex_lock(&s->lock);
        n = count_of(s, needle);
        pthread_mutex_unlock(&s->lock);
        return n;
}

int64_t dq_test_llm_peak(dq_test_llm_t *s)
{
        int64_t n;
        pthread_mutex_lock(&s->lock);
        n = s->peak;
        pthread_mutex_unlock(&s->lock);
        return n;
}

int64_t dq_test_llm_call_at(dq_test_llm_t *s, const char *needle, int k)
{
        int64_t at = 0;
        pthread_mutex_lock(&s->lock);
        for (size_t i = 0; i < s->call_cnt && !at; i++)
                if (strstr(s->calls[i].body, needle) && k-- == 0)
                        at = s->calls[i].at;
        pthread_mutex_unlock(&s->lock);
        return at;
}

char *dq_test_llm_last_body(dq_test_llm_t *s)
{
        char *b;
        pthread_mutex_lock(&s->lock);
        b = strdup(s->call_cnt ? s->calls[s->call_cnt - 1].body : "");
        pthread_mutex_unlock(&s->lock);
        return b;
}
