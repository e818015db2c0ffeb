/* dq-test-llm: the tests' Chat Completions server as a program, for the
 * demo and the benchmark. Prints "http://127.0.0.1:<port>/v1" on stdout
 * once it listens, then serves until SIGTERM or SIGINT. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dq_test_llm.h"
#include "banned.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
        (void)sig;
        stop = 1;
}

static void usage(FILE *fp)
{
        fputs("usage: dq-test-llm [--port N] [--model NAME] [--api-key KEY]\n"
              "                   [--delay-ms MS]\n"
              "\n"
              "A Chat Completions server for tests (POST /v1/chat/"
              "completions).\n"
              "Markers [[llm:SCENARIO]] in a prompt choose its answer; see\n"
              "tests/dq_test_llm.h. Prints its base URL once it listens.\n",
              fp);
}

int main(int argc, char **argv)
{
        dq_test_llm_opts_t o = {.model = "test-model"};
        dq_test_llm_t *s;

        for (int i = 1; i < argc; i++) {
                const char *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
                        usage(stdout);
                        return 0;
                }
                if (!v) {
                        usage(stderr);
                        return 2;
                }
                if (!strcmp(argv[i], "--port"))
                        o.port = atoi(v);
                else if (!strcmp(argv[i], "--model"))
                        o.model = v;
                else if (!strcmp(argv[i], "--api-key"))
                        o.api_key = v;
                else if (!strcmp(argv[i], "--delay-ms"))
                        o.delay_ms = atoi(v);
                else {
                        usage(stderr);
                        return 2;
                }
                i++;
        }
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
        if (!(s = dq_test_llm_start(&o))) {
                fprintf(stderr, "dq-test-llm: cannot listen\n");
                return 1;
        }
        printf("%s\n", dq_test_llm_url(s));
        fflush(stdout);
        while (!stop)
                pause();
        dq_test_llm_stop(s);
        return 0;
}
