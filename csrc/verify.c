/*
 * The handshake path: the verify callback libssl calls in place of
 * X509_verify_cert (SSL_CTX_set_cert_verify_callback(3)), the chase that
 * asks Python for missing issuers, and the helpers Python calls while C waits.
 *
 * A complete chain costs one X509_verify_cert and reaches Python only to
 * learn an intermediate it has not seen before (issue 23).  On a
 * missing issuer (error 20 or 2), Python is asked for issuers (cffi
 * extern "Python+C" re-acquires the GIL), they go onto a private copy of the
 * untrusted stack, and OpenSSL verifies again, bounded, while progress is
 * made.  docs/design.md, "OpenSSL facts", gives the reset sequence and why.
 */
#include <stdlib.h>
#include <string.h>

#include "aia_ext.h"

int aia_missing_issuer(int error)
{
    return error == AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
           error == AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT;
}

/* X509_verify_cert refuses a context that already holds a chain (error 69,
 * X509_V_ERR_INVALID_CALL), and a stale error would survive a successful run
 * (libssl would then report the handshake as verified with result 20).
 * Reset all four fields the first run left behind (docs/design.md, "OpenSSL facts"). */
static void aia_reset_for_retry(X509_STORE_CTX *sctx)
{
    aia_ossl.X509_STORE_CTX_set0_verified_chain(sctx, NULL);
    aia_ossl.X509_STORE_CTX_set_error(sctx, AIA_X509_V_OK);
    aia_ossl.X509_STORE_CTX_set_error_depth(sctx, 0);
    aia_ossl.X509_STORE_CTX_set_current_cert(sctx, NULL);
}

/* DER of `cert`: its length, written to `out` when `outlen` suffices (the
 * one i2d_X509 pair of this file); -1 on failure. */
static int aia_i2d(X509 *cert, unsigned char *out, int outlen)
{
    unsigned char *p = out;
    int len = cert != NULL ? aia_ossl.i2d_X509(cert, NULL) : -1;
    if (len <= 0)
        return -1;
    if (out != NULL && outlen >= len && aia_ossl.i2d_X509(cert, &p) != len)
        return -1;
    return len;
}

/* DER of `cert` in a buffer of its own (free() it), its length in `*len`;
 * NULL on failure. */
static unsigned char *aia_der_copy(X509 *cert, int *len)
{
    unsigned char *der;

    *len = aia_i2d(cert, NULL, 0);
    if (*len <= 0)
        return NULL;
    der = (unsigned char *)malloc((size_t)*len);
    if (der == NULL)
        return NULL;
    if (aia_i2d(cert, der, *len) != *len) {
        free(der);
        return NULL;
    }
    return der;
}

/* Hand the certificate whose issuer is missing to Python as DER. */
static int aia_ask_python(uintptr_t token, uint64_t *chase, SSL *ssl,
                          X509_STORE_CTX *sctx, X509 *cert, int depth, int error)
{
    unsigned char *der;
    int len, added;

    der = aia_der_copy(cert, &len);
    if (der == NULL)
        return -1;
    added = aia_ext_py_missing(token, chase, ssl, sctx, der, len, depth, error);
    free(der);
    return added;
}

/* ---- Learned intermediates (issue 23) ----
 *
 * Every verified path's intermediates are offered to Python once; a table of
 * SHA-1 prefixes keeps a complete chain C has seen from calling into Python
 * at all (the common handshake: benchmarks/run.py, full_overhead).  Slots are
 * read and written atomically and may be overwritten by another certificate:
 * the worst case is one more call into Python, never a wrong verdict, as the
 * table only decides whether to offer a certificate for learning. */
static uint64_t aia_seen[AIA_SEEN_SLOTS];

#if defined(_MSC_VER)
#include <intrin.h>
#define AIA_LOAD64(p) ((uint64_t)__iso_volatile_load64((const volatile __int64 *)(p)))
#define AIA_STORE64(p, v) __iso_volatile_store64((volatile __int64 *)(p), (__int64)(v))
#else
#define AIA_LOAD64(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define AIA_STORE64(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#endif

/* The first 8 bytes of `cert`'s SHA-1, never 0 (an empty slot); 0 on failure.
 * X509_digest(3) returns the SHA-1 OpenSSL computed while verifying, so
 * this is a copy, not a hash. */
static uint64_t aia_fingerprint(X509 *cert)
{
    unsigned char md[64];
    unsigned int mdlen = 0;
    uint64_t fp = 0;
    const EVP_MD *sha1 = aia_ossl.EVP_sha1();

    if (sha1 == NULL || !aia_ossl.X509_digest(cert, sha1, md, &mdlen) || mdlen < 8)
        return 0;
    memcpy(&fp, md, sizeof fp);
    return fp != 0 ? fp : 1;
}

void aia_learn(X509_STORE_CTX *sctx, uintptr_t token)
{
    OPENSSL_STACK *chain;
    X509 *cert;
    unsigned char *der;
    uint64_t fp;
    size_t slot;
    int i, n, len;

    if ((token & AIA_TOKEN_LEARN) == 0)
        return;
    chain = aia_ossl.X509_STORE_CTX_get0_chain(sctx);
    n = chain != NULL ? aia_ossl.OPENSSL_sk_num(chain) : 0;
    /* Neither the leaf (0) nor the trust anchor (n - 1). */
    for (i = 1; i < n - 1; i++) {
        cert = (X509 *)aia_ossl.OPENSSL_sk_value(chain, i);
        fp = cert != NULL ? aia_fingerprint(cert) : 0;
        if (fp == 0)
            continue;
        slot = (size_t)(fp % AIA_SEEN_SLOTS);
        if (AIA_LOAD64(&aia_seen[slot]) == fp)
            continue;
        der = aia_der_copy(cert, &len);
        if (der == NULL)
            continue; /* learning is best effort: the verdict is already made */
        if (aia_ext_py_learn(token, der, len) > 0)
            AIA_STORE64(&aia_seen[slot], fp);
        free(der);
    }
}

void aia_ext_learned_forget(void)
{
    size_t i;
    for (i = 0; i < AIA_SEEN_SLOTS; i++)
        AIA_STORE64(&aia_seen[i], (uint64_t)0);
}

/*
 * Complete the chain of `sctx`, whose X509_verify_cert just failed with a
 * missing issuer (error 20 or 2), by asking Python for issuers; returns 1 if
 * a re-verification succeeded.  The store context is left as OpenSSL's last
 * run made it, except that a chain still without a path reports the original
 * error (docs/design.md, invariant 2).  `ssl` is NULL for an offline verification.
 */
int aia_chase(X509_STORE_CTX *sctx, uintptr_t token, SSL *ssl, uint64_t *chase_out)
{
    OPENSSL_STACK *original, *private_stack;
    X509 *first_cert, *cert;
    uint64_t chase = 0;
    int first_error, first_depth, last_error, last_depth, error, depth, base, round;
    int ok = 0;

    first_error = aia_ossl.X509_STORE_CTX_get_error(sctx);
    first_depth = aia_ossl.X509_STORE_CTX_get_error_depth(sctx);
    first_cert = aia_ossl.X509_STORE_CTX_get_current_cert(sctx);
    if (first_cert == NULL)
        return 0;

    /* A private copy of the untrusted stack: the original is the SSL session's
     * peer chain, and fetched certificates must not appear in it. */
    original = aia_ossl.X509_STORE_CTX_get0_untrusted(sctx);
    private_stack = original != NULL ? aia_ossl.OPENSSL_sk_dup(original)
                                     : aia_ossl.OPENSSL_sk_new_null();
    if (private_stack == NULL)
        return 0;
    base = aia_ossl.OPENSSL_sk_num(private_stack);
    aia_ossl.X509_STORE_CTX_set0_untrusted(sctx, private_stack);

    error = first_error;
    depth = first_depth;
    cert = first_cert;
    for (round = 0; round < AIA_MAX_ROUNDS; round++) {
        if (aia_ask_python(token, &chase, ssl, sctx, cert, depth, error) <= 0)
            break; /* nothing new: Python is out of URLs, budget or time */
        aia_reset_for_retry(sctx);
        if (aia_ossl.X509_verify_cert(sctx) > 0) {
            ok = 1;
            break;
        }
        error = aia_ossl.X509_STORE_CTX_get_error(sctx);
        if (!aia_missing_issuer(error))
            break; /* the completed chain has a real verdict: keep it */
        depth = aia_ossl.X509_STORE_CTX_get_error_depth(sctx);
        cert = aia_ossl.X509_STORE_CTX_get_current_cert(sctx);
        if (cert == NULL)
            break;
    }

    /* What OpenSSL said of the completed chain, for reports (diagnose() shows
     * where the path stopped); the store context itself keeps the original. */
    last_error = aia_ossl.X509_STORE_CTX_get_error(sctx);
    last_depth = aia_ossl.X509_STORE_CTX_get_error_depth(sctx);
    if (!ok && aia_missing_issuer(last_error)) {
        /* Still no path: the user sees the original verdict, not one about a
         * certificate a third party handed us.  first_cert is the leaf or a
         * served certificate, both still alive. */
        aia_ossl.X509_STORE_CTX_set_error(sctx, first_error);
        aia_ossl.X509_STORE_CTX_set_error_depth(sctx, first_depth);
        aia_ossl.X509_STORE_CTX_set_current_cert(sctx, first_cert);
    }

    if (ok)
        aia_learn(sctx, token);
    if (chase != 0) {
        aia_ext_py_done(token, chase, ssl, sctx, ok, last_error, last_depth);
        /* Failure to record only costs the report, never the verdict. */
        if (ssl != NULL)
            (void)aia_ossl.SSL_set_ex_data(ssl, aia_ssl_index, (void *)(uintptr_t)chase);
    }
    if (chase_out != NULL)
        *chase_out = chase;

    /* Restore the peer's stack and drop our references to what we added;
     * the verified chain holds references of its own. */
    aia_ossl.X509_STORE_CTX_set0_untrusted(sctx, original);
    aia_free_stack_from(private_stack, base);
    return ok;
}

/* Fail closed: never let libssl read "OK" next to a failure. */
int aia_fail(X509_STORE_CTX *sctx)
{
    if (aia_ossl.X509_STORE_CTX_get_error(sctx) == AIA_X509_V_OK)
        aia_ossl.X509_STORE_CTX_set_error(sctx, AIA_X509_V_ERR_UNSPECIFIED);
    return 0;
}

/*
 * Called by libssl in place of X509_verify_cert (SSL_CTX_set_cert_verify_
 * callback(3)).  libssl reads back the return value, X509_STORE_CTX_get_error
 * and X509_STORE_CTX_get1_chain.
 */
static int aia_verify_callback(X509_STORE_CTX *sctx, void *arg)
{
    SSL *ssl;
    int idx, verified, client;

    verified = aia_ossl.X509_verify_cert(sctx) > 0;
    /* Any verdict other than a missing issuer stands exactly as given. */
    if (!verified && !aia_missing_issuer(aia_ossl.X509_STORE_CTX_get_error(sctx)))
        return aia_fail(sctx);
    /* No fetch and nothing learned when nobody verifies, and never for
     * client certificates on the server side (docs/design.md, invariant 3). */
    idx = aia_ossl.SSL_get_ex_data_X509_STORE_CTX_idx();
    ssl = idx < 0 ? NULL : (SSL *)aia_ossl.X509_STORE_CTX_get_ex_data(sctx, idx);
    client = ssl != NULL && !aia_ossl.SSL_is_server(ssl) &&
             aia_ossl.SSL_get_verify_mode(ssl) != AIA_SSL_VERIFY_NONE;
    /* Fast path: a complete chain never reaches Python, unless it holds an
     * intermediate this process has not learned yet. */
    if (verified) {
        if (client)
            aia_learn(sctx, (uintptr_t)arg);
        return 1;
    }
    if (!client)
        return aia_fail(sctx);
    if (aia_chase(sctx, (uintptr_t)arg, ssl, NULL))
        return 1;
    return aia_fail(sctx);
}

/* ---- Helpers the Python callback calls while C waits on it ---- */

void *aia_ext_x509_new(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509 *cert;
    if (!aia_bound || der == NULL || len == 0 || len > AIA_MAX_DER_LENGTH)
        return NULL;
    cert = aia_ossl.d2i_X509(NULL, &p, (long)len);
    if (cert != NULL && p != der + len) { /* trailing bytes: not one certificate */
        aia_ossl.X509_free(cert);
        return NULL;
    }
    return cert;
}

/*
 * Holders (issue 32, item 11).  What C creates for Python to keep (a parsed
 * X509, an offline handle) goes into a holder that Python already owns:
 * cffi allocates it through ffi.new_allocator with these two functions, and
 * registers aia_ext_holder_free before Python runs another bytecode.  A
 * KeyboardInterrupt landing right after the C call that fills the holder
 * cannot lose what it created, as it could between a returned pointer and
 * ffi.gc().
 */
void *aia_ext_holder_alloc(size_t size)
{
    if (size < sizeof(aia_ext_holder))
        return NULL;
    return calloc(1, size);
}

void aia_ext_holder_free(void *holder)
{
    aia_ext_holder *h = (aia_ext_holder *)holder;
    if (h == NULL)
        return;
    if (h->ptr != NULL && aia_bound) {
        if (h->kind == AIA_HOLDS_X509)
            aia_ossl.X509_free((X509 *)h->ptr);
        else if (h->kind == AIA_HOLDS_OFFLINE)
            aia_offline_free(h->ptr);
    }
    free(h);
}

int aia_ext_x509_parse(aia_ext_holder *holder, const unsigned char *der, size_t len)
{
    X509 *cert;
    if (holder == NULL || holder->ptr != NULL)
        return 0;
    cert = (X509 *)aia_ext_x509_new(der, len);
    if (cert == NULL)
        return 0;
    holder->kind = AIA_HOLDS_X509;
    holder->ptr = cert;
    return 1;
}

int aia_ext_add_untrusted(void *store_ctx, void *certificate)
{
    X509_STORE_CTX *sctx = (X509_STORE_CTX *)store_ctx;
    X509 *cert = (X509 *)certificate, *leaf;
    OPENSSL_STACK *stack;
    int i, n;

    if (!aia_bound || sctx == NULL || cert == NULL)
        return -1;
    stack = aia_ossl.X509_STORE_CTX_get0_untrusted(sctx);
    if (stack == NULL)
        return -1;
    n = aia_ossl.OPENSSL_sk_num(stack);
    if (n < 0 || n >= AIA_MAX_UNTRUSTED)
        return -1;
    /* A certificate already in hand is no progress (cuts A->B->A loops). */
    leaf = aia_ossl.X509_STORE_CTX_get0_cert(sctx);
    if (leaf != NULL && aia_ossl.X509_cmp(leaf, cert) == 0)
        return 0;
    for (i = 0; i < n; i++) {
        if (aia_ossl.X509_cmp((X509 *)aia_ossl.OPENSSL_sk_value(stack, i), cert) == 0)
            return 0;
    }
    /* The stack gets a reference of its own, dropped by the callback. */
    if (!aia_ossl.X509_up_ref(cert))
        return -1;
    if (aia_ossl.OPENSSL_sk_push(stack, cert) <= 0) {
        aia_ossl.X509_free(cert);
        return -1;
    }
    return 1;
}

int aia_stack_der(OPENSSL_STACK *chain, int index, unsigned char *out, int outlen)
{
    if (chain == NULL || index < 0 || index >= aia_ossl.OPENSSL_sk_num(chain))
        return -1;
    return aia_i2d((X509 *)aia_ossl.OPENSSL_sk_value(chain, index), out, outlen);
}

void aia_free_stack_from(OPENSSL_STACK *stack, int from)
{
    int i;
    if (stack == NULL)
        return;
    for (i = from; i < aia_ossl.OPENSSL_sk_num(stack); i++)
        aia_ossl.X509_free((X509 *)aia_ossl.OPENSSL_sk_value(stack, i));
    aia_ossl.OPENSSL_sk_free(stack);
}

int aia_ext_chain_der(void *store_ctx, int index, unsigned char *out, int outlen)
{
    if (!aia_bound || store_ctx == NULL)
        return -1;
    return aia_stack_der(aia_ossl.X509_STORE_CTX_get0_chain((X509_STORE_CTX *)store_ctx), index, out,
                         outlen);
}

/* ---- Installing the callback ---- */

int aia_ext_install(void *ssl_ctx, uintptr_t token)
{
    if (!aia_bound || ssl_ctx == NULL)
        return 0;
    aia_ossl.SSL_CTX_set_cert_verify_callback((SSL_CTX *)ssl_ctx, aia_verify_callback,
                                       (void *)token);
    return 1;
}

int aia_ext_uninstall(void *ssl_ctx)
{
    if (!aia_bound || ssl_ctx == NULL)
        return 0;
    /* NULL restores libssl's default, a plain X509_verify_cert. */
    aia_ossl.SSL_CTX_set_cert_verify_callback((SSL_CTX *)ssl_ctx, NULL, NULL);
    return 1;
}

/* ---- Reports: which chase belongs to a connection ---- */

uint64_t aia_ext_chase_id_of(void *ssl)
{
    if (!aia_bound || ssl == NULL)
        return 0;
    return (uint64_t)(uintptr_t)aia_ossl.SSL_get_ex_data((SSL *)ssl, aia_ssl_index);
}

/* Whether the connection reads from a memory BIO, as ssl.SSLObject does (the
 * transport of asyncio and anyio), rather than from its socket: the chase
 * tells a coroutine's handshake from a synchronous caller's (issue 31). */
int aia_ext_reads_memory(void *ssl)
{
    BIO *rbio;

    if (!aia_bound || ssl == NULL)
        return -1;
    rbio = aia_ossl.SSL_get_rbio((SSL *)ssl);
    if (rbio == NULL)
        return -1;
    return aia_ossl.BIO_method_type(rbio) == AIA_BIO_TYPE_MEM ? 1 : 0;
}

/* DER of certificate `index` of the chain the peer sent (a client's view
 * includes the leaf), whether or not it verified.  Returns its length and
 * writes it when `outlen` suffices; -1 when there is no such certificate. */
int aia_ext_peer_chain_der(void *ssl, int index, unsigned char *out, int outlen)
{
    if (!aia_bound || ssl == NULL)
        return -1;
    return aia_stack_der(aia_ossl.SSL_get_peer_cert_chain((SSL *)ssl), index, out, outlen);
}

