/*  Self-tests of the monitor's pure modules (no sockets). */
#include <stdio.h>
#include <string.h>
#include "funnel_view.h"
#include "json_msgpack.h"
#include "series_api.h"
#include "series_range.h"

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    json_msgpack_test (verbose);
    funnel_view_test (verbose);
    series_range_test (verbose);
    series_api_test (verbose);
    return 0;
}
