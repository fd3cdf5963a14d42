/*  json_msgpack — see json_msgpack.h for the mapping. */
#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "json_msgpack.h"

#define streq(a, b) (strcmp ((a), (b)) == 0)
//  Self-test checks that stay on in Release builds (assert is off there)
#include "funnel_check.h"

#define DEPTH_MAX 64

static int
s_pack (const json_t *json, msgpack_packer *pk, int depth)
{
    if (!json || depth > DEPTH_MAX)
        return -1;
    switch (json_typeof (json)) {
        case JSON_OBJECT: {
            msgpack_pack_map (pk, json_object_size (json));
            const char *key;
            json_t *value;
            //  const_cast: jansson's iteration macro takes a non-const object
            json_object_foreach ((json_t *) json, key, value) {
                size_t length = strlen (key);
                msgpack_pack_str (pk, length);
                msgpack_pack_str_body (pk, key, length);
                if (s_pack (value, pk, depth + 1))
                    return -1;
            }
            return 0;
        }
        case JSON_ARRAY: {
            size_t size = json_array_size (json);
            msgpack_pack_array (pk, size);
            for (size_t i = 0; i < size; i++)
                if (s_pack (json_array_get (json, i), pk, depth + 1))
                    return -1;
            return 0;
        }
        case JSON_STRING: {
            size_t length = json_string_length (json);
            msgpack_pack_str (pk, length);
            msgpack_pack_str_body (pk, json_string_value (json), length);
            return 0;
        }
        case JSON_INTEGER:
            return msgpack_pack_int64 (pk, json_integer_value (json));
        case JSON_REAL:
            return msgpack_pack_double (pk, json_real_value (json));
        case JSON_TRUE:
            return msgpack_pack_true (pk);
        case JSON_FALSE:
            return msgpack_pack_false (pk);
        case JSON_NULL:
            return msgpack_pack_nil (pk);
    }
    return -1;
}

int
json_to_msgpack (const json_t *json, msgpack_packer *pk)
{
    return s_pack (json, pk, 1);
}

int
json_to_msgpack_sbuffer (const json_t *json, msgpack_sbuffer *sbuf)
{
    msgpack_sbuffer_init (sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    if (json_to_msgpack (json, &pk) == 0)
        return 0;
    msgpack_sbuffer_destroy (sbuf);
    msgpack_sbuffer_init (sbuf);
    return -1;
}

//  Bytes as a JSON string if valid UTF-8, else as lowercase hex.
static json_t *
s_bytes (const char *data, size_t size)
{
    json_t *text = json_stringn (data, size);
    if (text)
        return text;
    char *hex = (char *) malloc (size * 2 + 1);
    if (!hex)
        return NULL;
    for (size_t i = 0; i < size; i++)
        snprintf (hex + i * 2, 3, "%02x", (unsigned char) data [i]);
    text = json_stringn (hex, size * 2);
    free (hex);
    return text;
}

static json_t *
s_from (const msgpack_object *obj, int depth)
{
    if (depth > DEPTH_MAX)
        return json_null ();
    switch (obj->type) {
        case MSGPACK_OBJECT_NIL:
            return json_null ();
        case MSGPACK_OBJECT_BOOLEAN:
            return json_boolean (obj->via.boolean);
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            if (obj->via.u64 > (uint64_t) INT64_MAX)
                return json_real ((double) obj->via.u64);
            return json_integer ((json_int_t) obj->via.u64);
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            return json_integer ((json_int_t) obj->via.i64);
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
            return isfinite (obj->via.f64) ? json_real (obj->via.f64) : json_null ();
        case MSGPACK_OBJECT_STR:
            return s_bytes (obj->via.str.ptr, obj->via.str.size);
        case MSGPACK_OBJECT_BIN:
            return s_bytes (obj->via.bin.ptr, obj->via.bin.size);
        case MSGPACK_OBJECT_ARRAY: {
            json_t *array = json_array ();
            for (uint32_t i = 0; array && i < obj->via.array.size; i++)
                json_array_append_new (array, s_from (&obj->via.array.ptr [i], depth + 1));
            return array;
        }
        case MSGPACK_OBJECT_MAP: {
            json_t *object = json_object ();
            for (uint32_t i = 0; object && i < obj->via.map.size; i++) {
                const msgpack_object_kv *kv = &obj->via.map.ptr [i];
                json_t *value = s_from (&kv->val, depth + 1);
                if (kv->key.type == MSGPACK_OBJECT_STR)
                    json_object_setn_new (object, kv->key.via.str.ptr,
                                          kv->key.via.str.size, value);
                else {
                    //  A non-string key: its JSON text stands in for it
                    json_t *key = s_from (&kv->key, depth + 1);
                    char *text = json_dumps (key, JSON_ENCODE_ANY | JSON_COMPACT);
                    json_object_set_new (object, text ? text : "?", value);
                    free (text);
                    json_decref (key);
                }
            }
            return object;
        }
        default:
            return json_null ();
    }
}

json_t *
json_from_msgpack (const msgpack_object *obj)
{
    return s_from (obj, 1);
}

//  Round trip: JSON text -> msgpack -> JSON text, compared compact.
static void
s_round_trip (const char *text, const char *expected, bool verbose)
{
    json_error_t error;
    json_t *json = json_loads (text, JSON_DECODE_ANY, &error);
    check (json);
    msgpack_sbuffer sbuf;
    check (json_to_msgpack_sbuffer (json, &sbuf) == 0);
    msgpack_unpacked result;
    msgpack_unpacked_init (&result);
    size_t offset = 0;
    check (msgpack_unpack_next (&result, sbuf.data, sbuf.size, &offset) == MSGPACK_UNPACK_SUCCESS);
    check (offset == sbuf.size);
    json_t *back = json_from_msgpack (&result.data);
    char *out = json_dumps (back, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
    if (verbose)
        printf ("  %s -> %s\n", text, out);
    check (strcmp (out, expected ? expected : text) == 0);
    free (out);
    json_decref (back);
    msgpack_unpacked_destroy (&result);
    msgpack_sbuffer_destroy (&sbuf);
    json_decref (json);
}

void
json_msgpack_test (bool verbose)
{
    printf (" * json_msgpack: ");
    if (verbose)
        printf ("\n");
    s_round_trip ("{\"a\":1,\"b\":-2,\"c\":1.5,\"d\":\"x\",\"e\":[true,false,null],\"f\":{}}", NULL, verbose);
    s_round_trip ("1.0", NULL, verbose);
    s_round_trip ("9007199254740993", NULL, verbose);
    s_round_trip ("-9223372036854775808", NULL, verbose);
    s_round_trip ("\"h\\u00e9\"", "\"h\u00e9\"", verbose);
    s_round_trip ("[[[[]]]]", NULL, verbose);

    //  Integers stay integers and reals stay floats on the wire
    json_t *json = json_pack ("{s:i, s:f}", "n", 3, "x", 3.0);
    msgpack_sbuffer sbuf;
    check (json_to_msgpack_sbuffer (json, &sbuf) == 0);
    msgpack_unpacked result;
    msgpack_unpacked_init (&result);
    check (msgpack_unpack_next (&result, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *map = &result.data;
    check (map->type == MSGPACK_OBJECT_MAP && map->via.map.size == 2);
    for (uint32_t i = 0; i < 2; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr [i];
        if (kv->key.via.str.ptr [0] == 'n')
            check (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER && kv->val.via.u64 == 3);
        else
            check (kv->val.type == MSGPACK_OBJECT_FLOAT64 && kv->val.via.f64 == 3.0);
    }
    msgpack_unpacked_destroy (&result);
    msgpack_sbuffer_destroy (&sbuf);
    json_decref (json);

    //  msgpack-only shapes: bin, big uint, int keys, NaN
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 4);
    msgpack_pack_int (&pk, 7);
    msgpack_pack_bin (&pk, 2);
    msgpack_pack_bin_body (&pk, "\xff\x00", 2);
    msgpack_pack_str (&pk, 1);
    msgpack_pack_str_body (&pk, "u", 1);
    msgpack_pack_uint64 (&pk, UINT64_MAX);
    msgpack_pack_str (&pk, 1);
    msgpack_pack_str_body (&pk, "n", 1);
    msgpack_pack_double (&pk, NAN);
    msgpack_pack_str (&pk, 1);
    msgpack_pack_str_body (&pk, "b", 1);
    msgpack_pack_bin (&pk, 2);
    msgpack_pack_bin_body (&pk, "ok", 2);
    msgpack_unpacked_init (&result);
    check (msgpack_unpack_next (&result, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    json = json_from_msgpack (&result.data);
    check (streq (json_string_value (json_object_get (json, "7")), "ff00"));
    check (json_is_real (json_object_get (json, "u")));
    check (json_is_null (json_object_get (json, "n")));
    check (streq (json_string_value (json_object_get (json, "b")), "ok"));
    json_decref (json);
    msgpack_unpacked_destroy (&result);
    msgpack_sbuffer_destroy (&sbuf);

    check (json_to_msgpack (NULL, &pk) == -1);
    printf ("OK\n");
}
