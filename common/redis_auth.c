/*  redis_auth — see redis_auth.h for why. */
#include <czmq.h>
#include <sys/stat.h>
#include "redis_auth.h"
#include "funnel_log.h"

int
redis_auth_read_secret (const char *path, char *out, size_t size, funnel_error_t *err)
{
    FILE *file = fopen (path, "r");
    if (!file)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s: %s", path, strerror (errno));
    struct stat st;
    if (fstat (fileno (file), &st) == 0 && (st.st_mode & 077))
        log_warn ("%s is readable by others (mode %03o); chmod 600 it", path,
                  (unsigned) (st.st_mode & 0777));
    char line [1024];
    bool read = fgets (line, sizeof line, file) != NULL;
    fclose (file);
    line [read ? strcspn (line, "\r\n") : 0] = 0;
    int rc = 0;
    if (!line [0])
        rc = funnel_error_set (err, FUNNEL_ERR_INVALID, "%s: empty", path);
    else
    if (strlen (line) >= size)
        rc = funnel_error_set (err, FUNNEL_ERR_INVALID, "%s: longer than %zu bytes",
                               path, size - 1);
    else
        snprintf (out, size, "%s", line);
    memset (line, 0, sizeof line);      //  Leave no copy of the secret behind
    return rc;
}

//  The service's own key, else the redis section's.
static const char *
s_setting (funnel_config_t *config, const char *service, const char *own, const char *shared)
{
    char path [256];
    snprintf (path, sizeof path, "%s/%s", service, own);
    const char *value = funnel_config_get (config, path, NULL);
    if (!value || !*value)
        value = funnel_config_get (config, shared, NULL);
    return value && *value ? value : NULL;
}

int
redis_auth_apply (funnel_config_t *config, const char *service, redis_url_t *url)
{
    const char *user = s_setting (config, service, "redis_user", "redis/user");
    const char *file = s_setting (config, service, "redis_password_file", "redis/password_file");
    if (user) {
        if (strlen (user) >= sizeof url->user) {
            log_error ("redis/user: longer than %zu bytes", sizeof url->user - 1);
            return -1;
        }
        snprintf (url->user, sizeof url->user, "%s", user);
    }
    if (file) {
        funnel_error_t err;
        if (redis_auth_read_secret (file, url->password, sizeof url->password, &err) != 0) {
            log_error ("redis/password_file: %s", err.message);
            return -1;
        }
    }
    return 0;
}

#undef NDEBUG
#include <assert.h>

void
redis_auth_test (bool verbose)
{
    (void) verbose;
    char dir [] = "/tmp/funnel-auth-test-XXXXXX";
    assert (mkdtemp (dir));
    char *path = zsys_sprintf ("%s/pass", dir);
    FILE *file = fopen (path, "w");
    assert (file);
    fprintf (file, "s3cret\n");
    fclose (file);
    chmod (path, 0600);
    char *text = zsys_sprintf ("redis\n    password_file = \"%s\"\nsales\n"
                               "    redis_user = \"funnel-sales\"\n", path);
    funnel_config_t *config = funnel_config_from_text (text, "sales");
    assert (config);
    redis_url_t url;
    funnel_error_t err;
    assert (redis_url_parse ("redis://127.0.0.1:6379/0", &url, &err) == 0);
    assert (redis_auth_apply (config, "sales", &url) == 0);
    assert (streq (url.user, "funnel-sales") && streq (url.password, "s3cret"));
    assert (redis_url_parse ("redis://127.0.0.1:6379/0", &url, &err) == 0);
    assert (redis_auth_apply (config, "leads", &url) == 0);
    assert (streq (url.user, "") && streq (url.password, "s3cret"));
    funnel_config_destroy (&config);
    free (text);
    //  A missing file is an error, not "no password"
    unlink (path);
    text = zsys_sprintf ("redis\n    password_file = \"%s\"\n", path);
    config = funnel_config_from_text (text, "sales");
    assert (redis_auth_apply (config, "sales", &url) == -1);
    funnel_config_destroy (&config);
    free (text);
    free (path);
    rmdir (dir);
}
