/* Signed operator attestations (dq_attest): the published test vectors,
 * and every refusal, worst values first. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dq_attest.h"
#include "dq_test.h"
#include "dq_time.h"
#include "banned.h"

/* The README's test vectors: the key of seed 00 01 .. 1f, one job, the
 * bytes it signs and its signature (checked against a second Ed25519
 * implementation when they were made). */
#define VEC_PK      "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
#define VEC_KEY_ID  "56475aa75463474c"
#define VEC_SIGNERS VEC_KEY_ID " alice@ops " VEC_PK
#define VEC_ATT                                                              \
        "{\"v\":1,\"key_id\":\"" VEC_KEY_ID "\",\"operator\":\"alice@ops\"," \
        "\"model\":\"gpt-4o-mini\",\"max_tokens\":512,"                      \
        "\"not_before\":\"2026-12-01T10:00:00Z\","                           \
        "\"expires_at\":\"2026-12-01T22:00:00Z\","                           \
        "\"nonce\":\"000102030405060708090a0b0c0d0e0f\""
#define VEC_SIG                                                        \
        "23LBeREBM8hb5e9KvsQkefx1BojWNbMRAFUTjEEozlF0idVfNHUYDi4t27YM" \
        "mB/QOzQ1slRm13e1k38KTv1yBA=="
#define VEC_JOB_ID "01JD3Q6V2R8YB6K3ZKQ9T1M4XH"
#define VEC_JOB_HEAD                                                          \
        "{\"schema\":1,\"id\":\"01JD3Q6V2R8YB6K3ZKQ9T1M4XH\","                \
        "\"kind\":\"candidate_compression\",\"scope\":\"tenant-42/agent-7\"," \
        "\"source_ids\":[\"mem_02\",\"mem_01\"],"                             \
        "\"summary_method\":{\"type\":\"llm_summary\","                       \
        "\"operator_attestation\":"
#define VEC_JOB_END                                  \
        "},\"created_at\":\"2026-12-01T09:59:58Z\"," \
        "\"created_by\":\"service:ingest\"}"
#define VEC_JOB_TAIL "}" VEC_JOB_END
#define VEC_JOB      VEC_JOB_HEAD VEC_ATT ",\"sig\":\"" VEC_SIG "\"" VEC_JOB_TAIL
#define VEC_BYTES                                                              \
        "decayq-attest-v1 26 01JD3Q6V2R8YB6K3ZKQ9T1M4XH 17 tenant-42/agent-7 " \
        "21 candidate_compression 13 mem_01\nmem_02 11 gpt-4o-mini 3 512 "     \
        "20 2026-12-01T10:00:00Z 20 2026-12-01T22:00:00Z "                     \
        "32 000102030405060708090a0b0c0d0e0f 16 56475aa75463474c "             \
        "9 alice@ops "

/* 2026-12-01T12:00:00Z: inside the vector's window. */
#define NOON 1796126400000LL

static dq_job_t *parse(const char *text)
{
        dq_reject_t rej;
        dq_job_t *job = dq_job_parse(text, strlen(text), 1 << 20, &rej);

        cr_assert(job, "%s: %s", rej.code, rej.message);
        return job;
}

static dq_signers_t *signers(const char *text)
{
        char err[256];
        dq_signers_t *s = dq_signers_parse(text, err, sizeof(err));

        cr_assert(s, "%s", err);
        return s;
}

static void vec_key(dq_attest_key_t *key)
{
        unsigned char seed[32], pk[DQ_ATTEST_PK_LEN];

        for (int i = 0; i < 32; i++)
                seed[i] = (unsigned char)i;
        cr_assert(dq_attest_key_from_seed("alice@ops", seed, key, pk));
}

/* What verify says of job text under the vector's signer at t. */
static const char *verdict(const char *job_text, const char *signers_text,
                           const char *model, int64_t t)
{
        dq_signers_t *s = signers(signers_text);
        dq_job_t *job = parse(job_text);
        char msg[512];
        const char *code = dq_attest_verify(s, job, model, t, msg, sizeof(msg));

        /* The message never carries the signature. */
        if (job->attestation && job->attestation->sig)
                cr_expect_null(strstr(msg, job->attestation->sig), "%s", msg);
        dq_job_destroy(job);
        dq_signers_destroy(s);
        return code;
}

Test(attest, the_published_vectors_hold)
{
        dq_attest_key_t key;
        char line[256];
        size_t n;
        dq_job_t *job = parse(VEC_JOB);
        unsigned char *m = dq_attest_message(job, &n);
        char *sig = strdup(job->attestation->sig), *out;

        vec_key(&key);
        cr_assert(dq_attest_signers_line(&key, line, sizeof(line)));
        cr_expect_str_eq(line, VEC_SIGNERS);
        cr_assert(m);
        cr_expect_eq(n, sizeof(VEC_BYTES) - 1);
        cr_expect_eq(memcmp(m, VEC_BYTES, n), 0, "signed bytes: %.*s", (int)n,
                     (char *)m);
        /* Ed25519 is deterministic: signing again gives the vector. */
        cr_assert(dq_attest_seal(job, &key));
        cr_expect_str_eq(job->attestation->sig, sig);
        cr_expect_str_eq(sig, VEC_SIG);
        /* The job serializes back to its own bytes. */
        out = dq_job_serialize(job, &n);
        cr_expect_str_eq(out, VEC_JOB);
        free(out);
        free(sig);
        free(m);
        dq_job_destroy(job);
        cr_expect_null(verdict(VEC_JOB, VEC_SIGNERS, "gpt-4o-mini", NOON));
}

/* The vector job with one part of its text replaced. */
static char *edit(const char *from, const char *to)
{
        const char *at = strstr(VEC_JOB, from);
        char *s;

        cr_assert(at, "%s", from);
        cr_assert(asprintf(&s, "%.*s%s%s", (int)(at - VEC_JOB), VEC_JOB, to,
                           at + strlen(from)) > 0);
        return s;
}

Test(attest, a_signature_moved_to_another_job_scope_or_sources_is_bad)
{
        static const char *const moved[][2] = {
            {"01JD3Q6V2R8YB6K3ZKQ9T1M4XH", "01JD3Q6V2R8YB6K3ZKQ9T1M4XJ"},
            {"tenant-42/agent-7", "tenant-42/agent-8"},
            {"\"mem_02\",\"mem_01\"", "\"mem_02\",\"mem_01\",\"mem_03\""},
            {"\"mem_02\",\"mem_01\"", "\"mem_02\""},
            {"candidate_compression", "episode_compression"},
            {"\"max_tokens\":512", "\"max_tokens\":4096"},
            {"2026-12-01T22:00:00Z", "2026-12-02T22:00:00Z"},
            {"0a0b0c0d0e0f\"", "0a0b0c0d0e0e\""},
            {"23LBeRE", "33LBeRE"},
            {VEC_SIG, "AAAA"},
        };

        for (size_t i = 0; i < sizeof(moved) / sizeof(*moved); i++) {
                char *job = edit(moved[i][0], moved[i][1]);
                const char *code =
                    verdict(job, VEC_SIGNERS, "gpt-4o-mini", NOON);
                cr_expect_str_eq(code ? code : "(valid)",
                                 "decay.attest.bad_signature", "case %zu", i);
                free(job);
        }
        /* The order of the source ids is not signed: they are sorted. */
        {
                char *job =
                    edit("\"mem_02\",\"mem_01\"", "\"mem_01\",\"mem_02\"");
                cr_expect_null(verdict(job, VEC_SIGNERS, "gpt-4o-mini", NOON));
                free(job);
        }
}

Test(attest, each_refusal_has_its_own_code)
{
        char *unsigned_v1 = edit(",\"sig\":\"" VEC_SIG "\"", "");
        char *v2 = edit("\"v\":1", "\"v\":2");
        char *bob = edit("\"operator\":\"alice@ops\"", "\"operator\":\"bob\"");
        static const char wave1[] =
            VEC_JOB_HEAD "{\"operator\":\"alice@ops\",\"attested_at\":"
                         "\"2026-12-01T10:00:00Z\"" VEC_JOB_TAIL;
        static const char none[] =
            "{\"schema\":1,\"id\":\"01JD3Q6V2R8YB6K3ZKQ9T1M4XH\","
            "\"kind\":\"candidate_compression\",\"scope\":\"s\","
            "\"source_ids\":[\"m\"],\"summary_method\":{\"type\":"
            "\"llm_summary\"},\"created_at\":\"2026-12-01T09:59:58Z\","
            "\"created_by\":\"x\"}";
        const struct {
                const char *job, *signers, *model;
                int64_t at;
                const char *code;
        } c[] = {
            {none, VEC_SIGNERS, "gpt-4o-mini", NOON,
             "decay.llm_summary.requires_operator_attestation"},
            {wave1, VEC_SIGNERS, "gpt-4o-mini", NOON, "decay.attest.unsigned"},
            {unsigned_v1, VEC_SIGNERS, "gpt-4o-mini", NOON,
             "decay.attest.unsigned"},
            {v2, VEC_SIGNERS, "gpt-4o-mini", NOON,
             "decay.attest.unsupported_version"},
            {VEC_JOB, "# nobody\n", "gpt-4o-mini", NOON,
             "decay.attest.unknown_key"},
            {bob, VEC_SIGNERS, "gpt-4o-mini", NOON,
             "decay.attest.operator_mismatch"},
            {VEC_JOB, VEC_SIGNERS, "gpt-4o-mini", NOON - 3 * 3600 * 1000LL,
             "decay.attest.not_yet_valid"},
            {VEC_JOB, VEC_SIGNERS, "gpt-4o-mini", NOON + 10 * 3600 * 1000LL,
             "decay.attest.expired"},
            {VEC_JOB, VEC_SIGNERS, "gpt-4o", NOON,
             "decay.attest.model_mismatch"},
            {VEC_JOB, VEC_SIGNERS, "", NOON, "decay.attest.model_mismatch"},
            {VEC_JOB, VEC_SIGNERS " scopes=tenant-41/*,other", "gpt-4o-mini",
             NOON, "decay.attest.scope_not_allowed"},
            {VEC_JOB, VEC_SIGNERS " scopes=tenant-41/*,tenant-42/*",
             "gpt-4o-mini", NOON, NULL},
            {VEC_JOB, VEC_SIGNERS " valid_after=2026-12-02T00:00:00Z",
             "gpt-4o-mini", NOON, "decay.attest.key_not_yet_valid"},
            {VEC_JOB, VEC_SIGNERS " valid_before=2026-12-01T11:00:00Z",
             "gpt-4o-mini", NOON, "decay.attest.key_expired"},
            {VEC_JOB,
             "# ops keys\n\n  " VEC_SIGNERS " valid_after=2026-11-01T00:00:00Z"
             " valid_before=2027-01-01T00:00:00Z\r\n",
             "gpt-4o-mini", NOON, NULL},
        };

        for (size_t i = 0; i < sizeof(c) / sizeof(*c); i++) {
                const char *code =
                    verdict(c[i].job, c[i].signers, c[i].model, c[i].at);
                cr_expect_str_eq(code ? code : "(valid)",
                                 c[i].code ? c[i].code : "(valid)", "case %zu",
                                 i);
        }
        free(unsigned_v1);
        free(v2);
        free(bob);
}

Test(attest, malformed_attestations_are_invalid_jobs)
{
        static const char *const bad[] = {
            "[]",
            "\"x\"",
            "{}",
            "{\"operator\":\"alice\"}",
            "{\"v\":1}",
            VEC_ATT ",\"extra\":1}",
            VEC_ATT ",\"sig\":\"\"}",
            VEC_ATT ",\"sig\":7}",
        };
        static const char *const fields[][2] = {
            {"\"max_tokens\":512", "\"max_tokens\":0"},
            {"\"max_tokens\":512", "\"max_tokens\":-1"},
            {"\"max_tokens\":512", "\"max_tokens\":\"512\""},
            {"\"max_tokens\":512", "\"max_tokens\":1000001"},
            {"0a0b0c0d0e0f\"", "0a0b0c0d0e0\""},
            {"0a0b0c0d0e0f\"", "0A0B0C0D0E0F\""},
            {"\"key_id\":\"" VEC_KEY_ID "\"", "\"key_id\":\"a b\""},
            {"\"key_id\":\"" VEC_KEY_ID "\"", "\"key_id\":\"\""},
            {"2026-12-01T10:00:00Z", "yesterday"},
            {"\"model\":\"gpt-4o-mini\"", "\"model\":\"gpt\\n4o\""},
            {"\"operator\":\"alice@ops\"", "\"operator\":\"\""},
        };
        dq_reject_t rej;

        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                char *text;
                cr_assert(asprintf(&text, "%s%s%s", VEC_JOB_HEAD, bad[i],
                                   VEC_JOB_END) > 0);
                cr_expect_null(dq_job_parse(text, strlen(text), 1 << 20, &rej),
                               "case %zu accepted", i);
                cr_expect_str_eq(rej.code, "decay.job.invalid_attestation",
                                 "case %zu: %s", i, rej.message);
                free(text);
        }
        for (size_t i = 0; i < sizeof(fields) / sizeof(*fields); i++) {
                char *text = edit(fields[i][0], fields[i][1]);
                cr_expect_null(dq_job_parse(text, strlen(text), 1 << 20, &rej),
                               "field case %zu accepted", i);
                cr_expect_str_eq(rej.code, "decay.job.invalid_attestation",
                                 "field case %zu: %s", i, rej.message);
                free(text);
        }
}

Test(attest, a_bad_allowed_signers_file_names_its_line)
{
        static const char *const bad[] = {
            "justonefield\n",
            VEC_KEY_ID " alice@ops notbase64!\n",
            "0000000000000000 alice@ops " VEC_PK "\n",
            VEC_SIGNERS " scopes=\n",
            VEC_SIGNERS " valid_after=tomorrow\n",
            VEC_SIGNERS " color=blue\n",
            VEC_SIGNERS "\n" VEC_SIGNERS "\n",
        };
        char err[256];

        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                char *text;
                cr_assert(asprintf(&text, "# keys\n\n%s", bad[i]) > 0);
                cr_expect_null(dq_signers_parse(text, err, sizeof(err)),
                               "case %zu accepted", i);
                cr_expect(!strncmp(err, "line 3: ", 8) ||
                              !strncmp(err, "line 4: ", 8),
                          "case %zu: %s", i, err);
                free(text);
        }
}

Test(attest, keys_round_trip_through_a_private_file)
{
        char dir[] = "/tmp/decayq-attest-XXXXXX", path[64], err[256];
        dq_attest_key_t key, back;
        unsigned char pk[DQ_ATTEST_PK_LEN];
        struct stat st;
        dq_job_t *job = parse(VEC_JOB);
        char line[256];
        dq_signers_t *s;

        cr_assert(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/ops.key", dir);
        cr_assert_not(dq_attest_keygen("has space", &key, pk));
        cr_assert(dq_attest_keygen("alice@ops", &key, pk));
        cr_assert(dq_attest_key_save(&key, path, err, sizeof(err)), "%s", err);
        cr_assert_eq(stat(path, &st), 0);
        cr_expect_eq(st.st_mode & 0777, 0600);
        /* A key is never replaced. */
        cr_expect_not(dq_attest_key_save(&key, path, err, sizeof(err)));
        cr_assert(dq_attest_key_load(&back, path, err, sizeof(err)), "%s", err);
        cr_expect_str_eq(back.key_id, key.key_id);
        cr_expect_eq(memcmp(back.sk, key.sk, sizeof(key.sk)), 0);
        /* Signed now with it: valid for its model, under its line. */
        cr_assert(dq_attest_sign(job, &back, "m-1", 64, NOON, NOON + 60000, err,
                                 sizeof(err)),
                  "%s", err);
        cr_assert(dq_attest_signers_line(&back, line, sizeof(line)));
        s = signers(line);
        cr_expect_null(
            dq_attest_verify(s, job, "m-1", NOON + 1, err, sizeof(err)), "%s",
            err);
        cr_expect_eq(strlen(job->attestation->nonce), DQ_ATTEST_NONCE_LEN);
        dq_signers_destroy(s);
        dq_job_destroy(job);
        unlink(path);
        rmdir(dir);
}

/* Runs decayctl with args in dir (a shell command line); its exit code. */
static int ctl(const char *dir, const char *args)
{
        char prog[512], *cmd;
        int rc;

        dq_test_program("ctl/decayctl", prog, sizeof(prog));
        cr_assert(asprintf(&cmd, "cd %s && %s %s", dir, prog, args) > 0);
        rc = system(cmd);
        free(cmd);
        return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static char *slurp_in(const char *dir, const char *name)
{
        char path[256];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return dq_test_slurp(path);
}

Test(attest, decayctl_attest_keygen_sign_and_verify)
{
        char dir[] = "/tmp/decayq-attest-cli-XXXXXX", path[256];
        char *out, *err, *line;
        struct stat st;
        FILE *fp;

        cr_assert(mkdtemp(dir));
        /* Worst values first. */
        cr_expect_eq(ctl(dir, "attest keygen --operator 'has space' --out k "
                              "2>err"),
                     2);
        cr_expect_eq(ctl(dir, "attest keygen --operator alice 2>err"), 2);
        cr_expect_eq(ctl(dir, "attest sign --key k --model m "
                              "--nonce XYZ </dev/null 2>err"),
                     2);
        cr_expect_eq(ctl(dir, "attest sign --key missing --model m "
                              "</dev/null 2>err"),
                     2);
        cr_assert_eq(ctl(dir, "attest keygen --operator alice@ops --out k "
                              ">signers 2>err"),
                     0);
        snprintf(path, sizeof(path), "%s/k", dir);
        cr_assert_eq(stat(path, &st), 0);
        cr_expect_eq(st.st_mode & 0777, 0600);
        line = slurp_in(dir, "signers");
        cr_expect(strstr(line, " alice@ops "), "%s", line);
        cr_expect_eq(strspn(line, "0123456789abcdef"), DQ_ATTEST_KEY_ID, "%s",
                     line);
        free(line);
        /* A key is never replaced. */
        cr_expect_eq(ctl(dir, "attest keygen --operator bob --out k 2>err"), 3);
        err = slurp_in(dir, "err");
        cr_expect(strstr(err, "never replaced"), "%s", err);
        free(err);

        snprintf(path, sizeof(path), "%s/jobs", dir);
        cr_assert((fp = fopen(path, "w")));
        fprintf(fp, "%s\n\n%s\nnot json\n",
                VEC_JOB_HEAD "{\"operator\":\"x\",\"attested_at\":"
                             "\"2026-12-01T10:00:00Z\"" VEC_JOB_TAIL,
                "{\"schema\":1,\"id\":\"01JD3Q6V2R8YB6K3ZKQ9T1M4XJ\","
                "\"kind\":\"candidate_compression\",\"scope\":\"s\","
                "\"source_ids\":[\"m\"],\"summary_method\":{\"type\":"
                "\"deterministic_concatenate\"},\"created_at\":"
                "\"2026-12-01T09:59:58Z\",\"created_by\":\"x\"}");
        fclose(fp);
        cr_expect_eq(ctl(dir, "attest sign --key k --model m-1 jobs "
                              ">signed 2>err"),
                     5);
        out = slurp_in(dir, "signed");
        err = slurp_in(dir, "err");
        cr_expect_eq(strchr(out, '\n') - out + 1, (long)strlen(out),
                     "one job signed: %s", out);
        cr_expect(strstr(out, "\"sig\":"), "%s", out);
        cr_expect(strstr(err, "line 3: decay.attest.cannot_sign"), "%s", err);
        cr_expect(strstr(err, "line 4: decay.job.malformed_json"), "%s", err);
        cr_expect(strstr(err, "1 signed, 2 rejected"), "%s", err);
        free(out);
        free(err);

        cr_expect_eq(ctl(dir, "attest verify --signers signers --model m-1 "
                              "signed >report 2>err"),
                     0);
        out = slurp_in(dir, "report");
        cr_expect(strstr(out, "line 1: job " VEC_JOB_ID ": ok"), "%s", out);
        free(out);
        cr_expect_eq(ctl(dir, "attest verify --signers signers --model m-2 "
                              "signed >report 2>err"),
                     5);
        out = slurp_in(dir, "report");
        cr_expect(strstr(out, "decay.attest.model_mismatch"), "%s", out);
        free(out);
        cr_expect_eq(ctl(dir, "attest verify --signers signers signed.moved "
                              ">report 2>err"),
                     2);
        snprintf(path, sizeof(path),
                 "cd %s && sed s/tenant-42/tenant-43/ "
                 "signed >signed.moved",
                 dir);
        cr_assert_eq(system(path), 0);
        cr_expect_eq(ctl(dir, "attest verify --signers signers signed.moved "
                              ">report 2>err"),
                     5);
        out = slurp_in(dir, "report");
        cr_expect(strstr(out, "decay.attest.bad_signature"), "%s", out);
        free(out);
        snprintf(path, sizeof(path), "rm -rf %s", dir);
        cr_assert_eq(system(path), 0);
}
