/*
 * aia_ext native part: the app-verify callback and its binding to the
 * OpenSSL that Python's _ssl module already uses.
 *
 * Only what must be C lives here (README, "Design"):
 *   - resolving OpenSSL functions at run time from _ssl's own library;
 *   - reading SSL_CTX* out of a CPython ssl.SSLContext;
 *   - the callback installed with SSL_CTX_set_cert_verify_callback(3), which
 *     completes a chain with untrusted certificates that Python fetched.
 *
 * Invariants (DESIGN.md): fetched certificates only ever go into a private
 * copy of the X509_STORE_CTX's untrusted stack, never into the X509_STORE;
 * every other verification setting is left alone; every internal error fails
 * closed; the callback returns only 0 or 1.
 *
 * This file is compiled by cffi (csrc/build_native.py), which includes
 * Python.h before it.
 */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* dladdr */
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

/* ---- OpenSSL types and constants, declared here instead of included ---- */

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct x509_st X509;
typedef struct x509_store_ctx_st X509_STORE_CTX;
typedef struct stack_st OPENSSL_STACK; /* STACK_OF(X509) is this underneath */
typedef struct x509_store_st X509_STORE;
typedef struct X509_VERIFY_PARAM_st X509_VERIFY_PARAM;

#define AIA_X509_V_OK 0
#define AIA_X509_V_ERR_UNSPECIFIED 1
#define AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT 2
#define AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY 20
#define AIA_SSL_VERIFY_NONE 0
/* CRYPTO_EX_INDEX_SSL: the class for SSL_get_ex_new_index, which is a macro
 * over CRYPTO_get_ex_new_index in both 1.1.1 and 3.x. */
#define AIA_CRYPTO_EX_INDEX_SSL 0

/* Upper bound on fetch/re-verify rounds in one verification.  The Python
 * side enforces the user-visible limits (max_fetches, deadline); this only
 * guarantees termination even if that side misbehaved. */
#define AIA_MAX_ROUNDS 32
/* Upper bound on certificates one verification may add. */
#define AIA_MAX_ADDED 64

/*
 * Every OpenSSL function we use, with its 1.1.1/3.x signature.  All exist in
 * both series (DESIGN.md); sk_X509_* are macros over OPENSSL_sk_*, so the
 * generic functions are bound.  X-macro: (return type, name, parameters).
 */
#define AIA_OPENSSL_FUNCTIONS(X)                                                  \
    X(unsigned long, OpenSSL_version_num, (void))                                 \
    X(void, SSL_CTX_set_cert_verify_callback,                                     \
      (SSL_CTX *, int (*)(X509_STORE_CTX *, void *), void *))                     \
    X(int, SSL_get_ex_data_X509_STORE_CTX_idx, (void))                            \
    X(int, SSL_get_verify_mode, (const SSL *))                                    \
    X(int, SSL_is_server, (const SSL *))                                          \
    X(int, X509_verify_cert, (X509_STORE_CTX *))                                  \
    X(void *, X509_STORE_CTX_get_ex_data, (const X509_STORE_CTX *, int))          \
    X(int, X509_STORE_CTX_get_error, (const X509_STORE_CTX *))                    \
    X(void, X509_STORE_CTX_set_error, (X509_STORE_CTX *, int))                    \
    X(int, X509_STORE_CTX_get_error_depth, (const X509_STORE_CTX *))              \
    X(void, X509_STORE_CTX_set_error_depth, (X509_STORE_CTX *, int))              \
    X(X509 *, X509_STORE_CTX_get_current_cert, (const X509_STORE_CTX *))          \
    X(void, X509_STORE_CTX_set_current_cert, (X509_STORE_CTX *, X509 *))          \
    X(X509 *, X509_STORE_CTX_get0_cert, (const X509_STORE_CTX *))                 \
    X(OPENSSL_STACK *, X509_STORE_CTX_get0_chain, (const X509_STORE_CTX *))       \
    X(OPENSSL_STACK *, X509_STORE_CTX_get0_untrusted, (const X509_STORE_CTX *))   \
    X(void, X509_STORE_CTX_set0_untrusted, (X509_STORE_CTX *, OPENSSL_STACK *))   \
    X(void, X509_STORE_CTX_set0_verified_chain,                                   \
      (X509_STORE_CTX *, OPENSSL_STACK *))                                        \
    X(int, i2d_X509, (const X509 *, unsigned char **))                            \
    X(X509 *, d2i_X509, (X509 **, const unsigned char **, long))                  \
    X(void, X509_free, (X509 *))                                                  \
    X(int, X509_up_ref, (X509 *))                                                 \
    X(int, X509_cmp, (const X509 *, const X509 *))                                \
    X(OPENSSL_STACK *, OPENSSL_sk_new_null, (void))                               \
    X(OPENSSL_STACK *, OPENSSL_sk_dup, (const OPENSSL_STACK *))                   \
    X(int, OPENSSL_sk_push, (OPENSSL_STACK *, const void *))                      \
    X(int, OPENSSL_sk_num, (const OPENSSL_STACK *))                               \
    X(void *, OPENSSL_sk_value, (const OPENSSL_STACK *, int))                     \
    X(void, OPENSSL_sk_free, (OPENSSL_STACK *))                                   \
    X(X509_STORE_CTX *, X509_STORE_CTX_new, (void))                               \
    X(int, X509_STORE_CTX_init,                                                   \
      (X509_STORE_CTX *, X509_STORE *, X509 *, OPENSSL_STACK *))                  \
    X(void, X509_STORE_CTX_free, (X509_STORE_CTX *))                              \
    X(int, X509_STORE_CTX_set_default, (X509_STORE_CTX *, const char *))          \
    X(X509_VERIFY_PARAM *, X509_STORE_CTX_get0_param, (const X509_STORE_CTX *))   \
    X(X509_STORE *, SSL_CTX_get_cert_store, (const SSL_CTX *))                    \
    X(X509_VERIFY_PARAM *, SSL_CTX_get0_param, (SSL_CTX *))                       \
    X(int, X509_VERIFY_PARAM_set1, (X509_VERIFY_PARAM *, const X509_VERIFY_PARAM *)) \
    X(int, X509_VERIFY_PARAM_set1_host, (X509_VERIFY_PARAM *, const char *, size_t)) \
    X(int, X509_VERIFY_PARAM_set1_ip_asc, (X509_VERIFY_PARAM *, const char *))    \
    X(void, X509_VERIFY_PARAM_set_time, (X509_VERIFY_PARAM *, time_t))            \
    X(int, CRYPTO_get_ex_new_index,                                               \
      (int, long, void *, void *, void *, void *))                                \
    X(int, SSL_set_ex_data, (SSL *, int, void *))                                 \
    X(void *, SSL_get_ex_data, (const SSL *, int))                                \
    X(int, SSL_CTX_get_security_level, (const SSL_CTX *))                         \
    X(void, X509_VERIFY_PARAM_set_auth_level, (X509_VERIFY_PARAM *, int))        \
    X(const char *, X509_verify_cert_error_string, (long))                      \
    X(OPENSSL_STACK *, SSL_get_peer_cert_chain, (const SSL *))

#define AIA_DECLARE_POINTER(ret, name, params) ret(*name) params;
static struct {
    AIA_OPENSSL_FUNCTIONS(AIA_DECLARE_POINTER)
} F;
#undef AIA_DECLARE_POINTER

static int aia_bound = 0;
/* Our own SSL ex_data index: after a chase it holds the Python session id,
 * so aia_ext.report() finds the report of exactly this connection (a new SSL
 * starts with empty ex_data, even at a reused address).  _ssl uses index 0
 * (SSL_set_app_data), so ours must be separate. */
static int aia_ssl_index = -1;

/* ---- The one platform-specific place: finding _ssl's OpenSSL ---- */

#ifdef _WIN32
#include <windows.h>

/* _ssl.pyd imports libssl/libcrypto DLLs; GetModuleHandleW only returns a
 * module that is already loaded, so this never loads a second OpenSSL.  The
 * names are those CPython's Windows builds have shipped (1.1.1 and 3.x). */
static HMODULE aia_ssl_dll = NULL, aia_crypto_dll = NULL;

static HMODULE aia_loaded_module(const wchar_t *const *names)
{
    for (; *names != NULL; names++) {
        HMODULE h = GetModuleHandleW(*names);
        if (h != NULL)
            return h;
    }
    return NULL;
}

static int aia_platform_open(const char *module_path, char *err, size_t errlen)
{
    static const wchar_t *const ssl_names[] = {
        L"libssl-3.dll", L"libssl-3-x64.dll", L"libssl-3-arm64.dll",
        L"libssl-1_1.dll", L"libssl-1_1-x64.dll", NULL};
    static const wchar_t *const crypto_names[] = {
        L"libcrypto-3.dll", L"libcrypto-3-x64.dll", L"libcrypto-3-arm64.dll",
        L"libcrypto-1_1.dll", L"libcrypto-1_1-x64.dll", NULL};
    (void)module_path;
    aia_ssl_dll = aia_loaded_module(ssl_names);
    aia_crypto_dll = aia_loaded_module(crypto_names);
    if (aia_ssl_dll == NULL || aia_crypto_dll == NULL) {
        snprintf(err, errlen, "no libssl/libcrypto DLL is loaded by _ssl");
        return 0;
    }
    return 1;
}

static void *aia_platform_symbol(const char *name)
{
    FARPROC p = GetProcAddress(aia_ssl_dll, name);
    if (p == NULL)
        p = GetProcAddress(aia_crypto_dll, name);
    return (void *)p;
}

static int aia_platform_library_path(void *symbol, char *out, size_t outlen)
{
    HMODULE h = NULL;
    if (!GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS |
                                GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            (LPCSTR)symbol, &h))
        return 0;
    return GetModuleFileNameA(h, out, (DWORD)outlen) > 0;
}

#else /* POSIX */
#include <dlfcn.h>

static void *aia_ssl_module = NULL;

static int aia_platform_open(const char *module_path, char *err, size_t errlen)
{
    /* RTLD_NOLOAD: only a handle to the _ssl that is already loaded; its
     * lookup scope is _ssl and its own dependencies (dlsym(3)), which is
     * exactly "the OpenSSL _ssl uses" and never another copy in the process. */
    void *h = dlopen(module_path, RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL) {
        const char *why = dlerror();
        snprintf(err, errlen, "dlopen(%s, RTLD_NOLOAD) failed: %s", module_path,
                 why != NULL ? why : "unknown error");
        return 0;
    }
    aia_ssl_module = h; /* kept for the life of the process, like _ssl */
    return 1;
}

static void *aia_platform_symbol(const char *name)
{
    return dlsym(aia_ssl_module, name);
}

static int aia_platform_library_path(void *symbol, char *out, size_t outlen)
{
    Dl_info info;
    if (dladdr(symbol, &info) == 0 || info.dli_fname == NULL)
        return 0;
    snprintf(out, outlen, "%s", info.dli_fname);
    return 1;
}
#endif

/* ---- Binding ---- */

int aia_ext_bind(const char *module_path, char *err, size_t errlen)
{
    if (errlen > 0)
        err[0] = '\0';
    if (aia_bound)
        return 1;
    if (!aia_platform_open(module_path, err, errlen))
        return 0;
#define AIA_RESOLVE(ret, name, params)                                         \
    {                                                                          \
        void *p = aia_platform_symbol(#name);                                  \
        if (p == NULL) {                                                       \
            snprintf(err, errlen, "OpenSSL symbol %s is not reachable", #name); \
            memset(&F, 0, sizeof(F));                                          \
            return 0;                                                          \
        }                                                                      \
        memcpy(&F.name, &p, sizeof(p));                                        \
    }
    AIA_OPENSSL_FUNCTIONS(AIA_RESOLVE)
#undef AIA_RESOLVE
    aia_ssl_index = F.CRYPTO_get_ex_new_index(AIA_CRYPTO_EX_INDEX_SSL, 0, NULL, NULL,
                                              NULL, NULL);
    if (aia_ssl_index < 0) {
        snprintf(err, errlen, "CRYPTO_get_ex_new_index failed");
        memset(&F, 0, sizeof(F));
        return 0;
    }
    aia_bound = 1;
    return 1;
}

unsigned long aia_ext_openssl_version_num(void)
{
    return aia_bound ? F.OpenSSL_version_num() : 0UL;
}

int aia_ext_bound_library_path(char *out, size_t outlen)
{
    void *symbol;
    if (outlen == 0)
        return 0;
    out[0] = '\0';
    if (!aia_bound)
        return 0;
    memcpy(&symbol, &F.SSL_CTX_set_cert_verify_callback, sizeof(symbol));
    return aia_platform_library_path(symbol, out, outlen);
}

/* ---- The verify callback ---- */

/* Python callbacks generated by cffi from the extern "Python" cdef. */
static int aia_ext_py_missing(uintptr_t token, uint64_t *session, void *ssl,
                              void *store_ctx, const unsigned char *der,
                              int der_len, int depth, int error);
static void aia_ext_py_done(uintptr_t token, uint64_t session, void *ssl,
                            void *store_ctx, int ok, int error, int depth);

static int aia_missing_issuer(int error)
{
    return error == AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
           error == AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT;
}

/* X509_verify_cert refuses a context that already holds a chain (error 69,
 * X509_V_ERR_INVALID_CALL), and a stale error would survive a successful run
 * (libssl would then report the handshake as verified with result 20).
 * Reset all four fields the first run left behind (DESIGN.md). */
static void aia_reset_for_retry(X509_STORE_CTX *sctx)
{
    F.X509_STORE_CTX_set0_verified_chain(sctx, NULL);
    F.X509_STORE_CTX_set_error(sctx, AIA_X509_V_OK);
    F.X509_STORE_CTX_set_error_depth(sctx, 0);
    F.X509_STORE_CTX_set_current_cert(sctx, NULL);
}

/* Hand the certificate whose issuer is missing to Python as DER. */
static int aia_ask_python(uintptr_t token, uint64_t *session, SSL *ssl,
                          X509_STORE_CTX *sctx, X509 *cert, int depth, int error)
{
    unsigned char *der, *p;
    int len, added;

    len = F.i2d_X509(cert, NULL);
    if (len <= 0)
        return -1;
    der = (unsigned char *)malloc((size_t)len);
    if (der == NULL)
        return -1;
    p = der;
    if (F.i2d_X509(cert, &p) != len) {
        free(der);
        return -1;
    }
    added = aia_ext_py_missing(token, session, ssl, sctx, der, len, depth, error);
    free(der);
    return added;
}

/*
 * Complete the chain of `sctx`, whose X509_verify_cert just failed with a
 * missing issuer (error 20 or 2), by asking Python for issuers; returns 1 if
 * a re-verification succeeded.  The store context is left as OpenSSL's last
 * run made it, except that a chain still without a path reports the original
 * error (DESIGN.md invariant 2).  `ssl` is NULL for an offline verification.
 */
static int aia_chase(X509_STORE_CTX *sctx, uintptr_t token, SSL *ssl,
                     uint64_t *session_out)
{
    OPENSSL_STACK *original, *private_stack;
    X509 *first_cert, *cert;
    uint64_t session = 0;
    int first_error, first_depth, error, depth, base, round, i;
    int ok = 0;

    first_error = F.X509_STORE_CTX_get_error(sctx);
    first_depth = F.X509_STORE_CTX_get_error_depth(sctx);
    first_cert = F.X509_STORE_CTX_get_current_cert(sctx);
    if (first_cert == NULL)
        return 0;

    /* A private copy of the untrusted stack: the original is the session's
     * peer chain, and fetched certificates must not appear in it. */
    original = F.X509_STORE_CTX_get0_untrusted(sctx);
    private_stack = original != NULL ? F.OPENSSL_sk_dup(original)
                                     : F.OPENSSL_sk_new_null();
    if (private_stack == NULL)
        return 0;
    base = F.OPENSSL_sk_num(private_stack);
    F.X509_STORE_CTX_set0_untrusted(sctx, private_stack);

    error = first_error;
    depth = first_depth;
    cert = first_cert;
    for (round = 0; round < AIA_MAX_ROUNDS; round++) {
        if (aia_ask_python(token, &session, ssl, sctx, cert, depth, error) <= 0)
            break; /* nothing new: Python is out of URLs, budget or time */
        aia_reset_for_retry(sctx);
        if (F.X509_verify_cert(sctx) > 0) {
            ok = 1;
            break;
        }
        error = F.X509_STORE_CTX_get_error(sctx);
        if (!aia_missing_issuer(error))
            break; /* the completed chain has a real verdict: keep it */
        depth = F.X509_STORE_CTX_get_error_depth(sctx);
        cert = F.X509_STORE_CTX_get_current_cert(sctx);
        if (cert == NULL)
            break;
    }

    if (!ok && aia_missing_issuer(F.X509_STORE_CTX_get_error(sctx))) {
        /* Still no path: the user sees the original verdict, not one about a
         * certificate a third party handed us.  first_cert is the leaf or a
         * served certificate, both still alive. */
        F.X509_STORE_CTX_set_error(sctx, first_error);
        F.X509_STORE_CTX_set_error_depth(sctx, first_depth);
        F.X509_STORE_CTX_set_current_cert(sctx, first_cert);
    }

    if (session != 0) {
        aia_ext_py_done(token, session, ssl, sctx, ok,
                        F.X509_STORE_CTX_get_error(sctx),
                        F.X509_STORE_CTX_get_error_depth(sctx));
        /* Failure to record only costs the report, never the verdict. */
        if (ssl != NULL)
            (void)F.SSL_set_ex_data(ssl, aia_ssl_index, (void *)(uintptr_t)session);
    }
    if (session_out != NULL)
        *session_out = session;

    /* Restore the peer's stack and drop our references to what we added;
     * the verified chain holds references of its own. */
    F.X509_STORE_CTX_set0_untrusted(sctx, original);
    for (i = base; i < F.OPENSSL_sk_num(private_stack); i++)
        F.X509_free((X509 *)F.OPENSSL_sk_value(private_stack, i));
    F.OPENSSL_sk_free(private_stack);
    return ok;
}

/* Fail closed: never let libssl read "OK" next to a failure. */
static int aia_fail(X509_STORE_CTX *sctx)
{
    if (F.X509_STORE_CTX_get_error(sctx) == AIA_X509_V_OK)
        F.X509_STORE_CTX_set_error(sctx, AIA_X509_V_ERR_UNSPECIFIED);
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
    int idx;

    /* Fast path: a complete chain never reaches Python. */
    if (F.X509_verify_cert(sctx) > 0)
        return 1;
    /* Any verdict other than a missing issuer stands exactly as given. */
    if (!aia_missing_issuer(F.X509_STORE_CTX_get_error(sctx)))
        return aia_fail(sctx);
    /* No fetch when nobody verifies, and never for client certificates on
     * the server side (DESIGN.md invariant 3). */
    idx = F.SSL_get_ex_data_X509_STORE_CTX_idx();
    ssl = idx < 0 ? NULL : (SSL *)F.X509_STORE_CTX_get_ex_data(sctx, idx);
    if (ssl == NULL || F.SSL_is_server(ssl) ||
        F.SSL_get_verify_mode(ssl) == AIA_SSL_VERIFY_NONE)
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
    if (!aia_bound || der == NULL || len == 0 || len > 0x7fffffff)
        return NULL;
    cert = F.d2i_X509(NULL, &p, (long)len);
    if (cert != NULL && p != der + len) { /* trailing bytes: not one certificate */
        F.X509_free(cert);
        return NULL;
    }
    return cert;
}

void aia_ext_x509_free(void *cert)
{
    if (aia_bound && cert != NULL)
        F.X509_free((X509 *)cert);
}

int aia_ext_add_untrusted(void *store_ctx, void *certificate)
{
    X509_STORE_CTX *sctx = (X509_STORE_CTX *)store_ctx;
    X509 *cert = (X509 *)certificate, *leaf;
    OPENSSL_STACK *stack;
    int i, n;

    if (!aia_bound || sctx == NULL || cert == NULL)
        return -1;
    stack = F.X509_STORE_CTX_get0_untrusted(sctx);
    if (stack == NULL)
        return -1;
    n = F.OPENSSL_sk_num(stack);
    if (n < 0 || n >= AIA_MAX_ADDED + 64)
        return -1;
    /* A certificate already in hand is no progress (cuts A->B->A loops). */
    leaf = F.X509_STORE_CTX_get0_cert(sctx);
    if (leaf != NULL && F.X509_cmp(leaf, cert) == 0)
        return 0;
    for (i = 0; i < n; i++) {
        if (F.X509_cmp((X509 *)F.OPENSSL_sk_value(stack, i), cert) == 0)
            return 0;
    }
    /* The stack gets a reference of its own, dropped by the callback. */
    if (!F.X509_up_ref(cert))
        return -1;
    if (F.OPENSSL_sk_push(stack, cert) <= 0) {
        F.X509_free(cert);
        return -1;
    }
    return 1;
}

/* DER of certificate `index` of `chain`: its length, written to `out` when
 * `outlen` suffices; -1 when there is no such certificate. */
static int aia_stack_der(OPENSSL_STACK *chain, int index, unsigned char *out, int outlen)
{
    X509 *cert;
    unsigned char *p = out;
    int len;

    if (chain == NULL || index < 0 || index >= F.OPENSSL_sk_num(chain))
        return -1;
    cert = (X509 *)F.OPENSSL_sk_value(chain, index);
    len = cert != NULL ? F.i2d_X509(cert, NULL) : -1;
    if (len <= 0)
        return -1;
    if (out != NULL && outlen >= len && F.i2d_X509(cert, &p) != len)
        return -1;
    return len;
}

int aia_ext_chain_der(void *store_ctx, int index, unsigned char *out, int outlen)
{
    if (!aia_bound || store_ctx == NULL)
        return -1;
    return aia_stack_der(F.X509_STORE_CTX_get0_chain((X509_STORE_CTX *)store_ctx), index, out,
                         outlen);
}

/* ---- Installing the callback ---- */

/* CPython's PySSLContext starts with `SSL_CTX *ctx` right after the object
 * header (Modules/_ssl.c, 3.8 through 3.14).  Declaring the head, rather
 * than hard-coding an offset, keeps free-threaded builds (larger header)
 * right.  The caller has checked isinstance(obj, _ssl._SSLContext). */
typedef struct {
    PyObject_HEAD
    SSL_CTX *ctx;
} aia_PySSLContextHead;

/* CPython's PySSLSocket (the _ssl._SSLSocket behind SSLSocket._sslobj and
 * SSLObject._sslobj) starts {PyObject_HEAD; PyObject *Socket; SSL *ssl; ...}
 * (Modules/_ssl.c, 3.8 through 3.14).  The caller has type-checked it. */
typedef struct {
    PyObject_HEAD
    PyObject *socket;
    SSL *ssl;
} aia_PySSLSocketHead;

void *aia_ext_cpython_ssl_ctx(void *pycontext)
{
    return pycontext != NULL ? (void *)((aia_PySSLContextHead *)pycontext)->ctx : NULL;
}

void *aia_ext_cpython_ssl(void *pysslsocket)
{
    return pysslsocket != NULL ? (void *)((aia_PySSLSocketHead *)pysslsocket)->ssl : NULL;
}

int aia_ext_install(void *ssl_ctx, uintptr_t token)
{
    if (!aia_bound || ssl_ctx == NULL)
        return 0;
    F.SSL_CTX_set_cert_verify_callback((SSL_CTX *)ssl_ctx, aia_verify_callback,
                                       (void *)token);
    return 1;
}

int aia_ext_uninstall(void *ssl_ctx)
{
    if (!aia_bound || ssl_ctx == NULL)
        return 0;
    /* NULL restores libssl's default, a plain X509_verify_cert. */
    F.SSL_CTX_set_cert_verify_callback((SSL_CTX *)ssl_ctx, NULL, NULL);
    return 1;
}

/* ---- Reports: which chase belongs to a connection ---- */

uint64_t aia_ext_session_of(void *ssl)
{
    if (!aia_bound || ssl == NULL)
        return 0;
    return (uint64_t)(uintptr_t)F.SSL_get_ex_data((SSL *)ssl, aia_ssl_index);
}

/* DER of certificate `index` of the chain the peer sent (a client's view
 * includes the leaf), whether or not it verified.  Returns its length and
 * writes it when `outlen` suffices; -1 when there is no such certificate. */
int aia_ext_peer_chain_der(void *ssl, int index, unsigned char *out, int outlen)
{
    if (!aia_bound || ssl == NULL)
        return -1;
    return aia_stack_der(F.SSL_get_peer_cert_chain((SSL *)ssl), index, out, outlen);
}

/* ---- Offline verification: the same chase, without a handshake ---- */

typedef struct {
    X509_STORE_CTX *sctx;
    OPENSSL_STACK *untrusted; /* every served certificate, leaf first */
} aia_offline;

void aia_ext_offline_free(void *handle)
{
    aia_offline *off = (aia_offline *)handle;
    int i;
    if (off == NULL)
        return;
    if (off->sctx != NULL)
        F.X509_STORE_CTX_free(off->sctx);
    if (off->untrusted != NULL) {
        for (i = 0; i < F.OPENSSL_sk_num(off->untrusted); i++)
            F.X509_free((X509 *)F.OPENSSL_sk_value(off->untrusted, i));
        F.OPENSSL_sk_free(off->untrusted);
    }
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
void *aia_ext_offline_new(void *ssl_ctx, const unsigned char **ders, const size_t *lens,
                          int n, const char *host, int host_is_ip, int64_t at, int has_time)
{
    SSL_CTX *ctx = (SSL_CTX *)ssl_ctx;
    aia_offline *off;
    X509_VERIFY_PARAM *param;
    int i;

    if (!aia_bound || ctx == NULL || ders == NULL || lens == NULL || n < 1 || n > 64)
        return NULL;
    off = (aia_offline *)calloc(1, sizeof(*off));
    if (off == NULL)
        return NULL;
    off->untrusted = F.OPENSSL_sk_new_null();
    if (off->untrusted == NULL)
        goto fail;
    for (i = 0; i < n; i++) {
        const unsigned char *p = ders[i];
        X509 *cert;
        if (lens[i] == 0 || lens[i] > 0x7fffffff)
            goto fail;
        cert = F.d2i_X509(NULL, &p, (long)lens[i]);
        if (cert == NULL)
            goto fail;
        if (p != ders[i] + lens[i] || F.OPENSSL_sk_push(off->untrusted, cert) <= 0) {
            F.X509_free(cert);
            goto fail;
        }
    }
    off->sctx = F.X509_STORE_CTX_new();
    if (off->sctx == NULL ||
        !F.X509_STORE_CTX_init(off->sctx, F.SSL_CTX_get_cert_store(ctx),
                               (X509 *)F.OPENSSL_sk_value(off->untrusted, 0),
                               off->untrusted) ||
        !F.X509_STORE_CTX_set_default(off->sctx, "ssl_server"))
        goto fail;
    param = F.X509_STORE_CTX_get0_param(off->sctx);
    if (param == NULL || !F.X509_VERIFY_PARAM_set1(param, F.SSL_CTX_get0_param(ctx)))
        goto fail;
    F.X509_VERIFY_PARAM_set_auth_level(param, F.SSL_CTX_get_security_level(ctx));
    if (host != NULL && host[0] != '\0') {
        if (host_is_ip ? !F.X509_VERIFY_PARAM_set1_ip_asc(param, host)
                       : !F.X509_VERIFY_PARAM_set1_host(param, host, 0))
            goto fail;
    }
    if (has_time)
        F.X509_VERIFY_PARAM_set_time(param, (time_t)at);
    return off;
fail:
    aia_ext_offline_free(off);
    return NULL;
}

int aia_ext_offline_verify(void *handle, uintptr_t token, uint64_t *session_out)
{
    aia_offline *off = (aia_offline *)handle;
    if (session_out != NULL)
        *session_out = 0;
    if (!aia_bound || off == NULL || off->sctx == NULL)
        return 0;
    if (F.X509_verify_cert(off->sctx) > 0)
        return 1;
    if (aia_missing_issuer(F.X509_STORE_CTX_get_error(off->sctx)) &&
        aia_chase(off->sctx, token, NULL, session_out))
        return 1;
    return aia_fail(off->sctx);
}

int aia_ext_offline_error(void *handle, int *depth)
{
    aia_offline *off = (aia_offline *)handle;
    if (!aia_bound || off == NULL || off->sctx == NULL)
        return -1;
    if (depth != NULL)
        *depth = F.X509_STORE_CTX_get_error_depth(off->sctx);
    return F.X509_STORE_CTX_get_error(off->sctx);
}

void *aia_ext_offline_store_ctx(void *handle)
{
    aia_offline *off = (aia_offline *)handle;
    return off != NULL ? (void *)off->sctx : NULL;
}

const char *aia_ext_verify_error_string(long code)
{
    const char *text = aia_bound ? F.X509_verify_cert_error_string(code) : NULL;
    return text != NULL ? text : "unknown verify error";
}
