/*  deal_policy — the pure rules of a deal: its state machine, the discount
    policy, forecast math, rep rotation, deal ids and lost-reason keys. No
    state, no Redis: the sales rules (sales_stage.c) ask, this answers.

        char why [256];
        if (deal_policy_check ("won", "offer", why, sizeof why))
            ... refuse with why ("deal is won; offer needs an open deal")
*/
#ifndef DEAL_POLICY_H_INCLUDED
#define DEAL_POLICY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Open deals sit in one of these stages, in pipeline order.
#define DEAL_STAGES         4
extern const char *const deal_policy_stages [DEAL_STAGES + 1];
#define DEAL_FIRST_STAGE    "discovery"

//  0 if action is allowed in status (NULL: unknown deal), else 1 with the
//  rule it breaks in why.
int
    deal_policy_check (const char *status, const char *action, char *why, size_t size);
//  0 if an open deal may move from stage from to to, else 1 with the rule.
int
    deal_policy_stage_change (const char *from, const char *to, char *why, size_t size);
//  Index of a pipeline stage, -1 if none.
int
    deal_policy_stage_index (const char *stage);
//  True when a discount needs a manager's approval before closing won.
bool
    deal_policy_needs_approval (double discount_pct, double max_pct);
//  0 if a deal may close won, else 1 with the approval_required message.
int
    deal_policy_close_won (double discount_pct, bool approved, double max_pct,
                           char *why, size_t size);
//  Sum of amounts [stage] × probabilities [stage] / 100, floored (cents).
int64_t
    deal_policy_forecast (const int64_t amounts [DEAL_STAGES],
                          const double probabilities [DEAL_STAGES]);
//  won / (won + lost), 0 with nothing closed.
double
    deal_policy_win_rate (int64_t won, int64_t lost);
//  Floored mean, 0 for none.
int64_t
    deal_policy_mean (int64_t sum, int64_t n);
//  The next available rep after current (NULL: none) in rotation: turn
//  grows by one per choice. current when nobody else is available (NULL
//  with no pool and no current).
const char *
    deal_policy_next_rep (const char *const *reps, size_t count, const char *current,
                          int64_t turn);
//  Deal id for the n-th deal of an entity: <prefix><entity>-<n>, or with
//  the first 40 hex of the entity's SHA-1 when that passes 64 bytes.
void
    deal_policy_deal_id (const char *prefix, const char *entity, int64_t n,
                         char *out, size_t size);
//  A lost reason as a report key: trimmed, lower case, at most 64 bytes,
//  "unspecified" if empty. out holds at least 65 bytes.
void
    deal_policy_reason_key (const char *reason, char *out, size_t size);

void
    deal_policy_test (bool verbose);

#endif
