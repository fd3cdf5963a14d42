/*  funnel_notify — readiness and liveness for the service manager.

    systemd's notify protocol (sd_notify, libsystemd), used by Type=notify
    units: READY=1 once a daemon serves its sockets, WATCHDOG=1 from its
    one-second timer when the unit sets WatchdogSec (systemd then passes
    WATCHDOG_USEC), STOPPING=1 when it begins a clean stop. Outside such a
    unit (no NOTIFY_SOCKET) every call is a cheap no-op.

        funnel_notify_ready ("leads: api tcp://..., pub tcp://...");
        ...every second, from the daemon's own loop:
        funnel_notify_tick ();      //  A stuck loop stops the pings: restart
        ...
        funnel_notify_stopping ();
*/
#ifndef FUNNEL_NOTIFY_H_INCLUDED
#define FUNNEL_NOTIFY_H_INCLUDED

#include <stdbool.h>

//  READY=1 with a STATUS= line; reads WATCHDOG_USEC for the ticks.
void funnel_notify_ready (const char *status);
//  WATCHDOG=1 if the watchdog is on (ready first); else nothing.
void funnel_notify_tick (void);
void funnel_notify_stopping (void);
//  True if the service manager asked for watchdog pings.
bool funnel_notify_watchdog_enabled (void);

#endif
