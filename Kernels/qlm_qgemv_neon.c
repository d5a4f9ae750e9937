// Packed low-bit GEMV row kernels for AArch64 NEON.
//
// The superblock layouts decode to 16 codes per uint8x16_t with one load plus shifts/masks. For
// bits <= 4 the weights come from a 16-entry f32 value table (affine: s·(i − z) per group; lut: the
// row's codebook) looked up with TBL on bytes: each code c becomes the byte indices 4c..4c+3 (two
// ZIPs and one SLI per 4 floats), and vqtbl4q_u8 gathers the four bytes of each f32 from the
// 64-byte table. 8-bit widens the codes, converts them and computes s·(q − z). So the weights are
// exactly those of qlm_qmatrix_dequant_rows. Four rows share each load of x; the 1-row kernel
// performs the operations of one row of the 4-row kernel in the same order.
#if defined(__aarch64__)
#include "qlm_quant_impl.h"

#include <arm_neon.h>
#include <string.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#elif defined(__linux__)
#include <sys/auxv.h>
#endif

#define QINL __attribute__((always_inline)) static inline

enum { KIND_AFFINE = 0, KIND_LUT = 1 };

static const float qlm_iota16[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// Codes of the four 16-weight chunks of one superblock, one code per byte.
QINL void decode_neon(const uint8_t *p, const int BITS, uint8x16_t c[4]) {
    if (BITS == 2 || BITS == 3) {
        const uint8x16_t v = vld1q_u8(p), m3 = vdupq_n_u8(3);
        c[0] = vandq_u8(v, m3);
        c[1] = vandq_u8(vshrq_n_u8(v, 2), m3);
        c[2] = vandq_u8(vshrq_n_u8(v, 4), m3);
        c[3] = vshrq_n_u8(v, 6);
        if (BITS == 3) {
            // High bits: a 64-bit lane mask, bit 16k + l = hi of chunk k, lane l (bytes 2k, 2k + 1).
            static const uint8_t sel[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
            const uint8x16_t bitsel = vld1q_u8(sel), m4 = vdupq_n_u8(4);
            for (int k = 0; k < 4; k++) {
                const uint8x16_t h = vcombine_u8(vdup_n_u8(p[16 + 2 * k]), vdup_n_u8(p[17 + 2 * k]));
                c[k] = vorrq_u8(c[k], vandq_u8(vtstq_u8(h, bitsel), m4));
            }
        }
    } else if (BITS == 4) {
        const uint8x16_t lo = vld1q_u8(p), hi = vld1q_u8(p + 16), m15 = vdupq_n_u8(15);
        c[0] = vandq_u8(lo, m15);
        c[1] = vandq_u8(hi, m15);
        c[2] = vshrq_n_u8(lo, 4);
        c[3] = vshrq_n_u8(hi, 4);
    } else {
        for (int k = 0; k < 4; k++) c[k] = vld1q_u8(p + 16 * k);
    }
}

// decode_neon for superblock b of a row of nsb superblocks: 3-bit octets (code layout 3, qlm_quant.h)
// with byte shifts (codes 2 and 5 take bits 6..7 of V0 / V1 and bit 6 / 7 of V2).
QINL void decode_neon_sb(const uint8_t *row, const int nsb, const int b, const int BITS, uint8x16_t c[4]) {
    if (BITS == 3 && qlm_sb3_in_octet(b, nsb)) {
        const uint8_t *o = row + (size_t)(b & ~7) * 24;
        const int s = b & 7;
        const uint8_t *v = o + 64 * (s / 3);
        // Byte shifts by a run-time count (the placement rule in qlm_quant_impl.h): vshlq_u8 with a negative count.
        const int8x16_t sh = vdupq_n_s8((int8_t)-qlm_oct3_shift(s)), hsh = vdupq_n_s8((int8_t)-qlm_oct3_hishift(s));
        for (int k = 0; k < 4; k++) {
            const uint8x16_t x = vld1q_u8(v + 16 * k);
            c[k] = qlm_oct3_straddles(s) ? vorrq_u8(vshrq_n_u8(x, 6), vandq_u8(vshlq_u8(vld1q_u8(o + 128 + 16 * k), hsh), vdupq_n_u8(4)))
                                         : vandq_u8(vshlq_u8(x, sh), vdupq_n_u8(7));
        }
        return;
    }
    decode_neon(row + (size_t)b * (size_t)(BITS * 8), BITS, c);
}

// Table value for each of 16 codes (< 16): four float32x4 (weights 0..3, 4..7, 8..11, 12..15).
QINL void lookup16(uint8x16x4_t t, uint8x16_t codes, float32x4_t w[4]) {
    static const uint8_t off_b[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    const uint8x16_t off = vld1q_u8(off_b);
    const uint8x16_t d0 = vzip1q_u8(codes, codes), d1 = vzip2q_u8(codes, codes);
    const uint8x16_t q[4] = {vzip1q_u8(d0, d0), vzip2q_u8(d0, d0), vzip1q_u8(d1, d1), vzip2q_u8(d1, d1)};
    for (int j = 0; j < 4; j++) w[j] = vreinterpretq_f32_u8(vqtbl4q_u8(t, vsliq_n_u8(off, q[j], 2)));
}

QINL uint8x16x4_t table_from_f32(const float v[16]) {
    uint8x16x4_t t;
    t.val[0] = vreinterpretq_u8_f32(vld1q_f32(v));
    t.val[1] = vreinterpretq_u8_f32(vld1q_f32(v + 4));
    t.val[2] = vreinterpretq_u8_f32(vld1q_f32(v + 8));
    t.val[3] = vreinterpretq_u8_f32(vld1q_f32(v + 12));
    return t;
}

QINL uint8x16x4_t affine_table(float s, float z) {
    float v[16];
    const float32x4_t sv = vdupq_n_f32(s), zv = vdupq_n_f32(z);
    for (int j = 0; j < 4; j++) vst1q_f32(v + 4 * j, vmulq_f32(vsubq_f32(vld1q_f32(qlm_iota16 + 4 * j), zv), sv));
    return table_from_f32(v);
}

QINL float h2f(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

QINL void qrows_neon_block(const qlm_qctx *c, float *y, const int r, const int NR, const int BITS,
                           const int KIND) {
    const qlm_qmatrix *m = c->m;
    const size_t rb = c->rb;
    const int nsb = c->nsb, ng = c->n_groups;
    const int SBB = BITS * 8;
    const int GC = KIND == KIND_AFFINE ? c->gchunks : 0;
    const uint8_t *cp = m->codes + (size_t)r * rb;
    const float *xs = c->xs;
    float32x4_t acc[4][4];
    uint8x16x4_t tb[4];
    float sv[4] = {0, 0, 0, 0}, zv[4] = {0, 0, 0, 0};
    for (int i = 0; i < NR; i++) {
        for (int j = 0; j < 4; j++) acc[i][j] = vdupq_n_f32(0.0f);
        if (KIND == KIND_LUT) {
            float v[16];
            qlm_lut_row_values(m, r + i, v);
            tb[i] = table_from_f32(v);
        } else if (GC == 0) {
            sv[i] = h2f(m->scales[(size_t)(r + i) * (size_t)ng]);
            zv[i] = h2f(m->zeros[(size_t)(r + i) * (size_t)ng]);
            if (BITS != 8) tb[i] = affine_table(sv[i], zv[i]);
        }
    }
    for (int b = 0; b < nsb; b++) {
        const float *xb = xs + (size_t)b * 64;
        for (int i = 0; i < NR; i++) {
            uint8x16_t codes[4];
            decode_neon_sb(cp + (size_t)i * rb, nsb, b, BITS, codes);
            __builtin_prefetch(cp + (size_t)i * rb + (size_t)b * (size_t)SBB + 512, 0, 0);
            for (int k = 0; k < 4; k++) {
                if (GC > 0) {
                    const int ch = b * 4 + k;
                    if (ch % GC == 0 && ch / GC < ng) {
                        const size_t off = (size_t)(r + i) * (size_t)ng + (size_t)(ch / GC);
                        sv[i] = h2f(m->scales[off]);
                        zv[i] = h2f(m->zeros[off]);
                        if (BITS != 8) tb[i] = affine_table(sv[i], zv[i]);
                    }
                }
                float32x4_t w[4];
                if (BITS == 8) {
                    const uint16x8_t lo = vmovl_u8(vget_low_u8(codes[k])), hi = vmovl_u8(vget_high_u8(codes[k]));
                    const uint32x4_t q[4] = {vmovl_u16(vget_low_u16(lo)), vmovl_u16(vget_high_u16(lo)),
                                             vmovl_u16(vget_low_u16(hi)), vmovl_u16(vget_high_u16(hi))};
                    const float32x4_t s4 = vdupq_n_f32(sv[i]), z4 = vdupq_n_f32(zv[i]);
                    for (int j = 0; j < 4; j++) w[j] = vmulq_f32(vsubq_f32(vcvtq_f32_u32(q[j]), z4), s4);
                } else {
                    lookup16(tb[i], codes[k], w);
                }
                for (int j = 0; j < 4; j++) acc[i][j] = vfmaq_f32(acc[i][j], w[j], vld1q_f32(xb + 16 * k + 4 * j));
            }
        }
    }
    for (int i = 0; i < NR; i++)
        y[r + i] = vaddvq_f32(vaddq_f32(vaddq_f32(acc[i][0], acc[i][1]), vaddq_f32(acc[i][2], acc[i][3])));
}

QINL void qrows_neon(const qlm_qctx *c, float *y, int r0, int r1, const int BITS, const int KIND) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) qrows_neon_block(c, y, r, 4, BITS, KIND);
    for (; r < r1; r++) qrows_neon_block(c, y, r, 1, BITS, KIND);
}

QINL void f16rows_neon_block(const qlm_qctx *c, float *y, const int r, const int NR) {
    const qlm_qmatrix *m = c->m;
    const int cols = m->cols;
    const uint16_t *w0 = (const uint16_t *)(const void *)m->codes + (size_t)r * (size_t)cols;
    const float *xs = c->xs;
    float32x4_t a[4], b[4];
    for (int i = 0; i < NR; i++) a[i] = b[i] = vdupq_n_f32(0.0f);
    const int main8 = cols & ~7;
    int j = 0;
    for (; j < main8; j += 8) {
        const float32x4_t xa = vld1q_f32(xs + j), xb = vld1q_f32(xs + j + 4);
        for (int i = 0; i < NR; i++) {
            const uint16_t *w = w0 + (size_t)i * (size_t)cols + j;
            const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(w));
            a[i] = vfmaq_f32(a[i], vcvt_f32_f16(vget_low_f16(h)), xa);
            b[i] = vfmaq_f32(b[i], vcvt_high_f32_f16(h), xb);
        }
    }
    if (j < cols) {  // tail: zero-extended copy (xs is zero-padded)
        const float32x4_t xa = vld1q_f32(xs + j), xb = vld1q_f32(xs + j + 4);
        for (int i = 0; i < NR; i++) {
            uint16_t t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            memcpy(t, w0 + (size_t)i * (size_t)cols + j, sizeof(uint16_t) * (size_t)(cols - j));
            const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(t));
            a[i] = vfmaq_f32(a[i], vcvt_f32_f16(vget_low_f16(h)), xa);
            b[i] = vfmaq_f32(b[i], vcvt_high_f32_f16(h), xb);
        }
    }
    for (int i = 0; i < NR; i++) y[r + i] = vaddvq_f32(vaddq_f32(a[i], b[i]));
}

static void f16rows_neon(const qlm_qctx *c, float *y, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) f16rows_neon_block(c, y, r, 4);
    for (; r < r1; r++) f16rows_neon_block(c, y, r, 1);
}

#define QLM_DEFNEON(name, BITS, KIND) \
    static void name(const qlm_qctx *c, float *y, int r0, int r1) { qrows_neon(c, y, r0, r1, BITS, KIND); }
QLM_DEFNEON(an_b2, 2, KIND_AFFINE)
QLM_DEFNEON(an_b3, 3, KIND_AFFINE)
QLM_DEFNEON(an_b4, 4, KIND_AFFINE)
QLM_DEFNEON(an_b8, 8, KIND_AFFINE)
QLM_DEFNEON(ln_b2, 2, KIND_LUT)
QLM_DEFNEON(ln_b3, 3, KIND_LUT)
QLM_DEFNEON(ln_b4, 4, KIND_LUT)

qlm_qrows_fn qlm_qrows_pick_neon(const qlm_qmatrix *m) {
    switch (m->format) {
    case QLM_FMT_F16: return m->bits == 16 ? f16rows_neon : NULL;
    case QLM_FMT_LUT:
        switch (m->bits) {
        case 2: return ln_b2;
        case 3: return ln_b3;
        case 4: return ln_b4;
        default: return NULL;
        }
    case QLM_FMT_AFFINE:
        if (qlm_n_groups(m) > 1 && m->group_size % 16 != 0) return NULL;
        switch (m->bits) {
        case 2: return an_b2;
        case 3: return an_b3;
        case 4: return an_b4;
        case 8: return an_b8;
        default: return NULL;
        }
    default: return NULL;
    }
}

// ---------------------------------------------------------------------------------------------
// Integer activations (ARMv8.2 dot product, SDOT): the activations x̂ = d·(128·xh + xl) of
// qlm_act_i16_prepare (stored order, segments of qlm_act_i16_segment columns) times the code bytes,
// 16 weights per vdotq_s32. Codes <= 15 are used as they are (signed bytes); weight bytes up to 255
// (8-bit codes, LUT entries looked up with TBL) as w − 128, with 128·Σ xi of the segment added back.
// Per segment: acc = (Σ w·xh) << 7 + Σ w·xl, exact in int32 (a lane sums at most 64 products of
// |w| <= 128 and |xh| <= 128 per 256 columns), then y += cvt(acc)·(s_g·d_seg); zero points once
// per row as in the x86 kernels. Checked against the reference on x̂ by `run.sh neon-check` (qemu).
// Speed not measured (no AArch64 machine here).
#define QDOT __attribute__((target("dotprod")))

int qlm_cpu_has_neon_dotprod(void) {
#if defined(__APPLE__)
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, NULL, 0) == 0 && v != 0;
#elif defined(__linux__)
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    return 0;
#endif
}

// BIAS: weight bytes may exceed 127 (8-bit, LUT): they enter as w − 128.
QDOT QINL void qdot_row(const qlm_qctx *c, float *y, const int r, const int BITS, const int LUT, const int BIAS) {
    const qlm_qmatrix *m = c->m;
    const int ng = c->n_groups, cp = c->cols_pad, seg = qlm_act_i16_segment(m);
    const int gsz = m->group_size > 0 && m->group_size < m->cols ? m->group_size : m->cols;
    const int GK = ng <= 1 ? 0 : gsz / seg;  // segments per group
    const uint8_t *row = m->codes + (size_t)r * c->rb;
    const uint16_t *sc = m->scales + (size_t)r * (size_t)ng;
    uint8x16_t tb = vdupq_n_u8(0);
    if (LUT) {
        uint8_t t16[16];
        qlm_lut_row_bytes(m, r, t16);
        tb = vld1q_u8(t16);
    }
    float32x4_t fv = vdupq_n_f32(0.0f);
    float corr = 0.0f;
    int32x4_t ah = vdupq_n_s32(0), al = vdupq_n_s32(0);
    for (int b = 0; b < cp / 64; b++) {
        uint8x16_t q[4];
        decode_neon_sb(row, cp / 64, b, BITS, q);
        for (int k = 0; k < 4; k++) {
            const int col = 64 * b + 16 * k;
            uint8x16_t w = LUT ? vqtbl1q_u8(tb, q[k]) : q[k];
            if (BIAS) w = veorq_u8(w, vdupq_n_u8(0x80));
            ah = vdotq_s32(ah, vreinterpretq_s8_u8(w), vld1q_s8(c->xh + col));
            al = vdotq_s32(al, vreinterpretq_s8_u8(w), vld1q_s8(c->xl + col));
            if ((col + 16) % seg == 0 || col + 16 == cp) {  // the end of segment t
                const int t = col / seg, g = GK == 0 ? 0 : (t / GK < ng ? t / GK : ng - 1);
                const float sd = h2f(sc[g]) * c->xd[t];
                const int32x4_t acc = vaddq_s32(vshlq_n_s32(ah, 7), al);
                fv = vfmaq_n_f32(fv, vcvtq_f32_s32(acc), sd);
                if (BIAS) corr += 128.0f * (float)c->isum[t] * sd;
                ah = al = vdupq_n_s32(0);
            }
        }
    }
    y[r] = vaddvq_f32(fv) + corr - qlm_i16_zero_term(c, r);
}

#define QLM_DEFDOT(name, B, LUT, BIAS)                                                 \
    QDOT static void name(const qlm_qctx *c, float *y, int r0, int r1) {               \
        for (int r = r0; r < r1; r++) qdot_row(c, y, r, B, LUT, BIAS);                  \
    }
QLM_DEFDOT(dn_b2, 2, 0, 0)
QLM_DEFDOT(dn_b3, 3, 0, 0)
QLM_DEFDOT(dn_b4, 4, 0, 0)
QLM_DEFDOT(dn_b8, 8, 0, 1)
QLM_DEFDOT(dn_l2, 2, 1, 1)
QLM_DEFDOT(dn_l3, 3, 1, 1)
QLM_DEFDOT(dn_l4, 4, 1, 1)

qlm_qrows_fn qlm_qrows_pick_neon_i16(const qlm_qmatrix *m) {
    if (!qlm_cpu_has_neon_dotprod() || !m->scales || !m->zeros) return NULL;
    if (m->format == QLM_FMT_LUT) {
        if (!m->lut) return NULL;
        return m->bits == 2 ? dn_l2 : m->bits == 3 ? dn_l3 : m->bits == 4 ? dn_l4 : NULL;
    }
    if (m->format != QLM_FMT_AFFINE) return NULL;
    if (qlm_n_groups(m) > 1 && m->group_size % qlm_act_i16_segment(m) != 0) return NULL;  // segments must not straddle groups
    return m->bits == 2 ? dn_b2 : m->bits == 3 ? dn_b3 : m->bits == 4 ? dn_b4 : m->bits == 8 ? dn_b8 : NULL;
}

#endif  // __aarch64__
