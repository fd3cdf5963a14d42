/*  funnel_http — see funnel_http.h. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include "funnel_http.h"
#include "funnel_log.h"

struct addrinfo *
funnel_http_resolve (const char *address)
{
    char host [256] = "";
    const char *colon = address ? strrchr (address, ':') : NULL;
    if (!colon || (size_t) (colon - address) >= sizeof host || !colon [1])
        return NULL;
    const char *start = address;
    size_t length = (size_t) (colon - address);
    if (length >= 2 && start [0] == '[' && start [length - 1] == ']') {
        start++;
        length -= 2;
    }
    memcpy (host, start, length);
    host [length] = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *result = NULL;
    if (getaddrinfo (*host ? host : NULL, colon + 1, &hints, &result))
        return NULL;
    return result;
}

void
funnel_http_log (void *cls, const char *format, va_list args)
{
    (void) cls;
    if (!funnel_log_enabled (FUNNEL_LOG_DEBUG))
        return;
    char text [512];
    vsnprintf (text, sizeof text, format, args);
    text [strcspn (text, "\n")] = 0;
    log_debug ("http: %s", text);
}

//  --------------------------------------------------------------------------
//  Self-test

#undef NDEBUG
#include <assert.h>
#include <netinet/in.h>

void
funnel_http_test (bool verbose)
{
    (void) verbose;
    struct addrinfo *ai = funnel_http_resolve ("127.0.0.1:7140");
    assert (ai && ai->ai_family == AF_INET);
    assert (ntohs (((struct sockaddr_in *) ai->ai_addr)->sin_port) == 7140);
    freeaddrinfo (ai);
    ai = funnel_http_resolve ("[::1]:8080");
    assert (ai && ai->ai_family == AF_INET6);
    assert (ntohs (((struct sockaddr_in6 *) ai->ai_addr)->sin6_port) == 8080);
    freeaddrinfo (ai);
    ai = funnel_http_resolve (":9000");                 //  Every address
    assert (ai);
    freeaddrinfo (ai);
    assert (funnel_http_resolve ("no-port") == NULL);
    assert (funnel_http_resolve ("127.0.0.1:") == NULL);
    assert (funnel_http_resolve ("127.0.0.1:http") == NULL);   //  Numeric ports only
    assert (funnel_http_resolve (NULL) == NULL);
}
