/* One case of tests/fixtures/, as its own ctest:
 *
 *   fixture_case DIR          check the case in DIR
 *   fixture_case --print DIR  print a valid case's canonical form
 *
 * DIR/input is a job message. An invalid case has DIR/code, the reason
 * code its rejection must give (and may have DIR/max_bytes). A valid case
 * has DIR/expected: the canonical serialization it must give, byte for
 * byte, which must itself parse to the same canonical form. Exits 0 when
 * the case holds, 1 with the difference when it does not. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_job.h"
#include "banned.h"

/* DIR/name's bytes, NUL-terminated; NULL when it cannot be read. */
static char *read_file(const char *dir, const char *name, size_t *lenp)
{
        char path[4096];
        size_t len = 0, n;
        char *buf = NULL, *p;
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (!(f = fopen(path, "rb")))
                return NULL;
        do {
                if (!(p = realloc(buf, len + 65536 + 1)))
                        abort();
                buf = p;
                n = fread(buf + len, 1, 65536, f);
                len += n;
        } while (n == 65536);
        fclose(f);
        buf[len] = '\0';
        if (lenp)
                *lenp = len;
        return buf;
}

__attribute__((format(printf, 2, 3))) static int fail(const char *dir,
                                                      const char *fmt, ...)
{
        va_list ap;

        fprintf(stderr, "FAIL %s: ", dir);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return 1;
}

static int check_invalid(const char *dir, const char *input, size_t len,
                         char *code)
{
        size_t max = DQ_JOB_DEFAULT_MAX_BYTES;
        char *max_s = read_file(dir, "max_bytes", NULL);
        dq_reject_t rej = {0};
        dq_job_t *job;

        if (max_s)
                max = strtoul(max_s, NULL, 10);
        free(max_s);
        code[strcspn(code, "\r\n")] = '\0';
        job = dq_job_parse(input, len, max, &rej);
        if (job) {
                dq_job_destroy(job);
                return fail(dir, "accepted; want %s", code);
        }
        if (!rej.code || strcmp(rej.code, code))
                return fail(dir, "rejected with %s; want %s",
                            rej.code ? rej.code : "(none)", code);
        if (!rej.message[0])
                return fail(dir, "%s: empty message", code);
        return 0;
}

/* The canonical form of input[0..len), or NULL with why set. */
static char *canonical(const char *input, size_t len, size_t *olen,
                       dq_reject_t *why)
{
        dq_job_t *job = dq_job_parse(input, len, DQ_JOB_DEFAULT_MAX_BYTES, why);
        char *out;

        if (!job)
                return NULL;
        out = dq_job_serialize(job, olen);
        dq_job_destroy(job);
        return out;
}

int main(int argc, char **argv)
{
        bool print = argc == 3 && !strcmp(argv[1], "--print");
        const char *dir = argv[argc - 1];
        char *input, *code, *expected, *out, *again;
        size_t len, olen, alen, elen;
        dq_reject_t rej = {0};
        int rc = 0;

        if (argc != 2 && !print) {
                fputs("usage: fixture_case [--print] DIR\n", stderr);
                return 2;
        }
        if (!(input = read_file(dir, "input", &len)))
                return fail(dir, "no input");
        if ((code = read_file(dir, "code", NULL))) {
                rc = check_invalid(dir, input, len, code);
                free(code);
                free(input);
                return rc;
        }
        out = canonical(input, len, &olen, &rej);
        if (!out) {
                rc = fail(dir, "rejected with %s: %s", rej.code, rej.message);
                free(input);
                return rc;
        }
        if (print) {
                fwrite(out, 1, olen, stdout);
                fputc('\n', stdout);
        } else if (!(expected = read_file(dir, "expected", &elen))) {
                rc = fail(dir, "no expected file");
        } else {
                if (elen && expected[elen - 1] == '\n')
                        expected[--elen] = '\0';
                if (elen != olen || memcmp(expected, out, olen))
                        rc = fail(dir, "got\n  %s\nwant\n  %s", out, expected);
                /* The canonical form is a fixed point. */
                again = canonical(expected, elen, &alen, &rej);
                if (!rc && (!again || alen != olen || memcmp(again, out, olen)))
                        rc = fail(dir, "expected is not canonical%s%s", "", "");
                free(again);
                free(expected);
        }
        free(out);
        free(input);
        return rc;
}
