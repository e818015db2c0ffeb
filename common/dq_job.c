/* Strict schema-1 job parsing and serialization with jansson. */
#include "dq_job.h"

#include <ctype.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

static const char *dq_kind_names[DQ_KIND__CNT] = {
    "candidate_compression",
    "episode_compression",
    "expired_principle_review",
};

static const char *dq_method_names[DQ_METHOD__CNT] = {
    "deterministic_concatenate",
    "llm_summary",
};

const char *dq_kind_name(dq_kind_t kind)
{
        return (unsigned)kind < DQ_KIND__CNT ? dq_kind_names[kind] : "unknown";
}

int dq_kind_parse(const char *s)
{
        for (int i = 0; i < DQ_KIND__CNT; i++)
                if (!strcmp(s, dq_kind_names[i]))
                        return i;
        return -1;
}

const char *dq_method_name(dq_method_t method)
{
        return (unsigned)method < DQ_METHOD__CNT ? dq_method_names[method]
                                                 : "unknown";
}

int dq_method_parse(const char *s)
{
        for (int i = 0; i < DQ_METHOD__CNT; i++)
                if (!strcmp(s, dq_method_names[i]))
                        return i;
        return -1;
}

static bool reject(dq_reject_t *rej, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bool reject(dq_reject_t *rej, const char *code, const char *fmt, ...)
{
        va_list ap;
        rej->code = code;
        /* Running out of memory is the process's fault, not the
         * message's. */
        rej->err = strcmp(code, "decay.job.out_of_memory") ? DQ_ERR_INVALID
                                                           : DQ_ERR_INTERNAL;
        va_start(ap, fmt);
        vsnprintf(rej->message, sizeof(rej->message), fmt, ap);
        va_end(ap);
        return false;
}

dq_job_t *dq_job_new(void)
{
        return calloc(1, sizeof(dq_job_t));
}

void dq_job_destroy(dq_job_t *job)
{
        if (!job)
                return;
        for (size_t i = 0; i < job->source_cnt; i++)
                free(job->source_ids[i]);
        free(job->source_ids);
        free(job->scope);
        dq_attestation_destroy(job->attestation);
        free(job->created_by);
        free(job->idempotency_key);
        free(job->trace_id);
        free(job);
}

void dq_attestation_destroy(dq_attestation_t *att)
{
        if (!att)
                return;
        free(att->key_id);
        free(att->operator_name);
        free(att->model);
        free(att->not_before);
        free(att->expires_at);
        free(att->nonce);
        free(att->sig);
        free(att);
}

/* strdup of an optional string; false when out of memory. */
static bool copy_opt(char **dst, const char *src)
{
        *dst = src ? strdup(src) : NULL;
        return !src || *dst;
}

static dq_attestation_t *attestation_dup(const dq_attestation_t *a)
{
        dq_attestation_t *d = calloc(1, sizeof(*d));

        if (!d)
                return NULL;
        d->v = a->v;
        d->max_tokens = a->max_tokens;
        d->not_before_ms = a->not_before_ms;
        d->expires_at_ms = a->expires_at_ms;
        d->attested_at_ms = a->attested_at_ms;
        if (!copy_opt(&d->key_id, a->key_id) ||
            !copy_opt(&d->operator_name, a->operator_name) ||
            !copy_opt(&d->model, a->model) ||
            !copy_opt(&d->not_before, a->not_before) ||
            !copy_opt(&d->expires_at, a->expires_at) ||
            !copy_opt(&d->nonce, a->nonce) || !copy_opt(&d->sig, a->sig)) {
                dq_attestation_destroy(d);
                return NULL;
        }
        return d;
}

dq_job_t *dq_job_dup(const dq_job_t *job)
{
        dq_job_t *d = calloc(1, sizeof(*d));

        if (!d)
                return NULL;
        *d = *job;
        d->source_ids = NULL;
        d->source_cnt = 0;
        d->scope = d->created_by = NULL;
        d->attestation = NULL;
        d->idempotency_key = d->trace_id = NULL;
        if (!copy_opt(&d->scope, job->scope) ||
            (job->attestation &&
             !(d->attestation = attestation_dup(job->attestation))) ||
            !copy_opt(&d->created_by, job->created_by) ||
            !copy_opt(&d->idempotency_key, job->idempotency_key) ||
            !copy_opt(&d->trace_id, job->trace_id) ||
            !(d->source_ids =
                  calloc(job->source_cnt + 1, sizeof(*d->source_ids))))
                goto err;
        for (; d->source_cnt < job->source_cnt; d->source_cnt++)
                if (!(d->source_ids[d->source_cnt] =
                          strdup(job->source_ids[d->source_cnt])))
                        goto err;
        return d;
err:
        dq_job_destroy(d);
        return NULL;
}

/* Nesting depth of the JSON text, counted outside strings, so that a
 * hostile message cannot make the parser recurse deeply. */
static int json_depth(const char *buf, size_t len)
{
        int depth = 0, max = 0;
        bool in_str = false;

        for (size_t i = 0; i < len; i++) {
                char c = buf[i];
                if (in_str) {
                        if (c == '\\')
                                i++;
                        else if (c == '"')
                                in_str = false;
                } else if (c == '"') {
                        in_str = true;
                } else if (c == '{' || c == '[') {
                        if (++depth > max)
                                max = depth;
                } else if (c == '}' || c == ']') {
                        depth--;
                }
        }
        return max;
}

/* Identifiers used inside Redis keys (scope, source ids): printable, no
 * white space, no braces (they delimit the Redis Cluster hash tag). */
static bool ident_ok(const char *s, size_t len, size_t max)
{
        if (len == 0 || len > max)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c <= 0x20 || c == 0x7f || c == '{' || c == '}')
                        return false;
        }
        return true;
}

bool dq_job_scope_valid(const char *s)
{
        return s && dq_utf8_valid(s, strlen(s)) &&
               ident_ok(s, strlen(s), DQ_JOB_MAX_SCOPE);
}

bool dq_job_source_id_valid(const char *s)
{
        return s && dq_utf8_valid(s, strlen(s)) &&
               ident_ok(s, strlen(s), DQ_JOB_MAX_SOURCE_ID);
}

/* Free text: non-empty, bounded, no control characters. */
static bool text_ok(const char *s, size_t len, size_t max)
{
        if (len == 0 || len > max)
                return false;
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c < 0x20 || c == 0x7f)
                        return false;
        }
        return true;
}

static bool get_string(json_t *v, const char *field, const char **sp,
                       size_t *lenp, dq_reject_t *rej)
{
        if (!json_is_string(v))
                return reject(rej, "decay.job.wrong_type",
                              "field '%s' must be a string", field);
        *sp = json_string_value(v);
        *lenp = json_string_length(v);
        return true;
}

static bool get_time(json_t *v, const char *field, int64_t *msp,
                     dq_reject_t *rej)
{
        const char *s = NULL;
        size_t len = 0;
        if (!get_string(v, field, &s, &len, rej))
                return false;
        if (!dq_time_parse_rfc3339(s, len, msp))
                return reject(rej, "decay.job.invalid_timestamp",
                              "field '%s' is not an RFC 3339 UTC timestamp "
                              "(YYYY-MM-DDTHH:MM:SS[.fff]Z)",
                              field);
        return true;
}

/* A string field must be UTF-8 before anything else is judged: JSON cannot
 * carry anything else, and an encoder would drop the field. */
static bool utf8_ok(const char *v, const char *field, size_t index,
                    dq_reject_t *rej)
{
        if (!v || dq_utf8_valid(v, strlen(v)))
                return true;
        if (index != (size_t)-1)
                return reject(rej, "decay.job.invalid_utf8",
                              "field '%s[%zu]' is not valid UTF-8", field,
                              index);
        return reject(rej, "decay.job.invalid_utf8",
                      "field '%s' is not valid UTF-8", field);
}

static bool all_utf8(const dq_job_t *job, dq_reject_t *rej)
{
        const size_t one = (size_t)-1;

        if (!utf8_ok(job->scope, "scope", one, rej))
                return false;
        for (size_t i = 0; i < job->source_cnt; i++)
                if (!utf8_ok(job->source_ids[i], "source_ids", i, rej))
                        return false;
        if (job->attestation &&
            (!utf8_ok(job->attestation->operator_name,
                      "summary_method.operator_attestation.operator", one,
                      rej) ||
             !utf8_ok(job->attestation->model,
                      "summary_method.operator_attestation.model", one, rej)))
                return false;
        return utf8_ok(job->created_by, "created_by", one, rej) &&
               utf8_ok(job->idempotency_key, "idempotency_key", one, rej) &&
               utf8_ok(job->trace_id, "trace_id", one, rej);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

bool dq_job_validate(const dq_job_t *job, dq_reject_t *rej)
{
        char **sorted;

        if (strnlen(job->id, sizeof(job->id)) >= sizeof(job->id) ||
            !dq_ulid_valid(job->id, strlen(job->id)))
                return reject(rej, "decay.job.invalid_id",
                              "'id' must be a 26-character upper-case ULID");
        if ((unsigned)job->kind >= DQ_KIND__CNT)
                return reject(rej, "decay.job.unknown_kind", "unknown kind");
        if (!all_utf8(job, rej))
                return false;
        if (!job->scope ||
            !ident_ok(job->scope, strlen(job->scope), DQ_JOB_MAX_SCOPE))
                return reject(rej, "decay.job.invalid_scope",
                              "'scope' must be 1-%d bytes without white "
                              "space, control characters or braces",
                              DQ_JOB_MAX_SCOPE);
        if (job->source_cnt == 0)
                return reject(rej, "decay.job.no_sources",
                              "'source_ids' must hold at least one id");
        if (job->source_cnt > DQ_JOB_MAX_SOURCES)
                return reject(rej, "decay.job.too_many_sources",
                              "'source_ids' holds %zu ids, at most %d allowed",
                              job->source_cnt, DQ_JOB_MAX_SOURCES);
        for (size_t i = 0; i < job->source_cnt; i++)
                if (!ident_ok(job->source_ids[i], strlen(job->source_ids[i]),
                              DQ_JOB_MAX_SOURCE_ID))
                        return reject(rej, "decay.job.invalid_source_id",
                                      "source_ids[%zu] must be 1-%d bytes "
                                      "without white space, control "
                                      "characters or braces",
                                      i, DQ_JOB_MAX_SOURCE_ID);
        sorted = malloc(job->source_cnt * sizeof(*sorted));
        if (!sorted)
                return reject(rej, "decay.job.out_of_memory", "out of memory");
        memcpy(sorted, job->source_ids, job->source_cnt * sizeof(*sorted));
        qsort(sorted, job->source_cnt, sizeof(*sorted), cmp_str);
        for (size_t i = 1; i < job->source_cnt; i++) {
                if (!strcmp(sorted[i - 1], sorted[i])) {
                        reject(rej, "decay.job.duplicate_source",
                               "source id '%.64s' appears more than once",
                               sorted[i]);
                        free(sorted);
                        return false;
                }
        }
        free(sorted);
        if ((unsigned)job->method >= DQ_METHOD__CNT)
                return reject(rej, "decay.job.unknown_method",
                              "unknown summary method");
        if (job->method != DQ_METHOD_LLM_SUMMARY &&
            (job->attestation_required || job->attestation))
                return reject(rej, "decay.job.invalid_summary_method",
                              "operator attestation applies to llm_summary "
                              "only");
        if (job->created_at_ms <= 0)
                return reject(rej, "decay.job.invalid_timestamp",
                              "'created_at' is required");
        if (!job->created_by ||
            !text_ok(job->created_by, strlen(job->created_by), DQ_JOB_MAX_TEXT))
                return reject(rej, "decay.job.invalid_created_by",
                              "'created_by' must be 1-%d bytes without "
                              "control characters",
                              DQ_JOB_MAX_TEXT);
        if (job->idempotency_key) {
                size_t len = strlen(job->idempotency_key);
                if (len > DQ_JOB_MAX_IDEMPOTENCY_KEY)
                        return reject(rej, "decay.job.idempotency_key_too_long",
                                      "'idempotency_key' is %zu bytes, at "
                                      "most %d allowed",
                                      len, DQ_JOB_MAX_IDEMPOTENCY_KEY);
                if (!text_ok(job->idempotency_key, len,
                             DQ_JOB_MAX_IDEMPOTENCY_KEY))
                        return reject(rej, "decay.job.invalid_idempotency_key",
                                      "'idempotency_key' must be non-empty "
                                      "without control characters");
        }
        if (job->trace_id &&
            !text_ok(job->trace_id, strlen(job->trace_id), DQ_JOB_MAX_TEXT))
                return reject(rej, "decay.job.invalid_trace_id",
                              "'trace_id' must be 1-%d bytes without control "
                              "characters",
                              DQ_JOB_MAX_TEXT);
        return true;
}

bool dq_job_check_schedule(const dq_job_t *job, int64_t now_ms,
                           int64_t max_ahead_ms, dq_reject_t *rej)
{
        char ts[32];

        if (job->scheduled_for_ms <= now_ms + max_ahead_ms)
                return true;
        return reject(
            rej, "decay.job.scheduled_too_far",
            "'scheduled_for' %s is more than schedule.max.ahead "
            "(%lld days) ahead",
            dq_time_format_rfc3339(job->scheduled_for_ms, ts, sizeof(ts)),
            (long long)(max_ahead_ms / 86400000));
}

/* Maps a jansson decoding error to a reason code. */
static const char *json_error_reason(const json_error_t *jerr)
{
        switch (json_error_code(jerr)) {
        case json_error_invalid_utf8:
                return "decay.job.invalid_utf8";
        case json_error_null_character:
        case json_error_null_byte_in_key:
                return "decay.job.nul_in_string";
        case json_error_duplicate_key:
                return "decay.job.duplicate_key";
        case json_error_stack_overflow:
                return "decay.job.too_deep";
        case json_error_out_of_memory:
                return "decay.job.out_of_memory";
        default:
                return "decay.job.malformed_json";
        }
}

static bool hex_ok(const char *s, size_t len)
{
        for (size_t i = 0; i < len; i++)
                if (!strchr("0123456789abcdef", s[i]) || !s[i])
                        return false;
        return true;
}

/* A key id: 1-64 bytes of letters, digits, '.', '_' and '-'. */
static bool key_id_ok(const char *s)
{
        size_t len = strlen(s);

        if (len == 0 || len > 64)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
                        return false;
        return true;
}

static bool invalid_attestation(dq_reject_t *rej, const char *why)
{
        return reject(rej, "decay.job.invalid_attestation",
                      "operator_attestation: %s", why);
}

/* The wave-1 form, {"operator", "attested_at"}: kept so that it is
 * refused as unsigned rather than as malformed. */
static bool parse_attestation_v0(json_t *v, dq_attestation_t *a,
                                 dq_reject_t *rej)
{
        const char *op, *at;

        if (json_unpack(v, "{s:s, s:s !}", "operator", &op, "attested_at",
                        &at) ||
            !text_ok(op, strlen(op), DQ_JOB_MAX_TEXT) ||
            !dq_time_parse_rfc3339(at, strlen(at), &a->attested_at_ms))
                return invalid_attestation(
                    rej, "must be {\"v\": 1, \"key_id\", \"operator\", "
                         "\"model\", \"max_tokens\", \"not_before\", "
                         "\"expires_at\", \"nonce\", \"sig\"}");
        if (!(a->operator_name = strdup(op)))
                return reject(rej, "decay.job.out_of_memory", "out of memory");
        return true;
}

static bool parse_attestation(json_t *v, dq_job_t *job, dq_reject_t *rej)
{
        dq_attestation_t *a = calloc(1, sizeof(*a));
        json_error_t jerr;
        const char *key_id, *op, *model, *nb, *exp, *nonce, *sig = NULL;
        json_int_t ver, max_tokens;

        if (!a)
                return reject(rej, "decay.job.out_of_memory", "out of memory");
        job->attestation = a;
        if (!json_is_object(v))
                return invalid_attestation(rej, "must be an object");
        if (!json_object_get(v, "v"))
                return parse_attestation_v0(v, a, rej);
        if (json_unpack_ex(v, &jerr, JSON_STRICT,
                           "{s:I, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s?s}", "v",
                           &ver, "key_id", &key_id, "operator", &op, "model",
                           &model, "max_tokens", &max_tokens, "not_before", &nb,
                           "expires_at", &exp, "nonce", &nonce, "sig", &sig))
                return invalid_attestation(rej, jerr.text);
        if (!key_id_ok(key_id))
                return invalid_attestation(
                    rej, "key_id must be 1-64 letters, digits, '.', '_' or "
                         "'-'");
        if (!text_ok(op, strlen(op), DQ_JOB_MAX_TEXT) ||
            !text_ok(model, strlen(model), DQ_JOB_MAX_TEXT))
                return invalid_attestation(
                    rej, "operator and model must be 1-255 bytes without "
                         "control characters");
        if (max_tokens < 1 || max_tokens > 1000000)
                return invalid_attestation(rej, "max_tokens must be 1-1000000");
        if (!dq_time_parse_rfc3339(nb, strlen(nb), &a->not_before_ms) ||
            !dq_time_parse_rfc3339(exp, strlen(exp), &a->expires_at_ms))
                return invalid_attestation(
                    rej, "not_before and expires_at must be RFC 3339 UTC");
        if (strlen(nonce) != DQ_ATTEST_NONCE_LEN ||
            !hex_ok(nonce, DQ_ATTEST_NONCE_LEN))
                return invalid_attestation(
                    rej, "nonce must be 32 lower-case hex digits");
        if (sig && (!*sig || strlen(sig) > 128))
                return invalid_attestation(rej, "sig must be 1-128 bytes");
        a->v = ver;
        a->max_tokens = max_tokens;
        if (!(a->key_id = strdup(key_id)) || !(a->operator_name = strdup(op)) ||
            !(a->model = strdup(model)) || !(a->not_before = strdup(nb)) ||
            !(a->expires_at = strdup(exp)) || !(a->nonce = strdup(nonce)) ||
            (sig && !(a->sig = strdup(sig))))
                return reject(rej, "decay.job.out_of_memory", "out of memory");
        return true;
}

static bool parse_method(json_t *v, dq_job_t *job, dq_reject_t *rej)
{
        json_error_t jerr;
        const char *type;
        int required = 0;
        json_t *att = NULL;
        int m;

        if (!json_is_object(v))
                return reject(rej, "decay.job.wrong_type",
                              "field 'summary_method' must be an object");
        if (json_unpack_ex(v, &jerr, JSON_STRICT, "{s:s, s?b, s?o}", "type",
                           &type, "operator_attestation_required", &required,
                           "operator_attestation", &att)) {
                switch (json_error_code(&jerr)) {
                case json_error_item_not_found:
                        return reject(rej, "decay.job.missing_field",
                                      "summary_method: %s", jerr.text);
                case json_error_end_of_input_expected:
                        return reject(rej, "decay.job.unknown_field",
                                      "summary_method: %s", jerr.text);
                default:
                        return reject(rej, "decay.job.wrong_type",
                                      "summary_method: %s", jerr.text);
                }
        }
        m = dq_method_parse(type);
        if (m < 0)
                return reject(rej, "decay.job.unknown_method",
                              "unknown summary_method.type '%.64s'", type);
        job->method = (dq_method_t)m;
        job->attestation_required = required;
        if (att)
                return parse_attestation(att, job, rej);
        return true;
}

static bool dup_opt(json_t *v, const char *field, char **dst, dq_reject_t *rej)
{
        const char *s = NULL;
        size_t len = 0;
        if (!v)
                return true;
        if (!get_string(v, field, &s, &len, rej))
                return false;
        *dst = strndup(s, len);
        if (!*dst)
                return reject(rej, "decay.job.out_of_memory", "out of memory");
        return true;
}

static bool parse_fields(json_t *root, dq_job_t *job, dq_reject_t *rej)
{
        json_error_t jerr;
        json_t *schema, *id, *kind, *scope, *sources, *method;
        json_t *sched = NULL, *created_at, *created_by, *idem = NULL,
               *trace = NULL;
        const char *s = NULL;
        size_t len = 0, i;
        int k;

        /* A message of another schema version is not ours to judge field
         * by field. */
        schema = json_object_get(root, "schema");
        if (!schema)
                return reject(rej, "decay.job.missing_field",
                              "field 'schema' is required");
        if (!json_is_integer(schema))
                return reject(rej, "decay.job.wrong_type",
                              "field 'schema' must be an integer");
        if (json_integer_value(schema) != DQ_JOB_SCHEMA)
                return reject(rej, "decay.job.unsupported_schema",
                              "schema %lld is not supported (expected %d)",
                              (long long)json_integer_value(schema),
                              DQ_JOB_SCHEMA);

        if (json_unpack_ex(root, &jerr, JSON_STRICT,
                           "{s:o, s:o, s:o, s:o, s:o, s:o, s?o, s:o, s:o, "
                           "s?o, s?o}",
                           "schema", &schema, "id", &id, "kind", &kind, "scope",
                           &scope, "source_ids", &sources, "summary_method",
                           &method, "scheduled_for", &sched, "created_at",
                           &created_at, "created_by", &created_by,
                           "idempotency_key", &idem, "trace_id", &trace)) {
                if (json_error_code(&jerr) == json_error_item_not_found)
                        return reject(rej, "decay.job.missing_field", "%s",
                                      jerr.text);
                return reject(rej, "decay.job.unknown_field", "%s", jerr.text);
        }

        if (!get_string(id, "id", &s, &len, rej))
                return false;
        if (!dq_ulid_valid(s, len))
                return reject(rej, "decay.job.invalid_id",
                              "'id' must be a 26-character upper-case ULID");
        memcpy(job->id, s, len + 1);

        if (!get_string(kind, "kind", &s, &len, rej))
                return false;
        if ((k = dq_kind_parse(s)) < 0)
                return reject(rej, "decay.job.unknown_kind",
                              "unknown kind '%.64s'", s);
        job->kind = (dq_kind_t)k;

        if (!dup_opt(scope, "scope", &job->scope, rej))
                return false;

        if (!json_is_array(sources))
                return reject(rej, "decay.job.wrong_type",
                              "field 'source_ids' must be an array");
        len = json_array_size(sources);
        if (len > DQ_JOB_MAX_SOURCES)
                return reject(rej, "decay.job.too_many_sources",
                              "'source_ids' holds %zu ids, at most %d allowed",
                              len, DQ_JOB_MAX_SOURCES);
        if (len) {
                job->source_ids = calloc(len, sizeof(char *));
                if (!job->source_ids)
                        return reject(rej, "decay.job.out_of_memory",
                                      "out of memory");
        }
        for (i = 0; i < len; i++) {
                json_t *e = json_array_get(sources, i);
                if (!json_is_string(e))
                        return reject(rej, "decay.job.wrong_type",
                                      "source_ids[%zu] must be a string", i);
                job->source_ids[i] =
                    strndup(json_string_value(e), json_string_length(e));
                if (!job->source_ids[i])
                        return reject(rej, "decay.job.out_of_memory",
                                      "out of memory");
                job->source_cnt++;
        }

        if (!parse_method(method, job, rej))
                return false;
        if (sched &&
            !get_time(sched, "scheduled_for", &job->scheduled_for_ms, rej))
                return false;
        if (!get_time(created_at, "created_at", &job->created_at_ms, rej))
                return false;
        if (!dup_opt(created_by, "created_by", &job->created_by, rej) ||
            !dup_opt(idem, "idempotency_key", &job->idempotency_key, rej) ||
            !dup_opt(trace, "trace_id", &job->trace_id, rej))
                return false;

        return dq_job_validate(job, rej);
}

dq_job_t *dq_job_parse(const char *buf, size_t len, size_t max_bytes,
                       dq_reject_t *rej)
{
        json_error_t jerr;
        json_t *root;
        dq_job_t *job;

        if (len > max_bytes) {
                reject(rej, "decay.job.too_large",
                       "message is %zu bytes, at most %zu allowed", len,
                       max_bytes);
                return NULL;
        }
        if (len == 0) {
                reject(rej, "decay.job.empty", "message is empty");
                return NULL;
        }
        if (json_depth(buf, len) > DQ_JOB_MAX_DEPTH) {
                reject(rej, "decay.job.too_deep", "JSON nesting deeper than %d",
                       DQ_JOB_MAX_DEPTH);
                return NULL;
        }
        root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
                          &jerr);
        if (!root) {
                reject(rej, json_error_reason(&jerr),
                       "invalid JSON at byte %d: %s", jerr.position, jerr.text);
                return NULL;
        }
        if (!json_is_object(root)) {
                json_decref(root);
                reject(rej, "decay.job.not_object",
                       "a job message must be a JSON object");
                return NULL;
        }
        job = dq_job_new();
        if (!job) {
                json_decref(root);
                reject(rej, "decay.job.out_of_memory", "out of memory");
                return NULL;
        }
        if (!parse_fields(root, job, rej)) {
                dq_job_destroy(job);
                job = NULL;
        }
        json_decref(root);
        return job;
}

/* Sets key to v, which it steals; false when v is NULL (a value that
 * could not be encoded) or the set failed. */
static bool put(json_t *o, const char *key, json_t *v)
{
        return v && json_object_set_new(o, key, v) == 0;
}

static bool put_time(json_t *o, const char *key, int64_t ms)
{
        char ts[32];
        return put(o, key,
                   json_string(dq_time_format_rfc3339(ms, ts, sizeof(ts))));
}

static json_t *attestation_json(const dq_attestation_t *a)
{
        json_t *o = json_object();

        if (!o)
                return NULL;
        if (a->v == 0) {
                if (!put(o, "operator", json_string(a->operator_name)) ||
                    !put_time(o, "attested_at", a->attested_at_ms))
                        goto err;
                return o;
        }
        if (!put(o, "v", json_integer(a->v)) ||
            !put(o, "key_id", json_string(a->key_id)) ||
            !put(o, "operator", json_string(a->operator_name)) ||
            !put(o, "model", json_string(a->model)) ||
            !put(o, "max_tokens", json_integer(a->max_tokens)) ||
            !put(o, "not_before", json_string(a->not_before)) ||
            !put(o, "expires_at", json_string(a->expires_at)) ||
            !put(o, "nonce", json_string(a->nonce)) ||
            (a->sig && !put(o, "sig", json_string(a->sig))))
                goto err;
        return o;
err:
        json_decref(o);
        return NULL;
}

static json_t *method_json(const dq_job_t *job)
{
        json_t *method = json_object(), *att;

        if (!method ||
            !put(method, "type", json_string(dq_method_name(job->method))))
                goto err;
        if (job->method != DQ_METHOD_LLM_SUMMARY)
                return method;
        if (job->attestation_required &&
            !put(method, "operator_attestation_required", json_true()))
                goto err;
        if (job->attestation) {
                att = attestation_json(job->attestation);
                if (!put(method, "operator_attestation", att))
                        goto err;
        }
        return method;
err:
        json_decref(method);
        return NULL;
}

char *dq_job_serialize(const dq_job_t *job, size_t *lenp)
{
        json_t *root = json_object(), *sources;
        char *out = NULL;

        if (!root)
                return NULL;

        /* Every set and append is checked: a value that cannot be encoded
         * fails the whole job rather than vanish from it. */
        if (!put(root, "schema", json_integer(DQ_JOB_SCHEMA)) ||
            !put(root, "id", json_string(job->id)) ||
            !put(root, "kind", json_string(dq_kind_name(job->kind))) ||
            !put(root, "scope", json_string(job->scope)))
                goto out;
        /* sources is owned by root from here on, also when the set fails;
         * the appends below borrow it. */
        sources = json_array();
        if (!put(root, "source_ids", sources))
                goto out;
        for (size_t i = 0; i < job->source_cnt; i++)
                if (json_array_append_new(sources,
                                          json_string(job->source_ids[i])))
                        goto out;
        if (!put(root, "summary_method", method_json(job)))
                goto out;
        if (job->scheduled_for_ms &&
            !put_time(root, "scheduled_for", job->scheduled_for_ms))
                goto out;
        if (!put_time(root, "created_at", job->created_at_ms) ||
            !put(root, "created_by", json_string(job->created_by)))
                goto out;
        if (job->idempotency_key &&
            !put(root, "idempotency_key", json_string(job->idempotency_key)))
                goto out;
        if (job->trace_id && !put(root, "trace_id", json_string(job->trace_id)))
                goto out;
        out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (out && lenp)
                *lenp = strlen(out);
out:
        json_decref(root);
        return out;
}
