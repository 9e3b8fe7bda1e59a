/*
 * SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104) with precomputed pad states, for the node
 * frame MAC (native/node_frame.pyx). Header-only, static inline, no Python API: callable
 * without the GIL. Self-contained so the extension needs no OpenSSL headers on the build host.
 */
#ifndef GATEWAY_SHA256_H
#define GATEWAY_SHA256_H

#include <stdint.h>
#include <string.h>
#include <stddef.h>

static const uint32_t gw_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t gw_sha256_iv[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define GW_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline void gw_sha256_block(uint32_t h[8], const unsigned char *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
               ((uint32_t)p[4 * i + 2] << 8) | p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = GW_ROR(w[i - 15], 7) ^ GW_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = GW_ROR(w[i - 2], 17) ^ GW_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (GW_ROR(e, 6) ^ GW_ROR(e, 11) ^ GW_ROR(e, 25)) + ((e & f) ^ (~e & g)) +
             gw_sha256_k[i] + w[i];
        t2 = (GW_ROR(a, 2) ^ GW_ROR(a, 13) ^ GW_ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

/* Continue from state h (which has already absorbed `done` bytes, a multiple of 64) over msg,
 * pad, and write the 32-byte digest. */
static inline void gw_sha256_finish(uint32_t h[8], uint64_t done, const unsigned char *msg,
                                    size_t n, unsigned char out[32]) {
    unsigned char last[128];
    size_t full = n & ~(size_t)63, rest = n - full, padded;
    uint64_t bits = (done + n) * 8;
    int i;
    for (size_t o = 0; o < full; o += 64)
        gw_sha256_block(h, msg + o);
    if (rest)
        memcpy(last, msg + full, rest);
    last[rest] = 0x80;
    padded = rest + 1 + 8 <= 64 ? 64 : 128;
    memset(last + rest + 1, 0, padded - rest - 1 - 8);
    for (i = 0; i < 8; i++)
        last[padded - 1 - i] = (unsigned char)(bits >> (8 * i));
    gw_sha256_block(h, last);
    if (padded == 128)
        gw_sha256_block(h, last + 64);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

/* HMAC pad states of a key of at most 64 bytes (longer keys are refused by the caller). */
static inline void gw_hmac_pads(const unsigned char *key, size_t n, uint32_t ist[8],
                                uint32_t ost[8]) {
    unsigned char pad[64];
    size_t i;
    memcpy(ist, gw_sha256_iv, 32);
    memcpy(ost, gw_sha256_iv, 32);
    for (i = 0; i < 64; i++)
        pad[i] = (unsigned char)((i < n ? key[i] : 0) ^ 0x36);
    gw_sha256_block(ist, pad);
    for (i = 0; i < 64; i++)
        pad[i] = (unsigned char)((i < n ? key[i] : 0) ^ 0x5c);
    gw_sha256_block(ost, pad);
}

/* HMAC-SHA256 of msg from the key's pad states. */
static inline void gw_hmac_sha256(const uint32_t ist[8], const uint32_t ost[8],
                                  const unsigned char *msg, size_t n, unsigned char out[32]) {
    uint32_t h[8];
    unsigned char inner[32];
    memcpy(h, ist, 32);
    gw_sha256_finish(h, 64, msg, n, inner);
    memcpy(h, ost, 32);
    gw_sha256_finish(h, 64, inner, 32, out);
}

/* Constant-time comparison of n bytes: 0 if equal. */
static inline int gw_ct_diff(const unsigned char *a, const unsigned char *b, size_t n) {
    unsigned char d = 0;
    size_t i;
    for (i = 0; i < n; i++)
        d |= a[i] ^ b[i];
    return d;
}

#endif
