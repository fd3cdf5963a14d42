/*  leads_rules — what funnel-leads accepts (field tables) and its settings
    (topology file section `leads`, packed as one map, RULES, that the
    rules in leads_stage.c read at start).
    Every key and default is listed in leads_rules_help () and proto/leads.md.
*/
#ifndef LEADS_RULES_H_INCLUDED
#define LEADS_RULES_H_INCLUDED

#include <msgpack.h>
#include "event_schema.h"
#include "funnel_config.h"

//  PUBLISH types with their data fields, NULL-terminated
extern const funnel_event_schema_t leads_accepts [];

//  Reads the leads section and packs RULES; -1 after logging a bad value.
int
    leads_pack_rules (funnel_config_t *config, msgpack_packer *pk);

//  The settings with their defaults, for --help.
const char *
    leads_rules_help (void);
#define LEADS_SETTINGS_HELP leads_rules_help ()     //  main.c's name for it

#endif
