/*
 * Binding: resolve every OpenSSL function aia_ext uses from the library that
 * Python's _ssl module already loaded, and read SSL_CTX* and SSL* out of _ssl's
 * objects.  docs/design.md, "Which OpenSSL to call", explains why nothing is
 * linked at build time.
 */
#if !defined(_WIN32) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* dladdr */
#endif
#include <Python.h> /* only for PyObject_HEAD in the struct heads below */
#include <stdio.h>
#include <string.h>

#include "aia_ext.h"

struct aia_openssl aia_ossl;
int aia_bound = 0;
int aia_ssl_index = -1;

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
            memset(&aia_ossl, 0, sizeof(aia_ossl));                                          \
            return 0;                                                          \
        }                                                                      \
        memcpy(&aia_ossl.name, &p, sizeof(p));                                        \
    }
    AIA_OPENSSL_FUNCTIONS(AIA_RESOLVE)
#undef AIA_RESOLVE
    aia_ssl_index = aia_ossl.CRYPTO_get_ex_new_index(AIA_CRYPTO_EX_INDEX_SSL, 0, NULL, NULL,
                                              NULL, NULL);
    if (aia_ssl_index < 0) {
        snprintf(err, errlen, "CRYPTO_get_ex_new_index failed");
        memset(&aia_ossl, 0, sizeof(aia_ossl));
        return 0;
    }
    aia_bound = 1;
    return 1;
}

unsigned long aia_ext_openssl_version_num(void)
{
    return aia_bound ? aia_ossl.OpenSSL_version_num() : 0UL;
}

int aia_ext_bound_library_path(char *out, size_t outlen)
{
    void *symbol;
    if (outlen == 0)
        return 0;
    out[0] = '\0';
    if (!aia_bound)
        return 0;
    memcpy(&symbol, &aia_ossl.SSL_CTX_set_cert_verify_callback, sizeof(symbol));
    return aia_platform_library_path(symbol, out, outlen);
}

/* ---- Pointers out of _ssl's objects ---- */

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

const char *aia_ext_verify_error_string(long code)
{
    const char *text = aia_bound ? aia_ossl.X509_verify_cert_error_string(code) : NULL;
    return text != NULL ? text : "unknown verify error";
}
