/*  redis_auth — Redis credentials from files, never from argv or logs.

    A password in a --redis URL shows in `ps` and in shell history; a file
    readable only by the service's user does not. Keys (proto/security.md):
      redis/password_file = FILE     the password (first line), for every service
      redis/user = NAME              the ACL user to AUTH as
      <svc>/redis_password_file, <svc>/redis_user    per-service overrides
    They override the URL's own user and password. The launcher makes one
    ACL user per service (funnel-<svc>, deploy/redis-users.sh).
*/
#ifndef REDIS_AUTH_H_INCLUDED
#define REDIS_AUTH_H_INCLUDED

#include "funnel_config.h"
#include "redis_store.h"

//  Applies the service's user and password file to url. 0, or -1 after
//  logging why (a missing or empty file: exit 2).
int
    redis_auth_apply (funnel_config_t *config, const char *service, redis_url_t *url);

//  Reads the first line of path into out (no newline). 0, or -1 with err.
int
    redis_auth_read_secret (const char *path, char *out, size_t size, funnel_error_t *err);

void
    redis_auth_test (bool verbose);

#endif
