/*
 * Modbus helpers shared by the Cython modules in native/: CRC-16 (RTU), register byte order,
 * register value decoding. Header-only, static inline, no Python API: callable without the GIL.
 */
#ifndef GATEWAY_MODBUS_HELPERS_H
#define GATEWAY_MODBUS_HELPERS_H

#include <stdint.h>
#include <string.h>
#include <stddef.h>

/* Register value type codes; must match T_* in modbus.pyx and gateway/_pure/modbus.py. */
#define GW_T_INT16 0
#define GW_T_UINT16 1
#define GW_T_INT32 2
#define GW_T_UINT32 3
#define GW_T_FLOAT32 4
#define GW_T_FLOAT64 5

/* Order flags: WORD_LITTLE = 16-bit words least significant first, BYTE_LITTLE = bytes swapped. */
#define GW_WORD_LITTLE 1
#define GW_BYTE_LITTLE 2

/* Modbus RTU CRC-16: reflected polynomial 0xA001, initial value 0xFFFF. */
static const uint16_t gw_crc16_table[256] = {
    0x0000, 0xC0C1, 0xC181, 0x0140, 0xC301, 0x03C0, 0x0280, 0xC241, 0xC601, 0x06C0, 0x0780,
    0xC741, 0x0500, 0xC5C1, 0xC481, 0x0440, 0xCC01, 0x0CC0, 0x0D80, 0xCD41, 0x0F00, 0xCFC1,
    0xCE81, 0x0E40, 0x0A00, 0xCAC1, 0xCB81, 0x0B40, 0xC901, 0x09C0, 0x0880, 0xC841, 0xD801,
    0x18C0, 0x1980, 0xD941, 0x1B00, 0xDBC1, 0xDA81, 0x1A40, 0x1E00, 0xDEC1, 0xDF81, 0x1F40,
    0xDD01, 0x1DC0, 0x1C80, 0xDC41, 0x1400, 0xD4C1, 0xD581, 0x1540, 0xD701, 0x17C0, 0x1680,
    0xD641, 0xD201, 0x12C0, 0x1380, 0xD341, 0x1100, 0xD1C1, 0xD081, 0x1040, 0xF001, 0x30C0,
    0x3180, 0xF141, 0x3300, 0xF3C1, 0xF281, 0x3240, 0x3600, 0xF6C1, 0xF781, 0x3740, 0xF501,
    0x35C0, 0x3480, 0xF441, 0x3C00, 0xFCC1, 0xFD81, 0x3D40, 0xFF01, 0x3FC0, 0x3E80, 0xFE41,
    0xFA01, 0x3AC0, 0x3B80, 0xFB41, 0x3900, 0xF9C1, 0xF881, 0x3840, 0x2800, 0xE8C1, 0xE981,
    0x2940, 0xEB01, 0x2BC0, 0x2A80, 0xEA41, 0xEE01, 0x2EC0, 0x2F80, 0xEF41, 0x2D00, 0xEDC1,
    0xEC81, 0x2C40, 0xE401, 0x24C0, 0x2580, 0xE541, 0x2700, 0xE7C1, 0xE681, 0x2640, 0x2200,
    0xE2C1, 0xE381, 0x2340, 0xE101, 0x21C0, 0x2080, 0xE041, 0xA001, 0x60C0, 0x6180, 0xA141,
    0x6300, 0xA3C1, 0xA281, 0x6240, 0x6600, 0xA6C1, 0xA781, 0x6740, 0xA501, 0x65C0, 0x6480,
    0xA441, 0x6C00, 0xACC1, 0xAD81, 0x6D40, 0xAF01, 0x6FC0, 0x6E80, 0xAE41, 0xAA01, 0x6AC0,
    0x6B80, 0xAB41, 0x6900, 0xA9C1, 0xA881, 0x6840, 0x7800, 0xB8C1, 0xB981, 0x7940, 0xBB01,
    0x7BC0, 0x7A80, 0xBA41, 0xBE01, 0x7EC0, 0x7F80, 0xBF41, 0x7D00, 0xBDC1, 0xBC81, 0x7C40,
    0xB401, 0x74C0, 0x7580, 0xB541, 0x7700, 0xB7C1, 0xB681, 0x7640, 0x7200, 0xB2C1, 0xB381,
    0x7340, 0xB101, 0x71C0, 0x7080, 0xB041, 0x5000, 0x90C1, 0x9181, 0x5140, 0x9301, 0x53C0,
    0x5280, 0x9241, 0x9601, 0x56C0, 0x5780, 0x9741, 0x5500, 0x95C1, 0x9481, 0x5440, 0x9C01,
    0x5CC0, 0x5D80, 0x9D41, 0x5F00, 0x9FC1, 0x9E81, 0x5E40, 0x5A00, 0x9AC1, 0x9B81, 0x5B40,
    0x9901, 0x59C0, 0x5880, 0x9841, 0x8801, 0x48C0, 0x4980, 0x8941, 0x4B00, 0x8BC1, 0x8A81,
    0x4A40, 0x4E00, 0x8EC1, 0x8F81, 0x4F40, 0x8D01, 0x4DC0, 0x4C80, 0x8C41, 0x4400, 0x84C1,
    0x8581, 0x4540, 0x8701, 0x47C0, 0x4680, 0x8641, 0x8201, 0x42C0, 0x4380, 0x8341, 0x4100,
    0x81C1, 0x8081, 0x4040,
};

static inline uint16_t gw_crc16(const unsigned char *data, size_t n) {
    uint16_t crc = 0xFFFF;
    for (size_t i = 0; i < n; i++) {
        crc = (uint16_t)((crc >> 8) ^ gw_crc16_table[(crc ^ data[i]) & 0xFF]);
    }
    return crc;
}

/* Big-endian 16-bit load; with GW_BYTE_LITTLE the two bytes of the word are swapped. */
static inline uint32_t gw_load_word(const unsigned char *p, int flags) {
    if (flags & GW_BYTE_LITTLE) {
        return ((uint32_t)p[1] << 8) | (uint32_t)p[0];
    }
    return ((uint32_t)p[0] << 8) | (uint32_t)p[1];
}

static inline uint32_t gw_load_u32(const unsigned char *p, int flags) {
    uint32_t w0 = gw_load_word(p, flags), w1 = gw_load_word(p + 2, flags);
    return (flags & GW_WORD_LITTLE) ? ((w1 << 16) | w0) : ((w0 << 16) | w1);
}

static inline uint64_t gw_load_u64(const unsigned char *p, int flags) {
    uint64_t w[4];
    for (int i = 0; i < 4; i++) w[i] = gw_load_word(p + 2 * i, flags);
    if (flags & GW_WORD_LITTLE) {
        return (w[3] << 48) | (w[2] << 32) | (w[1] << 16) | w[0];
    }
    return (w[0] << 48) | (w[1] << 32) | (w[2] << 16) | w[3];
}

/* Raw value of one point whose first register starts at p, as a double. */
static inline double gw_decode_raw(const unsigned char *p, int type, int flags) {
    switch (type) {
    case GW_T_INT16:
        return (double)(int16_t)(uint16_t)gw_load_word(p, flags);
    case GW_T_UINT16:
        return (double)gw_load_word(p, flags);
    case GW_T_INT32:
        return (double)(int32_t)gw_load_u32(p, flags);
    case GW_T_UINT32:
        return (double)gw_load_u32(p, flags);
    case GW_T_FLOAT32: {
        uint32_t u = gw_load_u32(p, flags);
        float f;
        memcpy(&f, &u, sizeof f);
        return (double)f;
    }
    default: { /* GW_T_FLOAT64; the decoder validates type codes up front */
        uint64_t u = gw_load_u64(p, flags);
        double d;
        memcpy(&d, &u, sizeof d);
        return d;
    }
    }
}

/*
 * raw * scale + bias, rounded twice like Python and numpy do. The empty asm keeps the compiler
 * from fusing the two into one FMA (GCC does so by default on aarch64), which would make the
 * compiled results differ in the last bit from the pure-Python twin.
 */
static inline double gw_scale(double raw, double scale, double bias) {
    double p = raw * scale;
#if defined(__GNUC__) && defined(__x86_64__)
    __asm__("" : "+x"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(p));
#elif defined(__GNUC__)
    __asm__("" : "+m"(p));
#endif
    return p + bias;
}

/* Store a 16-bit register value big-endian (MBAP / RTU wire order). */
static inline void gw_store_be16(unsigned char *p, unsigned int v) {
    p[0] = (unsigned char)((v >> 8) & 0xFF);
    p[1] = (unsigned char)(v & 0xFF);
}

/*
 * Length of the RTU frame that starts at b (avail bytes buffered), from its function code and
 * byte count: > 0 the length including CRC, 0 more bytes needed to tell, -1 not a frame start.
 * Responses come from slaves 1..247; requests may be broadcast (unit 0).
 */
static inline ptrdiff_t gw_rtu_response_length(const unsigned char *b, ptrdiff_t avail) {
    unsigned char unit = b[0], fc = b[1], count;
    if (unit == 0 || unit > 247) return -1;
    if (fc & 0x80) return (fc & 0x7F) ? 5 : -1;
    if (fc >= 1 && fc <= 4) {
        if (avail < 3) return 0;
        count = b[2];
        if (count == 0 || count > 250 || (fc >= 3 && (count & 1))) return -1;
        return 5 + (ptrdiff_t)count;
    }
    if (fc == 5 || fc == 6 || fc == 15 || fc == 16) return 8;
    return -1;
}

static inline ptrdiff_t gw_rtu_request_length(const unsigned char *b, ptrdiff_t avail) {
    unsigned char unit = b[0], fc = b[1], count;
    if (unit > 247) return -1;
    if (fc >= 1 && fc <= 6) return 8;
    if (fc == 15 || fc == 16) {
        if (avail < 7) return 0;
        count = b[6];
        if (count == 0 || count > 246 || (fc == 16 && (count & 1))) return -1;
        return 9 + (ptrdiff_t)count;
    }
    return -1;
}

#endif /* GATEWAY_MODBUS_HELPERS_H */
