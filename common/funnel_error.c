#include "funnel_error.h"
#include <stdio.h>

int
funnel_error_set (funnel_error_t *err, const char *code, const char *format, ...)
{
    if (!err)
        return -1;
    err->code = code;
    va_list args;
    va_start (args, format);
    vsnprintf (err->message, sizeof err->message, format, args);
    va_end (args);
    return -1;
}

void
funnel_error_clear (funnel_error_t *err)
{
    if (err) {
        err->code = NULL;
        err->message [0] = 0;
        err->index = -1;
    }
}
