#include "funnel_log.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static funnel_log_level_t s_level = FUNNEL_LOG_INFO;
static funnel_log_format_t s_format = FUNNEL_LOG_TEXT;
static char s_name [64] = "funnel";
static const char *s_level_names [] = { "ERROR", "WARN", "INFO", "DEBUG" };
static const char *s_json_levels [] = { "error", "warn", "info", "debug" };

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

int
funnel_log_format_parse (const char *text, funnel_log_format_t *format)
{
    if (text && strcmp (text, "text") == 0)
        *format = FUNNEL_LOG_TEXT;
    else
    if (text && strcmp (text, "json") == 0)
        *format = FUNNEL_LOG_JSON;
    else
        return -1;
    return 0;
}

void
funnel_log_set_format (funnel_log_format_t format)
{
    s_format = format;
}

//  Length of the valid UTF-8 sequence at p (1..4), or 0 if it is not one.
static size_t
s_utf8_length (const unsigned char *p)
{
    size_t length = p [0] < 0x80 ? 1 : (p [0] & 0xE0) == 0xC0 ? 2
                  : (p [0] & 0xF0) == 0xE0 ? 3 : (p [0] & 0xF8) == 0xF0 ? 4 : 0;
    if (length == 2 && p [0] < 0xC2)
        return 0;           //  Overlong
    for (size_t i = 1; i < length; i++)
        if ((p [i] & 0xC0) != 0x80)
            return 0;
    return length;
}

//  Appends text as a JSON string body: quotes, backslashes and control
//  characters escaped, bytes that are not UTF-8 as U+FFFD, so every line
//  is valid JSON whatever a message quotes (an event id, a Redis error).
static size_t
s_json_escape (char *out, size_t size, size_t at, const char *text)
{
    for (const unsigned char *p = (const unsigned char *) text; *p && at + 8 < size; ) {
        size_t length = s_utf8_length (p);
        if (*p == '"' || *p == '\\') {
            out [at++] = '\\';
            out [at++] = (char) *p++;
        }
        else
        if (*p < 0x20)
            at += (size_t) snprintf (out + at, size - at, "\\u%04x", *p++);
        else
        if (length == 0) {
            at += (size_t) snprintf (out + at, size - at, "\\ufffd");
            p++;
        }
        else {
            memcpy (out + at, p, length);
            at += length;
            p += length;
        }
    }
    out [at] = 0;
    return at;
}

void
funnel_log_format_line (char *buffer, size_t size, funnel_log_level_t level,
                        const char *message)
{
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);
    char stamp [40];
    size_t length = strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (stamp + length, sizeof stamp - length, ".%03ldZ", now.tv_nsec / 1000000);
    if (s_format == FUNNEL_LOG_PLAIN)
        snprintf (buffer, size, "%s: %s", s_name, message);
    else
    if (s_format == FUNNEL_LOG_TEXT)
        snprintf (buffer, size, "%s %s %s: %s", stamp, s_level_names [level], s_name, message);
    else {
        int at = snprintf (buffer, size, "{\"ts\":\"%s\",\"level\":\"%s\",\"svc\":\"",
                           stamp, s_json_levels [level]);
        size_t end = s_json_escape (buffer, size - 16, (size_t) at, s_name);
        end += (size_t) snprintf (buffer + end, size - end, "\",\"msg\":\"");
        end = s_json_escape (buffer, size - 4, end, message);
        snprintf (buffer + end, size - end, "\"}");
    }
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
    char message [2048];
    va_list args;
    va_start (args, format);
    vsnprintf (message, sizeof message, format, args);
    va_end (args);
    if (suppressed) {
        size_t used = strlen (message);
        snprintf (message + used, sizeof message - used,
                  " (%" PRIu64 " similar lines suppressed)", suppressed);
    }
    //  Room for a message escaped in full (at worst 6 bytes a byte)
    char line [sizeof message * 6 + 256];
    funnel_log_format_line (line, sizeof line, level, message);
    //  One fprintf per line so concurrent daemons' lines don't interleave
    fprintf (stderr, "%s\n", line);
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

//  Errors and warnings from one call site: at most LOG_BURST a second,
//  on a captured stderr
static void
s_test_rate_limit (void)
{
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

//  The line formats
static void
s_test_formats (void)
{
    funnel_log_format_t format;
    assert (funnel_log_format_parse ("json", &format) == 0 && format == FUNNEL_LOG_JSON);
    assert (funnel_log_format_parse ("text", &format) == 0 && format == FUNNEL_LOG_TEXT);
    assert (funnel_log_format_parse ("plain", &format) == -1);
    assert (funnel_log_format_parse (NULL, &format) == -1);

    char saved_name [64];
    snprintf (saved_name, sizeof saved_name, "%s", s_name);
    funnel_log_format_t saved_format = s_format;
    snprintf (s_name, sizeof s_name, "leads");
    char line [512];
    funnel_log_set_format (FUNNEL_LOG_TEXT);
    funnel_log_format_line (line, sizeof line, FUNNEL_LOG_WARN, "redis down");
    assert (strlen (line) > 24 && line [10] == 'T' && line [23] == 'Z');
    assert (strcmp (line + 24, " WARN leads: redis down") == 0);

    funnel_log_set_format (FUNNEL_LOG_PLAIN);
    funnel_log_format_line (line, sizeof line, FUNNEL_LOG_ERROR, "bad");
    assert (strcmp (line, "leads: bad") == 0);

    //  JSON: escaped quotes, backslash, control characters, UTF-8 kept,
    //  a stray byte replaced
    funnel_log_set_format (FUNNEL_LOG_JSON);
    funnel_log_format_line (line, sizeof line, FUNNEL_LOG_INFO,
                            "id \"a\\b\"\n\tcaf\xc3\xa9 \xff!");
    const char *expected = "\",\"level\":\"info\",\"svc\":\"leads\",\"msg\":"
                           "\"id \\\"a\\\\b\\\"\\u000a\\u0009caf\xc3\xa9 \\ufffd!\"}";
    assert (strncmp (line, "{\"ts\":\"", 7) == 0);
    assert (strlen (line) > strlen (expected));
    assert (strcmp (line + strlen (line) - strlen (expected), expected) == 0);
    //  A message at the size limit still ends as a closed object
    char big [2100];
    memset (big, '"', sizeof big - 1);
    big [sizeof big - 1] = 0;
    char small [300];
    funnel_log_format_line (small, sizeof small, FUNNEL_LOG_INFO, big);
    assert (strlen (small) < sizeof small);
    assert (strcmp (small + strlen (small) - 2, "\"}") == 0);

    funnel_log_set_format (saved_format);
    snprintf (s_name, sizeof s_name, "%s", saved_name);
}

void
funnel_log_test (bool verbose)
{
    (void) verbose;
    s_test_rate_limit ();
    s_test_formats ();
}
