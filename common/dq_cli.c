/* See dq_cli.h. */
#include "dq_cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "dq_store.h"
#include "dq_text.h"
#include "banned.h"

bool dq_cli_init(dq_cli_t *cli, const char *program, int argc, int usage_exit)
{
        *cli = (dq_cli_t){.program = program, .usage_exit = usage_exit};
        dq_log_set_program(program);
        opterr = 0; /* the usage error says what is wrong */
        cli->overrides = calloc((size_t)(argc > 0 ? argc : 1), sizeof(char *));
        if (!cli->overrides) {
                fprintf(stderr, "error: out of memory\n");
                return false;
        }
        return true;
}

int dq_cli_option(dq_cli_t *cli, int opt, const char *arg)
{
        switch (opt) {
        case 'c':
                cli->config = arg;
                return DQ_CLI_GO_ON;
        case 'X':
                cli->overrides[cli->override_cnt++] = (char *)arg;
                return DQ_CLI_GO_ON;
        case DQ_CLI_OPT_DUMP:
                cli->dump = true;
                return DQ_CLI_GO_ON;
        case DQ_CLI_OPT_VERSION:
                dq_print_version(stdout, cli->program);
                return 0;
        case 'h':
                cli->help = true;
                return DQ_CLI_GO_ON;
        default:
                return DQ_CLI_NOT_MINE;
        }
}

int dq_cli_load(dq_cli_t *cli, dq_log_level_t floor)
{
        char errstr[512];
        int level;

        cli->conf = dq_conf_load(cli->config, cli->overrides, cli->override_cnt,
                                 errstr, sizeof(errstr));
        if (!cli->conf) {
                fprintf(stderr, "error: %s\n", dq_esc(errstr));
                return cli->usage_exit;
        }
        if (cli->dump) {
                dq_conf_dump(cli->conf, stdout);
                return 0;
        }
        level = dq_log_level_parse(cli->conf->log_level);
        if (level >= 0 && level < (int)floor)
                level = (int)floor;
        if (level >= 0)
                dq_log_level = (dq_log_level_t)level;
        return DQ_CLI_GO_ON;
}

int dq_cli_daemon_finish(dq_cli_t *cli, const char *usage, int argc,
                         char **argv, int ok_exit)
{
        if (cli->help) {
                fputs(usage, stdout);
                fputs("\nConfiguration keys (default, meaning):\n", stdout);
                dq_conf_describe(stdout);
                return ok_exit;
        }
        if (optind < argc)
                return dq_cli_usage_error(
                    cli, usage, "unexpected argument '%s'", argv[optind]);
        return dq_cli_load(cli, DQ_LOG_ERROR);
}

int dq_cli_usage_error(const dq_cli_t *cli, const char *usage, const char *fmt,
                       ...)
{
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        fprintf(stderr, "error: %s\n", dq_esc(msg));
        if (usage)
                fputs(usage, stderr);
        return cli->usage_exit;
}

void dq_cli_release(dq_cli_t *cli)
{
        dq_conf_destroy(cli->conf);
        free(cli->overrides);
        cli->conf = NULL;
        cli->overrides = NULL;
}
