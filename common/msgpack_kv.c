/*  msgpack_kv — see msgpack_kv.h. */
#include <math.h>
#include "event_codec.h"
#include "msgpack_kv.h"

bool
msgpack_kv_number (const msgpack_object *obj, double *out)
{
    if (!obj)
        return false;
    if (obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *out = (double) obj->via.u64;
    else
    if (obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = (double) obj->via.i64;
    else
    if (obj->type == MSGPACK_OBJECT_FLOAT32 || obj->type == MSGPACK_OBJECT_FLOAT64)
        *out = obj->via.f64;
    else
        return false;
    return true;
}

bool
msgpack_kv_get_number (const msgpack_object *map, const char *key, double *out)
{
    return msgpack_kv_number (event_codec_map_get (map, key), out);
}

void
msgpack_kv_pack_number (msgpack_packer *pk, double x)
{
    if (x == floor (x) && fabs (x) < 9007199254740992.0)
        msgpack_pack_int64 (pk, (int64_t) x);
    else
        msgpack_pack_double (pk, x);
}

void
msgpack_kv_put_str (msgpack_packer *pk, const char *key, const char *value)
{
    event_codec_pack_cstr (pk, key);
    event_codec_pack_cstr (pk, value);
}

void
msgpack_kv_put_int (msgpack_packer *pk, const char *key, int64_t value)
{
    event_codec_pack_cstr (pk, key);
    msgpack_pack_int64 (pk, value);
}

void
msgpack_kv_put_number (msgpack_packer *pk, const char *key, double value)
{
    event_codec_pack_cstr (pk, key);
    msgpack_kv_pack_number (pk, value);
}

void
msgpack_kv_put_bool (msgpack_packer *pk, const char *key, bool value)
{
    event_codec_pack_cstr (pk, key);
    if (value)
        msgpack_pack_true (pk);
    else
        msgpack_pack_false (pk);
}

//  --------------------------------------------------------------------------
//  Self-test

#undef NDEBUG
#include <assert.h>
#include <string.h>

void
msgpack_kv_test (bool verbose)
{
    (void) verbose;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 6);
    msgpack_kv_put_str (&pk, "s", "x");
    msgpack_kv_put_int (&pk, "i", -7);
    msgpack_kv_put_number (&pk, "w", 42.0);         //  Whole: an integer
    msgpack_kv_put_number (&pk, "f", 0.5);
    msgpack_kv_put_bool (&pk, "b", true);
    msgpack_kv_put_number (&pk, "big", 1e300);      //  Beyond 2^53: a double
    msgpack_unpacked result;
    msgpack_unpacked_init (&result);
    assert (msgpack_unpack_next (&result, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *map = &result.data;
    double v;
    assert (msgpack_kv_get_number (map, "i", &v) && v == -7);
    assert (msgpack_kv_get_number (map, "w", &v) && v == 42);
    assert (event_codec_map_get (map, "w")->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert (msgpack_kv_get_number (map, "f", &v) && v == 0.5);
    assert (event_codec_map_get (map, "big")->type == MSGPACK_OBJECT_FLOAT64);
    assert (!msgpack_kv_get_number (map, "s", &v));     //  Not a number
    assert (!msgpack_kv_get_number (map, "b", &v));
    assert (!msgpack_kv_get_number (map, "absent", &v));
    assert (!msgpack_kv_number (NULL, &v));
    assert (event_codec_map_get (map, "b")->type == MSGPACK_OBJECT_BOOLEAN);
    msgpack_unpacked_destroy (&result);
    msgpack_sbuffer_destroy (&sbuf);
}
