/*  funnelctl's unit self-tests: the JSON <-> msgpack mapping, the options. */
#include <string.h>
#include "ctl_args.h"
#include "json_msgpack.h"
#include "privacy_export.h"

int
main (int argc, char *argv [])
{
    json_msgpack_test (argc > 1 && strcmp (argv [1], "-v") == 0);
    ctl_args_test (argc > 1 && strcmp (argv [1], "-v") == 0);
    privacy_export_test (argc > 1 && strcmp (argv [1], "-v") == 0);
    return 0;
}
