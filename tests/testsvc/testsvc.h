/*  testsvc — the test service's definition parts (testsvc.c): the daemon
    (testsvc_main.c) and the embedded-service test (service_actor_test.c)
    run the same rules.
*/
#ifndef TESTSVC_H_INCLUDED
#define TESTSVC_H_INCLUDED

#include "funnel_service.h"

extern const funnel_event_schema_t testsvc_accepts [];  //  test.add, test.need
extern const char *const testsvc_consumes [];           //  test.added
extern const funnel_rules_t testsvc_rules;

#endif
