/*  funnel_privacy — see funnel_privacy.h. */
#include <stdlib.h>
#include <string.h>
#include "funnel_privacy.h"
#include "event_codec.h"

const char *const *
funnel_privacy_fields (const funnel_personal_t *table, const char *type)
{
    for (; table && table->type; table++)
        if (strcmp (table->type, type) == 0)
            return table->fields;
    return NULL;
}

static bool
s_listed (const msgpack_object *key, const char *const *fields)
{
    if (key->type != MSGPACK_OBJECT_STR)
        return false;
    for (; *fields; fields++)
        if (strlen (*fields) == key->via.str.size
        &&  memcmp (*fields, key->via.str.ptr, key->via.str.size) == 0)
            return true;
    return false;
}

int
funnel_privacy_redact (const char *data, size_t size, const char *const *fields,
                       char **out, size_t *out_size)
{
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    if (msgpack_unpack_next (&u, data, size, NULL) != MSGPACK_UNPACK_SUCCESS
    ||  u.data.type != MSGPACK_OBJECT_MAP) {
        msgpack_unpacked_destroy (&u);
        return -1;
    }
    const msgpack_object_map *map = &u.data.via.map;
    uint32_t kept = 0, removed = 0;
    bool marked = false;
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *key = &map->ptr [i].key;
        if (fields && s_listed (key, fields))
            removed++;
        else {
            kept++;
            marked |= key->type == MSGPACK_OBJECT_STR && key->via.str.size == 8
                   && memcmp (key->via.str.ptr, "redacted", 8) == 0;
        }
    }
    if (removed == 0) {
        msgpack_unpacked_destroy (&u);
        return 0;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, kept + !marked);
    for (uint32_t i = 0; i < map->size; i++)
        if (!(fields && s_listed (&map->ptr [i].key, fields))) {
            msgpack_pack_object (&pk, map->ptr [i].key);
            msgpack_pack_object (&pk, map->ptr [i].val);
        }
    if (!marked) {
        msgpack_pack_str_with_body (&pk, "redacted", 8);
        msgpack_pack_true (&pk);
    }
    msgpack_unpacked_destroy (&u);
    *out = sbuf.data;           //  The caller frees it (sbuffer data is malloc'd)
    *out_size = sbuf.size;
    return 1;
}

//  ---------------------------------------------------------------------
//  Self-test

#undef NDEBUG
#include <assert.h>

int
funnel_privacy_export_lead (const msgpack_object *req, char *lead, funnel_error_t *err)
{
    if (event_codec_obj_strcpy (event_codec_map_get (req, "lead"), lead, FUNNEL_ID_MAX + 1)
    &&  event_codec_id_valid (lead, strlen (lead)))
        return 0;
    return funnel_error_set (err, FUNNEL_ERR_INVALID,
                             "lead: must be 1-64 bytes of [A-Za-z0-9._:@+-]");
}

void
funnel_privacy_test (bool verbose)
{
    (void) verbose;
    static const funnel_personal_t table [] = {
        { "lead.captured", { "email", "company", NULL } },
        { NULL }
    };
    assert (funnel_privacy_fields (table, "lead.captured"));
    assert (!funnel_privacy_fields (table, "lead.scored"));
    assert (!funnel_privacy_fields (NULL, "lead.captured"));

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 3);
    msgpack_pack_str_with_body (&pk, "lead", 4);
    msgpack_pack_str_with_body (&pk, "L1", 2);
    msgpack_pack_str_with_body (&pk, "email", 5);
    msgpack_pack_str_with_body (&pk, "ann@example.com", 15);
    msgpack_pack_str_with_body (&pk, "region", 6);
    msgpack_pack_str_with_body (&pk, "emea", 4);
    const char *const *fields = funnel_privacy_fields (table, "lead.captured");
    char *out = NULL;
    size_t size = 0;
    assert (funnel_privacy_redact (sbuf.data, sbuf.size, fields, &out, &size) == 1);
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    assert (msgpack_unpack_next (&u, out, size, NULL) == MSGPACK_UNPACK_SUCCESS);
    assert (u.data.type == MSGPACK_OBJECT_MAP && u.data.via.map.size == 3);
    //  lead and region kept in order, then the marker; no e-mail anywhere
    assert (memcmp (u.data.via.map.ptr [0].key.via.str.ptr, "lead", 4) == 0);
    assert (memcmp (u.data.via.map.ptr [1].key.via.str.ptr, "region", 6) == 0);
    assert (memcmp (u.data.via.map.ptr [2].key.via.str.ptr, "redacted", 8) == 0);
    assert (u.data.via.map.ptr [2].val.type == MSGPACK_OBJECT_BOOLEAN);
    assert (!memmem (out, size, "ann@", 4));
    //  Redacting again changes nothing (idempotent)
    char *again = NULL;
    size_t again_size = 0;
    assert (funnel_privacy_redact (out, size, fields, &again, &again_size) == 0);
    assert (!again);
    msgpack_unpacked_destroy (&u);
    free (out);
    //  Not a map
    assert (funnel_privacy_redact ("\x01", 1, fields, &out, &size) == -1);
    msgpack_sbuffer_destroy (&sbuf);
}
