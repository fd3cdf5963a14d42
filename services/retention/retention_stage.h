/*  retention_stage — the retention stage's rules on the engine: handlers
    for every PUBLISHed type (customer.*), consumed type (deal.won,
    deal.delivered), GET kind (customer, cohorts) and the customer timer
    (silence, churn). State layout: proto/retention.md "State".
*/
#ifndef RETENTION_STAGE_H_INCLUDED
#define RETENTION_STAGE_H_INCLUDED

#include "funnel_engine.h"

extern const funnel_rules_t retention_stage_rules;

#endif
