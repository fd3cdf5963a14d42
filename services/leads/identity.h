/*  identity — normalised identity fields of a lead, pure.

    The same person typed twice must be the same lead: e-mail addresses are
    compared without case or whitespace, names and companies without stray
    whitespace, phone numbers by their digits.

        char email [IDENTITY_MAX];
        if (identity_email (" Ann@Example.COM ", email, sizeof email))
            ...     //  "ann@example.com"
*/
#ifndef IDENTITY_H_INCLUDED
#define IDENTITY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define IDENTITY_MAX 1025       //  Room for any field the schema lets in

//  A normalised e-mail (whitespace removed, lower case) into out; false
//  when it is not name@domain.tld (or does not fit).
bool
    identity_email (const char *s, char *out, size_t size);
//  Trimmed, inner runs of whitespace made one space; false if nothing left.
bool
    identity_text (const char *s, char *out, size_t size);
//  Digits with an optional leading +; false when fewer than 5 digits.
bool
    identity_phone (const char *s, char *out, size_t size);

void
    identity_test (bool verbose);

#endif
