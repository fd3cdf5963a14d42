/*  msgpack_kv — the typed reads and key/value packing that every stage's
    rules do on msgpack maps: an event's data fields in, GET replies and
    output events out. One copy here, so a number is read and packed the
    same way by every service.
*/
#ifndef MSGPACK_KV_H_INCLUDED
#define MSGPACK_KV_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

//  obj as a number (an integer or a float); false if NULL or not a number.
bool
    msgpack_kv_number (const msgpack_object *obj, double *out);
//  map[key] as a number; false if absent or not a number.
bool
    msgpack_kv_get_number (const msgpack_object *map, const char *key, double *out);
//  Packs x as an integer when it is a whole number below 2^53, else a double.
void
    msgpack_kv_pack_number (msgpack_packer *pk, double x);
//  Pack one map entry: a str key and its value.
void
    msgpack_kv_put_str (msgpack_packer *pk, const char *key, const char *value);
void
    msgpack_kv_put_int (msgpack_packer *pk, const char *key, int64_t value);
void
    msgpack_kv_put_number (msgpack_packer *pk, const char *key, double value);
void
    msgpack_kv_put_bool (msgpack_packer *pk, const char *key, bool value);

void
    msgpack_kv_test (bool verbose);

#endif
