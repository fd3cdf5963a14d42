/*  json_msgpack — JSON (jansson) to msgpack and back.

    Operators type JSON; the wire is msgpack. The mapping keeps types apart:
    JSON integers stay msgpack integers, JSON reals stay floats (1.0 does
    not become 1), strings, booleans, null, arrays and objects map one to
    one. Back from msgpack: bin becomes a string if it is UTF-8 (else hex),
    a non-string map key becomes its JSON text, ext and non-finite floats
    become null, unsigned integers above INT64_MAX become reals.
*/
#ifndef JSON_MSGPACK_H_INCLUDED
#define JSON_MSGPACK_H_INCLUDED

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>

//  Packs a JSON value; returns 0, or -1 if json is NULL or nests deeper
//  than 64 levels.
int
    json_to_msgpack (const json_t *json, msgpack_packer *pk);

//  Packs a JSON value into a fresh sbuffer (caller destroys); -1 on error.
int
    json_to_msgpack_sbuffer (const json_t *json, msgpack_sbuffer *sbuf);

//  A new JSON value for a msgpack object (never NULL unless out of memory).
json_t *
    json_from_msgpack (const msgpack_object *obj);

void
    json_msgpack_test (bool verbose);

#endif
