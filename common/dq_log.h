/* One logging macro for all of decayq: level-gated, key=value lines with a
 * stable prefix, written to stderr. */
#ifndef DQ_LOG_H
#define DQ_LOG_H

#include <stdarg.h>

typedef enum dq_log_level_e {
        DQ_LOG_ERROR = 0,
        DQ_LOG_WARN,
        DQ_LOG_INFO,
        DQ_LOG_DEBUG,
} dq_log_level_t;

/* Current threshold; lines above it are not formatted at all. */
extern dq_log_level_t dq_log_level;

/* Parses "error", "warn", "info" or "debug". Returns -1 when unknown. */
int dq_log_level_parse(const char *s);

/* Sets the program name printed in each line ("decay-consumer"). The string
 * must outlive all logging. */
void dq_log_set_program(const char *program);

/* Writes one line: "<ts> decayq <program> level=<l> stage=<stage> <fmt...>".
 * fmt should itself be key=value pairs. Secrets must never be passed.
 * @locality any thread; one line is written with a single write(2). */
void dq_log_emit(dq_log_level_t level, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs at level when enabled; arguments are not evaluated otherwise. */
#define dq_log(level, stage, ...)                                   \
        do {                                                        \
                if ((level) <= dq_log_level)                        \
                        dq_log_emit((level), (stage), __VA_ARGS__); \
        } while (0)

#define dq_error(stage, ...) dq_log(DQ_LOG_ERROR, stage, __VA_ARGS__)
#define dq_warn(stage, ...)  dq_log(DQ_LOG_WARN, stage, __VA_ARGS__)
#define dq_info(stage, ...)  dq_log(DQ_LOG_INFO, stage, __VA_ARGS__)
#define dq_debug(stage, ...) dq_log(DQ_LOG_DEBUG, stage, __VA_ARGS__)

#endif
