/*  routing — see routing.h.  */
#include <stdlib.h>
#include <string.h>
#include "routing.h"

int
routing_pick (routing_rep_t *reps, size_t n, const char *region)
{
    size_t navail = 0, nroom = 0, nlocal = 0, nlocal_room = 0;
    size_t *avail = calloc (n + 1, sizeof *avail), *room = calloc (n + 1, sizeof *room);
    size_t *local = calloc (n + 1, sizeof *local), *local_room = calloc (n + 1, sizeof *local_room);
    int64_t *weights = calloc (n + 1, sizeof *weights);
    int best = -1;
    if (!avail || !room || !local || !local_room || !weights)
        goto done;
    for (size_t i = 0; i < n; i++) {
        reps [i].pooled = false;
        if (reps [i].away)
            continue;
        bool has_room = reps [i].open < reps [i].capacity;
        avail [navail++] = i;
        if (has_room)
            room [nroom++] = i;
        if (region && *reps [i].region && strcmp (reps [i].region, region) == 0) {
            local [nlocal++] = i;
            if (has_room)
                local_room [nlocal_room++] = i;
        }
    }
    if (navail == 0)
        goto done;
    //  The territory while it has room, then anyone with room, then overflow
    size_t *pool = avail, npool = navail;
    if (nlocal_room) {
        pool = local_room;
        npool = nlocal_room;
    }
    else
    if (nroom) {
        pool = room;
        npool = nroom;
    }
    else
    if (nlocal) {
        pool = local;
        npool = nlocal;
    }
    int64_t total_room = 0;
    for (size_t i = 0; i < npool; i++) {
        routing_rep_t *r = &reps [pool [i]];
        weights [i] = r->capacity - r->open > 0 ? r->capacity - r->open : 0;
        total_room += weights [i];
    }
    if (total_room == 0)
        for (size_t i = 0; i < npool; i++)
            weights [i] = reps [pool [i]].capacity > 1 ? reps [pool [i]].capacity : 1;
    int64_t total = 0;
    for (size_t i = 0; i < npool; i++) {
        routing_rep_t *r = &reps [pool [i]];
        r->cur += weights [i];
        r->pooled = true;
        total += weights [i];
        if (best < 0 || r->cur > reps [best].cur)
            best = (int) pool [i];
    }
    reps [best].cur -= total;
done:
    free (avail);
    free (room);
    free (local);
    free (local_room);
    free (weights);
    return best;
}

bool
routing_sticky (const routing_rep_t *rep)
{
    return rep && !rep->away && rep->open < rep->capacity;
}

//  --------------------------------------------------------------------
//  Self-test (the rules' cases, plus edges)

#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>

static routing_rep_t
s_rep (const char *name, const char *region, int64_t capacity, int64_t open, bool away)
{
    return (routing_rep_t) { name, region, capacity, away, open, 0, false };
}

//  n picks, applying loads when keep_load; counts per rep index into got
//  (got[n] = none)
static void
s_run (routing_rep_t *reps, size_t n, const char *region, int picks, bool keep_load, int *got)
{
    memset (got, 0, (n + 1) * sizeof *got);
    for (int p = 0; p < picks; p++) {
        int i = routing_pick (reps, n, region);
        got [i < 0 ? (int) n : i]++;
        if (i >= 0 && keep_load)
            reps [i].open++;
    }
}

void
routing_test (bool verbose)
{
    (void) verbose;
    int got [4];
    //  Territory wins: emea leads go to the emea rep only
    routing_rep_t reps [3] = { s_rep ("alice", "emea", 10, 0, false), s_rep ("bob", "amer", 5, 0, false) };
    s_run (reps, 2, "emea", 6, false, got);
    assert (got [0] == 6 && got [1] == 0);
    //  No rep in the region: all reps, weighted by capacity (10:5)
    reps [0] = s_rep ("alice", "emea", 10, 0, false);
    reps [1] = s_rep ("bob", "amer", 5, 0, false);
    s_run (reps, 2, "apac", 15, false, got);
    assert (got [0] == 10 && got [1] == 5);
    //  Smooth: bob is not starved at the start
    reps [0] = s_rep ("alice", "emea", 10, 0, false);
    reps [1] = s_rep ("bob", "amer", 5, 0, false);
    int first [3];
    for (int i = 0; i < 3; i++)
        first [i] = routing_pick (reps, 2, NULL);
    assert (first [0] == 0 && (first [1] == 1 || first [2] == 1));
    //  Live load: a rep with no room left is passed over
    reps [0] = s_rep ("alice", "", 10, 10, false);
    reps [1] = s_rep ("bob", "", 5, 0, false);
    s_run (reps, 2, NULL, 3, true, got);
    assert (got [1] == 3 && got [0] == 0);
    //  Load fills in proportion to free room: equal free room -> alternate
    reps [0] = s_rep ("a", "", 4, 2, false);
    reps [1] = s_rep ("b", "", 2, 0, false);
    s_run (reps, 2, NULL, 2, true, got);
    assert (got [0] == 1 && got [1] == 1);
    //  Everyone full: overflow shared by capacity
    reps [0] = s_rep ("a", "", 2, 2, false);
    reps [1] = s_rep ("b", "", 1, 1, false);
    s_run (reps, 2, NULL, 3, true, got);
    assert (got [0] == 2 && got [1] == 1);
    //  Away reps never get leads; a region whose reps are away falls back
    reps [0] = s_rep ("alice", "emea", 10, 0, true);
    reps [1] = s_rep ("bob", "amer", 5, 0, false);
    s_run (reps, 2, "emea", 4, false, got);
    assert (got [1] == 4 && got [0] == 0);
    //  The territory's rep is full: a rep with room elsewhere takes it
    reps [0] = s_rep ("alice", "emea", 10, 0, false);
    reps [1] = s_rep ("bob", "amer", 1, 1, false);
    s_run (reps, 2, "amer", 2, true, got);
    assert (got [0] == 2 && got [1] == 0);
    //  Everyone full: the territory takes the overflow
    reps [0] = s_rep ("alice", "emea", 1, 1, false);
    reps [1] = s_rep ("bob", "amer", 1, 1, false);
    s_run (reps, 2, "amer", 2, true, got);
    assert (got [1] == 2);
    //  All away: nobody, and no state changes
    reps [0] = s_rep ("alice", "emea", 10, 0, true);
    assert (routing_pick (reps, 1, "emea") == -1 && reps [0].cur == 0);
    //  Deterministic: same state, same choice
    routing_rep_t x [2] = { s_rep ("x", "", 3, 0, false), s_rep ("y", "", 3, 0, false) };
    routing_rep_t y [2] = { s_rep ("x", "", 3, 0, false), s_rep ("y", "", 3, 0, false) };
    assert (routing_pick (x, 2, NULL) == 0 && routing_pick (y, 2, NULL) == 0);
    //  Edge: zero-capacity reps still share overflow (weight at least 1)
    reps [0] = s_rep ("a", "", 0, 0, false);
    reps [1] = s_rep ("b", "", 0, 0, false);
    s_run (reps, 2, NULL, 4, false, got);
    assert (got [0] == 2 && got [1] == 2);
    //  Edge: no reps at all
    assert (routing_pick (reps, 0, NULL) == -1);

    //  Sticky owner
    routing_rep_t r = s_rep ("a", "", 3, 2, false);
    assert (routing_sticky (&r));
    r = s_rep ("a", "", 3, 3, false);
    assert (!routing_sticky (&r));
    r = s_rep ("a", "", 3, 0, true);
    assert (!routing_sticky (&r));
    assert (!routing_sticky (NULL));
}
