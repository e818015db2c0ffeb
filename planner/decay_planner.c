/* decay-planner: memories decay on their own. See dq_planner.h. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq_cli.h"
#include "dq_log.h"
#include "dq_planner.h"
#include "dq_store.h"
#include "dq_text.h"
#include "banned.h"

/* Stable exit codes; documented in --help. */
enum {
        EXIT_OK = 0,
        EXIT_INCOMPLETE = 1,
        EXIT_USAGE = 2,
        EXIT_START = 3,
};

static const char usage[] =
    "usage: decay-planner [options] [--once]\n"
    "\n"
    "Finds the memories that should decay and publishes the decay jobs, so\n"
    "that no upstream service has to. Each pass walks the registry of scopes\n"
    "and, per scope and policy, takes from the scope's index the memories\n"
    "due in the current window and held by no open planned job:\n"
    "  candidates  active candidates older than plan.candidates.min.age,\n"
    "              at least min.sources and at most max.sources a job\n"
    "  episodes    the same over episodes (plan.episodes.*)\n"
    "  principles  active principles past expires_at: review jobs\n"
    "The window starts at Redis TIME rounded down to plan.interval, never\n"
    "at this pod's clock. A job's id and idempotency key derive from (scope,\n"
    "policy, window, chunk), so any number of planners, on clocks that\n"
    "disagree, propose the same jobs, and the consumers' claim collapses the\n"
    "copies. A job Kafka did not take is reported and proposed again next\n"
    "pass; one whose sources other jobs compressed is settled superseded.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE   properties file (see configs/planner.properties)\n"
    "  -X KEY=VALUE        set a key, e.g. -X plan.interval=10m\n"
    "      --once          run one pass and exit (for a CronJob); without it\n"
    "                      the planner is a daemon: a pass at start, then one\n"
    "                      each window, plus one for each decayctl plan run\n"
    "                      (triggers during a pass coalesce into one)\n"
    "      --dump-config   print the effective configuration, secrets\n"
    "                      masked, and exit\n"
    "      --version       print the version and exit\n"
    "  -h, --help          this help\n"
    "DECAYQ_* environment variables override the file; -X overrides both.\n"
    "\n"
    "After downtime the planner catches up with one pass, not one per\n"
    "missed window. Several replicas are safe (a Deployment), and so is a\n"
    "CronJob running --once (configs/k8s/planner-cronjob.yaml).\n"
    "\n"
    "Signals: SIGTERM, SIGINT, SIGHUP or SIGQUIT stop it between batches of\n"
    "scopes (plan.batch): each job is published whole or not at all, and\n"
    "what was not published is proposed again by the next pass.\n"
    "\n"
    "Logs (stderr): one 'stage=pass' line a pass: scopes, due, proposed,\n"
    "jobs, duplicates (jobs sent again), not_delivered, held, skipped, debt\n"
    "(due and not proposed), next_due and took_ms. 'decayctl plan status'\n"
    "shows the same, per scope too. With http.port set, /metrics, /healthz\n"
    "and /readyz (503 until a pass completes, and after one fails).\n"
    "\n"
    "Exit codes:\n"
    "  0  stopped cleanly (or --once: the pass completed)\n"
    "  1  the last pass did not complete (stopped midway, or Redis\n"
    "     failed); nothing is lost, the next pass proposes the rest\n"
    "  2  usage or configuration error\n"
    "  3  could not start (Redis or Kafka)\n";

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
        (void)sig;
        stop_flag = 1;
}

int main(int argc, char **argv)
{
        enum { OPT_ONCE = DQ_CLI_OPT__FIRST_OWN };
        static const struct option longopts[] = {
            DQ_CLI_LONGOPTS,
            {"once", no_argument, NULL, OPT_ONCE},
            {NULL, 0, NULL, 0},
        };
        int opt, rc = EXIT_OK;
        bool once = false;
        char errstr[512], name[300], host[256];
        dq_planner_t *p = NULL;
        struct sigaction sa;
        dq_cli_t cli;

        if (!dq_cli_init(&cli, "decay-planner", argc, EXIT_USAGE))
                return EXIT_USAGE;
        while ((opt = getopt_long(argc, argv, DQ_CLI_SHORTOPTS, longopts,
                                  NULL)) != -1) {
                if ((rc = dq_cli_option(&cli, opt, optarg)) == DQ_CLI_GO_ON)
                        continue;
                if (rc != DQ_CLI_NOT_MINE)
                        goto out;
                rc = EXIT_OK;
                if (opt != OPT_ONCE) {
                        rc = dq_cli_usage_error(&cli, usage,
                                                "unknown option, or one "
                                                "missing its value: '%s'",
                                                argv[optind - 1]);
                        goto out;
                }
                once = true;
        }
        if ((rc = dq_cli_daemon_finish(&cli, usage, argc, argv, EXIT_OK)) !=
            DQ_CLI_GO_ON)
                goto out;
        rc = EXIT_OK;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        sigaction(SIGQUIT, &sa, NULL);

        if (*cli.conf->worker_id) {
                snprintf(name, sizeof(name), "%s", cli.conf->worker_id);
        } else {
                if (gethostname(host, sizeof(host)))
                        snprintf(host, sizeof(host), "unknown");
                host[sizeof(host) - 1] = '\0';
                snprintf(name, sizeof(name), "%s:%ld", host, (long)getpid());
        }
        p = dq_planner_new(cli.conf, name, errstr, sizeof(errstr));
        if (!p) {
                dq_error("start", "result=failed reason=\"%s\"",
                         dq_esc(errstr));
                rc = strstr(errstr, "plan.") || strstr(errstr, "policy")
                         ? EXIT_USAGE
                         : EXIT_START;
                goto out;
        }
        dq_info("start", "planner=%s mode=%s interval_ms=%lld", dq_esc(name),
                once ? "once" : "daemon",
                (long long)cli.conf->plan_interval_ms);
        if (once) {
                dq_pass_t o;
                dq_err_t err = dq_planner_pass(p, &stop_flag, &o);

                dq_planner_log_pass(1, &o, err);
                rc =
                    !err && o.complete && !o.failed ? EXIT_OK : EXIT_INCOMPLETE;
        } else {
                rc = dq_planner_run(p, &stop_flag) ? EXIT_INCOMPLETE : EXIT_OK;
        }

out:
        dq_planner_destroy(p);
        dq_cli_release(&cli);
        return rc;
}
