/*  leads_stage — the lead generation stage's rules on the engine
    (proto/leads.md): capture and identity, scoring, the reversible
    lifecycle, routing to reps, the decay timer, reports.
*/
#ifndef LEADS_STAGE_H_INCLUDED
#define LEADS_STAGE_H_INCLUDED

#include "funnel_engine.h"

extern const funnel_rules_t leads_stage_rules;

#endif
