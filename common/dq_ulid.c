/* ULID generation and validation. */
#include "dq_ulid.h"

#include <string.h>
#include <sys/random.h>

#include "banned.h"

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static int crockford_val(char c)
{
        const char *p = c ? strchr(crockford, c) : NULL;
        return p ? (int)(p - crockford) : -1;
}

void dq_ulid_new(int64_t ms, char out[DQ_ULID_LEN + 1])
{
        unsigned char rnd[10];
        size_t got = 0;
        uint64_t t = (uint64_t)ms;
        int i;

        while (got < sizeof(rnd)) {
                ssize_t r = getrandom(rnd + got, sizeof(rnd) - got, 0);
                if (r > 0)
                        got += (size_t)r;
        }
        for (i = 9; i >= 0; i--) {
                out[i] = crockford[t & 31];
                t >>= 5;
        }
        /* 80 random bits as 16 base32 digits, 5 bits at a time. */
        for (i = 0; i < 16; i++) {
                int bit = i * 5, v = 0;
                for (int b = 0; b < 5; b++, bit++)
                        v = (v << 1) | ((rnd[bit / 8] >> (7 - bit % 8)) & 1);
                out[10 + i] = crockford[v];
        }
        out[DQ_ULID_LEN] = '\0';
}

bool dq_ulid_valid(const char *s, size_t len)
{
        if (len != DQ_ULID_LEN)
                return false;
        /* The first digit carries the top 3 of 48 time bits: at most 7. */
        if (s[0] < '0' || s[0] > '7')
                return false;
        for (size_t i = 0; i < len; i++)
                if (crockford_val(s[i]) < 0)
                        return false;
        return true;
}

int64_t dq_ulid_time_ms(const char *s)
{
        int64_t t = 0;
        for (int i = 0; i < 10; i++)
                t = (t << 5) | crockford_val(s[i]);
        return t;
}
