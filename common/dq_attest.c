/* Signed operator attestations; see dq_attest.h. */
#define _GNU_SOURCE
#include "dq_attest.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dq_time.h"
#include "banned.h"

#define KEY_MAGIC "decayq-ed25519-v1"

typedef struct signer_s {
        char *key_id;
        char *operator_name;
        unsigned char pk[DQ_ATTEST_PK_LEN];
        char **scopes; /* NULL: every scope */
        size_t scope_cnt;
        int64_t valid_after, valid_before; /* 0: unbounded */
} signer_t;

struct dq_signers_s {
        signer_t *v;
        size_t cnt;
};

bool dq_attest_init(void)
{
        return sodium_init() >= 0;
}

/* A growing byte buffer; ok goes false on out of memory. */
typedef struct buf_s {
        unsigned char *p;
        size_t len, cap;
        bool ok;
} buf_t;

static void put(buf_t *b, const void *s, size_t n)
{
        if (!b->ok)
                return;
        if (b->len + n > b->cap) {
                size_t cap = (b->len + n) * 2 + 64;
                unsigned char *p = realloc(b->p, cap);
                if (!p) {
                        b->ok = false;
                        return;
                }
                b->p = p;
                b->cap = cap;
        }
        memcpy(b->p + b->len, s, n);
        b->len += n;
}

/* One field of the pre-authentication encoding: LEN SP BYTES SP. */
static void field(buf_t *b, const char *s, size_t n)
{
        char len[24];
        int k = snprintf(len, sizeof(len), "%zu ", n);

        put(b, len, (size_t)k);
        put(b, s, n);
        put(b, " ", 1);
}

static void cstr(buf_t *b, const char *s)
{
        field(b, s, strlen(s));
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

unsigned char *dq_attest_message(const dq_job_t *job, size_t *lenp)
{
        const dq_attestation_t *a = job->attestation;
        buf_t b = {.ok = true}, ids = {.ok = true};
        char **sorted;
        char num[24];

        if (!a || a->v < 1 || !a->key_id)
                return NULL;
        sorted = malloc(job->source_cnt * sizeof(*sorted) + 1);
        if (!sorted)
                return NULL;
        memcpy(sorted, job->source_ids, job->source_cnt * sizeof(*sorted));
        qsort(sorted, job->source_cnt, sizeof(*sorted), cmp_str);
        for (size_t i = 0; i < job->source_cnt; i++) {
                if (i)
                        put(&ids, "\n", 1);
                put(&ids, sorted[i], strlen(sorted[i]));
        }
        free(sorted);
        put(&b, DQ_ATTEST_NAMESPACE " ", sizeof(DQ_ATTEST_NAMESPACE));
        cstr(&b, job->id);
        cstr(&b, job->scope);
        cstr(&b, dq_kind_name(job->kind));
        field(&b, ids.ok && ids.p ? (const char *)ids.p : "", ids.len);
        cstr(&b, a->model);
        snprintf(num, sizeof(num), "%lld", (long long)a->max_tokens);
        cstr(&b, num);
        cstr(&b, a->not_before);
        cstr(&b, a->expires_at);
        cstr(&b, a->nonce);
        cstr(&b, a->key_id);
        cstr(&b, a->operator_name);
        free(ids.p);
        if (!b.ok || !ids.ok) {
                free(b.p);
                return NULL;
        }
        *lenp = b.len;
        return b.p;
}

void dq_attest_key_id(const unsigned char pk[DQ_ATTEST_PK_LEN],
                      char out[DQ_ATTEST_KEY_ID + 1])
{
        unsigned char h[crypto_hash_sha256_BYTES];

        crypto_hash_sha256(h, pk, DQ_ATTEST_PK_LEN);
        sodium_bin2hex(out, DQ_ATTEST_KEY_ID + 1, h, DQ_ATTEST_KEY_ID / 2);
}

/* An operator name of a key: 1-255 bytes, printable, no white space (the
 * allowed-signers line is split on white space). */
static bool operator_ok(const char *s)
{
        size_t n = strlen(s);

        if (!n || n > 255)
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
                        return false;
        return true;
}

bool dq_attest_keygen(const char *operator_name, dq_attest_key_t *key,
                      unsigned char pk[DQ_ATTEST_PK_LEN])
{
        memset(key, 0, sizeof(*key));
        if (!operator_ok(operator_name) || !dq_attest_init())
                return false;
        crypto_sign_keypair(pk, key->sk);
        dq_attest_key_id(pk, key->key_id);
        snprintf(key->operator_name, sizeof(key->operator_name), "%s",
                 operator_name);
        return true;
}

bool dq_attest_key_from_seed(const char *operator_name,
                             const unsigned char seed[32], dq_attest_key_t *key,
                             unsigned char pk[DQ_ATTEST_PK_LEN])
{
        memset(key, 0, sizeof(*key));
        if (!operator_ok(operator_name) || !dq_attest_init())
                return false;
        crypto_sign_seed_keypair(pk, key->sk, seed);
        dq_attest_key_id(pk, key->key_id);
        snprintf(key->operator_name, sizeof(key->operator_name), "%s",
                 operator_name);
        return true;
}

bool dq_attest_key_save(const dq_attest_key_t *key, const char *path,
                        char *errstr, size_t errstr_size)
{
        char b64[sodium_base64_ENCODED_LEN(DQ_ATTEST_SK_LEN,
                                           sodium_base64_VARIANT_ORIGINAL)];
        FILE *fp;
        int fd, bad;

        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
                snprintf(errstr, errstr_size, "%s: %s", path,
                         errno == EEXIST ? "exists; a key is never replaced"
                                         : strerror(errno));
                return false;
        }
        fp = fdopen(fd, "w");
        if (!fp) {
                close(fd);
                snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
                return false;
        }
        sodium_bin2base64(b64, sizeof(b64), key->sk, DQ_ATTEST_SK_LEN,
                          sodium_base64_VARIANT_ORIGINAL);
        fprintf(fp,
                "# decayq attestation key of %s: keep it secret. Consumers "
                "need only\n# its allowed-signers line (decayctl attest "
                "keygen printed it).\n%s %s %s %s\n",
                key->operator_name, KEY_MAGIC, key->key_id, key->operator_name,
                b64);
        sodium_memzero(b64, sizeof(b64));
        bad = ferror(fp);
        if (fclose(fp) || bad) {
                snprintf(errstr, errstr_size, "%s: write failed", path);
                unlink(path);
                return false;
        }
        return true;
}

bool dq_attest_key_load(dq_attest_key_t *key, const char *path, char *errstr,
                        size_t errstr_size)
{
        char line[1024], magic[32], kid[65], op[256], b64[256];
        unsigned char pk[DQ_ATTEST_PK_LEN];
        char want[DQ_ATTEST_KEY_ID + 1];
        size_t n = 0;
        struct stat st;
        bool found = false;
        FILE *fp = fopen(path, "re");

        memset(key, 0, sizeof(*key));
        if (!fp) {
                snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
                return false;
        }
        if (fstat(fileno(fp), &st) == 0 && (st.st_mode & 077))
                fprintf(stderr,
                        "warning: %s is readable by others (mode %03o); "
                        "chmod 600 it\n",
                        path, (unsigned)(st.st_mode & 0777));
        while (!found && fgets(line, sizeof(line), fp)) {
                if (line[0] == '#' || line[0] == '\n')
                        continue;
                found = sscanf(line, "%31s %64s %255s %255s", magic, kid, op,
                               b64) == 4 &&
                        !strcmp(magic, KEY_MAGIC);
                if (!found)
                        break;
        }
        fclose(fp);
        sodium_memzero(line, sizeof(line));
        if (!found ||
            sodium_base642bin(key->sk, sizeof(key->sk), b64, strlen(b64), NULL,
                              &n, NULL, sodium_base64_VARIANT_ORIGINAL) ||
            n != DQ_ATTEST_SK_LEN) {
                sodium_memzero(b64, sizeof(b64));
                snprintf(errstr, errstr_size,
                         "%s: not a decayq attestation key (%s <key_id> "
                         "<operator> <base64 secret key>)",
                         path, KEY_MAGIC);
                return false;
        }
        sodium_memzero(b64, sizeof(b64));
        crypto_sign_ed25519_sk_to_pk(pk, key->sk);
        dq_attest_key_id(pk, want);
        if (strcmp(want, kid)) {
                snprintf(errstr, errstr_size,
                         "%s: key id %s is not the id of its key (%s)", path,
                         kid, want);
                sodium_memzero(key->sk, sizeof(key->sk));
                return false;
        }
        snprintf(key->key_id, sizeof(key->key_id), "%s", kid);
        snprintf(key->operator_name, sizeof(key->operator_name), "%s", op);
        return true;
}

bool dq_attest_signers_line(const dq_attest_key_t *key, char *buf, size_t size)
{
        unsigned char pk[DQ_ATTEST_PK_LEN];
        char b64[sodium_base64_ENCODED_LEN(DQ_ATTEST_PK_LEN,
                                           sodium_base64_VARIANT_ORIGINAL)];
        int n;

        crypto_sign_ed25519_sk_to_pk(pk, key->sk);
        sodium_bin2base64(b64, sizeof(b64), pk, sizeof(pk),
                          sodium_base64_VARIANT_ORIGINAL);
        n = snprintf(buf, size, "%s %s %s", key->key_id, key->operator_name,
                     b64);
        return n > 0 && (size_t)n < size;
}

static char *time_text(int64_t ms)
{
        char ts[40];
        return strdup(dq_time_format_rfc3339(ms, ts, sizeof(ts)));
}

bool dq_attest_sign(dq_job_t *job, const dq_attest_key_t *key,
                    const char *model, int64_t max_tokens,
                    int64_t not_before_ms, int64_t expires_at_ms, char *errstr,
                    size_t errstr_size)
{
        return dq_attest_sign_nonce(job, key, model, max_tokens, not_before_ms,
                                    expires_at_ms, NULL, errstr, errstr_size);
}

bool dq_attest_sign_nonce(dq_job_t *job, const dq_attest_key_t *key,
                          const char *model, int64_t max_tokens,
                          int64_t not_before_ms, int64_t expires_at_ms,
                          const char *given, char *errstr, size_t errstr_size)
{
        dq_attestation_t *a;
        unsigned char nonce[DQ_ATTEST_NONCE_LEN / 2];
        char nonce_hex[DQ_ATTEST_NONCE_LEN + 1];

        if (job->method != DQ_METHOD_LLM_SUMMARY) {
                snprintf(errstr, errstr_size,
                         "job %s is not an llm_summary job; only those take "
                         "an attestation",
                         job->id);
                return false;
        }
        if (!dq_attest_init() || !(a = calloc(1, sizeof(*a)))) {
                snprintf(errstr, errstr_size, "out of memory");
                return false;
        }
        if (given) {
                snprintf(nonce_hex, sizeof(nonce_hex), "%s", given);
        } else {
                randombytes_buf(nonce, sizeof(nonce));
                sodium_bin2hex(nonce_hex, sizeof(nonce_hex), nonce,
                               sizeof(nonce));
        }
        a->v = 1;
        a->max_tokens = max_tokens;
        a->not_before_ms = not_before_ms;
        a->expires_at_ms = expires_at_ms;
        a->key_id = strdup(key->key_id);
        a->operator_name = strdup(key->operator_name);
        a->model = strdup(model);
        a->not_before = time_text(not_before_ms);
        a->expires_at = time_text(expires_at_ms);
        a->nonce = strdup(nonce_hex);
        dq_attestation_destroy(job->attestation);
        job->attestation = a;
        if (!a->key_id || !a->operator_name || !a->model || !a->not_before ||
            !a->expires_at || !a->nonce || !dq_attest_seal(job, key)) {
                snprintf(errstr, errstr_size, "out of memory");
                return false;
        }
        return true;
}

bool dq_attest_seal(dq_job_t *job, const dq_attest_key_t *key)
{
        unsigned char sig[DQ_ATTEST_SIG_LEN], *m;
        char b64[sodium_base64_ENCODED_LEN(DQ_ATTEST_SIG_LEN,
                                           sodium_base64_VARIANT_ORIGINAL)];
        size_t mlen;

        if (!job->attestation || !(m = dq_attest_message(job, &mlen)))
                return false;
        crypto_sign_detached(sig, NULL, m, mlen, key->sk);
        free(m);
        sodium_bin2base64(b64, sizeof(b64), sig, sizeof(sig),
                          sodium_base64_VARIANT_ORIGINAL);
        free(job->attestation->sig);
        return (job->attestation->sig = strdup(b64)) != NULL;
}

/* ---- allowed signers ---------------------------------------------------- */

void dq_signers_destroy(dq_signers_t *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < s->cnt; i++) {
                free(s->v[i].key_id);
                free(s->v[i].operator_name);
                for (size_t j = 0; j < s->v[i].scope_cnt; j++)
                        free(s->v[i].scopes[j]);
                free(s->v[i].scopes);
        }
        free(s->v);
        free(s);
}

size_t dq_signers_count(const dq_signers_t *s)
{
        return s ? s->cnt : 0;
}

static bool parse_scopes(signer_t *k, const char *list)
{
        char *copy = strdup(list), *save = NULL, *tok;

        if (!copy)
                return false;
        for (tok = strtok_r(copy, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
                char **v = realloc(k->scopes, (k->scope_cnt + 1) * sizeof(*v));
                if (!v || !(v[k->scope_cnt] = strdup(tok))) {
                        if (v)
                                k->scopes = v;
                        free(copy);
                        return false;
                }
                k->scopes = v;
                k->scope_cnt++;
        }
        free(copy);
        return k->scope_cnt > 0;
}

/* Parses one line's words into k; NULL, or what is wrong with it. */
static const char *parse_line(char *line, signer_t *k)
{
        char *save = NULL, *kid, *op, *b64, *opt;
        char want[DQ_ATTEST_KEY_ID + 1];
        size_t n = 0;

        kid = strtok_r(line, " \t", &save);
        op = strtok_r(NULL, " \t", &save);
        b64 = strtok_r(NULL, " \t", &save);
        if (!kid || !op || !b64)
                return "want <key_id> <operator> <base64 public key> "
                       "[scopes=...] [valid_after=...] [valid_before=...]";
        if (sodium_base642bin(k->pk, sizeof(k->pk), b64, strlen(b64), NULL, &n,
                              NULL, sodium_base64_VARIANT_ORIGINAL) ||
            n != DQ_ATTEST_PK_LEN)
                return "the public key is not base64 of 32 bytes";
        dq_attest_key_id(k->pk, want);
        if (strcmp(kid, want))
                return "the key id is not the id of its public key";
        if (!(k->key_id = strdup(kid)) || !(k->operator_name = strdup(op)))
                return "out of memory";
        while ((opt = strtok_r(NULL, " \t", &save))) {
                if (!strncmp(opt, "scopes=", 7)) {
                        if (!parse_scopes(k, opt + 7))
                                return "scopes= wants comma-separated "
                                       "patterns";
                } else if (!strncmp(opt, "valid_after=", 12)) {
                        if (!dq_time_parse_rfc3339(opt + 12, strlen(opt + 12),
                                                   &k->valid_after))
                                return "valid_after= wants RFC 3339 UTC";
                } else if (!strncmp(opt, "valid_before=", 13)) {
                        if (!dq_time_parse_rfc3339(opt + 13, strlen(opt + 13),
                                                   &k->valid_before))
                                return "valid_before= wants RFC 3339 UTC";
                } else {
                        return "unknown option (scopes=, valid_after=, "
                               "valid_before=)";
                }
        }
        return NULL;
}

dq_signers_t *dq_signers_parse(const char *text, char *errstr,
                               size_t errstr_size)
{
        dq_signers_t *s = calloc(1, sizeof(*s));
        char *copy = strdup(text), *next;
        int lineno = 0;

        if (!s || !copy)
                goto oom;
        /* strtok_r skips empty lines: count them by hand. */
        for (char *p = copy; p; p = next) {
                char *nl = strchr(p, '\n');
                const char *why;
                signer_t *v;

                next = nl ? nl + 1 : NULL;
                if (nl)
                        *nl = '\0';
                lineno++;
                if (nl && nl > p && nl[-1] == '\r')
                        nl[-1] = '\0';
                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p || *p == '#')
                        continue;
                v = realloc(s->v, (s->cnt + 1) * sizeof(*v));
                if (!v)
                        goto oom;
                s->v = v;
                memset(&s->v[s->cnt], 0, sizeof(*v));
                why = parse_line(p, &s->v[s->cnt]);
                s->cnt++;
                if (why) {
                        snprintf(errstr, errstr_size, "line %d: %s", lineno,
                                 why);
                        goto err;
                }
                for (size_t i = 0; i + 1 < s->cnt; i++)
                        if (!strcmp(s->v[i].key_id, s->v[s->cnt - 1].key_id)) {
                                snprintf(errstr, errstr_size,
                                         "line %d: key id %s is listed twice",
                                         lineno, s->v[i].key_id);
                                goto err;
                        }
        }
        free(copy);
        return s;
oom:
        snprintf(errstr, errstr_size, "out of memory");
err:
        free(copy);
        dq_signers_destroy(s);
        return NULL;
}

dq_signers_t *dq_signers_load(const char *path, char *errstr,
                              size_t errstr_size)
{
        FILE *fp = fopen(path, "re");
        char *text = NULL, err[200];
        size_t cap = 0;
        ssize_t n;
        dq_signers_t *s;

        if (!fp) {
                snprintf(errstr, errstr_size, "%s: %s", path, strerror(errno));
                return NULL;
        }
        n = getdelim(&text, &cap, '\0', fp);
        fclose(fp);
        if (n < 0) {
                free(text);
                text = strdup("");
                if (!text) {
                        snprintf(errstr, errstr_size, "out of memory");
                        return NULL;
                }
        }
        s = dq_signers_parse(text, err, sizeof(err));
        free(text);
        if (!s)
                snprintf(errstr, errstr_size, "%s: %s", path, err);
        return s;
}

static const signer_t *find(const dq_signers_t *s, const char *key_id)
{
        for (size_t i = 0; s && i < s->cnt; i++)
                if (!strcmp(s->v[i].key_id, key_id))
                        return &s->v[i];
        return NULL;
}

static bool scope_allowed(const signer_t *k, const char *scope)
{
        if (!k->scopes)
                return true;
        for (size_t i = 0; i < k->scope_cnt; i++)
                if (fnmatch(k->scopes[i], scope, 0) == 0)
                        return true;
        return false;
}

#define FAIL(code, ...)                               \
        do {                                          \
                snprintf(msg, msg_size, __VA_ARGS__); \
                return code;                          \
        } while (0)

const char *dq_attest_verify(const dq_signers_t *signers, const dq_job_t *job,
                             const char *model, int64_t now_ms, char *msg,
                             size_t msg_size)
{
        const dq_attestation_t *a = job->attestation;
        const signer_t *k;
        unsigned char sig[DQ_ATTEST_SIG_LEN], *m;
        size_t n = 0, mlen;
        int bad;

        if (!a)
                FAIL("decay.llm_summary.requires_operator_attestation",
                     "llm_summary job %s carries no operator attestation",
                     job->id);
        if (a->v == 0)
                FAIL("decay.attest.unsigned",
                     "job %s carries an unsigned attestation (operator and "
                     "attested_at only); a signed one is required",
                     job->id);
        if (a->v != 1)
                FAIL("decay.attest.unsupported_version",
                     "job %s: attestation version %lld is not supported "
                     "(1 is)",
                     job->id, (long long)a->v);
        if (!a->sig)
                FAIL("decay.attest.unsigned",
                     "job %s: attestation of key %s has no signature", job->id,
                     a->key_id);
        if (!(k = find(signers, a->key_id)))
                FAIL("decay.attest.unknown_key",
                     "job %s: key %s is not in the allowed signers", job->id,
                     a->key_id);
        if (strcmp(k->operator_name, a->operator_name))
                FAIL("decay.attest.operator_mismatch",
                     "job %s: key %s belongs to another operator than the "
                     "attestation names",
                     job->id, a->key_id);
        if (sodium_base642bin(sig, sizeof(sig), a->sig, strlen(a->sig), NULL,
                              &n, NULL, sodium_base64_VARIANT_ORIGINAL) ||
            n != sizeof(sig))
                FAIL("decay.attest.bad_signature",
                     "job %s: signature of key %s (operator %s) is not base64 "
                     "of 64 bytes",
                     job->id, a->key_id, k->operator_name);
        if (!(m = dq_attest_message(job, &mlen)))
                FAIL("decay.attest.bad_signature", "out of memory");
        bad = crypto_sign_verify_detached(sig, m, mlen, k->pk);
        free(m);
        if (bad)
                FAIL("decay.attest.bad_signature",
                     "job %s: signature of key %s (operator %s) does not "
                     "verify over this job",
                     job->id, a->key_id, k->operator_name);
        if (k->valid_after && now_ms < k->valid_after)
                FAIL("decay.attest.key_not_yet_valid",
                     "job %s: key %s (operator %s) is not valid yet", job->id,
                     a->key_id, k->operator_name);
        if (k->valid_before && now_ms >= k->valid_before)
                FAIL("decay.attest.key_expired",
                     "job %s: key %s (operator %s) has expired", job->id,
                     a->key_id, k->operator_name);
        if (!scope_allowed(k, job->scope))
                FAIL("decay.attest.scope_not_allowed",
                     "job %s: key %s (operator %s) may not approve this "
                     "scope",
                     job->id, a->key_id, k->operator_name);
        if (now_ms < a->not_before_ms)
                FAIL("decay.attest.not_yet_valid",
                     "job %s: attestation of key %s is valid from %s", job->id,
                     a->key_id, a->not_before);
        if (now_ms >= a->expires_at_ms)
                FAIL("decay.attest.expired",
                     "job %s: attestation of key %s expired at %s", job->id,
                     a->key_id, a->expires_at);
        if (!model || strcmp(model, a->model))
                FAIL("decay.attest.model_mismatch",
                     "job %s: attestation of key %s approves another model "
                     "than the backend's",
                     job->id, a->key_id);
        return NULL;
}
