/*  funnel_authz — see funnel_authz.h for why. */
#include "funnel_authz.h"
#include "funnel_curve.h"
#include "event_codec.h"

bool
funnel_authz_listed (const char *list, const char *type, size_t type_len)
{
    if (!list)
        return true;
    const char *item = list;
    while (*item) {
        while (*item == ' ' || *item == ',')
            item++;
        size_t length = strcspn (item, ", ");
        if (length == 1 && *item == '*')
            return true;
        if (length > 0 && length == type_len && memcmp (item, type, length) == 0)
            return true;
        item += length;
    }
    return false;
}

int
funnel_authz_request (zframe_t *verb, funnel_peer_t *peer, funnel_error_t *err)
{
    memset (peer, 0, sizeof *peer);
    peer->read = true;
    if (!funnel_curve_enabled ())
        return 0;
    const char *user = zframe_meta (verb, "User-Id");
    const char *name = zframe_meta (verb, "name");
    if (!user || !*user || !name)
        return funnel_error_set (err, FUNNEL_ERR_FORBIDDEN,
                                 "curve: the request carries no authenticated identity");
    peer->authenticated = true;
    snprintf (peer->by, sizeof peer->by, "%s", name);
    const char *publish = zframe_meta (verb, "publish");
    peer->publish = publish && !streq (publish, "*") ? publish : NULL;
    const char *read = zframe_meta (verb, "read");
    peer->read = !(read && streq (read, "0"));
    if (!peer->read && (zframe_streq (verb, "GET") || zframe_streq (verb, "REPLAY")
                    ||  zframe_streq (verb, "STATS"))) {
        char *text = zframe_strdup (verb);
        funnel_error_set (err, FUNNEL_ERR_FORBIDDEN,
                          "read: the certificate of '%s' says read = 0, which forbids %s",
                          peer->by, text);
        free (text);
        return -1;
    }
    return 0;
}

int
funnel_authz_publish (const funnel_peer_t *peer, const msgpack_object *root,
                      funnel_error_t *err)
{
    if (!peer->publish)
        return 0;
    bool batch = root->type == MSGPACK_OBJECT_ARRAY;
    uint32_t count = batch ? root->via.array.size : 1;
    for (uint32_t i = 0; i < count; i++) {
        const msgpack_object *type = event_codec_map_get (batch ? &root->via.array.ptr [i] : root,
                                                     "type");
        if (!type || type->type != MSGPACK_OBJECT_STR)
            continue;           //  Checked before: cannot happen
        if (!funnel_authz_listed (peer->publish, type->via.str.ptr, type->via.str.size)) {
            funnel_error_set (err, FUNNEL_ERR_FORBIDDEN,
                              "publish: the certificate of '%s' does not list '%.*s' "
                              "(publish = %.100s)", peer->by, (int) type->via.str.size,
                              type->via.str.ptr, peer->publish);
            if (batch)
                err->index = (int) i;
            return -1;
        }
    }
    return 0;
}

#undef NDEBUG
#include <assert.h>

void
funnel_authz_test (bool verbose)
{
    (void) verbose;
    assert (funnel_authz_listed (NULL, "touch", 5));
    assert (funnel_authz_listed ("*", "touch", 5));
    assert (funnel_authz_listed ("touch", "touch", 5));
    assert (funnel_authz_listed ("lead.capture, touch", "touch", 5));
    assert (!funnel_authz_listed ("touch", "lead.capture", 12));
    assert (!funnel_authz_listed ("touchy", "touch", 5));
    assert (!funnel_authz_listed ("", "touch", 5));

    funnel_peer_t peer = { .authenticated = true, .by = "web", .publish = "touch",
                           .read = false };
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 2);
    for (int i = 0; i < 2; i++) {
        msgpack_pack_map (&pk, 1);
        event_codec_pack_cstr (&pk, "type");
        event_codec_pack_cstr (&pk, i == 0 ? "touch" : "lead.capture");
    }
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    assert (msgpack_unpack_next (&unpacked, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_authz_publish (&peer, &unpacked.data, &err) == -1);
    assert (streq (err.code, FUNNEL_ERR_FORBIDDEN) && err.index == 1);
    assert (strstr (err.message, "lead.capture"));
    peer.publish = NULL;
    funnel_error_clear (&err);
    assert (funnel_authz_publish (&peer, &unpacked.data, &err) == 0);
    msgpack_unpacked_destroy (&unpacked);
    msgpack_sbuffer_destroy (&sbuf);
}
