/* Helpers shared by decayq's benchmarks (see bench_util.h). */
#define _GNU_SOURCE /* popen */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "banned.h"

double bench_redis_ceiling(const char *host, int port, int db, const char *ns,
                           int n, int pipeline, int clients)
{
        size_t cap = 1 << 16, len = 0, got;
        char cmd[1024], *buf = malloc(cap), *last = NULL;
        double rps = 0;
        FILE *p;

        if (!buf)
                return 0;

        /* The same arguments a consumer passes for a candidate_compression
         * claim with an idempotency key; random keys make every call a
         * first claim, which writes the state hash. */
        snprintf(cmd, sizeof(cmd),
                 "redis-benchmark -h %s -p %d --dbnum %d -n %d -P %d -c %d "
                 "-r 100000000 -q FCALL decayq_claim 2 %s:job:{s}:__rand_int__ "
                 "%s:idem:{s}:__rand_int__ 1700000000000 30000 bench "
                 "candidate_compression 4 __rand_int__ 604800000 2>&1",
                 host, port, db, n, pipeline, clients, ns, ns);
        p = popen(cmd, "r");
        if (!p) {
                free(buf);
                return 0;
        }
        /* Progress lines end in '\r', so the output is one long line:
         * read it whole and take the rate before the last "requests". */
        while ((got = fread(buf + len, 1, cap - len - 1, p)) > 0) {
                len += got;
                if (len + 1 == cap) {
                        char *more = realloc(buf, cap * 2);
                        if (!more)
                                break;
                        buf = more;
                        cap *= 2;
                }
        }
        buf[len] = '\0';
        for (char *r = buf; (r = strstr(r, " requests per second")); r++)
                last = r;
        if (last) {
                char *colon = last;
                while (colon > buf && *colon != ':')
                        colon--;
                rps = strtod(colon + 1, NULL);
        }
        free(buf);
        pclose(p);
        return rps;
}

pid_t bench_spawn(char *const argv[], const char *log)
{
        pid_t pid = fork();

        if (pid != 0)
                return pid;
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
        }
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

int64_t bench_rss(pid_t pid)
{
        char path[64], line[256];
        int64_t kb = -1;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        if (!(f = fopen(path, "r")))
                return -1;
        while (fgets(line, sizeof(line), f))
                if (!strncmp(line, "VmRSS:", 6)) {
                        kb = strtoll(line + 6, NULL, 10);
                        break;
                }
        fclose(f);
        return kb < 0 ? -1 : kb * 1024;
}

double bench_cpu_s(pid_t pid)
{
        char path[64], buf[1024], *p;
        unsigned long long ut, st;
        FILE *f;
        size_t n;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        if (!(f = fopen(path, "r")))
                return -1;
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* Fields after the command name, which may hold spaces. */
        if (!(p = strrchr(buf, ')')))
                return -1;
        if (sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                   &st) != 2)
                return -1;
        return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int bench_stop(pid_t pid, int timeout_ms)
{
        int status = 0;

        kill(pid, SIGTERM);
        for (int waited = 0; waited < timeout_ms; waited += 20) {
                if (waitpid(pid, &status, WNOHANG) == pid)
                        return status;
                usleep(20000);
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return status;
}

int64_t bench_mono_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

const char *bench_machine(void)
{
        static char buf[256];
        struct utsname u;
        long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);

        uname(&u);
        snprintf(buf, sizeof(buf), "%ld cores, %.0f GiB, %s %s",
                 sysconf(_SC_NPROCESSORS_ONLN),
                 (double)pages * (double)psize / (1024.0 * 1024 * 1024),
                 u.sysname, u.release);
        return buf;
}
