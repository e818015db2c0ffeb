/* Line-oriented key=value logging to stderr. */
#include "dq_log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "banned.h"

dq_log_level_t dq_log_level = DQ_LOG_INFO;
static const char *dq_log_program = "decayq";

static const char *dq_log_level_names[] = {"error", "warn", "info", "debug"};

int dq_log_level_parse(const char *s)
{
        for (int i = 0; i <= DQ_LOG_DEBUG; i++)
                if (!strcasecmp(s, dq_log_level_names[i]))
                        return i;
        return -1;
}

void dq_log_set_program(const char *program)
{
        dq_log_program = program;
}

void dq_log_emit(dq_log_level_t level, const char *stage, const char *fmt, ...)
{
        char line[2048];
        struct timespec ts;
        struct tm tm;
        size_t of;
        int r;
        va_list ap;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        of = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
        r = snprintf(line + of, sizeof(line) - of,
                     ".%03ldZ decayq %s level=%s stage=%s ",
                     ts.tv_nsec / 1000000, dq_log_program,
                     dq_log_level_names[level], stage);
        if (r > 0)
                of += (size_t)r;
        if (of < sizeof(line)) {
                va_start(ap, fmt);
                r = vsnprintf(line + of, sizeof(line) - of, fmt, ap);
                va_end(ap);
                if (r > 0)
                        of += (size_t)r;
        }
        if (of >= sizeof(line) - 1)
                of = sizeof(line) - 2; /* truncated: keep the newline */
        line[of++] = '\n';
        /* One write(2) so lines from several threads never interleave. */
        if (write(STDERR_FILENO, line, of) < 0) {
                /* Nowhere left to report it. */
        }
}
