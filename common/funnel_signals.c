#include <czmq.h>
#include "funnel_signals.h"

volatile sig_atomic_t funnel_stop = 0;
volatile sig_atomic_t funnel_reload = 0;

static void
s_on_signal (int signum)
{
    (void) signum;
    funnel_stop = 1;
}

void
funnel_signals_init (void)
{
    zsys_handler_set (NULL);            //  Before czmq initialises
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    signal (SIGPIPE, SIG_IGN);
}

static void
s_on_hup (int signum)
{
    (void) signum;
    funnel_reload = 1;
}

void
funnel_signals_reload_on_hup (void)
{
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_hup;
    sigaction (SIGHUP, &action, NULL);
}
