/* decay-consumer: the daemon that runs decay jobs. See dq_consumer.h. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_cli.h"
#include "dq_consumer.h"
#include "dq_log.h"
#include "dq_store.h"
#include "dq_text.h"
#include "banned.h"

/* Stable exit codes; documented in --help. */
enum {
        EXIT_DRAINED = 0,
        EXIT_HANDED_BACK = 1,
        EXIT_USAGE = 2,
        EXIT_START = 3,
        EXIT_FATAL = 4,
};

static const char usage[] =
    "usage: decay-consumer [options]\n"
    "\n"
    "Runs decay jobs: joins the consumer group on the jobs topic and its\n"
    "delay tiers, claims each job in Redis, applies its effect once, retries\n"
    "failures through the delay tiers with capped, jittered backoff, and\n"
    "sends what cannot succeed to the DLQ. An offset is committed only after\n"
    "every message before it is settled.\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE       properties file (see configs/)\n"
    "  -X KEY=VALUE            set a key, e.g. -X "
    "kafka.bootstrap.servers=h:9092\n"
    "      --create-topics N   create missing topics (jobs, delay tiers,\n"
    "                          DLQ) with N partitions, then run\n"
    "      --dump-config       print the effective configuration, secrets\n"
    "                          masked, and exit\n"
    "      --version           print the version and exit\n"
    "  -h, --help              this help\n"
    "DECAYQ_* environment variables override the file; -X overrides both.\n"
    "kafka.* keys go to librdkafka: kafka.group.id (default decayq),\n"
    "kafka.group.instance.id for static membership (e.g. the pod name).\n"
    "\n"
    "Signals (each is logged):\n"
    "  SIGTERM, SIGINT,  stop fetching, finish in-flight work within\n"
    "  SIGHUP, SIGQUIT   drain.timeout, commit, leave the group (the\n"
    "                    commit and the leave wait up to 10 s each)\n"
    "  a second one      stop at once; unsettled work is read again by the\n"
    "                    next owner, nothing is lost\n"
    "  SIGUSR1           log the run summary now\n"
    "  SIGUSR2           ignored\n"
    "\n"
    "Logs (stderr): '<time> decayq decay-consumer level=L stage=S k=v...'\n"
    "with stages start, claim, dispatch, settle, retry, dead, commit,\n"
    "rebalance, redis, drain and summary. Per-message lines are at\n"
    "log.level=debug; the run summary is logged every summary.interval and\n"
    "at exit.\n"
    "\n"
    "Exit codes:\n"
    "  0  drained: everything in flight was settled, nothing was\n"
    "     abandoned, the final commit succeeded and the group was left\n"
    "  1  stopped with work handed back unsettled, the final commit\n"
    "     failed or went unanswered, or the group could not be left\n"
    "     (read again later; nothing is lost)\n"
    "  2  usage or configuration error\n"
    "  3  could not start (Redis, Kafka or topics)\n"
    "  4  a fatal Kafka client error (for example a static member fenced\n"
    "     by another with the same kafka.group.instance.id); nothing was\n"
    "     committed after it\n";

static dq_consumer_t *running;

static void on_signal(int sig)
{
        if (running)
                dq_consumer_signal(running, sig);
}

int main(int argc, char **argv)
{
        enum { OPT_CREATE = DQ_CLI_OPT__FIRST_OWN };
        static const struct option longopts[] = {
            DQ_CLI_LONGOPTS,
            {"create-topics", required_argument, NULL, OPT_CREATE},
            {NULL, 0, NULL, 0},
        };
        int opt, rc = EXIT_DRAINED, create = 0;
        char errstr[512], *end;
        dq_consumer_t *c = NULL;
        struct sigaction sa;
        dq_cli_t cli;

        if (!dq_cli_init(&cli, "decay-consumer", argc, EXIT_USAGE))
                return EXIT_USAGE;
        while ((opt = getopt_long(argc, argv, DQ_CLI_SHORTOPTS, longopts,
                                  NULL)) != -1) {
                if ((rc = dq_cli_option(&cli, opt, optarg)) == DQ_CLI_GO_ON)
                        continue;
                if (rc != DQ_CLI_NOT_MINE)
                        goto out;
                rc = EXIT_DRAINED;
                if (opt != OPT_CREATE) {
                        rc = dq_cli_usage_error(&cli, usage,
                                                "unknown option, or one "
                                                "missing its value: '%s'",
                                                argv[optind - 1]);
                        goto out;
                }
                create = (int)strtol(optarg, &end, 10);
                if (*end || create < 1 || create > 10000) {
                        rc = dq_cli_usage_error(
                            &cli, NULL,
                            "--create-topics: expected a partition count "
                            "from 1 to 10000, got '%s'",
                            optarg);
                        goto out;
                }
        }
        if ((rc = dq_cli_daemon_finish(&cli, usage, argc, argv,
                                       EXIT_DRAINED)) != DQ_CLI_GO_ON)
                goto out;
        rc = EXIT_DRAINED;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);

        c = dq_consumer_new(cli.conf, create, errstr, sizeof(errstr));
        if (!c) {
                dq_error("start", "result=failed reason=\"%s\"",
                         dq_esc(errstr));
                rc = EXIT_START;
                goto out;
        }
        running = c;
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        /* M3: no signal that a person or an orchestrator sends kills the
         * consumer without a drain. */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        sigaction(SIGQUIT, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        sigaction(SIGUSR2, &sa, NULL);

        switch (dq_consumer_run(c)) {
        case DQ_RUN_DRAINED:
                rc = EXIT_DRAINED;
                break;
        case DQ_RUN_HANDED_BACK:
                rc = EXIT_HANDED_BACK;
                break;
        case DQ_RUN_FATAL:
                rc = EXIT_FATAL;
                break;
        }

out:
        running = NULL;
        dq_consumer_destroy(c);
        dq_cli_release(&cli);
        return rc;
}
