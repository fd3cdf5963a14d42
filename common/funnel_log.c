#include "funnel_log.h"
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

void
funnel_log (funnel_log_level_t level, const char *format, ...)
{
    if (level > s_level)
        return;
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
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
