/*  privacy_export — see privacy_export.h. */
#include <string.h>
#include "privacy_export.h"

json_t *
privacy_export_new (const char *lead)
{
    return json_pack ("{s:s, s:b, s:{}}", "lead", lead, "complete", 1, "services");
}

void
privacy_export_add (json_t *doc, const char *service, privacy_export_status_t status,
                    json_t *reply)
{
    json_t *services = json_object_get (doc, "services");
    json_t *entry;
    if (status == PRIVACY_EXPORT_OK && json_is_object (reply))
        entry = json_deep_copy (reply);
    else
    if (status == PRIVACY_EXPORT_ERR)
        entry = json_pack ("{s:O?}", "error", reply);
    else
        entry = json_pack ("{s:b}", "unreachable", 1);
    if (status != PRIVACY_EXPORT_OK)
        json_object_set_new (doc, "complete", json_false ());
    json_object_set_new (services, service, entry);
}

bool
privacy_export_complete (json_t *doc)
{
    return json_is_true (json_object_get (doc, "complete"));
}

//  ---------------------------------------------------------------------
//  Self-test

#undef NDEBUG
#include <assert.h>

void
privacy_export_test (bool verbose)
{
    (void) verbose;
    json_t *doc = privacy_export_new ("L1");
    json_t *leads = json_pack ("{s:s, s:b}", "lead", "L1", "forgotten", 0);
    privacy_export_add (doc, "leads", PRIVACY_EXPORT_OK, leads);
    assert (privacy_export_complete (doc));
    json_t *err = json_pack ("{s:s, s:s}", "code", "invalid", "message", "x");
    privacy_export_add (doc, "sales", PRIVACY_EXPORT_ERR, err);
    privacy_export_add (doc, "retention", PRIVACY_EXPORT_DOWN, NULL);
    assert (!privacy_export_complete (doc));
    json_t *services = json_object_get (doc, "services");
    assert (json_equal (json_object_get (services, "leads"), leads));
    assert (json_equal (json_object_get (json_object_get (services, "sales"), "error"), err));
    assert (json_is_true (json_object_get (json_object_get (services, "retention"),
                                           "unreachable")));
    assert (strcmp (json_string_value (json_object_get (doc, "lead")), "L1") == 0);
    json_decref (leads);
    json_decref (err);
    json_decref (doc);
}
