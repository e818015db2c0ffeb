/* decayctl: the operator's tool. git-style subcommands from one table:
 * `dlq list|inspect|stats|replay`, `job status|cancel`,
 * `memory load|get|reindex`, `plan status|run` and
 * `attest keygen|sign|verify`. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "dq_memory.h"
#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "dq_ulid.h"
#include "banned.h"

#define FILTER_HELP                                                          \
        "Filters (all must hold):\n"                                         \
        "      --since WHEN      dead-lettered at or after WHEN: RFC 3339 "  \
        "UTC\n"                                                              \
        "                        (2026-11-23T12:00:00Z) or a duration back " \
        "(90m, 7d)\n"                                                        \
        "      --until WHEN      dead-lettered before WHEN\n"                \
        "      --code CODE       reason code "                               \
        "(decay.compress.source_missing)\n"                                  \
        "      --class CLASS     retryable, fatal, crash_loop or timeout\n"  \
        "      --kind KIND       candidate_compression, "                    \
        "episode_compression,\n"                                             \
        "                        expired_principle_review\n"                 \
        "      --scope SCOPE     one memory store\n"                         \
        "      --job ID          one job\n"

static const ctl_cmd_t cmds[] = {
    {"attest", "keygen", ctl_attest_keygen, "make an operator's signing key",
     "--operator NAME --out FILE\n"
     "\n"
     "Writes a new Ed25519 private key to FILE (mode 0600; an existing file\n"
     "is never replaced) and prints its allowed-signers line on stdout:\n"
     "  <key_id> <operator> <base64 public key>\n"
     "Append it to the consumers' llm.allowed_signers file, optionally with\n"
     "scopes=PATTERN,... (fnmatch over the job's scope), valid_after=T and\n"
     "valid_before=T (RFC 3339 UTC). The key id is the first 8 bytes of the\n"
     "SHA-256 of the public key, in hex. Consumers hold only public keys.\n"},
    {"attest", "sign", ctl_attest_sign,
     "sign llm_summary jobs for decay-produce",
     "--key FILE --model MODEL [--max-tokens N] [--valid-for D]\n"
     "       [--nonce HEX] [FILE|-]\n"
     "\n"
     "Reads job NDJSON (FILE, or stdin), gives each llm_summary job a signed\n"
     "operator attestation and writes the jobs to stdout, ready for\n"
     "decay-produce. MODEL must be the consumers' llm.model; --max-tokens\n"
     "(default 512) caps the summary; the attestation is valid from now for\n"
     "--valid-for (default 12h). Each job gets a fresh nonce: a consumer\n"
     "runs one attestation once. --nonce (32 hex digits) sets it instead,\n"
     "for test vectors and drills: a second job signed with the same nonce\n"
     "is refused as decay.attest.replayed. Rejected lines are reported on\n"
     "stderr with their line number and reason code, and exit 5.\n"},
    {"attest", "verify", ctl_attest_verify,
     "check jobs' attestations against allowed signers",
     "--signers FILE [--model MODEL] [FILE|-]\n"
     "\n"
     "Checks each job of the NDJSON input as a consumer would before its\n"
     "backend call (all but the nonce, which is checked in Redis): key\n"
     "known, operator, signature, key validity, scopes, time window and,\n"
     "with --model, the model. Reports each line (\"line N: job ID: ok\" or\n"
     "its decay.attest.* code); exit 5 when any line is refused.\n"},
    {"dlq", "list", ctl_dlq_list, "list dead letters, oldest first",
     "[filters] [--limit N]\n"
     "\n" FILTER_HELP "      --limit N         show at most N records\n"
     "\n"
     "Prints time, partition:offset, scope, job, kind, error class and code,\n"
     "attempts and replays, one record a line (--json: one object a line).\n"
     "The records read are those present when the command started.\n"},
    {"dlq", "inspect", ctl_dlq_inspect,
     "show dead letters' headers and payload",
     "<JOB-ID | PARTITION:OFFSET>\n"
     "\n"
     "Shows every DLQ record of the job (a job can have more than one), or\n"
     "the one record at PARTITION:OFFSET: its headers and its original\n"
     "payload. Bytes that are not printable UTF-8 show as \\xNN (--json:\n"
     "payload_hex instead of payload).\n"},
    {"dlq", "stats", ctl_dlq_stats, "summarize the dead letters",
     "[filters]\n"
     "\n" FILTER_HELP "\n"
     "Prints counts by error code, class, kind and scope, the oldest and\n"
     "newest record, a histogram of age, and how many records are extra\n"
     "copies of one original message.\n"},
    {"dlq", "replay", ctl_dlq_replay,
     "republish dead letters to the jobs topic (dry run by default)",
     "[filters] [--limit N] [--execute] [--rate N/s] [--canary N]\n"
     "       [--max-replays N] [--group NAME]\n"
     "\n" FILTER_HELP
     "      --limit N         replay at most N records this run\n"
     "\n"
     "Replay:\n"
     "      --dry-run         show what would be replayed (the default)\n"
     "      --execute         replay\n"
     "      --rate N/s        at most N records a second (e.g. 50/s)\n"
     "      --canary N        replay N first, wait for them to settle, and\n"
     "                        stop (exit 4) if any failed again\n"
     "      --canary-timeout D  how long to wait for the canary (2m)\n"
     "      --max-replays N   refuse records already replayed N times (3)\n"
     "      --group NAME      progress group (default: one per filter set)\n"
     "\n"
     "A replay reads the records present when it started. A record is\n"
     "replayed when its payload is a valid job, it has been replayed fewer\n"
     "than --max-replays times, it is not a second copy of an original\n"
     "message already seen, and the job's state in Redis is dead (or gone):\n"
     "completed, cancelled and live jobs are skipped and counted. The job\n"
     "goes back to the jobs topic, on its original partition, with\n"
     "decayq-replay-count raised by one; in Redis it becomes pending with\n"
     "attempts reset and a new epoch.\n"
     "\n"
     "Progress is committed to the group in the same Kafka transaction as\n"
     "the republished records, so an interrupted replay, run again with the\n"
     "same command, resumes where it stopped and republishes nothing twice.\n"
     "Each run appends its start and its outcome to the Redis stream\n"
     "<namespace>:audit: who, when, filters and counts.\n"},
    {"job", "status", ctl_job_status, "show a job's state",
     "<JOB-ID> --scope SCOPE\n"
     "\n"
     "Shows the state, attempts, epoch, lease, last error and timestamps of\n"
     "a job, and the memory it wrote. Exit 1 when Redis has no state for it\n"
     "(never run, or past its retention).\n"},
    {"job", "cancel", ctl_job_cancel, "cancel a job that is not terminal",
     "<JOB-ID> --scope SCOPE [--reason TEXT] [--force]\n"
     "\n"
     "Marks the job cancelled; a consumer then skips it (outcome cancelled)\n"
     "and a worker running it is fenced: it cannot settle. Exit 1 when the\n"
     "job is already terminal (completed, dead, cancelled, duplicate); its\n"
     "state is shown. Exit 1 too when Redis has no state for the job in\n"
     "that scope, which is what a mistyped scope looks like: nothing is\n"
     "written. --force cancels such a job all the same, before it first\n"
     "runs (a tombstone its first claim finds).\n"},
    {"memory", "load", ctl_memory_load,
     "write memories and episodes from NDJSON",
     "[--file FILE | -]\n"
     "\n"
     "Reads one record a line from FILE or stdin:\n"
     "  {\"scope\": \"acme/bot\", \"id\": \"cand-1\", \"type\": "
     "\"candidate\",\n"
     "   \"status\": \"active\", \"claim\": \"...\", \"created_at\": "
     "1732363200000}\n"
     "scope and id are required. \"store\": \"episode\" writes an episode\n"
     "(default: \"memory\"). Every other field is stored as text; strings,\n"
     "numbers and booleans only. A record replaces one with the same id.\n"
     "Each rejected line is reported with its number and reason; the rest\n"
     "are written (exit 5 when any was rejected). Each record is written\n"
     "with its entry in the planner's index in one step: active candidates\n"
     "and episodes by created_at, active principles by expires_at. A record\n"
     "the planner cannot see (an active candidate without created_at) is\n"
     "stored, warned about with its line number, and counted as\n"
     "unindexed.\n"},
    {"memory", "get", ctl_memory_get, "show one memory or episode",
     "<ID> --scope SCOPE [--episode]\n"},
    {"memory", "reindex", ctl_memory_reindex,
     "rebuild a scope's planner index from its records",
     "--scope SCOPE\n"
     "\n"
     "The planner finds what may decay in per-scope indexes that memory\n"
     "load and the consumers keep. A record written by other means (a raw\n"
     "HSET, a restore) is not in them; this command re-derives the index\n"
     "entry of every memory and episode of the scope from the record\n"
     "itself, drops entries whose record is gone, and registers the scope.\n"
     "It reports progress each second, then what it did: added, fixed,\n"
     "unchanged, removed, and skipped records with why (no_created_at,\n"
     "bad_created_at, bad_expires_at: fix the record).\n"
     "It SCANs the keyspace for the scope's records, so it costs as much as\n"
     "a scan of the whole database; running it again is safe.\n"},
    {"plan", "status", ctl_plan_status, "show what the planner did and owes",
     "[--scope SCOPE]\n"
     "\n"
     "Without --scope: the last pass (when, by which planner, its window,\n"
     "scopes, memories due and proposed, jobs, duplicates, what was not\n"
     "delivered, debt and next due), the scopes in the registry and the\n"
     "scopes with the most debt. With --scope: per policy, last_run,\n"
     "next_due (the start of the window its next memory is due in), debt\n"
     "(due and not yet proposed: too few for a job, or past plan.scan.max),\n"
     "and the counts of its last pass. Exit 1 when nothing was planned yet.\n"},
    {"plan", "run", ctl_plan_run, "make the running planners pass now",
     "[--once] [--no-wait] [--timeout D]\n"
     "\n"
     "Sends a trigger that every running decay-planner daemon sees within\n"
     "a second: each runs one pass now, and triggers sent during a pass\n"
     "coalesce into one trailing pass. Waits (at most --timeout, default\n"
     "1m) for a pass that began after the trigger, and prints it; exit 3\n"
     "when none answered or the pass failed. --no-wait only sends it.\n"
     "With no daemon running, decay-planner --once runs a pass itself.\n"},
};

#define CMD_CNT (sizeof(cmds) / sizeof(*cmds))

static const char common_help[] =
    "\n"
    "Common options:\n"
    "  -c, --config FILE   properties file (see configs/decayctl.properties)\n"
    "  -X KEY=VALUE        set a key, e.g. -X "
    "kafka.bootstrap.servers=h:9092\n"
    "      --json          output for scripts\n"
    "      --dump-config   print the effective configuration, secrets "
    "masked\n"
    "      --version       print the version and exit\n"
    "  -h, --help          this help\n"
    "DECAYQ_* environment variables override the file; -X overrides both.\n";

static const char exit_help[] =
    "\n"
    "Exit codes:\n"
    "  0  done\n"
    "  1  not found, or refused (the job is terminal)\n"
    "  2  usage error: bad option, filter, id or configuration\n"
    "  3  Kafka or Redis failed; nothing is half done, re-run the command\n"
    "  4  replay stopped because the canary failed\n"
    "  5  some input lines were rejected\n";

static void print_overview(FILE *fp)
{
        const char *group = "";

        fputs("usage: decayctl <group> <command> [options]\n"
              "\n"
              "Inspects and replays decayq's dead letters, reads and\n"
              "changes job state and the memory store, and shows and\n"
              "triggers the planner.\n",
              fp);
        for (size_t i = 0; i < CMD_CNT; i++) {
                if (strcmp(group, cmds[i].group)) {
                        group = cmds[i].group;
                        fprintf(fp, "\n%s:\n", group);
                }
                fprintf(fp, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
        }
        fputs("\n'decayctl <group> <command> --help' tells more;\n"
              "'decayctl --version' prints the version.\n",
              fp);
        fputs(common_help, fp);
        fputs(exit_help, fp);
}

/* The commands of group; false when there is no such group. */
static bool print_group(const char *group, FILE *fp)
{
        bool any = false;

        for (size_t i = 0; i < CMD_CNT; i++) {
                if (strcmp(group, cmds[i].group))
                        continue;
                if (!any)
                        fprintf(fp,
                                "usage: decayctl %s <command> [options]\n\n",
                                group);
                any = true;
                fprintf(fp, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
        }
        if (any)
                fprintf(fp, "\n'decayctl %s <command> --help' tells more.\n",
                        group);
        return any;
}

static void print_cmd_usage(const ctl_cmd_t *cmd, FILE *fp)
{
        fprintf(fp, "usage: decayctl %s %s %s", cmd->group, cmd->name,
                cmd->usage);
}

int ctl_usage_error(const ctl_t *ctl, const char *fmt, ...)
{
        va_list ap;

        fputs("error: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        if (ctl->cmd)
                print_cmd_usage(ctl->cmd, stderr);
        else
                print_overview(stderr);
        return CTL_EXIT_USAGE;
}

int ctl_common(ctl_t *ctl, int opt, const char *arg)
{
        int rc = dq_cli_option(&ctl->cli, opt, arg);

        if (rc != DQ_CLI_NOT_MINE) {
                if (rc == DQ_CLI_GO_ON && ctl->cli.help) {
                        print_cmd_usage(ctl->cmd, stdout);
                        fputs(common_help, stdout);
                        fputs(exit_help, stdout);
                        return CTL_EXIT_OK;
                }
                return rc;
        }
        switch (opt) {
        case CTL_OPT_JSON:
                ctl->json = true;
                return CTL_GO_ON;
        case '?':
                return ctl_usage_error(ctl,
                                       "unknown option, or one missing its "
                                       "value: '%s'",
                                       ctl->argv[optind - 1]);
        default:
                return -1;
        }
}

int ctl_check_scope(const ctl_t *ctl, const char *scope)
{
        /* M5: the job validator's rules, so that no command accepts a
         * scope that no job can carry. */
        if (!dq_job_scope_valid(scope))
                return ctl_usage_error(ctl,
                                       "--scope '%s' is not a scope (1 to %d "
                                       "bytes of UTF-8 without white space, "
                                       "control characters or braces)",
                                       dq_esc(scope), DQ_JOB_MAX_SCOPE);
        return CTL_GO_ON;
}

int ctl_check_operands(const ctl_t *ctl, int argc, char **argv, int nargs)
{
        if (argc - optind < nargs)
                return ctl_usage_error(ctl, "missing operand");
        if (argc - optind > nargs)
                return ctl_usage_error(ctl, "unexpected argument '%s'",
                                       argv[optind + nargs]);
        return CTL_GO_ON;
}

int ctl_load(ctl_t *ctl)
{
        /* A tool's stderr is for its user: never quieter than warn. */
        return dq_cli_load(&ctl->cli, DQ_LOG_WARN);
}

dq_store_t *ctl_store(const ctl_t *ctl, bool readonly)
{
        char errstr[512];
        dq_store_t *st;

        /* A command that only reads loads nothing and writes nothing, so
         * that it works on a replica and as a read-only user (M1). */
        st = dq_store_open(ctl->cli.conf, ctl_who(),
                           readonly ? DQ_STORE_READONLY : 0, errstr,
                           sizeof(errstr));
        if (!st)
                fprintf(stderr, "error: %s\n", dq_esc(errstr));
        return st;
}

void ctl_print_text(const char *p, size_t n)
{
        size_t size = 4 * n + 1;
        char *buf = malloc(size);

        if (!buf)
                abort();
        fputs(dq_escape(p, n, buf, size), stdout);
        free(buf);
}

static void encode_failed(const char *what)
{
        fprintf(stderr, "error: cannot encode %s as JSON: out of memory\n",
                what);
        exit(3);
}

void ctl_jset(json_t *o, const char *key, json_t *v)
{
        if (!o)
                encode_failed("an object");
        if (!v || json_object_set_new(o, key, v))
                encode_failed(key);
}

json_t *ctl_jtext(const char *s, size_t len)
{
        json_t *v = dq_utf8_valid(s, len) ? json_stringn(s, len) : json_null();

        if (!v)
                encode_failed("a string");
        return v;
}

json_t *ctl_jstr(const char *s)
{
        return s ? ctl_jtext(s, strlen(s)) : json_null();
}

void ctl_json_print(json_t *v)
{
        if (!v)
                encode_failed("the result");
        json_dumpf(v, stdout, JSON_COMPACT | JSON_ENSURE_ASCII);
        fputc('\n', stdout);
        json_decref(v);
}

const char *ctl_who(void)
{
        static char who[160];
        char host[64] = "";
        const char *user = getenv("USER");
        struct passwd *pw;

        if (who[0])
                return who;
        if (!user || !*user) {
                pw = getpwuid(geteuid());
                user = pw ? pw->pw_name : "unknown";
        }
        if (gethostname(host, sizeof(host) - 1))
                snprintf(host, sizeof(host), "unknown");
        snprintf(who, sizeof(who), "%s@%s", user, host);
        return who;
}

/*
 * Counts
 */

uint64_t ctl_fnv1a(uint64_t h, const char *s)
{
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 1099511628211ULL;
        return h;
}

int64_t ctl_counts_add(ctl_counts_t *c, const char *key, int64_t n)
{
        json_t *v;
        int64_t now;

        if (!c->o && !(c->o = json_object()))
                abort();
        v = json_object_get(c->o, key);
        now = (v ? json_integer_value(v) : 0) + n;
        /* Unchecked: a key is counted whatever its bytes. */
        if (v ? json_integer_set(v, now)
              : json_object_set_new_nocheck(c->o, key, json_integer(now)))
                abort();
        return now;
}

void ctl_counts_release(ctl_counts_t *c)
{
        json_decref(c->o);
        c->o = NULL;
}

json_t *ctl_counts_json(const ctl_counts_t *c)
{
        json_t *o = json_object(), *v;
        const char *key;

        json_object_foreach(c->o, key, v)
            ctl_jset(o, key, json_integer(json_integer_value(v)));
        return o;
}

typedef struct count_s {
        const char *key;
        int64_t n;
} count_t;

static int by_count(const void *a, const void *b)
{
        const count_t *x = a, *y = b;
        if (x->n != y->n)
                return x->n > y->n ? -1 : 1;
        return strcmp(x->key, y->key);
}

void ctl_counts_print(const ctl_counts_t *c, const char *title, size_t max)
{
        size_t cnt = c->o ? json_object_size(c->o) : 0, i = 0;
        const char *key;
        count_t *all;
        json_t *v;

        printf("  %s:\n", title);
        if (!cnt) {
                printf("    (none)\n");
                return;
        }
        if (!(all = malloc(cnt * sizeof(*all))))
                abort();
        json_object_foreach(c->o, key, v)
        {
                all[i++] = (count_t){key, json_integer_value(v)};
        }
        qsort(all, cnt, sizeof(*all), by_count);
        for (i = 0; i < cnt && i < max; i++)
                printf("    %-48s %8lld\n", dq_esc(all[i].key),
                       (long long)all[i].n);
        if (cnt > max)
                printf("    ... and %zu more\n", cnt - max);
        free(all);
}

/*
 * job status | cancel
 */

enum {
        OPT_SCOPE = CTL_OPT__FIRST_OWN,
        OPT_REASON,
        OPT_FILE,
        OPT_EPISODE,
        OPT_FORCE
};

/* Parses "<ID> --scope S" commands; returns CTL_GO_ON with *id and *scope
 * set, or an exit code. */
static int parse_id_scope(ctl_t *ctl, int argc, char **argv, bool want_ulid,
                          const char **id, const char **scope,
                          const char **reason, bool *episode, bool *force)
{
        static const struct option longopts[] = {
            CTL_COMMON_LONGOPTS,
            {"scope", required_argument, NULL, OPT_SCOPE},
            {"reason", required_argument, NULL, OPT_REASON},
            {"episode", no_argument, NULL, OPT_EPISODE},
            {"force", no_argument, NULL, OPT_FORCE},
            {NULL, 0, NULL, 0},
        };
        int opt, rc;

        *scope = NULL;
        while ((opt = getopt_long(argc, argv, CTL_COMMON_SHORTOPTS, longopts,
                                  NULL)) != -1) {
                if ((rc = ctl_common(ctl, opt, optarg)) != -1) {
                        if (rc != CTL_GO_ON)
                                return rc;
                        continue;
                }
                if (opt == OPT_SCOPE)
                        *scope = optarg;
                else if (opt == OPT_REASON && reason)
                        *reason = optarg;
                else if (opt == OPT_EPISODE && episode)
                        *episode = true;
                else if (opt == OPT_FORCE && force)
                        *force = true;
                else
                        return ctl_usage_error(ctl,
                                               "option '%s' does not "
                                               "apply here",
                                               argv[optind - 1]);
        }
        if ((rc = ctl_check_operands(ctl, argc, argv, 1)) != CTL_GO_ON)
                return rc;
        *id = argv[optind];
        if (want_ulid && !dq_ulid_valid(*id, strlen(*id)))
                return ctl_usage_error(ctl,
                                       "'%s' is not a job id (a ULID such as "
                                       "01JD3Q6V2R8YB6K3ZKQ9T1M4XH)",
                                       dq_esc(*id));
        /* M5: the job validator's rules, so that no command accepts a
         * scope or an id that no job can carry. */
        if (!want_ulid && !dq_job_source_id_valid(*id))
                return ctl_usage_error(ctl,
                                       "'%s' is not a memory id (1 to %d "
                                       "bytes of UTF-8 without white space, "
                                       "control characters or braces)",
                                       dq_esc(*id), DQ_JOB_MAX_SOURCE_ID);
        if (!*scope)
                return ctl_usage_error(ctl, "--scope is required");
        if ((rc = ctl_check_scope(ctl, *scope)) != CTL_GO_ON)
                return rc;
        return ctl_load(ctl);
}

static bool is_time_field(const char *f)
{
        size_t n = strlen(f);
        return (n > 3 && !strcmp(f + n - 3, "_at")) ||
               !strcmp(f, "lease_until") || !strcmp(f, "not_before");
}

static json_t *record_json(const dq_record_t *rec)
{
        json_t *o = json_object();
        for (size_t i = 0; i < rec->cnt; i++)
                ctl_jset(o, rec->fields[i], ctl_jstr(rec->values[i]));
        return o;
}

/* Prints "  field  value" lines; times as RFC 3339 too. */
static void record_print(const dq_record_t *rec, const char *indent)
{
        for (size_t i = 0; i < rec->cnt; i++) {
                const char *f = rec->fields[i], *v = rec->values[i];
                char t[32], *end;
                long long ms = strtoll(v, &end, 10);

                printf("%s%-20s ", indent, dq_esc(f));
                ctl_print_text(v, strlen(v));
                if (is_time_field(f) && !*end && end != v && ms > 0)
                        printf(" (%s)",
                               dq_time_format_rfc3339(ms, t, sizeof(t)));
                putchar('\n');
        }
}

int ctl_job_status(ctl_t *ctl, int argc, char **argv)
{
        const char *id = NULL, *scope = NULL, *res;
        dq_record_t rec, mem = {0};
        dq_store_t *st;
        dq_err_t err;
        int rc = parse_id_scope(ctl, argc, argv, true, &id, &scope, NULL, NULL,
                                NULL);

        if (rc != CTL_GO_ON)
                return rc;
        if (!(st = ctl_store(ctl, true)))
                return CTL_EXIT_UNAVAILABLE;
        err = dq_store_job_get(st, scope, id, &rec);
        if (err == DQ_ERR_NOT_FOUND) {
                fprintf(stderr,
                        "error: job %s has no state in scope '%s' (never "
                        "run, or past its retention)\n",
                        id, scope);
                dq_store_destroy(st);
                return CTL_EXIT_NOT_FOUND;
        }
        if (err) {
                fprintf(stderr, "error: redis: %s\n", dq_err_str(err));
                dq_store_destroy(st);
                return CTL_EXIT_UNAVAILABLE;
        }
        res = dq_record_get(&rec, "result_memory_id");
        if (res && *res &&
            dq_store_record_get(st, DQ_REC_MEMORY, scope, res, &mem) != DQ_OK)
                memset(&mem, 0, sizeof(mem));
        if (ctl->json) {
                json_t *o = json_pack("{s:s, s:s}", "job", id, "scope", scope);
                const char *v = dq_record_get(&rec, "state");
                ctl_jset(o, "state", json_string(v ? v : ""));
                v = dq_record_get(&rec, "attempts");
                ctl_jset(o, "attempts", json_integer(v ? atoll(v) : 0));
                v = dq_record_get(&rec, "epoch");
                ctl_jset(o, "epoch", json_integer(v ? atoll(v) : 0));
                ctl_jset(o, "fields", record_json(&rec));
                ctl_jset(o, "result_memory",
                         mem.cnt ? record_json(&mem) : json_null());
                ctl_json_print(o);
        } else {
                printf("job                  %s\nscope                %s\n", id,
                       scope);
                record_print(&rec, "");
                if (mem.cnt) {
                        printf("result memory:\n");
                        record_print(&mem, "  ");
                }
        }
        dq_record_release(&rec);
        dq_record_release(&mem);
        dq_store_destroy(st);
        return CTL_EXIT_OK;
}

int ctl_job_cancel(ctl_t *ctl, int argc, char **argv)
{
        const char *id = NULL, *scope = NULL, *reason = NULL;
        char state[32], why[300];
        bool force = false;
        dq_store_t *st;
        dq_err_t err;
        int rc = parse_id_scope(ctl, argc, argv, true, &id, &scope, &reason,
                                NULL, &force);

        if (rc != CTL_GO_ON)
                return rc;
        if (!(st = ctl_store(ctl, false)))
                return CTL_EXIT_UNAVAILABLE;
        if (!reason) {
                snprintf(why, sizeof(why), "cancelled by %s", ctl_who());
                reason = why;
        }
        err = dq_store_cancel(st, scope, id, reason, force, dq_now_ms(), state,
                              sizeof(state));
        dq_store_destroy(st);
        if (err == DQ_ERR_NOT_FOUND) {
                /* M5: a mistyped scope must not look like a cancel. */
                if (ctl->json)
                        ctl_json_print(json_pack("{s:s, s:b, s:s}", "job", id,
                                                 "cancelled", 0, "state",
                                                 "none"));
                else
                        fprintf(stderr,
                                "error: job %s has no state in scope '%s': "
                                "nothing cancelled (check the scope; "
                                "--force cancels a job before it first "
                                "runs)\n",
                                id, dq_esc(scope));
                return CTL_EXIT_NOT_FOUND;
        }
        if (err == DQ_ERR_TERMINAL) {
                if (ctl->json)
                        ctl_json_print(json_pack("{s:s, s:b, s:s}", "job", id,
                                                 "cancelled", 0, "state",
                                                 state));
                else
                        fprintf(stderr,
                                "error: job %s is already %s; nothing "
                                "changed\n",
                                id, state);
                return CTL_EXIT_NOT_FOUND;
        }
        if (err) {
                fprintf(stderr, "error: redis: %s\n", dq_err_str(err));
                return CTL_EXIT_UNAVAILABLE;
        }
        if (ctl->json)
                ctl_json_print(json_pack("{s:s, s:b, s:s}", "job", id,
                                         "cancelled", 1, "was",
                                         *state ? state : "none"));
        else
                printf("job %s cancelled (was %s)\n", id,
                       *state ? state : "not yet seen");
        return CTL_EXIT_OK;
}

/*
 * memory load | get
 */

int ctl_memory_get(ctl_t *ctl, int argc, char **argv)
{
        const char *id = NULL, *scope = NULL;
        bool episode = false;
        dq_record_t rec;
        dq_store_t *st;
        dq_err_t err;
        int rc = parse_id_scope(ctl, argc, argv, false, &id, &scope, NULL,
                                &episode, NULL);

        if (rc != CTL_GO_ON)
                return rc;
        if (!(st = ctl_store(ctl, true)))
                return CTL_EXIT_UNAVAILABLE;
        err = dq_store_record_get(st, episode ? DQ_REC_EPISODE : DQ_REC_MEMORY,
                                  scope, id, &rec);
        dq_store_destroy(st);
        if (err == DQ_ERR_NOT_FOUND) {
                fprintf(stderr, "error: no %s '%s' in scope '%s'\n",
                        episode ? "episode" : "memory", id, scope);
                return CTL_EXIT_NOT_FOUND;
        }
        if (err) {
                fprintf(stderr, "error: redis: %s\n", dq_err_str(err));
                return CTL_EXIT_UNAVAILABLE;
        }
        if (ctl->json)
                ctl_json_print(record_json(&rec));
        else
                record_print(&rec, "");
        dq_record_release(&rec);
        return CTL_EXIT_OK;
}

static bool one_of(const char *s, const char *const *set)
{
        for (; s && *set; set++)
                if (!strcmp(s, *set))
                        return true;
        return false;
}

/* The fields the jobs read must hold what they can use: a known status
 * and type, and times as positive ms or RFC 3339 UTC. */
static bool memory_fields_ok(json_t *o, dq_rec_kind_t kind, const char **code,
                             char *msg, size_t msg_size)
{
        static const char *const statuses[] = {"active", "compressed", NULL};
        static const char *const types[] = {"candidate", "principle", "summary",
                                            NULL};
        const char *key;
        json_t *v;
        int64_t ms;

        json_object_foreach(o, key, v)
        {
                if (!strcmp(key, "status") &&
                    !one_of(json_string_value(v), statuses)) {
                        *code = "decay.memory.bad_status";
                        snprintf(msg, msg_size,
                                 "\"status\" must be \"active\" or "
                                 "\"compressed\"");
                        return false;
                }
                if (!strcmp(key, "type") && kind == DQ_REC_MEMORY &&
                    !one_of(json_string_value(v), types)) {
                        *code = "decay.memory.bad_type";
                        snprintf(msg, msg_size,
                                 "\"type\" must be \"candidate\", "
                                 "\"principle\" or \"summary\"");
                        return false;
                }
                if (is_time_field(key) &&
                    !(json_is_integer(v) && json_integer_value(v) > 0) &&
                    !(json_is_string(v) &&
                      dq_time_parse_rfc3339(json_string_value(v),
                                            json_string_length(v), &ms))) {
                        *code = "decay.memory.bad_time";
                        snprintf(msg, msg_size,
                                 "\"%s\" must be ms since the epoch or an "
                                 "RFC 3339 UTC time",
                                 dq_esc(key));
                        return false;
                }
        }
        return true;
}

/* Checks one NDJSON record and turns it into field, value pairs. Returns
 * NULL (reason in *code, *msg) or the kv array (2 * *pairs strings, owned
 * by the caller: free each, then the array). */
static char **memory_line(json_t *o, const char **scope, const char **id,
                          dq_rec_kind_t *kind, size_t *pairs, const char **code,
                          char *msg, size_t msg_size)
{
        const char *key;
        json_t *v;
        char **kv;
        size_t n = 0;

        *code = "decay.memory.invalid";
        if (!json_is_object(o)) {
                snprintf(msg, msg_size, "a line must hold one JSON object");
                return NULL;
        }
        *scope = json_string_value(json_object_get(o, "scope"));
        *id = json_string_value(json_object_get(o, "id"));
        if (!dq_job_scope_valid(*scope)) {
                *code = "decay.memory.bad_scope";
                snprintf(msg, msg_size,
                         "\"scope\" must be a scope a job can name: 1 to "
                         "255 bytes without white space, control characters "
                         "or braces");
                return NULL;
        }
        if (!dq_job_source_id_valid(*id)) {
                *code = "decay.memory.bad_id";
                snprintf(msg, msg_size,
                         "\"id\" must be an id a job can name: 1 to 255 "
                         "bytes without white space, control characters or "
                         "braces");
                return NULL;
        }
        *kind = DQ_REC_MEMORY;
        v = json_object_get(o, "store");
        if (v) {
                const char *s = json_string_value(v);
                if (s && !strcmp(s, "episode")) {
                        *kind = DQ_REC_EPISODE;
                } else if (!s || strcmp(s, "memory")) {
                        *code = "decay.memory.bad_store";
                        snprintf(msg, msg_size,
                                 "\"store\" must be \"memory\" or "
                                 "\"episode\"");
                        return NULL;
                }
        }
        if (!memory_fields_ok(o, *kind, code, msg, msg_size))
                return NULL;
        kv = calloc(2 * json_object_size(o) + 1, sizeof(*kv));
        if (!kv)
                abort();
        json_object_foreach(o, key, v)
        {
                char *text = NULL;
                int64_t ms;

                if (!strcmp(key, "scope") || !strcmp(key, "id") ||
                    !strcmp(key, "store"))
                        continue;
                /* Times are kept as ms, which is what the jobs compare. */
                if (is_time_field(key) && json_is_string(v) &&
                    dq_time_parse_rfc3339(json_string_value(v),
                                          json_string_length(v), &ms))
                        (void)!asprintf(&text, "%lld", (long long)ms);
                else if (json_is_string(v))
                        text = strdup(json_string_value(v));
                else if (json_is_integer(v))
                        (void)!asprintf(&text, "%" JSON_INTEGER_FORMAT,
                                        json_integer_value(v));
                else if (json_is_real(v))
                        (void)!asprintf(&text, "%.17g", json_real_value(v));
                else if (json_is_boolean(v))
                        text = strdup(json_is_true(v) ? "true" : "false");
                if (!text) {
                        *code = "decay.memory.bad_field";
                        snprintf(msg, msg_size,
                                 "field \"%s\": only strings, numbers and "
                                 "booleans can be stored",
                                 key);
                        for (size_t i = 0; i < 2 * n; i++)
                                free(kv[i]);
                        free(kv);
                        return NULL;
                }
                kv[2 * n] = strdup(key);
                kv[2 * n + 1] = text;
                if (!kv[2 * n])
                        abort();
                n++;
        }
        *pairs = n;
        return kv;
}

int ctl_memory_load(ctl_t *ctl, int argc, char **argv)
{
        static const struct option longopts[] = {
            CTL_COMMON_LONGOPTS,
            {"file", required_argument, NULL, 'f'},
            {NULL, 0, NULL, 0},
        };
        const char *file = NULL;
        long lineno = 0, loaded = 0, rejected = 0, unindexed = 0;
        int opt, rc;
        FILE *in;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        dq_store_t *st;
        int64_t last = dq_mono_ms();

        while ((opt = getopt_long(argc, argv, CTL_COMMON_SHORTOPTS "f:",
                                  longopts, NULL)) != -1) {
                if ((rc = ctl_common(ctl, opt, optarg)) != -1) {
                        if (rc != CTL_GO_ON)
                                return rc;
                        continue;
                }
                file = optarg; /* 'f' */
        }
        if (optind == argc - 1 && !file)
                file = argv[optind++];
        if ((rc = ctl_check_operands(ctl, argc, argv, 0)) != CTL_GO_ON)
                return rc;
        if ((rc = ctl_load(ctl)) != CTL_GO_ON)
                return rc;
        in = !file || !strcmp(file, "-") ? stdin : fopen(file, "r");
        if (!in) {
                fprintf(stderr, "error: cannot open '%s': %s\n", file,
                        strerror(errno));
                return CTL_EXIT_INPUT;
        }
        if (!(st = ctl_store(ctl, false))) {
                if (in != stdin)
                        fclose(in);
                return CTL_EXIT_UNAVAILABLE;
        }
        rc = CTL_EXIT_OK;
        while ((n = getline(&line, &cap, in)) >= 0) {
                json_error_t jerr;
                json_t *o;
                const char *scope, *id, *code;
                char msg[300];
                dq_rec_kind_t kind;
                size_t pairs = 0;
                char **kv;
                dq_err_t err;
                dq_index_result_t ix;

                lineno++;
                if (strspn(line, " \t\r\n") == (size_t)n)
                        continue;
                o = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
                if (!o) {
                        rejected++;
                        fprintf(stderr,
                                "error: line %ld: decay.memory.malformed_json: "
                                "%s\n",
                                lineno, jerr.text);
                        continue;
                }
                kv = memory_line(o, &scope, &id, &kind, &pairs, &code, msg,
                                 sizeof(msg));
                if (!kv) {
                        rejected++;
                        fprintf(stderr, "error: line %ld: %s: %s\n", lineno,
                                code, msg);
                        json_decref(o);
                        continue;
                }
                err = dq_memory_put(st, kind, scope, id,
                                    (const char *const *)kv, pairs, &ix);
                if (!err && !strcmp(ix.action, "skipped")) {
                        /* Stored, but the planner cannot see it. */
                        unindexed++;
                        fprintf(stderr,
                                "warning: line %ld: stored, but not indexed "
                                "for the planner: %s\n",
                                lineno, ix.reason);
                }
                for (size_t i = 0; i < 2 * pairs; i++)
                        free(kv[i]);
                free(kv);
                json_decref(o);
                if (err) {
                        fprintf(stderr,
                                "error: line %ld: redis: %s; stopped, lines "
                                "before it are loaded\n",
                                lineno, dq_err_str(err));
                        rc = CTL_EXIT_UNAVAILABLE;
                        break;
                }
                loaded++;
                if (!ctl->json && dq_mono_ms() - last >= 1000) {
                        last = dq_mono_ms();
                        fprintf(stderr, "memory load: %ld loaded\n", loaded);
                }
        }
        if (rc == CTL_EXIT_OK && ferror(in)) {
                fprintf(stderr, "error: cannot read '%s': %s\n",
                        file ? file : "-", strerror(errno));
                rc = CTL_EXIT_INPUT;
        }
        free(line);
        if (in != stdin)
                fclose(in);
        dq_store_destroy(st);
        if (ctl->json)
                ctl_json_print(json_pack("{s:i, s:i, s:i, s:i}", "lines",
                                         (int)lineno, "loaded", (int)loaded,
                                         "rejected", (int)rejected, "unindexed",
                                         (int)unindexed));
        else
                fprintf(stderr,
                        "memory load: lines=%ld loaded=%ld rejected=%ld "
                        "unindexed=%ld\n",
                        lineno, loaded, rejected, unindexed);
        if (rc == CTL_EXIT_OK && rejected)
                rc = CTL_EXIT_INPUT;
        return rc;
}

/*
 * main
 */

int main(int argc, char **argv)
{
        ctl_t ctl = {0};
        const char *group, *name;
        int rc;

        dq_log_set_program("decayctl");
        signal(SIGPIPE, SIG_IGN);
        if (argc >= 2 && !strcmp(argv[1], "--version")) {
                dq_print_version(stdout, "decayctl");
                return CTL_EXIT_OK;
        }
        if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
            !strcmp(argv[1], "help")) {
                print_overview(argc < 2 ? stderr : stdout);
                return argc < 2 ? CTL_EXIT_USAGE : CTL_EXIT_OK;
        }
        group = argv[1];
        name = argc > 2 ? argv[2] : NULL;
        for (size_t i = 0; i < CMD_CNT; i++) {
                if (strcmp(cmds[i].group, group))
                        continue;
                if (name && !strcmp(cmds[i].name, name)) {
                        ctl.cmd = &cmds[i];
                        if (!dq_cli_init(&ctl.cli, "decayctl", argc,
                                         CTL_EXIT_USAGE))
                                return CTL_EXIT_UNAVAILABLE;
                        /* argv[0] of the command is its name. */
                        ctl.argv = argv + 2;
                        rc = cmds[i].run(&ctl, argc - 2, argv + 2);
                        if (rc == CTL_GO_ON)
                                rc = CTL_EXIT_OK;
                        dq_cli_release(&ctl.cli);
                        return rc;
                }
        }
        if (name && (!strcmp(name, "-h") || !strcmp(name, "--help"))) {
                if (!print_group(group, stdout))
                        return ctl_usage_error(&ctl, "unknown group '%s'",
                                               dq_esc(group));
                return CTL_EXIT_OK;
        }
        if (!name) {
                fprintf(stderr, "error: '%s' needs a command\n", dq_esc(group));
                if (!print_group(group, stderr))
                        print_overview(stderr);
                return CTL_EXIT_USAGE;
        }
        return ctl_usage_error(&ctl, "unknown command '%s%s%s'", dq_esc(group),
                               name ? " " : "", name ? dq_esc(name) : "");
}
