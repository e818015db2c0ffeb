/* decayctl's shared parts: the context every subcommand gets, its common
 * options, exit codes and output helpers. */
#ifndef CTL_H
#define CTL_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dq_cli.h"
#include "dq_conf.h"
#include "dq_store.h"

/* Stable exit codes; documented in --help. */
enum {
        CTL_EXIT_OK = 0,
        CTL_EXIT_NOT_FOUND = 1, /* no such job, record or memory; or refused */
        CTL_EXIT_USAGE = 2,
        CTL_EXIT_UNAVAILABLE = 3, /* Kafka or Redis failed; safe to re-run */
        CTL_EXIT_CANARY = 4,      /* replay stopped: the canary failed */
        CTL_EXIT_INPUT = 5,       /* some input lines were rejected */
};

/* Options every subcommand takes, by getopt_long value. */
enum {
        CTL_OPT_JSON = DQ_CLI_OPT__FIRST_OWN,
        CTL_OPT__FIRST_OWN, /* first value free for a command's own options */
};

#define CTL_COMMON_SHORTOPTS DQ_CLI_SHORTOPTS
#define CTL_COMMON_LONGOPTS                             \
        DQ_CLI_LONGOPTS,                                \
        {                                               \
                "json", no_argument, NULL, CTL_OPT_JSON \
        }

typedef struct ctl_cmd_s ctl_cmd_t;

typedef struct ctl_s {
        const ctl_cmd_t *cmd;
        char **argv; /* the command's, argv[0] its name */
        bool json;
        dq_cli_t cli; /* cli.conf: loaded by ctl_load() */
} ctl_t;

struct ctl_cmd_s {
        const char *group; /* "dlq" */
        const char *name;  /* "list" */
        int (*run)(ctl_t *ctl, int argc, char **argv);
        const char *summary;
        const char *usage; /* options, for --help and errors */
};

#define CTL_GO_ON DQ_CLI_GO_ON

/* Handles an option every command takes. Returns CTL_GO_ON when it was
 * one, -1 when it was not, or an exit code to return now: after --help,
 * or CTL_EXIT_USAGE for an unknown option (getopt's '?'). */
int ctl_common(ctl_t *ctl, int opt, const char *arg);

/* Reports a usage error for the command: "error: <msg>" then its usage,
 * and returns CTL_EXIT_USAGE. */
int ctl_usage_error(const ctl_t *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Checks a --scope value by the rules a job's scope obeys; CTL_GO_ON, or
 * the usage error's exit code. */
int ctl_check_scope(const ctl_t *ctl, const char *scope);

/* Checks that no operand is left over past nargs expected ones. */
int ctl_check_operands(const ctl_t *ctl, int argc, char **argv, int nargs);

/* Loads the configuration (file, environment, -X). Returns CTL_GO_ON when
 * loaded; else an exit code: CTL_EXIT_OK after --dump-config printed it,
 * CTL_EXIT_USAGE for a bad configuration. */
int ctl_load(ctl_t *ctl);

/* Opens the Redis store, or prints why not. readonly: for commands that
 * only read (DQ_STORE_READONLY). */
dq_store_t *ctl_store(const ctl_t *ctl, bool readonly);

/* Prints a JSON value on one line to stdout and frees it. NULL (a value
 * that could not be built) ends the program like a failed ctl_jset(). */
void ctl_json_print(json_t *v);

/* Writes p[0..n) to stdout for a person to read: control characters and
 * bytes that are not UTF-8 escaped (dq_escape()), never cut. */
void ctl_print_text(const char *p, size_t n);

/* Sets o[key] to v, which it steals. A value that could not be built (v
 * NULL) or a failed set ends the program with "error: cannot encode" and
 * exit 3: output is never silently short of a field. */
void ctl_jset(json_t *o, const char *key, json_t *v);

/* s[0..len) as a JSON string, or null when it is not UTF-8 (the bytes came
 * from whoever wrote the record); never NULL but out of memory. */
json_t *ctl_jtext(const char *s, size_t len);

/* ctl_jtext() of a NUL-terminated string; NULL gives null. */
json_t *ctl_jstr(const char *s);

/* Who runs this ("alice@host"), for audit entries and cancel reasons. */
const char *ctl_who(void);

/* FNV-1a of s, continuing from h (CTL_FNV_BASIS to start). It names the
 * consumer group of a resumable replay (from its filters and the DLQ
 * topic), so it is a persistent contract: changing it orphans every
 * replay's saved progress. */
#define CTL_FNV_BASIS 1469598103934665603ULL
uint64_t ctl_fnv1a(uint64_t h, const char *s);

/* Counts per string key (codes, kinds, scopes), in first-seen order: a
 * jansson object of integers (which keeps insertion order). Zeroed is
 * empty. */
typedef struct ctl_counts_s {
        json_t *o;
} ctl_counts_t;

/* Adds n to key's count; returns the new count. Keys are any bytes:
 * whoever wrote the record chose them. */
int64_t ctl_counts_add(ctl_counts_t *c, const char *key, int64_t n);
void ctl_counts_release(ctl_counts_t *c);
/* A JSON object of the counts (a key that is not UTF-8 ends the program
 * as a failed ctl_jset() does). */
json_t *ctl_counts_json(const ctl_counts_t *c);
/* Prints "  title:" then up to max lines "    key  count", biggest first. */
void ctl_counts_print(const ctl_counts_t *c, const char *title, size_t max);

/* The subcommands. */
int ctl_dlq_list(ctl_t *ctl, int argc, char **argv);
int ctl_dlq_inspect(ctl_t *ctl, int argc, char **argv);
int ctl_dlq_stats(ctl_t *ctl, int argc, char **argv);
int ctl_dlq_replay(ctl_t *ctl, int argc, char **argv);
int ctl_job_status(ctl_t *ctl, int argc, char **argv);
int ctl_job_cancel(ctl_t *ctl, int argc, char **argv);
int ctl_memory_load(ctl_t *ctl, int argc, char **argv);
int ctl_memory_get(ctl_t *ctl, int argc, char **argv);
int ctl_memory_reindex(ctl_t *ctl, int argc, char **argv);
int ctl_plan_status(ctl_t *ctl, int argc, char **argv);
int ctl_plan_run(ctl_t *ctl, int argc, char **argv);
int ctl_attest_keygen(ctl_t *ctl, int argc, char **argv);
int ctl_attest_sign(ctl_t *ctl, int argc, char **argv);
int ctl_attest_verify(ctl_t *ctl, int argc, char **argv);

#endif
