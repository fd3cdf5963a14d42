/*  funnel_http — what the HTTP daemons (the monitor, the gateway) share
    around libmicrohttpd: parsing their listening address and routing the
    library's own messages into our log.

    libmicrohttpd's messages are mostly clients hanging up mid-request or
    mid-stream, routine for a server: they go to the debug level, in our
    log format, so they never flood a production log.
*/
#ifndef FUNNEL_HTTP_H_INCLUDED
#define FUNNEL_HTTP_H_INCLUDED

#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>

//  "host:port", "[v6]:port" or ":port" (every address) to a passive socket
//  address; NULL if it does not parse or resolve. Free with freeaddrinfo.
struct addrinfo *
    funnel_http_resolve (const char *address);

//  For MHD_OPTION_EXTERNAL_LOGGER: one debug line per message.
void
    funnel_http_log (void *cls, const char *format, va_list args);

void
    funnel_http_test (bool verbose);

#endif
