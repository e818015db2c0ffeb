/* decayctl attest keygen|sign|verify: operator keys and signed
 * attestations of llm_summary jobs (DESIGN.md G12). The private key stays
 * with the operator; consumers hold only allowed-signers lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "dq_attest.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

enum {
        OPT_OPERATOR = CTL_OPT__FIRST_OWN,
        OPT_OUT,
        OPT_KEY,
        OPT_MODEL,
        OPT_MAX_TOKENS,
        OPT_VALID_FOR,
        OPT_SIGNERS,
        OPT_NONCE,
};

typedef struct args_s {
        const char *operator_name, *out, *key, *model, *signers, *input;
        const char *nonce;
        int64_t max_tokens, valid_for_ms;
} args_t;

static int parse(ctl_t *ctl, int argc, char **argv, args_t *a)
{
        static const struct option longopts[] = {
            CTL_COMMON_LONGOPTS,
            {"operator", required_argument, NULL, OPT_OPERATOR},
            {"out", required_argument, NULL, OPT_OUT},
            {"key", required_argument, NULL, OPT_KEY},
            {"model", required_argument, NULL, OPT_MODEL},
            {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
            {"valid-for", required_argument, NULL, OPT_VALID_FOR},
            {"signers", required_argument, NULL, OPT_SIGNERS},
            {"nonce", required_argument, NULL, OPT_NONCE},
            {NULL, 0, NULL, 0},
        };
        int opt, rc;
        char *end;

        while ((opt = getopt_long(argc, argv, CTL_COMMON_SHORTOPTS, longopts,
                                  NULL)) != -1) {
                if ((rc = ctl_common(ctl, opt, optarg)) != -1) {
                        if (rc != CTL_GO_ON)
                                return rc;
                        continue;
                }
                switch (opt) {
                case OPT_OPERATOR:
                        a->operator_name = optarg;
                        break;
                case OPT_OUT:
                        a->out = optarg;
                        break;
                case OPT_KEY:
                        a->key = optarg;
                        break;
                case OPT_MODEL:
                        if (!*optarg || strlen(optarg) > DQ_JOB_MAX_TEXT)
                                return ctl_usage_error(ctl,
                                                       "--model: 1-%d bytes",
                                                       DQ_JOB_MAX_TEXT);
                        a->model = optarg;
                        break;
                case OPT_MAX_TOKENS:
                        errno = 0;
                        a->max_tokens = strtoll(optarg, &end, 10);
                        if (errno || *end || a->max_tokens < 1 ||
                            a->max_tokens > 1000000)
                                return ctl_usage_error(
                                    ctl,
                                    "--max-tokens: expected 1-1000000, got "
                                    "'%s'",
                                    dq_esc(optarg));
                        break;
                case OPT_VALID_FOR:
                        if (!dq_duration_parse(optarg, &a->valid_for_ms) ||
                            a->valid_for_ms < 1000)
                                return ctl_usage_error(
                                    ctl,
                                    "--valid-for: expected a duration of at "
                                    "least 1s, such as 12h, got '%s'",
                                    dq_esc(optarg));
                        break;
                case OPT_SIGNERS:
                        a->signers = optarg;
                        break;
                case OPT_NONCE:
                        if (strlen(optarg) != DQ_ATTEST_NONCE_LEN ||
                            strspn(optarg, "0123456789abcdef") !=
                                DQ_ATTEST_NONCE_LEN)
                                return ctl_usage_error(
                                    ctl,
                                    "--nonce: expected 32 lower-case hex "
                                    "digits, got '%s'",
                                    dq_esc(optarg));
                        a->nonce = optarg;
                        break;
                default:
                        return ctl_usage_error(ctl,
                                               "option '%s' does not apply "
                                               "here",
                                               argv[optind - 1]);
                }
        }
        if (optind < argc)
                a->input = argv[optind++];
        if ((rc = ctl_check_operands(ctl, argc, argv, 0)) != CTL_GO_ON)
                return rc;
        return ctl_load(ctl);
}

int ctl_attest_keygen(ctl_t *ctl, int argc, char **argv)
{
        args_t a = {0};
        dq_attest_key_t key;
        unsigned char pk[DQ_ATTEST_PK_LEN];
        char line[512], err[512];
        int rc = parse(ctl, argc, argv, &a);

        if (rc != CTL_GO_ON)
                return rc;
        if (a.input)
                return ctl_usage_error(ctl, "unexpected operand '%s'",
                                       dq_esc(a.input));
        if (!a.operator_name || !a.out)
                return ctl_usage_error(ctl, "--operator and --out are needed");
        if (!dq_attest_keygen(a.operator_name, &key, pk))
                return ctl_usage_error(ctl,
                                       "--operator: 1-255 bytes without white "
                                       "space or control characters, got '%s'",
                                       dq_esc(a.operator_name));
        if (!dq_attest_key_save(&key, a.out, err, sizeof(err)) ||
            !dq_attest_signers_line(&key, line, sizeof(line))) {
                memset(&key, 0, sizeof(key));
                fprintf(stderr, "error: %s\n", dq_esc(err));
                return CTL_EXIT_UNAVAILABLE;
        }
        memset(&key, 0, sizeof(key));
        if (ctl->json) {
                ctl_json_print(json_pack("{s:s, s:s}", "key_file", a.out,
                                         "allowed_signers_line", line));
        } else {
                printf("%s\n", line);
                fprintf(stderr,
                        "attest keygen: private key written to %s (mode "
                        "0600); add the line above to the consumers' "
                        "llm.allowed_signers file\n",
                        dq_esc(a.out));
        }
        return CTL_EXIT_OK;
}

/* Opens the NDJSON input: a file, or stdin when none or "-". */
static FILE *open_input(const char *path)
{
        if (!path || !strcmp(path, "-"))
                return stdin;
        return fopen(path, "re");
}

/* Reads one line; its length, or -1 at the end. A line past the size
 * limit is reported rather than cut. */
static ssize_t read_line(FILE *fp, char **line, size_t *cap)
{
        ssize_t n = getline(line, cap, fp);

        if (n > 0 && (*line)[n - 1] == '\n')
                (*line)[--n] = '\0';
        return n;
}

static void report(const ctl_t *ctl, long lineno, const char *id,
                   const char *code, const char *msg)
{
        if (ctl->json) {
                json_t *o = json_object();
                ctl_jset(o, "line", json_integer(lineno));
                ctl_jset(o, "job", ctl_jstr(id));
                ctl_jset(o, "ok", json_boolean(!code));
                ctl_jset(o, "code", code ? json_string(code) : json_null());
                ctl_jset(o, "message", ctl_jstr(msg));
                ctl_json_print(o);
                return;
        }
        printf("line %ld: job %s: %s%s%s\n", lineno, id ? dq_esc(id) : "-",
               code ? code : "ok", msg && *msg ? ": " : "",
               msg ? dq_esc(msg) : "");
}

int ctl_attest_sign(ctl_t *ctl, int argc, char **argv)
{
        args_t a = {.max_tokens = 512, .valid_for_ms = 12 * 3600 * 1000LL};
        dq_attest_key_t key;
        char err[512], *line = NULL;
        size_t cap = 0;
        long lineno = 0, signed_cnt = 0, rejected = 0;
        ssize_t n;
        FILE *in;
        int rc = parse(ctl, argc, argv, &a);

        if (rc != CTL_GO_ON)
                return rc;
        if (!a.key || !a.model)
                return ctl_usage_error(ctl, "--key and --model are needed");
        if (!dq_attest_key_load(&key, a.key, err, sizeof(err))) {
                fprintf(stderr, "error: %s\n", dq_esc(err));
                return CTL_EXIT_USAGE;
        }
        if (!(in = open_input(a.input))) {
                memset(&key, 0, sizeof(key));
                fprintf(stderr, "error: %s: %s\n", dq_esc(a.input),
                        strerror(errno));
                return CTL_EXIT_USAGE;
        }
        while ((n = read_line(in, &line, &cap)) >= 0) {
                dq_reject_t rej;
                dq_job_t *job;
                char *out;
                size_t len;
                int64_t now = dq_now_ms() / 1000 * 1000;

                lineno++;
                if (n == 0)
                        continue;
                job = dq_job_parse(line, (size_t)n, DQ_JOB_DEFAULT_MAX_BYTES,
                                   &rej);
                if (!job) {
                        fprintf(stderr, "line %ld: %s: %s\n", lineno, rej.code,
                                rej.message);
                        rejected++;
                        continue;
                }
                if (!dq_attest_sign_nonce(job, &key, a.model, a.max_tokens, now,
                                          now + a.valid_for_ms, a.nonce, err,
                                          sizeof(err)) ||
                    !(out = dq_job_serialize(job, &len))) {
                        fprintf(stderr,
                                "line %ld: decay.attest.cannot_sign: %s\n",
                                lineno, dq_esc(err));
                        dq_job_destroy(job);
                        rejected++;
                        continue;
                }
                fwrite(out, 1, len, stdout);
                fputc('\n', stdout);
                free(out);
                dq_job_destroy(job);
                signed_cnt++;
        }
        free(line);
        memset(&key, 0, sizeof(key));
        if (in != stdin)
                fclose(in);
        if (fflush(stdout) || ferror(stdout)) {
                fprintf(stderr, "error: cannot write the signed jobs\n");
                return CTL_EXIT_UNAVAILABLE;
        }
        fprintf(stderr, "attest sign: %ld signed, %ld rejected\n", signed_cnt,
                rejected);
        return rejected ? CTL_EXIT_INPUT : CTL_EXIT_OK;
}

int ctl_attest_verify(ctl_t *ctl, int argc, char **argv)
{
        args_t a = {0};
        dq_signers_t *signers;
        char err[512], msg[512], *line = NULL;
        size_t cap = 0;
        long lineno = 0, good = 0, bad = 0;
        ssize_t n;
        FILE *in;
        int rc = parse(ctl, argc, argv, &a);

        if (rc != CTL_GO_ON)
                return rc;
        if (!a.signers)
                return ctl_usage_error(ctl, "--signers is needed");
        if (!dq_attest_init() ||
            !(signers = dq_signers_load(a.signers, err, sizeof(err)))) {
                fprintf(stderr, "error: %s\n", dq_esc(err));
                return CTL_EXIT_USAGE;
        }
        if (!(in = open_input(a.input))) {
                dq_signers_destroy(signers);
                fprintf(stderr, "error: %s: %s\n", dq_esc(a.input),
                        strerror(errno));
                return CTL_EXIT_USAGE;
        }
        while ((n = read_line(in, &line, &cap)) >= 0) {
                dq_reject_t rej;
                dq_job_t *job;
                const char *code;

                lineno++;
                if (n == 0)
                        continue;
                job = dq_job_parse(line, (size_t)n, DQ_JOB_DEFAULT_MAX_BYTES,
                                   &rej);
                if (!job) {
                        report(ctl, lineno, NULL, rej.code, rej.message);
                        bad++;
                        continue;
                }
                if (job->method != DQ_METHOD_LLM_SUMMARY) {
                        report(ctl, lineno, job->id,
                               "decay.attest.not_llm_summary",
                               "only llm_summary jobs carry attestations");
                        dq_job_destroy(job);
                        bad++;
                        continue;
                }
                /* Without --model, the model check is the consumer's. */
                code = dq_attest_verify(
                    signers, job,
                    a.model ? a.model
                            : (job->attestation && job->attestation->model
                                   ? job->attestation->model
                                   : ""),
                    dq_now_ms(), msg, sizeof(msg));
                if (!code)
                        snprintf(msg, sizeof(msg), "key %s, operator %s",
                                 job->attestation->key_id,
                                 job->attestation->operator_name);
                report(ctl, lineno, job->id, code, msg);
                code ? bad++ : good++;
                dq_job_destroy(job);
        }
        free(line);
        dq_signers_destroy(signers);
        if (in != stdin)
                fclose(in);
        if (!ctl->json)
                fprintf(stderr, "attest verify: %ld valid, %ld refused\n", good,
                        bad);
        return bad ? CTL_EXIT_INPUT : CTL_EXIT_OK;
}
