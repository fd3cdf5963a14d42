/*  sales_rules — what the sales stage accepts (field tables, proto/sales.md)
    and its settings from the topology file's `sales` section, packed for
    the rules (sales_stage.c) as one map. Documented in proto/sales.md.
*/
#ifndef SALES_RULES_H_INCLUDED
#define SALES_RULES_H_INCLUDED

#include "funnel_service.h"

//  PUBLISH types with their data fields, NULL-terminated.
extern const funnel_event_schema_t sales_accepts [];

//  The settings lines for --help, with their defaults and ranges.
const char *
    sales_settings_help (void);

//  Reads the sales settings and packs them as one map; -1 after logging
//  the first bad value (the daemon then exits 2).
int
    sales_pack_rules (funnel_config_t *config, msgpack_packer *pk);

#endif
