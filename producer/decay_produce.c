/* decay-produce: validates decay jobs and publishes them to Kafka, from
 * NDJSON (stdin or a file) or as one job built from flags. */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq_cli.h"
#include "dq_log.h"
#include "dq_producer.h"
#include "dq_store.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

/* Stable exit codes; documented in --help. */
enum {
        EXIT_ALL_DELIVERED = 0,
        EXIT_REJECTED = 1,
        EXIT_USAGE = 2,
        EXIT_UNDELIVERED = 3,
        EXIT_INPUT = 4,
};

static const char usage[] =
    "usage: decay-produce [options] [--file FILE | -]\n"
    "       decay-produce [options] --kind KIND --scope SCOPE --source ID...\n"
    "\n"
    "Validates decay jobs and publishes them to the jobs topic, keyed by\n"
    "scope. Input is NDJSON, one job per line, from --file or stdin; or a\n"
    "single job built from flags. Every invalid line is reported with its\n"
    "line number and reason code, and never sent. decay-produce waits for\n"
    "every delivery report, up to --timeout, and names the jobs that were\n"
    "not delivered.\n"
    "\n"
    "Input:\n"
    "  -f, --file FILE         read NDJSON from FILE ('-': stdin, default)\n"
    "      --validate-only     check every line, send nothing\n"
    "\n"
    "One job from flags (id and timestamps generated when absent):\n"
    "      --kind KIND         candidate_compression, episode_compression or\n"
    "                          expired_principle_review\n"
    "      --scope SCOPE       memory store, e.g. tenant-42/agent-7\n"
    "      --source ID         a source id; repeat for more (1-1000)\n"
    "      --method M          deterministic_concatenate (default) or\n"
    "                          llm_summary\n"
    "      --scheduled-for TS  RFC 3339 UTC time before which it must not run\n"
    "      --id ULID           job id (default: a new ULID)\n"
    "      --idempotency-key K at most 255 bytes\n"
    "      --trace-id T\n"
    "      --created-by WHO    default: cli:$USER\n"
    "\n"
    "Configuration:\n"
    "  -c, --config FILE       properties file (see configs/)\n"
    "  -X KEY=VALUE            set a key, e.g. -X "
    "kafka.bootstrap.servers=h:9092\n"
    "  -t, --topic TOPIC       same as -X topic.jobs=TOPIC\n"
    "      --timeout DURATION  delivery wait, e.g. 30s (produce.timeout)\n"
    "      --dump-config       print the effective configuration, secrets\n"
    "                          masked, and exit\n"
    "  -q, --quiet             no progress line\n"
    "      --version           print the version and exit\n"
    "  -h, --help              this help\n"
    "DECAYQ_* environment variables override the file (DECAYQ_REDIS_PORT\n"
    "sets redis.port, DECAYQ_KAFKA_BOOTSTRAP_SERVERS sets\n"
    "kafka.bootstrap.servers); -X overrides both.\n"
    "\n"
    "Output (stderr):\n"
    "  error: line N: CODE: MESSAGE         a rejected line\n"
    "  error: not delivered: line N job ID: REASON\n"
    "  decay-produce: read=N sent=N delivered=N rejected=N failed=N\n"
    "\n"
    "Exit codes:\n"
    "  0  every job was valid and delivered\n"
    "  1  some lines were rejected; every valid job was delivered\n"
    "  2  usage or configuration error; nothing was sent\n"
    "  3  some jobs were not delivered (they are named)\n"
    "  4  the input could not be read\n";

typedef struct stats_s {
        long read, sent, delivered, rejected, failed;
        bool print_ids; /* a job from flags: its id on stdout once delivered */
} stats_t;

static void on_delivery(const dq_delivery_t *d, void *opaque)
{
        stats_t *st = opaque;
        if (d->err == DQ_OK) {
                st->delivered++;
                if (st->print_ids)
                        printf("%s\n", d->job_id);
                return;
        }
        st->failed++;
        fprintf(stderr, "error: not delivered: line %ld job %s: %s\n",
                (long)(intptr_t)d->msg_opaque, d->job_id, d->errstr);
}

static void progress(const stats_t *st, int64_t start, bool final)
{
        double secs = (double)(dq_mono_ms() - start) / 1000.0;
        fprintf(stderr,
                "decay-produce: read=%ld sent=%ld delivered=%ld rejected=%ld "
                "failed=%ld",
                st->read, st->sent, st->delivered, st->rejected, st->failed);
        if (!final && secs > 0)
                fprintf(stderr, " (%.0f lines/s)", (double)st->read / secs);
        fputc('\n', stderr);
}

/* Options for a single job built from flags. */
typedef struct flags_s {
        const char *kind, *scope, *method, *scheduled_for, *id, *idem, *trace,
            *created_by;
        char **sources;
        size_t source_cnt;
} flags_t;

static int build_job(const flags_t *f, dq_job_t **jobp)
{
        dq_job_t *job = dq_job_new();
        int k, m;
        char who[128];

        if (!job)
                return -1;
        *jobp = job;
        if (!f->scope || !f->kind || !f->source_cnt) {
                fprintf(stderr,
                        "error: a job from flags needs --kind, --scope and "
                        "at least one --source\n");
                return -1;
        }
        if ((k = dq_kind_parse(f->kind)) < 0) {
                fprintf(stderr, "error: unknown kind '%s'\n", dq_esc(f->kind));
                return -1;
        }
        job->kind = (dq_kind_t)k;
        m = dq_method_parse(f->method ? f->method
                                      : "deterministic_concatenate");
        if (m < 0) {
                fprintf(stderr, "error: unknown method '%s'\n",
                        dq_esc(f->method));
                return -1;
        }
        job->method = (dq_method_t)m;
        job->created_at_ms = dq_now_ms();
        if (f->id && strlen(f->id) != DQ_ULID_LEN) {
                fprintf(stderr,
                        "error: --id must be a %d-character ULID, not %zu "
                        "bytes\n",
                        DQ_ULID_LEN, strlen(f->id));
                return -1;
        }
        if (f->id)
                memcpy(job->id, f->id, DQ_ULID_LEN + 1);
        else
                dq_ulid_new(job->created_at_ms, job->id);
        if (f->scheduled_for &&
            !dq_time_parse_rfc3339(f->scheduled_for, strlen(f->scheduled_for),
                                   &job->scheduled_for_ms)) {
                fprintf(stderr,
                        "error: --scheduled-for '%s' is not RFC 3339 UTC\n",
                        dq_esc(f->scheduled_for));
                return -1;
        }
        snprintf(who, sizeof(who), "cli:%s",
                 getenv("USER") ? getenv("USER") : "unknown");
        job->scope = strdup(f->scope);
        job->created_by = strdup(f->created_by ? f->created_by : who);
        job->idempotency_key = f->idem ? strdup(f->idem) : NULL;
        job->trace_id = f->trace ? strdup(f->trace) : NULL;
        job->source_ids = calloc(f->source_cnt, sizeof(char *));
        if (!job->scope || !job->created_by || !job->source_ids)
                return -1;
        for (size_t i = 0; i < f->source_cnt; i++) {
                if (!(job->source_ids[i] = strdup(f->sources[i])))
                        return -1;
                job->source_cnt++;
        }
        return 0;
}

int main(int argc, char **argv)
{
        enum {
                OPT_VALIDATE = DQ_CLI_OPT__FIRST_OWN,
                OPT_KIND,
                OPT_SCOPE,
                OPT_SOURCE,
                OPT_METHOD,
                OPT_SCHEDULED,
                OPT_ID,
                OPT_IDEM,
                OPT_TRACE,
                OPT_CREATED_BY,
                OPT_TIMEOUT,
        };
        static const struct option longopts[] = {
            DQ_CLI_LONGOPTS,
            {"file", required_argument, NULL, 'f'},
            {"topic", required_argument, NULL, 't'},
            {"quiet", no_argument, NULL, 'q'},
            {"validate-only", no_argument, NULL, OPT_VALIDATE},
            {"kind", required_argument, NULL, OPT_KIND},
            {"scope", required_argument, NULL, OPT_SCOPE},
            {"source", required_argument, NULL, OPT_SOURCE},
            {"method", required_argument, NULL, OPT_METHOD},
            {"scheduled-for", required_argument, NULL, OPT_SCHEDULED},
            {"id", required_argument, NULL, OPT_ID},
            {"idempotency-key", required_argument, NULL, OPT_IDEM},
            {"trace-id", required_argument, NULL, OPT_TRACE},
            {"created-by", required_argument, NULL, OPT_CREATED_BY},
            {"timeout", required_argument, NULL, OPT_TIMEOUT},
            {NULL, 0, NULL, 0},
        };
        const char *file = NULL;
        int opt, rc = EXIT_ALL_DELIVERED;
        bool validate_only = false, quiet = false;
        flags_t f = {0};
        char errstr[512], topic_kv[512], timeout_kv[64];
        const dq_conf_t *conf;
        dq_cli_t cli;
        dq_producer_t *p = NULL;
        stats_t st = {0};
        FILE *in = NULL;
        int64_t start = dq_mono_ms(), last_progress = start;

        if (!dq_cli_init(&cli, "decay-produce", argc, EXIT_USAGE))
                return EXIT_USAGE;
        f.sources = calloc((size_t)argc, sizeof(char *));
        if (!f.sources) {
                fprintf(stderr, "error: out of memory\n");
                dq_cli_release(&cli);
                return EXIT_USAGE;
        }
        while ((opt = getopt_long(argc, argv, DQ_CLI_SHORTOPTS "f:t:q",
                                  longopts, NULL)) != -1) {
                if ((rc = dq_cli_option(&cli, opt, optarg)) == DQ_CLI_GO_ON)
                        continue;
                if (rc != DQ_CLI_NOT_MINE)
                        goto out;
                rc = EXIT_ALL_DELIVERED;
                switch (opt) {
                case 'f':
                        file = optarg;
                        break;
                case 't':
                        snprintf(topic_kv, sizeof(topic_kv), "topic.jobs=%s",
                                 optarg);
                        cli.overrides[cli.override_cnt++] = topic_kv;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case OPT_VALIDATE:
                        validate_only = true;
                        break;
                case OPT_KIND:
                        f.kind = optarg;
                        break;
                case OPT_SCOPE:
                        f.scope = optarg;
                        break;
                case OPT_SOURCE:
                        f.sources[f.source_cnt++] = optarg;
                        break;
                case OPT_METHOD:
                        f.method = optarg;
                        break;
                case OPT_SCHEDULED:
                        f.scheduled_for = optarg;
                        break;
                case OPT_ID:
                        f.id = optarg;
                        break;
                case OPT_IDEM:
                        f.idem = optarg;
                        break;
                case OPT_TRACE:
                        f.trace = optarg;
                        break;
                case OPT_CREATED_BY:
                        f.created_by = optarg;
                        break;
                case OPT_TIMEOUT:
                        snprintf(timeout_kv, sizeof(timeout_kv),
                                 "produce.timeout=%s", optarg);
                        cli.overrides[cli.override_cnt++] = timeout_kv;
                        break;
                default:
                        rc = dq_cli_usage_error(&cli, usage,
                                                "unknown option, or one "
                                                "missing its value: '%s'",
                                                argv[optind - 1]);
                        goto out;
                }
        }
        if (cli.help) {
                fputs(usage, stdout);
                fputs("\nConfiguration keys (default, meaning):\n", stdout);
                dq_conf_describe(stdout);
                rc = 0;
                goto out;
        }
        if (optind < argc) {
                if (optind == argc - 1 && !file && !strcmp(argv[optind], "-")) {
                        file = "-";
                } else {
                        rc = dq_cli_usage_error(&cli, usage,
                                                "unexpected argument '%s'",
                                                argv[optind]);
                        goto out;
                }
        }

        if ((rc = dq_cli_load(&cli, DQ_LOG_ERROR)) != DQ_CLI_GO_ON)
                goto out;
        rc = EXIT_ALL_DELIVERED;
        conf = cli.conf;

        if (!validate_only) {
                p = dq_producer_new(conf, on_delivery, &st, errstr,
                                    sizeof(errstr));
                if (!p) {
                        fprintf(stderr, "error: cannot create producer: %s\n",
                                dq_esc(errstr));
                        rc = EXIT_USAGE;
                        goto out;
                }
        }

        if (f.kind || f.scope || f.source_cnt) {
                /* One job from flags. */
                dq_job_t *job = NULL;
                dq_reject_t rej;
                if (file) {
                        fprintf(stderr, "error: --file and job flags "
                                        "cannot be combined\n");
                        rc = EXIT_USAGE;
                } else if (build_job(&f, &job)) {
                        rc = EXIT_USAGE;
                } else if (!dq_job_validate(job, &rej) ||
                           !dq_job_check_schedule(job, dq_now_ms(),
                                                  conf->schedule_max_ahead_ms,
                                                  &rej)) {
                        fprintf(stderr, "error: %s: %s\n", rej.code,
                                dq_esc(rej.message));
                        rc = EXIT_USAGE;
                } else {
                        st.read = 1;
                        if (validate_only) {
                                printf("%s\n", job->id);
                        } else if (dq_producer_send_job(p, job, (void *)1, &rej,
                                                        errstr,
                                                        sizeof(errstr))) {
                                fprintf(stderr, "error: %s\n", dq_esc(errstr));
                                st.failed++;
                        } else {
                                st.sent++;
                                st.print_ids = true;
                        }
                }
                dq_job_destroy(job);
                if (rc == EXIT_USAGE)
                        goto done;
        } else {
                char *line = NULL;
                size_t cap = 0;
                ssize_t n;
                long lineno = 0;

                in = !file || !strcmp(file, "-") ? stdin : fopen(file, "r");
                if (!in) {
                        fprintf(stderr, "error: cannot open '%s': %s\n", file,
                                strerror(errno));
                        rc = EXIT_INPUT;
                        goto done;
                }
                while ((n = getline(&line, &cap, in)) >= 0) {
                        dq_reject_t rej;
                        char job_id[DQ_ULID_LEN + 1];
                        dq_err_t err;

                        lineno++;
                        if (n > 0 && line[n - 1] == '\n')
                                line[--n] = '\0';
                        if (n > 0 && line[n - 1] == '\r')
                                line[--n] = '\0';
                        if (strspn(line, " \t") == (size_t)n)
                                continue; /* blank line: not a job */
                        st.read++;
                        if (validate_only) {
                                dq_job_t *job = dq_job_parse(
                                    line, (size_t)n,
                                    (size_t)conf->job_max_bytes, &rej);
                                /* The same checks as a real send. */
                                if (job &&
                                    !dq_job_check_schedule(
                                        job, dq_now_ms(),
                                        conf->schedule_max_ahead_ms, &rej)) {
                                        dq_job_destroy(job);
                                        job = NULL;
                                }
                                err = job ? DQ_OK : DQ_ERR_INVALID;
                                dq_job_destroy(job);
                        } else {
                                err = dq_producer_send(p, line, (size_t)n,
                                                       (void *)(intptr_t)lineno,
                                                       job_id, &rej, errstr,
                                                       sizeof(errstr));
                                dq_producer_poll(p, 0);
                        }
                        if (err == DQ_ERR_INVALID) {
                                st.rejected++;
                                fprintf(stderr, "error: line %ld: %s: %s\n",
                                        lineno, rej.code, dq_esc(rej.message));
                        } else if (err) {
                                st.failed++;
                                fprintf(stderr,
                                        "error: not delivered: line %ld "
                                        "job %s: %s\n",
                                        lineno, job_id, dq_esc(errstr));
                        } else if (!validate_only) {
                                st.sent++;
                        }
                        if (!quiet && dq_mono_ms() - last_progress >= 1000) {
                                last_progress = dq_mono_ms();
                                progress(&st, start, false);
                        }
                }
                if (ferror(in)) {
                        fprintf(stderr, "error: cannot read '%s': %s\n",
                                file ? file : "-", strerror(errno));
                        rc = EXIT_INPUT;
                }
                free(line);
        }

        if (p && dq_producer_flush(p, (int)conf->produce_timeout_ms)) {
                fprintf(stderr,
                        "error: delivery not confirmed within %lld ms\n",
                        (long long)conf->produce_timeout_ms);
        }

done:
        dq_producer_destroy(p);
        if (rc != EXIT_USAGE)
                progress(&st, start, true);
        if (rc == EXIT_ALL_DELIVERED) {
                if (st.failed || st.sent != st.delivered)
                        rc = EXIT_UNDELIVERED;
                else if (st.rejected)
                        rc = EXIT_REJECTED;
        }
out:
        if (in && in != stdin)
                fclose(in);
        dq_cli_release(&cli);
        free(f.sources);
        return rc;
}
