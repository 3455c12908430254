#include "pipeline/base/hash.h"

#include "pipeline/base/err.h"

#include <openssl/evp.h>

/* hash_ctx is never defined: a hash_ctx pointer is an EVP_MD_CTX pointer
 * under another name, so callers need no OpenSSL header. */

hash_ctx *hash_new(void)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (!md)
        return NULL;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    return (hash_ctx *)md;
}

void hash_update(hash_ctx *h, const void *data, size_t n)
{
    EVP_DigestUpdate((EVP_MD_CTX *)h, data, n);
}

void hash_update_field(hash_ctx *h, const void *data, size_t n)
{
    unsigned char len[8];
    uint64_t v = n;

    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(v >> (8 * i));
    hash_update(h, len, sizeof len);
    hash_update(h, data, n);
}

void hash_final(hash_ctx *h, uint8_t out[HASH_LEN])
{
    unsigned int n = HASH_LEN;

    EVP_DigestFinal_ex((EVP_MD_CTX *)h, out, &n);
}

void hash_free(hash_ctx *h)
{
    EVP_MD_CTX_free((EVP_MD_CTX *)h);
}

int hash_sha256(const void *data, size_t n, uint8_t out[HASH_LEN])
{
    hash_ctx *h = hash_new();

    if (!h)
        return NSED_ENOMEM;
    hash_update(h, data, n);
    hash_final(h, out);
    hash_free(h);
    return 0;
}

void hash_hex(const uint8_t digest[HASH_LEN], char out[HASH_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < HASH_LEN; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[HASH_HEX_LEN] = '\0';
}
