/*  retention_rules — the retention stage's event schemas and settings.

    The field tables are proto/retention.md's accepted types, checked by the
    runtime before Redis is touched. The settings (topology-file section
    `retention`, documented in proto/retention.md) are packed as one map, which
    the rules (retention_stage.c) read at start.
*/
#ifndef RETENTION_RULES_H_INCLUDED
#define RETENTION_RULES_H_INCLUDED

#include "funnel_service.h"

//  PUBLISH types with their field tables, NULL-terminated.
extern const funnel_event_schema_t retention_accepts [];

//  Reads and checks the settings, packs them as one map (read by retention_stage.c);
//  -1 after logging a bad value.
int
    retention_pack_rules (funnel_config_t *config, msgpack_packer *pk);

//  The settings with their defaults, for --help.
const char *
    retention_rules_help (void);

#endif
