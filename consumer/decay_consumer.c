/* decay-consumer: the daemon that runs decay jobs. See dq_consumer.h. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_conf.h"
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
    "  SIGHUP, SIGQUIT   drain.timeout, commit, leave the group\n"
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
    "  0  drained: everything in flight was settled, nothing was abandoned\n"
    "     and the final commit succeeded\n"
    "  1  stopped with work handed back unsettled, or the final commit\n"
    "     failed (read again later; nothing is lost)\n"
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
        enum { OPT_DUMP = 256, OPT_CREATE, OPT_VERSION };
        static const struct option longopts[] = {
            {"config", required_argument, NULL, 'c'},
            {"help", no_argument, NULL, 'h'},
            {"dump-config", no_argument, NULL, OPT_DUMP},
            {"version", no_argument, NULL, OPT_VERSION},
            {"create-topics", required_argument, NULL, OPT_CREATE},
            {NULL, 0, NULL, 0},
        };
        const char *config = NULL;
        char **overrides = calloc((size_t)argc + 1, sizeof(char *));
        int override_cnt = 0, opt, rc = EXIT_DRAINED, create = 0, level;
        bool dump = false;
        char errstr[512], *end;
        dq_conf_t *conf = NULL;
        dq_consumer_t *c = NULL;
        struct sigaction sa;

        dq_log_set_program("decay-consumer");
        if (!overrides) {
                fprintf(stderr, "error: out of memory\n");
                return EXIT_USAGE;
        }
        while ((opt = getopt_long(argc, argv, "c:X:h", longopts, NULL)) != -1) {
                switch (opt) {
                case 'c':
                        config = optarg;
                        break;
                case 'X':
                        overrides[override_cnt++] = optarg;
                        break;
                case 'h':
                        fputs(usage, stdout);
                        fputs("\nConfiguration keys (default, meaning):\n",
                              stdout);
                        dq_conf_describe(stdout);
                        goto out;
                case OPT_VERSION:
                        dq_print_version(stdout, "decay-consumer");
                        goto out;
                case OPT_DUMP:
                        dump = true;
                        break;
                case OPT_CREATE:
                        create = (int)strtol(optarg, &end, 10);
                        if (*end || create < 1 || create > 10000) {
                                fprintf(stderr,
                                        "error: --create-topics: expected a "
                                        "partition count from 1 to 10000, "
                                        "got '%s'\n",
                                        optarg);
                                rc = EXIT_USAGE;
                                goto out;
                        }
                        break;
                default:
                        fputs(usage, stderr);
                        rc = EXIT_USAGE;
                        goto out;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "error: unexpected argument '%s'\n",
                        argv[optind]);
                fputs(usage, stderr);
                rc = EXIT_USAGE;
                goto out;
        }

        conf = dq_conf_load(config, overrides, override_cnt, errstr,
                            sizeof(errstr));
        if (!conf) {
                fprintf(stderr, "error: %s\n", dq_esc(errstr));
                rc = EXIT_USAGE;
                goto out;
        }
        if (dump) {
                dq_conf_dump(conf, stdout);
                goto out;
        }
        level = dq_log_level_parse(conf->log_level);
        if (level >= 0)
                dq_log_level = (dq_log_level_t)level;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);

        c = dq_consumer_new(conf, create, errstr, sizeof(errstr));
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
        dq_conf_destroy(conf);
        free(overrides);
        return rc;
}
