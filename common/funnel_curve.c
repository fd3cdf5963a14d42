/*  funnel_curve — see funnel_curve.h for why. */
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include "funnel_curve.h"
#include "funnel_log.h"

#define ZAP_ENDPOINT    "inproc://zeromq.zap.01"
#define NAME_MAX_LEN    64
#define PUBLISH_MAX_LEN 1024

//  The process's one security setup (ZAP is per process, see the header)
static struct {
    bool curve;
    bool insecure;
    char *name;
    char *certs;
    char *clients;
    zcert_t *cert;          //  This program's keypair
    zactor_t *zap;          //  The ZAP handler, when this program serves
    bool zap_failed;        //  Set by the actor before its start signal
} s_self;

bool
funnel_curve_name_ok (const char *name)
{
    size_t length = name ? strlen (name) : 0;
    if (length < 1 || length > NAME_MAX_LEN)
        return false;
    for (const char *c = name; *c; c++)
        if (!isalnum ((unsigned char) *c) && !strchr ("._:@+-", *c))
            return false;
    return true;
}

//  ---------------------------------------------------------------------
//  The ZAP handler (RFC 27), an actor that owns its own certificate store

//  Appends one metadata property as ZMTP encodes it: name length (1 byte),
//  name, value length (4 bytes, network order), value.
static void
s_add_property (zchunk_t *meta, const char *name, const char *value)
{
    size_t name_len = strlen (name), value_len = strlen (value);
    byte head [1] = { (byte) name_len };
    byte size [4] = { (byte) (value_len >> 24), (byte) (value_len >> 16),
                      (byte) (value_len >> 8), (byte) value_len };
    zchunk_extend (meta, head, 1);
    zchunk_extend (meta, name, name_len);
    zchunk_extend (meta, size, 4);
    zchunk_extend (meta, value, value_len);
}

//  Decides one request: 200 with the certificate's metadata, or 400. All
//  three properties are always returned: libzmq merges a client's own
//  handshake properties after ours without overwriting, so a property we
//  left out could be supplied by the client itself.
static void
s_zap_handle (zsock_t *handler, zcertstore_t *store, int64_t *last_warn)
{
    zmsg_t *request = zmsg_recv (handler);
    if (!request)
        return;
    char *version = zmsg_popstr (request);
    zframe_t *sequence = zmsg_pop (request);
    char *domain = zmsg_popstr (request);
    char *address = zmsg_popstr (request);
    zframe_t *identity = zmsg_pop (request);
    char *mechanism = zmsg_popstr (request);
    zframe_t *key = zmsg_pop (request);
    zmsg_destroy (&request);

    const char *status = "400", *text = "No access";
    char client_key [41] = "";
    zchunk_t *meta = zchunk_new (NULL, 256);
    const char *why = NULL;
    if (!version || !streq (version, "1.0") || !sequence)
        why = "malformed ZAP request";
    else
    if (!mechanism || !streq (mechanism, "CURVE") || !key || zframe_size (key) != 32)
        why = "not CURVE";
    else {
        zmq_z85_encode (client_key, zframe_data (key), 32);
        zcert_t *cert = zcertstore_lookup (store, client_key);
        const char *name = cert ? zcert_meta (cert, "name") : NULL;
        const char *publish = cert ? zcert_meta (cert, "publish") : NULL;
        const char *read = cert ? zcert_meta (cert, "read") : NULL;
        bool may_read = !(read && streq (read, "0"));
        if (!cert)
            why = "key not in security/clients";
        else
        if (publish && strlen (publish) > PUBLISH_MAX_LEN)
            why = "its certificate's publish list is too long";
        else
        if (!may_read && domain && streq (domain, FUNNEL_CURVE_DOMAIN_PUB))
            why = "its certificate says read = 0, and this is a PUB socket";
        else {
            status = "200";
            text = "OK";
            //  A missing or malformed name: the key itself names the client
            s_add_property (meta, "name", funnel_curve_name_ok (name) ? name : client_key);
            s_add_property (meta, "publish", publish ? publish : "*");
            s_add_property (meta, "read", may_read ? "1" : "0");
        }
    }
    if (why && funnel_log_every (last_warn, 1000))
        log_warn ("curve: refused a client%s%s from %s: %s", *client_key ? " with key " : "",
                  client_key, address ? address : "?", why);
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, "1.0");
    if (sequence)
        zmsg_append (reply, &sequence);
    else
        zmsg_addstr (reply, "");
    zmsg_addstr (reply, status);
    zmsg_addstr (reply, text);
    zmsg_addstr (reply, streq (status, "200") ? client_key : "");
    zmsg_addmem (reply, zchunk_data (meta), zchunk_size (meta));
    zmsg_send (&reply, handler);
    zchunk_destroy (&meta);
    zframe_destroy (&sequence);
    zframe_destroy (&identity);
    zframe_destroy (&key);
    zstr_free (&version);
    zstr_free (&domain);
    zstr_free (&address);
    zstr_free (&mechanism);
}

static void
s_zap_actor (zsock_t *pipe, void *arg)
{
    const char *clients = (const char *) arg;
    zsock_t *handler = zsock_new (ZMQ_REP);
    if (!handler || zsock_bind (handler, ZAP_ENDPOINT) != 0) {
        log_error ("curve: cannot start the ZAP handler (%s)", zmq_strerror (zmq_errno ()));
        zsock_destroy (&handler);
        s_self.zap_failed = true;
        zsock_signal (pipe, 0);     //  zactor_new waits for this
        return;
    }
    zcertstore_t *store = zcertstore_new (clients);
    zsock_signal (pipe, 0);
    int64_t last_warn = 0;
    zmq_pollitem_t items [] = {
        { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (handler), 0, ZMQ_POLLIN, 0 }
    };
    bool fatal = false;
    while (true) {
        if (zmq_poll (items, 2, -1) < 0) {
            if (zmq_errno () == EINTR)
                continue;
            //  ETERM: the context is ending with the process
            fatal = zmq_errno () != ETERM;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term)
                break;
        }
        if (items [1].revents & ZMQ_POLLIN)
            s_zap_handle (handler, store, &last_warn);
    }
    zcertstore_destroy (&store);
    zsock_destroy (&handler);
    if (fatal) {
        //  Without a handler libzmq lets every CURVE client in (fail open)
        log_error ("curve: the ZAP handler stopped (%s); exiting rather than serve "
                   "without authentication", zmq_strerror (zmq_errno ()));
        _exit (1);
    }
}

//  ---------------------------------------------------------------------
//  Setup

//  Loads a keypair from a secret certificate file; NULL after logging.
static zcert_t *
s_load_secret (const char *path)
{
    struct stat st;
    if (stat (path, &st) != 0) {
        log_error ("curve: cannot read the certificate %s: %s", path, strerror (errno));
        return NULL;
    }
    if (st.st_mode & 077)
        log_warn ("curve: %s is readable by others (mode %03o); it holds a secret key, "
                  "chmod 600 it", path, (unsigned) (st.st_mode & 0777));
    //  zcert_load reads FILE and FILE_secret; give it the public name
    char *base = strdup (path);
    size_t length = strlen (base);
    if (length > 7 && streq (base + length - 7, "_secret"))
        base [length - 7] = 0;
    zcert_t *cert = zcert_load (base);
    free (base);
    if (cert && streq (zcert_secret_txt (cert), "0000000000000000000000000000000000000000")) {
        log_error ("curve: %s holds no secret key (a public certificate?)", path);
        zcert_destroy (&cert);
    }
    else
    if (!cert)
        log_error ("curve: %s is not a czmq certificate", path);
    return cert;
}

//  Refuses a clients directory that would crash zcertstore later: czmq
//  4.2.1 asserts when two files hold the same public key.
static int
s_check_clients (const char *dir)
{
    zdir_t *zdir = zdir_new (dir, NULL);
    if (!zdir) {
        log_error ("curve: security/clients: %s is not a directory", dir);
        return -1;
    }
    zfile_t **files = zdir_flatten (zdir);
    zhashx_t *seen = zhashx_new ();
    int rc = 0, count = 0;
    for (int i = 0; files [i] && rc == 0; i++) {
        const char *path = zfile_filename (files [i], NULL);
        size_t length = strlen (path);
        if (length > 7 && streq (path + length - 7, "_secret"))
            continue;
        zcert_t *cert = zcert_load (path);
        if (!cert)
            continue;
        if (zhashx_lookup (seen, zcert_public_txt (cert))) {
            log_error ("curve: security/clients: %s and %s hold the same key; keep one",
                       path, (const char *) zhashx_lookup (seen, zcert_public_txt (cert)));
            rc = -1;
        }
        else {
            zhashx_insert (seen, zcert_public_txt (cert), (void *) path);
            count++;
        }
        zcert_destroy (&cert);
    }
    zhashx_destroy (&seen);
    zdir_flatten_free (&files);
    zdir_destroy (&zdir);
    if (rc == 0)
        log_info ("curve: %d client certificate(s) in %s", count, dir);
    return rc;
}

int
funnel_curve_setup (funnel_config_t *config, const char *name)
{
    assert (!s_self.name);
    s_self.name = strdup (name);
    if (funnel_config_bool (config, "security/curve", false, &s_self.curve)
    ||  funnel_config_bool (config, "security/insecure", false, &s_self.insecure))
        return 2;
    if (!s_self.curve)
        return 0;
    const char *certs = funnel_config_get (config, "security/certs", NULL);
    const char *clients = funnel_config_get (config, "security/clients", NULL);
    //  Per process, never in the shared file: one keypair per program
    const char *own = getenv ("FUNNEL_CERT");
    if (!certs || !*certs) {
        log_error ("curve: security/curve = 1 needs security/certs (the certificates' "
                   "directory)");
        return 2;
    }
    s_self.certs = strdup (certs);
    char *path = own && *own ? strdup (own) : zsys_sprintf ("%s/%s.cert_secret", certs, name);
    s_self.cert = s_load_secret (path);
    free (path);
    if (!s_self.cert)
        return 2;
    if (clients && *clients) {
        if (s_check_clients (clients) != 0)
            return 2;
        s_self.clients = strdup (clients);
        //  The handler thread must not take the stop signals
        sigset_t block, saved;
        sigemptyset (&block);
        sigaddset (&block, SIGINT);
        sigaddset (&block, SIGTERM);
        pthread_sigmask (SIG_BLOCK, &block, &saved);
        s_self.zap = zactor_new (s_zap_actor, s_self.clients);
        pthread_sigmask (SIG_SETMASK, &saved, NULL);
        //  zactor_new returns once the actor signalled
        if (!s_self.zap || s_self.zap_failed) {
            zactor_destroy (&s_self.zap);
            return 1;
        }
    }
    log_info ("curve: on, as '%s' (key %.8s...)%s", name, zcert_public_txt (s_self.cert),
              s_self.zap ? "" : ", client only");
    return 0;
}

void
funnel_curve_teardown (void)
{
    zactor_destroy (&s_self.zap);
    zcert_destroy (&s_self.cert);
    zstr_free (&s_self.name);
    zstr_free (&s_self.certs);
    zstr_free (&s_self.clients);
    s_self.curve = s_self.insecure = false;
}

bool
funnel_curve_enabled (void)
{
    return s_self.curve;
}

//  True for endpoints only this machine can reach.
static bool
s_loopback (const char *endpoint)
{
    if (strncmp (endpoint, "ipc://", 6) == 0 || strncmp (endpoint, "inproc://", 9) == 0)
        return true;
    if (strncmp (endpoint, "tcp://", 6) != 0)
        return false;
    const char *host = endpoint + 6;
    return strncmp (host, "127.", 4) == 0 || strncmp (host, "[::1]:", 6) == 0
        || strncmp (host, "localhost:", 10) == 0 || strncmp (host, "lo:", 3) == 0;
}

int
funnel_curve_server (zsock_t *sock, const char *endpoint, const char *domain)
{
    if (!s_self.curve) {
        if (s_loopback (endpoint) || s_self.insecure)
            return 0;
        log_error ("refusing to bind %s without CURVE: anyone who can reach it could "
                   "publish and read; set security/curve = 1 (proto/security.md), or "
                   "security/insecure = 1 on a trusted network", endpoint);
        return -1;
    }
    if (!s_self.cert || !s_self.zap) {
        log_error ("curve: cannot serve %s: security/clients is not set, so no client "
                   "could be checked", endpoint);
        return -1;
    }
    zcert_apply (s_self.cert, sock);
    zsock_set_curve_server (sock, 1);
    zsock_set_zap_domain (sock, domain);
    return 0;
}

int
funnel_curve_client (zsock_t *sock, const char *server)
{
    if (!s_self.curve)
        return 0;
    if (!s_self.cert)
        return -1;              //  Setup failed, and said why
    if (!server) {
        log_error ("curve: a client socket needs the server's name to pin its key");
        return -1;
    }
    char *path = zsys_sprintf ("%s/%s.cert", s_self.certs, server);
    zcert_t *cert = zcert_load (path);
    if (!cert)
        log_error ("curve: cannot load %s, %s's public certificate", path, server);
    free (path);
    if (!cert)
        return -1;
    zcert_apply (s_self.cert, sock);
    zsock_set_curve_serverkey (sock, zcert_public_txt (cert));
    zcert_destroy (&cert);
    return 0;
}

int
funnel_curve_keygen (const char *name, const char *dir, const char *publish,
                     const char *read, char *err, size_t err_size)
{
    if (!funnel_curve_name_ok (name)) {
        snprintf (err, err_size, "name '%s': 1-64 of A-Z a-z 0-9 . _ : @ + -", name);
        return -1;
    }
    if (read && !streq (read, "0") && !streq (read, "1")) {
        snprintf (err, err_size, "read: must be 0 or 1");
        return -1;
    }
    if (publish && (!*publish || strlen (publish) > PUBLISH_MAX_LEN)) {
        snprintf (err, err_size, "publish: 1-%d characters", PUBLISH_MAX_LEN);
        return -1;
    }
    char *existing = zsys_sprintf ("%s/%s.cert_secret", dir, name);
    bool exists = zsys_file_exists (existing);
    free (existing);
    if (exists) {
        //  A new pair would lock out every server that pinned the old key
        snprintf (err, err_size, "%s/%s.cert_secret exists; remove it first to replace it",
                  dir, name);
        return -1;
    }
    if (zsys_dir_create ("%s", dir) != 0) {
        snprintf (err, err_size, "cannot create %s: %s", dir, strerror (errno));
        return -1;
    }
    zcert_t *cert = zcert_new ();
    zcert_set_meta (cert, "name", "%s", name);
    if (publish)
        zcert_set_meta (cert, "publish", "%s", publish);
    if (read)
        zcert_set_meta (cert, "read", "%s", read);
    char *path = zsys_sprintf ("%s/%s.cert", dir, name);
    //  The secret file is created 0600 from the start (czmq's own save
    //  would leave it at the umask's mode for a moment)
    mode_t saved = umask (077);
    int rc = zcert_save (cert, path);
    umask (saved);
    if (rc == 0)
        chmod (path, 0644);     //  The public half is meant to be shared
    else
        snprintf (err, err_size, "cannot write %s: %s", path, strerror (errno));
    free (path);
    zcert_destroy (&cert);
    return rc == 0 ? 0 : -1;
}

//  ---------------------------------------------------------------------
//  Self-test: a CURVE ROUTER, an allowed and an unknown client

#undef NDEBUG
#include <assert.h>

static zcert_t *
s_test_cert (const char *dir, const char *name)
{
    char *path = zsys_sprintf ("%s/%s.cert", dir, name);
    zcert_t *cert = zcert_load (path);
    free (path);
    assert (cert);
    return cert;
}

void
funnel_curve_test (bool verbose)
{
    assert (funnel_curve_name_ok ("leads"));
    assert (!funnel_curve_name_ok (""));
    assert (!funnel_curve_name_ok ("a b"));
    assert (s_loopback ("tcp://127.0.0.1:1") && s_loopback ("ipc:///tmp/x"));
    assert (!s_loopback ("tcp://*:1") && !s_loopback ("tcp://10.0.0.1:1"));

    char dir [] = "/tmp/funnel-curve-test-XXXXXX";
    assert (mkdtemp (dir));
    char *certs = zsys_sprintf ("%s/certs", dir);
    char *clients = zsys_sprintf ("%s/clients", dir);
    char err [256];
    assert (funnel_curve_keygen ("server", certs, NULL, NULL, err, sizeof err) == 0);
    assert (funnel_curve_keygen ("good", certs, "touch", "0", err, sizeof err) == 0);
    assert (funnel_curve_keygen ("bad", certs, NULL, NULL, err, sizeof err) == 0);
    assert (funnel_curve_keygen ("bad name", certs, NULL, NULL, err, sizeof err) == -1);
    assert (funnel_curve_keygen ("bad", certs, NULL, NULL, err, sizeof err) == -1);
    assert (strstr (err, "exists"));
    zsys_dir_create ("%s", clients);
    zcert_t *good = s_test_cert (certs, "good");
    assert (streq (zcert_meta (good, "publish"), "touch"));
    char *copy = zsys_sprintf ("%s/good.cert", clients);
    zcert_save_public (good, copy);
    free (copy);

    char *text = zsys_sprintf ("security\n    curve = 1\n    certs = \"%s\"\n"
                               "    clients = \"%s\"\n", certs, clients);
    funnel_config_t *config = funnel_config_from_text (text, "server");
    assert (config);
    assert (funnel_curve_setup (config, "server") == 0);
    assert (funnel_curve_enabled ());

    zsock_t *server = zsock_new (ZMQ_ROUTER);
    assert (funnel_curve_server (server, "tcp://127.0.0.1:*", FUNNEL_CURVE_DOMAIN_API) == 0);
    int port = zsock_bind (server, "tcp://127.0.0.1:*");
    assert (port > 0);
    //  A listed client gets through, with its certificate's metadata
    zsock_t *client = zsock_new (ZMQ_DEALER);
    zcert_apply (good, client);
    zcert_t *server_cert = s_test_cert (certs, "server");
    zsock_set_curve_serverkey (client, zcert_public_txt (server_cert));
    zsock_connect (client, "tcp://127.0.0.1:%d", port);
    zstr_send (client, "hello");
    zsock_set_rcvtimeo (server, 2000);
    zmsg_t *msg = zmsg_recv (server);
    assert (msg);
    zframe_t *body = zmsg_last (msg);
    assert (body);
    assert (streq (zframe_meta (body, "User-Id"), zcert_public_txt (good)));
    assert (streq (zframe_meta (body, "name"), "good"));
    assert (streq (zframe_meta (body, "publish"), "touch"));
    assert (streq (zframe_meta (body, "read"), "0"));
    zmsg_destroy (&msg);
    //  An unlisted key gets nothing
    zsock_t *stranger = zsock_new (ZMQ_DEALER);
    zcert_t *bad = s_test_cert (certs, "bad");
    zcert_apply (bad, stranger);
    zsock_set_curve_serverkey (stranger, zcert_public_txt (server_cert));
    zsock_connect (stranger, "tcp://127.0.0.1:%d", port);
    zstr_send (stranger, "hello");
    zsock_set_rcvtimeo (server, 300);
    msg = zmsg_recv (server);
    assert (msg == NULL);
    if (verbose)
        printf ("(an unlisted key got nothing) ");

    zsock_destroy (&stranger);
    zsock_destroy (&client);
    zsock_destroy (&server);
    zcert_destroy (&bad);
    zcert_destroy (&good);
    zcert_destroy (&server_cert);
    funnel_curve_teardown ();
    funnel_config_destroy (&config);
    free (text);
    zdir_t *tree = zdir_new (dir, NULL);
    zdir_remove (tree, true);
    zdir_destroy (&tree);
    free (certs);
    free (clients);
}
