#include "funnel_log.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static funnel_log_level_t s_level = FUNNEL_LOG_INFO;
static char s_name [64] = "funnel";
static const char *s_level_names [] = { "ERROR", "WARN", "INFO", "DEBUG" };

void
funnel_log_init (const char *name, funnel_log_level_t level)
{
    snprintf (s_name, sizeof s_name, "%s", name ? name : "funnel");
    s_level = level;
}

int
funnel_log_level_parse (const char *text, funnel_log_level_t *level)
{
    const char *names [] = { "error", "warn", "info", "debug" };
    for (int i = 0; i < 4; i++)
        if (text && strcmp (text, names [i]) == 0) {
            *level = (funnel_log_level_t) i;
            return 0;
        }
    return -1;
}

bool
funnel_log_enabled (funnel_log_level_t level)
{
    return level <= s_level;
}

//  Errors and warnings are rate-limited per call site (its format): at
//  most LOG_BURST lines a second each, so one hostile client cannot fill
//  the disk; the next line that passes says how many were suppressed.
#define LOG_BURST   5
#define LOG_SITES   64

typedef struct {
    const char *format;
    int64_t second;
    int lines;
    uint64_t suppressed;
} log_site_t;

static log_site_t s_sites [LOG_SITES];

//  True if the line may be written; *suppressed gets the count to report.
static bool
s_log_allowed (const char *format, int64_t second, uint64_t *suppressed)
{
    size_t slot = ((uintptr_t) format >> 3) % LOG_SITES;
    log_site_t *site = &s_sites [slot];
    if (site->format != format) {
        //  A new site (or a collision): start over for this slot
        site->format = format;
        site->second = second;
        site->lines = 0;
        site->suppressed = 0;
    }
    if (site->second != second) {
        site->second = second;
        site->lines = 0;
    }
    if (site->lines >= LOG_BURST) {
        site->suppressed++;
        return false;
    }
    site->lines++;
    *suppressed = site->suppressed;
    site->suppressed = 0;
    return true;
}

void
funnel_log (funnel_log_level_t level, const char *format, ...)
{
    if (level > s_level)
        return;
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    uint64_t suppressed = 0;
    if (level <= FUNNEL_LOG_WARN && !s_log_allowed (format, now.tv_sec, &suppressed))
        return;
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);
    char stamp [32];
    strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    char line [2048];
    va_list args;
    va_start (args, format);
    vsnprintf (line, sizeof line, format, args);
    va_end (args);
    //  One fprintf per line so concurrent daemons' lines don't interleave
    if (suppressed)
        fprintf (stderr, "%s.%03ldZ %s %s: %s (%" PRIu64 " similar lines suppressed)\n",
                 stamp, now.tv_nsec / 1000000, s_level_names [level], s_name, line,
                 suppressed);
    else
        fprintf (stderr, "%s.%03ldZ %s %s: %s\n", stamp, now.tv_nsec / 1000000,
                 s_level_names [level], s_name, line);
}

bool
funnel_log_every (int64_t *last_ms, int64_t interval_ms)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
    if (*last_ms == 0 || ms - *last_ms >= interval_ms) {
        *last_ms = ms;
        return true;
    }
    return false;
}

//  --------------------------------------------------------------------------
//  Self-test: the per-site rate limit, on a captured stderr

#undef NDEBUG
#include <assert.h>
#include <stdlib.h>
#include <unistd.h>

void
funnel_log_test (bool verbose)
{
    (void) verbose;
    fflush (stderr);
    int saved = dup (2);
    FILE *capture = tmpfile ();
    assert (saved >= 0 && capture);
    dup2 (fileno (capture), 2);
    for (int i = 0; i < 101; i++) {
        if (i == 100)
            usleep (1100 * 1000);                   //  The next second: one more
        log_error ("hostile input %d", i);          //  One call site
    }
    log_warn ("another site");
    fflush (stderr);
    dup2 (saved, 2);
    close (saved);
    rewind (capture);
    char line [512];
    int lines = 0, hostile = 0, other = 0, reported = 0;
    while (fgets (line, sizeof line, capture)) {
        lines++;
        hostile += strstr (line, "hostile input") != NULL;
        other += strstr (line, "another site") != NULL;
        reported += strstr (line, "hostile input 100 (") && strstr (line, "suppressed)");
    }
    fclose (capture);
    //  At most 5 a second from one site (the burst may straddle a second),
    //  and the line after says how many were not written
    assert (hostile >= 6 && hostile <= 11);
    assert (reported == 1);
    assert (other == 1 && lines == hostile + other);
}
