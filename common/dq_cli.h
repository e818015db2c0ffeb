/* What every decayq program does with its command line before its own
 * work: the common options (-c, -X, --dump-config, --version), loading
 * the configuration (file, then DECAYQ_* environment, then -X), applying
 * log.level, and reporting a usage error. Exit codes stay each program's:
 * the caller gives its usage code. */
#ifndef DQ_CLI_H
#define DQ_CLI_H

#include <getopt.h>
#include <stdbool.h>

#include "dq_conf.h"
#include "dq_log.h"

/* getopt_long values of the common long options; a program's own start
 * at DQ_CLI_OPT__FIRST_OWN. */
enum {
        DQ_CLI_OPT_DUMP = 1000,
        DQ_CLI_OPT_VERSION,
        DQ_CLI_OPT__FIRST_OWN,
};

#define DQ_CLI_SHORTOPTS "c:X:h"
#define DQ_CLI_LONGOPTS                                          \
        {"config", required_argument, NULL, 'c'},                \
            {"dump-config", no_argument, NULL, DQ_CLI_OPT_DUMP}, \
            {"version", no_argument, NULL, DQ_CLI_OPT_VERSION},  \
        {                                                        \
                "help", no_argument, NULL, 'h'                   \
        }

/* dq_cli_option() and dq_cli_load() return one of these, or an exit
 * code to return now. */
#define DQ_CLI_GO_ON    (-2) /* taken (an option) or loaded: carry on */
#define DQ_CLI_NOT_MINE (-1) /* not a common option */

typedef struct dq_cli_s {
        const char *program;
        int usage_exit; /* the program's exit code for a usage error */
        const char *config;
        char **overrides; /* -X values, in order */
        int override_cnt;
        bool dump;
        bool help;       /* -h seen: the caller prints its help */
        dq_conf_t *conf; /* loaded by dq_cli_load() */
} dq_cli_t;

/* Sets cli up for a program whose command line has argc words: names the
 * program in logs and makes room for its -X values. Returns false when
 * out of memory (after saying so). */
bool dq_cli_init(dq_cli_t *cli, const char *program, int argc, int usage_exit);

/* Takes a common option getopt_long() returned. -h only sets cli->help.
 * Returns DQ_CLI_GO_ON when taken, DQ_CLI_NOT_MINE when not, or 0 after
 * --version printed the version. */
int dq_cli_option(dq_cli_t *cli, int opt, const char *arg);

/* Loads the configuration. On --dump-config prints it (secrets masked) and
 * returns 0. A bad configuration prints "error: <why>" and returns the
 * usage code. Else applies log.level, raised to at least floor (a tool
 * keeps its stderr for its user), and returns DQ_CLI_GO_ON. */
int dq_cli_load(dq_cli_t *cli, dq_log_level_t floor);

/* Prints "error: <message>" (escaped) then usage (if not NULL) on stderr,
 * and returns the usage code. */
int dq_cli_usage_error(const dq_cli_t *cli, const char *usage, const char *fmt,
                       ...) __attribute__((format(printf, 3, 4)));

/* What a daemon does once its options are read: after -h prints usage
 * and the configuration keys (returns ok_exit); reports an operand left
 * over as a usage error; else loads the configuration as dq_cli_load()
 * does, logging at error and above. */
int dq_cli_daemon_finish(dq_cli_t *cli, const char *usage, int argc,
                         char **argv, int ok_exit);

/* Frees what cli holds, the configuration included. */
void dq_cli_release(dq_cli_t *cli);

#endif
