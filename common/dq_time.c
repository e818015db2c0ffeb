/* RFC 3339 UTC timestamps and durations, with civil-date arithmetic so that
 * neither the process time zone nor the locale can change a result. */
#include "dq_time.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "banned.h"

int64_t dq_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t dq_mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
        y -= m <= 2;
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
        z += 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        *d = (int)(doy - (153 * mp + 2) / 5 + 1);
        *m = (int)(mp < 10 ? mp + 3 : mp - 9);
        *y = (int)(yoe + era * 400 + (*m <= 2));
}

static bool is_leap(int y)
{
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
        static const int dim[] = {31, 28, 31, 30, 31, 30,
                                  31, 31, 30, 31, 30, 31};
        return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* Reads exactly n digits at s into *v. */
static bool digits(const char *s, int n, int *v)
{
        *v = 0;
        for (int i = 0; i < n; i++) {
                if (!isdigit((unsigned char)s[i]))
                        return false;
                *v = *v * 10 + (s[i] - '0');
        }
        return true;
}

bool dq_time_parse_rfc3339(const char *s, size_t len, int64_t *msp)
{
        int y, mo, d, h, mi, se, ms = 0;
        size_t i = 19;

        if (len < 20)
                return false;
        if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
            s[7] != '-' || !digits(s + 8, 2, &d) || s[10] != 'T' ||
            !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) ||
            s[16] != ':' || !digits(s + 17, 2, &se))
                return false;
        if (y < 1970 || mo < 1 || mo > 12 || d < 1 ||
            d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59)
                return false;
        if (s[i] == '.') {
                int nd = 0, scale = 100;
                i++;
                while (i < len && isdigit((unsigned char)s[i])) {
                        if (++nd > 9)
                                return false;
                        ms += (s[i] - '0') * scale;
                        scale /= 10;
                        i++;
                }
                if (nd == 0)
                        return false;
        }
        if (i != len - 1 || s[i] != 'Z')
                return false;
        *msp = (days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se) *
                   1000 +
               ms;
        return true;
}

char *dq_time_format_rfc3339(int64_t ms, char *buf, size_t size)
{
        int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
        int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
        int64_t rem = secs - days * 86400;
        int frac = (int)(ms - secs * 1000);
        int y, m, d;

        civil_from_days(days, &y, &m, &d);
        if (frac)
                snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", y, m,
                         d, (int)(rem / 3600), (int)(rem / 60 % 60),
                         (int)(rem % 60), frac);
        else
                snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02dZ", y, m, d,
                         (int)(rem / 3600), (int)(rem / 60 % 60),
                         (int)(rem % 60));
        return buf;
}

bool dq_duration_parse(const char *s, int64_t *msp)
{
        char *end;
        long long v;
        int64_t mult;

        if (!s || !isdigit((unsigned char)*s))
                return false;
        v = strtoll(s, &end, 10);
        if (*end == '\0' || !strcmp(end, "ms"))
                mult = 1;
        else if (end[0] == 's' && !end[1])
                mult = 1000;
        else if (end[0] == 'm' && !end[1])
                mult = 60 * 1000;
        else if (end[0] == 'h' && !end[1])
                mult = 3600 * 1000;
        else if (end[0] == 'd' && !end[1])
                mult = 86400 * 1000;
        else
                return false;
        if (v < 0 || v > INT64_MAX / mult)
                return false;
        *msp = (int64_t)v * mult;
        return true;
}
