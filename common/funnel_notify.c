/*  funnel_notify — sd_notify READY, WATCHDOG and STOPPING. */
#include "funnel_notify.h"
#include "funnel_log.h"

#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

static uint64_t s_watchdog_usec;

void
funnel_notify_ready (const char *status)
{
    //  0: keep NOTIFY_SOCKET and WATCHDOG_USEC for later calls
    if (sd_watchdog_enabled (0, &s_watchdog_usec) <= 0)
        s_watchdog_usec = 0;
    int rc = sd_notifyf (0, "READY=1\nSTATUS=%s", status ? status : "serving");
    if (rc < 0)
        log_warn ("sd_notify READY failed: error %d", -rc);
    else
    if (rc > 0)
        log_info ("notified the service manager: ready%s", s_watchdog_usec ? ", watchdog on" : "");
}

void
funnel_notify_tick (void)
{
    if (s_watchdog_usec)
        sd_notify (0, "WATCHDOG=1");
}

void
funnel_notify_stopping (void)
{
    sd_notify (0, "STOPPING=1");
}

bool
funnel_notify_watchdog_enabled (void)
{
    return s_watchdog_usec != 0;
}
