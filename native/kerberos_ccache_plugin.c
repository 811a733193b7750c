/*
 * ebr-kerberos-ccache: a librdkafka plugin that gives each Kafka client
 * instance its OWN Kerberos credential cache.
 *
 * Why: with Cyrus SASL + MIT Kerberos, the GSSAPI handshake (sasl_client_start
 * / sasl_client_step -> gss_init_sec_context with GSS_C_NO_CREDENTIAL, run in
 * librdkafka's broker threads, rdkafka_sasl_cyrus.c) takes its ticket from the
 * DEFAULT credential cache, i.e. KRB5CCNAME: one value for the whole process.
 * A process holding clients of several principals (admin + one per component)
 * would authenticate all of them as whoever owns that one cache.
 *
 * How: MIT's gss_krb5_ccache_name() sets the default ccache for the CALLING
 * THREAD only. librdkafka calls on_thread_start() interceptors at the top of
 * every thread it creates for a client (main, broker incl. bootstrap/internal/
 * logical brokers, background) before that thread does any network I/O, so
 * setting the name there makes every handshake of that client use its cache.
 *
 * Client config (plugin.library.paths must be applied first; confluent-kafka
 * does that itself):
 *   plugin.library.paths    = /abs/path/ebr-kerberos-ccache.so
 *   ebr.kerberos.ccache     = FILE:/abs/path/<client>.ccache
 *   sasl.kerberos.kinit.cmd = kinit -c 'FILE:/abs/path/<client>.ccache' -k -t
 *                             "%{sasl.kerberos.keytab}" %{sasl.kerberos.principal}
 * The kinit command runs through system() in librdkafka's main thread: a child
 * process that never sees the thread-specific name, hence the explicit -c.
 *
 * Fail closed: a client that loads the plugin but has no ebr.kerberos.ccache
 * gets an empty MEMORY: cache in its threads (authentication fails) instead of
 * silently borrowing the process-wide identity.
 */
#define _GNU_SOURCE
#include <link.h>
#include <stdlib.h>
#include <string.h>

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_krb5.h>
#include <librdkafka/rdkafka.h>

#define PROP_NAME "ebr.kerberos.ccache"
#define IC_NAME "ebr-kerberos-ccache"
#define UNSET_CCACHE "MEMORY:ebr-kerberos-ccache-not-set"
#define MAX_CCACHE_LEN 4095

/* Per-configuration-object state; owned by the conf (freed in
 * on_conf_destroy). rd_kafka_new() struct-copies the conf into the client, so
 * the same state lives until the client is destroyed, i.e. after its threads
 * have been joined. */
struct ebr_state {
        char *ccache; /* NULL: not configured */
};

static rd_kafka_resp_err_t
register_conf(rd_kafka_conf_t *conf, struct ebr_state *st, int *owned);

static void set_err(char *errstr, size_t errstr_size, const char *msg) {
        size_t n;
        if (!errstr || !errstr_size)
                return;
        n = strlen(msg);
        if (n >= errstr_size)
                n = errstr_size - 1;
        memcpy(errstr, msg, n);
        errstr[n] = '\0';
}

/* A cache that a kinit child process can fill and this process can read:
 * FILE:/abs, DIR:/abs, KEYRING:..., or a bare absolute path (= FILE:). */
static int valid_ccache(const char *v) {
        size_t i, n = strlen(v);
        if (n == 0 || n > MAX_CCACHE_LEN)
                return 0;
        for (i = 0; i < n; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                        return 0;
        return v[0] == '/' || !strncmp(v, "FILE:/", 6) ||
               !strncmp(v, "DIR:/", 5) || !strncmp(v, "KEYRING:", 8);
}

static rd_kafka_conf_res_t on_conf_set(rd_kafka_conf_t *conf,
                                       const char *name,
                                       const char *val,
                                       char *errstr,
                                       size_t errstr_size,
                                       void *ic_opaque) {
        struct ebr_state *st = ic_opaque;
        char *copy           = NULL;
        (void)conf;

        /* librdkafka offers every global property to interceptors first. */
        if (strcmp(name, PROP_NAME))
                return RD_KAFKA_CONF_UNKNOWN;

        if (val) { /* NULL (or "") resets */
                if (!valid_ccache(val)) {
                        set_err(errstr, errstr_size,
                                "Invalid value for " PROP_NAME
                                ": expected FILE:/abs/path, DIR:/abs/path, "
                                "KEYRING:... or /abs/path");
                        return RD_KAFKA_CONF_INVALID;
                }
                if (!(copy = strdup(val))) {
                        set_err(errstr, errstr_size, "out of memory");
                        return RD_KAFKA_CONF_INVALID;
                }
        }
        free(st->ccache);
        st->ccache = copy;
        return RD_KAFKA_CONF_OK;
}

/* rd_kafka_conf_dup(): interceptors are not copied, so register ours on the
 * new conf with a state of its own. librdkafka then replays the plugin's
 * property through on_conf_set (honouring the filter), so the value is not
 * copied here. */
static rd_kafka_resp_err_t on_conf_dup(rd_kafka_conf_t *new_conf,
                                       const rd_kafka_conf_t *old_conf,
                                       size_t filter_cnt,
                                       const char **filter,
                                       void *ic_opaque) {
        struct ebr_state *st;
        rd_kafka_resp_err_t err;
        int owned = 0;
        (void)old_conf;
        (void)filter_cnt;
        (void)filter;
        (void)ic_opaque;

        if (!(st = calloc(1, sizeof(*st))))
                return RD_KAFKA_RESP_ERR__FAIL;
        err = register_conf(new_conf, st, &owned);
        if (!owned)
                free(st);
        return err == RD_KAFKA_RESP_ERR__CONFLICT ? RD_KAFKA_RESP_ERR_NO_ERROR
                                                  : err;
}

static rd_kafka_resp_err_t on_conf_destroy(void *ic_opaque) {
        struct ebr_state *st = ic_opaque;
        free(st->ccache);
        free(st);
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t on_thread_start(rd_kafka_t *rk,
                                           rd_kafka_thread_type_t thread_type,
                                           const char *thread_name,
                                           void *ic_opaque) {
        struct ebr_state *st = ic_opaque;
        OM_uint32 major, minor = 0;
        (void)rk;
        (void)thread_type;
        (void)thread_name;

        /* Thread-specific in MIT krb5; copied, and freed at thread exit.
         * Must not call librdkafka APIs here (see rdkafka.h). */
        major = gss_krb5_ccache_name(&minor,
                                     st->ccache ? st->ccache : UNSET_CCACHE,
                                     NULL);
        return GSS_ERROR(major) ? RD_KAFKA_RESP_ERR__FAIL
                                : RD_KAFKA_RESP_ERR_NO_ERROR;
}

static rd_kafka_resp_err_t on_new(rd_kafka_t *rk,
                                  const rd_kafka_conf_t *conf,
                                  void *ic_opaque,
                                  char *errstr,
                                  size_t errstr_size) {
        struct ebr_state *st = ic_opaque;
        rd_kafka_resp_err_t err;
        (void)conf;

        /* Instance interceptors can only be added from on_new(), before the
         * client's threads exist. */
        err = rd_kafka_interceptor_add_on_thread_start(rk, IC_NAME,
                                                       on_thread_start, st);
        if (err && err != RD_KAFKA_RESP_ERR__CONFLICT)
                return err;
        if (!st->ccache) { /* logged by librdkafka; threads fail closed */
                set_err(errstr, errstr_size,
                        PROP_NAME " is not set: this client's Kerberos "
                                  "handshakes will fail (empty cache " UNSET_CCACHE
                                  ")");
                return RD_KAFKA_RESP_ERR__INVALID_ARG;
        }
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* on_conf_set goes first: a __CONFLICT there means this plugin is already
 * registered on the conf (the plugin is referenced again when a conf holding
 * plugin.library.paths is duplicated), and nothing else was added.
 * on_conf_destroy goes last (that list accepts duplicates), so the state is
 * freed exactly once. *owned = 1 once the conf references st: from then on
 * the caller must not free it (a later failure leaks it rather than leaving a
 * dangling pointer; none is expected on a conf that had no on_conf_set). */
static rd_kafka_resp_err_t
register_conf(rd_kafka_conf_t *conf, struct ebr_state *st, int *owned) {
        rd_kafka_resp_err_t err;

        *owned = 0;
        if ((err = rd_kafka_conf_interceptor_add_on_conf_set(conf, IC_NAME,
                                                             on_conf_set, st)))
                return err;
        *owned = 1;
        if ((err = rd_kafka_conf_interceptor_add_on_conf_dup(conf, IC_NAME,
                                                             on_conf_dup, st)))
                return err;
        if ((err = rd_kafka_conf_interceptor_add_on_new(conf, IC_NAME, on_new,
                                                        st)))
                return err;
        return rd_kafka_conf_interceptor_add_on_conf_destroy(
            conf, IC_NAME, on_conf_destroy, st);
}

/* Guard against a second librdkafka in the process (e.g. the PyPI wheel's
 * bundled copy): this plugin is linked to the librdkafka.so.1 it was built
 * against and would otherwise drive that copy with the other one's conf. */
static int count_rdkafka(struct dl_phdr_info *info, size_t size, void *data) {
        const char *base;
        (void)size;
        if (!info->dlpi_name || !*info->dlpi_name)
                return 0;
        base = strrchr(info->dlpi_name, '/');
        base = base ? base + 1 : info->dlpi_name;
        if (!strncmp(base, "librdkafka", 10) &&
            strncmp(base, "librdkafka++", 12))
                (*(int *)data)++;
        return 0;
}

rd_kafka_resp_err_t conf_init(rd_kafka_conf_t *conf,
                              void **plug_opaquep,
                              char *errstr,
                              size_t errstr_size) {
        struct ebr_state *st;
        rd_kafka_resp_err_t err;
        int n_rdkafka = 0, owned = 0;

        *plug_opaquep = NULL;
        dl_iterate_phdr(count_rdkafka, &n_rdkafka);
        if (n_rdkafka != 1) {
                set_err(errstr, errstr_size,
                        IC_NAME ": more than one librdkafka is loaded; use "
                                "the client built against this plugin's "
                                "librdkafka");
                return RD_KAFKA_RESP_ERR__INVALID_ARG;
        }
        if (!(st = calloc(1, sizeof(*st)))) {
                set_err(errstr, errstr_size, "out of memory");
                return RD_KAFKA_RESP_ERR__FAIL;
        }
        if ((err = register_conf(conf, st, &owned))) {
                if (!owned)
                        free(st);
                if (err == RD_KAFKA_RESP_ERR__CONFLICT && !owned)
                        return RD_KAFKA_RESP_ERR_NO_ERROR;
                set_err(errstr, errstr_size,
                        IC_NAME ": failed to add interceptors");
                return err;
        }
        return RD_KAFKA_RESP_ERR_NO_ERROR;
}
