/*  funnelctl's unit self-test: the JSON <-> msgpack mapping. */
#include <string.h>
#include "json_msgpack.h"

int
main (int argc, char *argv [])
{
    json_msgpack_test (argc > 1 && strcmp (argv [1], "-v") == 0);
    return 0;
}
