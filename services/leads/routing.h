/*  routing — which rep gets an SQL lead, pure.

    Territory first (reps of the lead's region with room; else any rep
    with room; else, everyone being full, the territory), then a smooth
    weighted round-robin (as nginx does) over the pool: each rep's weight is
    its free capacity (capacity - open leads), so reps fill in proportion to
    room and a busy rep is passed over; when the whole pool is full, weights
    fall back to capacities (overflow shared in proportion). Away reps
    never get leads.

        routing_rep_t reps [2] = {{ "alice", "emea", 10, false, 0, 0 }, ...};
        int i = routing_pick (reps, 2, "emea");    //  -1: every rep away
        //  reps[k].cur updated for the pool's reps (k with .pooled)
*/
#ifndef ROUTING_H_INCLUDED
#define ROUTING_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name;
    const char *region;         //  Lower case; "" for any
    int64_t capacity;
    bool away;
    int64_t open;               //  Live load
    int64_t cur;                //  Round-robin state (in and out)
    bool pooled;                //  Out: cur was changed by this pick
} routing_rep_t;

//  Picks a rep for a lead of region (lower case, NULL if unknown); returns
//  its index, or -1 when every rep is away (no cur changes then).
int
    routing_pick (routing_rep_t *reps, size_t n, const char *region);
//  A previous owner keeps a returning lead when present and not full.
bool
    routing_sticky (const routing_rep_t *rep);

void
    routing_test (bool verbose);

#endif
