/*  funnel_log — leveled, one-line logging to stderr.

    One line per notable event, in one of three formats:
      text  "2026-11-27T03:55:39.123Z INFO leads: msg" (the default)
      json  {"ts":"2026-11-27T03:55:39.123Z","level":"info","svc":"leads","msg":"msg"}
            one object per line, for log shippers (--log-format json)
      plain "leads: msg", for command-line tools (funnelctl)
    Levels: error, warn, info, debug. Level and format are set once at start
    (--log-level / FUNNEL_LOG_LEVEL, --log-format / FUNNEL_LOG_FORMAT; the
    config loader applies the format). Errors and warnings are rate-limited
    here, per call site: at most 5 lines a second each, and the next line
    that passes ends with "(k similar lines suppressed)". Callers on hot
    paths may still use funnel_log_every for one line per interval.
*/
#ifndef FUNNEL_LOG_H_INCLUDED
#define FUNNEL_LOG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    FUNNEL_LOG_ERROR = 0, FUNNEL_LOG_WARN, FUNNEL_LOG_INFO, FUNNEL_LOG_DEBUG
} funnel_log_level_t;

typedef enum {
    FUNNEL_LOG_TEXT = 0, FUNNEL_LOG_JSON, FUNNEL_LOG_PLAIN
} funnel_log_format_t;

//  Sets the name printed on each line (the service) and the level.
void funnel_log_init (const char *name, funnel_log_level_t level);
//  Parses "error|warn|info|debug"; returns -1 if unknown.
int  funnel_log_level_parse (const char *text, funnel_log_level_t *level);
bool funnel_log_enabled (funnel_log_level_t level);
//  Parses "text|json"; returns -1 if unknown (plain is for programs to set).
int  funnel_log_format_parse (const char *text, funnel_log_format_t *format);
void funnel_log_set_format (funnel_log_format_t format);
void funnel_log (funnel_log_level_t level, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

//  True at most once per interval_ms for the given static slot; use to
//  rate-limit a warning that could otherwise repeat per event.
bool funnel_log_every (int64_t *last_ms, int64_t interval_ms);

//  Formats one line into buffer (no newline); what funnel_log writes.
void funnel_log_format_line (char *buffer, size_t size, funnel_log_level_t level,
                             const char *message);

void funnel_log_test (bool verbose);

#define log_error(...) funnel_log (FUNNEL_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  funnel_log (FUNNEL_LOG_WARN, __VA_ARGS__)
#define log_info(...)  funnel_log (FUNNEL_LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (funnel_log_enabled (FUNNEL_LOG_DEBUG)) \
                                funnel_log (FUNNEL_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
