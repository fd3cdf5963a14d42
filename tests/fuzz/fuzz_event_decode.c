/*  libFuzzer target: the untrusted-bytes path of every API request.

    Runs the body decoder with the PUBLISH limits, then the PUBLISH and
    envelope parsers on whatever it accepts, and the single-event decoder
    (PUB/SUB limits). Run with -malloc_limit_mb so that any allocation
    driven by a declared count, not by real bytes, is reported.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "event_codec.h"

//  Every refusal has a code. And the scan must never accept bytes that
//  msgpack-c then refuses (the two would disagree on the format). That
//  error is the only bad_request starting so; bad_request messages carry
//  no input text (paths from the input appear only in invalid ones).
static void
s_check_refusal (const funnel_error_t *err)
{
    const char *disagree = "body: not msgpack (decoder said";
    if (!err->code
    ||  (strcmp (err->code, FUNNEL_ERR_BAD_REQUEST) == 0
         && strncmp (err->message, disagree, strlen (disagree)) == 0))
        abort ();
}

//  A decoded frame must be internally consistent: checks the accessors
static void
s_check_msg (event_codec_t *msg, size_t size)
{
    size_t bytes_size;
    event_codec_bytes (msg, &bytes_size);
    if (bytes_size != size)
        abort ();
    funnel_event_t *events;
    size_t count;
    bool batch;
    funnel_error_t err;
    if (event_codec_publish_parse (msg, &events, &count, &batch, &err) == 0) {
        for (size_t i = 0; i < count; i++)
            if (!events [i].id [0] || !events [i].data || !events [i].encoded_size)
                abort ();
        free (events);
    }
    else
    if (!err.code || events)
        abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (data, size, &event_codec_limits_body, &err);
    if (msg) {
        s_check_msg (msg, size);
        event_codec_destroy (&msg);
    }
    else
        s_check_refusal (&err);

    msg = event_codec_decode (data, size, &event_codec_limits_event, &err);
    if (msg) {
        funnel_event_t event;
        event_codec_event_parse (event_codec_root (msg), &event, &err);
        event_codec_destroy (&msg);
    }
    else
        s_check_refusal (&err);
    return 0;
}
