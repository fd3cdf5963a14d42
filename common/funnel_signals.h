/*  funnel_signals — SIGTERM and SIGINT as a flag, the same in every program.

    czmq installs its own SIGINT/SIGTERM handlers when it initialises (any
    zsys_ call, even a log line, does that), and zloop_start returns on
    EINTR whatever the handler did (czmq 4.2.1). So every Funnel program calls
    funnel_signals_init first thing: czmq's handling is switched off, the
    two signals only set funnel_stop (a handler does nothing else), and
    SIGPIPE is ignored (hiredis writes to sockets that may have died).
    Loops check funnel_stop between units of work.
*/
#ifndef FUNNEL_SIGNALS_H_INCLUDED
#define FUNNEL_SIGNALS_H_INCLUDED

#include <signal.h>

extern volatile sig_atomic_t funnel_stop;
//  Set by SIGHUP once funnel_signals_reload_on_hup was called (programs
//  that re-read a file on HUP; the others keep the default action).
extern volatile sig_atomic_t funnel_reload;

void
    funnel_signals_init (void);
void
    funnel_signals_reload_on_hup (void);

#endif
