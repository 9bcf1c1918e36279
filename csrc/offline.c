/*
 * Offline verification, for diagnose(): the same chase as a handshake, on a
 * recorded chain, without a connection.  Not on the handshake path.
 */
#include <stdlib.h>

#include "aia_ext.h"

/* ---- Offline verification: the same chase, without a handshake ---- */

typedef struct {
    X509_STORE_CTX *sctx;
    OPENSSL_STACK *untrusted; /* every served certificate, leaf first */
} aia_offline;

void aia_offline_free(void *handle)
{
    aia_offline *off = (aia_offline *)handle;
    if (off == NULL || !aia_bound)
        return;
    if (off->sctx != NULL)
        aia_ossl.X509_STORE_CTX_free(off->sctx);
    aia_free_stack_from(off->untrusted, 0);
    free(off);
}

/*
 * Prepare to verify a served chain (DER, leaf first) against the trust store
 * and verify parameters of an SSL_CTX, as libssl prepares a
 * client's verification (ssl/ssl_cert.c, ssl_verify_cert_chain): the peer
 * chain as the untrusted stack, "ssl_server" defaults, then the context's
 * own parameters on top, and its security level as the auth level.
 * `host` (may be NULL) is checked as a DNS name, or as an IP address when
 * `host_is_ip`; `at` is the verification time when `has_time`.
 */
static void *offline_new(void *ssl_ctx, const unsigned char **ders, const size_t *lens,
                         int n, const char *host, int host_is_ip, int64_t at, int has_time)
{
    SSL_CTX *ctx = (SSL_CTX *)ssl_ctx;
    aia_offline *off;
    X509_VERIFY_PARAM *param;
    int i;

    if (!aia_bound || ctx == NULL || ders == NULL || lens == NULL || n < 1 || n > AIA_MAX_OFFLINE_CHAIN)
        return NULL;
    off = (aia_offline *)calloc(1, sizeof(*off));
    if (off == NULL)
        return NULL;
    off->untrusted = aia_ossl.OPENSSL_sk_new_null();
    if (off->untrusted == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        X509 *cert = (X509 *)aia_ext_x509_new(ders[i], lens[i]);
        if (cert == NULL)
            goto fail;
        if (aia_ossl.OPENSSL_sk_push(off->untrusted, cert) <= 0) {
            aia_ossl.X509_free(cert);
            goto fail;
        }
    }
    off->sctx = aia_ossl.X509_STORE_CTX_new();
    if (off->sctx == NULL ||
        !aia_ossl.X509_STORE_CTX_init(off->sctx, aia_ossl.SSL_CTX_get_cert_store(ctx),
                               (X509 *)aia_ossl.OPENSSL_sk_value(off->untrusted, 0),
                               off->untrusted) ||
        !aia_ossl.X509_STORE_CTX_set_default(off->sctx, "ssl_server"))
        goto fail;
    param = aia_ossl.X509_STORE_CTX_get0_param(off->sctx);
    if (param == NULL || !aia_ossl.X509_VERIFY_PARAM_set1(param, aia_ossl.SSL_CTX_get0_param(ctx)))
        goto fail;
    aia_ossl.X509_VERIFY_PARAM_set_auth_level(param, aia_ossl.SSL_CTX_get_security_level(ctx));
    if (host != NULL && host[0] != '\0') {
        if (host_is_ip ? !aia_ossl.X509_VERIFY_PARAM_set1_ip_asc(param, host)
                       : !aia_ossl.X509_VERIFY_PARAM_set1_host(param, host, 0))
            goto fail;
    }
    if (has_time)
        aia_ossl.X509_VERIFY_PARAM_set_time(param, (time_t)at);
    return off;
fail:
    aia_offline_free(off);
    return NULL;
}

int aia_ext_offline_prepare(aia_ext_holder *holder, void *ssl_ctx, const unsigned char **ders,
                            const size_t *lens, int n, const char *host, int host_is_ip,
                            int64_t at, int has_time)
{
    void *off;
    if (holder == NULL || holder->ptr != NULL)
        return 0;
    off = offline_new(ssl_ctx, ders, lens, n, host, host_is_ip, at, has_time);
    if (off == NULL)
        return 0;
    holder->kind = AIA_HOLDS_OFFLINE;
    holder->ptr = off;
    return 1;
}

int aia_ext_offline_verify(void *handle, uintptr_t token, uint64_t *chase_out)
{
    aia_offline *off = (aia_offline *)handle;
    if (chase_out != NULL)
        *chase_out = 0;
    if (!aia_bound || off == NULL || off->sctx == NULL)
        return 0;
    if (aia_ossl.X509_verify_cert(off->sctx) > 0) {
        aia_learn(off->sctx, token);
        return 1;
    }
    if (aia_missing_issuer(aia_ossl.X509_STORE_CTX_get_error(off->sctx)) &&
        aia_chase(off->sctx, token, NULL, chase_out))
        return 1;
    return aia_fail(off->sctx);
}

int aia_ext_offline_error(void *handle, int *depth)
{
    aia_offline *off = (aia_offline *)handle;
    if (!aia_bound || off == NULL || off->sctx == NULL)
        return -1;
    if (depth != NULL)
        *depth = aia_ossl.X509_STORE_CTX_get_error_depth(off->sctx);
    return aia_ossl.X509_STORE_CTX_get_error(off->sctx);
}

void *aia_ext_offline_store_ctx(void *handle)
{
    aia_offline *off = (aia_offline *)handle;
    return off != NULL ? (void *)off->sctx : NULL;
}

