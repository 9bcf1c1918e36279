/*
 * aia_ext native part: declarations shared by binding.c, verify.c and offline.c.
 *
 * Only what must be C lives in csrc/ (docs/design.md, "Why C, and why this little"):
 *   - binding.c: resolving OpenSSL functions at run time from the library
 *     Python's _ssl already loaded, and reading SSL_CTX* and SSL* out of _ssl's
 *     objects;
 *   - verify.c: the verify callback installed with
 *     SSL_CTX_set_cert_verify_callback(3), which completes a chain with
 *     untrusted certificates Python fetched (the handshake path);
 *   - offline.c: the same chase on a recorded chain, for diagnose().
 *
 * Invariants (docs/design.md): fetched certificates only ever go into a
 * private copy of the X509_STORE_CTX's untrusted stack, never into the
 * X509_STORE; every other verification setting is left alone; every internal
 * error fails closed; the callback returns only 0 or 1.
 *
 * No OpenSSL header is included and nothing links libssl: the types below
 * are opaque, and the functions are pointers filled in by aia_ext_bind().
 */
#ifndef AIA_EXT_H
#define AIA_EXT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* ---- OpenSSL types and constants, declared here instead of included ---- */

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
typedef struct x509_st X509;
typedef struct x509_store_ctx_st X509_STORE_CTX;
typedef struct stack_st OPENSSL_STACK; /* STACK_OF(X509) is this underneath */
typedef struct x509_store_st X509_STORE;
typedef struct X509_VERIFY_PARAM_st X509_VERIFY_PARAM;
typedef struct evp_md_st EVP_MD;
typedef struct bio_st BIO;

#define AIA_X509_V_OK 0
#define AIA_X509_V_ERR_UNSPECIFIED 1
#define AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT 2
#define AIA_X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY 20
#define AIA_SSL_VERIFY_NONE 0
/* BIO_TYPE_MEM (include/openssl/bio.h): 1 | BIO_TYPE_SOURCE_SINK. */
#define AIA_BIO_TYPE_MEM 0x0401
/* CRYPTO_EX_INDEX_SSL: the class for SSL_get_ex_new_index, which is a macro
 * over CRYPTO_get_ex_new_index in both 1.1.1 and 3.x. */
#define AIA_CRYPTO_EX_INDEX_SSL 0

/* ---- Limits: each bounds one thing, for one reason ---- */

/* Fetch-and-reverify rounds in one verification.  The Python side enforces
 * the user-visible limits (max_fetches, deadline); this only guarantees
 * termination even if that side misbehaved.  Same number as
 * aia_ext._private.x509_codes.MAX_ROUNDS. */
#define AIA_MAX_ROUNDS 32
/* Certificates on the untrusted stack of one verification: the peer chain
 * plus what AIA added.  Real chains hold under ten; a server may send up to
 * libssl's own limit (100 by default), so the bound leaves room for both. */
#define AIA_MAX_UNTRUSTED 128
/* Certificates in one chain handed to the offline verification (diagnose()). */
#define AIA_MAX_OFFLINE_CHAIN 64
/* Intermediates remembered in C as already handed to Python for learning
 * (issue 23): a direct-mapped table of SHA-1 prefixes.  A collision only
 * costs one more call into Python, which knows the certificate already. */
#define AIA_SEEN_SLOTS 4096
/* The bit of an install token that says "this context learns intermediates";
 * Python hands out tokens with it set or clear (engines/native.py). */
#define AIA_TOKEN_LEARN ((uintptr_t)1)
/* Largest certificate accepted from Python (d2i_X509 takes a long). */
#define AIA_MAX_DER_LENGTH 0x7fffffff

/*
 * Every OpenSSL function we use, with its 1.1.1/3.x signature.  All exist in
 * both series (docs/design.md); sk_X509_* are macros over OPENSSL_sk_*, so
 * the generic functions are bound.  X-macro: (return type, name, parameters).
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
    X(OPENSSL_STACK *, SSL_get_peer_cert_chain, (const SSL *))                   \
    X(const EVP_MD *, EVP_sha1, (void))                                           \
    X(BIO *, SSL_get_rbio, (const SSL *))                                         \
    X(int, BIO_method_type, (const BIO *))                                        \
    X(int, X509_digest,                                                           \
      (const X509 *, const EVP_MD *, unsigned char *, unsigned int *))


#define AIA_DECLARE_POINTER(ret, name, params) ret(*name) params;
struct aia_openssl {
    AIA_OPENSSL_FUNCTIONS(AIA_DECLARE_POINTER)
};
#undef AIA_DECLARE_POINTER

/* The resolved functions (binding.c); valid only while aia_bound is 1. */
extern struct aia_openssl aia_ossl;
extern int aia_bound;
/* Our own SSL ex_data index: after a chase it holds the Python chase id, so
 * aia_ext.report() finds the report of exactly this connection (a new SSL
 * starts with empty ex_data, even at a reused address).  _ssl uses index 0
 * (SSL_set_app_data), so ours must be separate. */
extern int aia_ssl_index;

/* ---- verify.c, shared with offline.c ---- */

/* Whether a verify error means "the issuer of a certificate is missing". */
int aia_missing_issuer(int error);
/* Complete the chain of `sctx` after X509_verify_cert failed with a missing
 * issuer; 1 if a re-verification succeeded.  `ssl` is NULL offline. */
int aia_chase(X509_STORE_CTX *sctx, uintptr_t token, SSL *ssl, uint64_t *chase_out);
/* Fail closed: never let libssl read "OK" next to a failure.  Returns 0. */
int aia_fail(X509_STORE_CTX *sctx);
/* DER of certificate `index` of `chain`: its length, written to `out` when
 * `outlen` suffices; -1 when there is no such certificate. */
int aia_stack_der(OPENSSL_STACK *chain, int index, unsigned char *out, int outlen);
/* Hand the intermediates of the verified chain in `sctx` to Python to be
 * learned, if the token's context learns and C has not seen them yet. */
void aia_learn(X509_STORE_CTX *sctx, uintptr_t token);
/* X509_free every certificate from index `from` on, then free the stack. */
void aia_free_stack_from(OPENSSL_STACK *stack, int from);

/* ---- Internal to csrc/: not in the cdef ---- */

/* A parsed certificate (NULL unless `der` is exactly one), owned by the caller. */
void *aia_ext_x509_new(const unsigned char *der, size_t len);
/* Frees an offline handle (offline.c). */
void aia_offline_free(void *handle);

/* What a holder holds (aia_ext_holder.kind). */
#define AIA_HOLDS_X509 1
#define AIA_HOLDS_OFFLINE 2

typedef struct {
    int kind;
    void *ptr;
} aia_ext_holder;

/* ---- The exported functions: aia_ext.cdef documents each ---- */

int aia_ext_bind(const char *module_path, char *err, size_t errlen);
unsigned long aia_ext_openssl_version_num(void);
int aia_ext_bound_library_path(char *out, size_t outlen);
void *aia_ext_cpython_ssl_ctx(void *pycontext);
void *aia_ext_cpython_ssl(void *pysslsocket);
const char *aia_ext_verify_error_string(long code);

int aia_ext_install(void *ssl_ctx, uintptr_t token);
int aia_ext_uninstall(void *ssl_ctx);
void *aia_ext_holder_alloc(size_t size);
void aia_ext_holder_free(void *holder);
int aia_ext_x509_parse(aia_ext_holder *holder, const unsigned char *der, size_t len);
int aia_ext_add_untrusted(void *store_ctx, void *certificate);
int aia_ext_chain_der(void *store_ctx, int index, unsigned char *out, int outlen);
void aia_ext_learned_forget(void);
uint64_t aia_ext_chase_id_of(void *ssl);
int aia_ext_peer_chain_der(void *ssl, int index, unsigned char *out, int outlen);
int aia_ext_reads_memory(void *ssl);

int aia_ext_offline_prepare(aia_ext_holder *holder, void *ssl_ctx, const unsigned char **ders,
                            const size_t *lens, int n, const char *host, int host_is_ip,
                            int64_t at, int has_time);
int aia_ext_offline_verify(void *handle, uintptr_t token, uint64_t *chase_out);
int aia_ext_offline_error(void *handle, int *depth);
void *aia_ext_offline_store_ctx(void *handle);

/* ---- The Python side of the callback (cffi extern "Python+C") ---- */

int aia_ext_py_missing(uintptr_t token, uint64_t *chase, void *ssl, void *store_ctx,
                       const unsigned char *der, int der_len, int depth, int error);
void aia_ext_py_done(uintptr_t token, uint64_t chase, void *ssl, void *store_ctx, int ok,
                     int error, int depth);
int aia_ext_py_learn(uintptr_t token, const unsigned char *der, int der_len);

#endif /* AIA_EXT_H */
