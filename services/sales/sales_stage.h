/*  sales_stage — the sales stage's rules on the engine: handlers for
    every PUBLISHed type (deal.*), consumed type (lead.sql,
    customer.upsell), GET kind (deal, pipeline) and timer (sla, stale).
    State layout and partitions: proto/sales.md "State".
*/
#ifndef SALES_STAGE_H_INCLUDED
#define SALES_STAGE_H_INCLUDED

#include "funnel_engine.h"

extern const funnel_rules_t sales_stage_rules;

#endif
