// Affine and LUT packed GEMV with 16-bit integer activations on AVX2 (no VNNI needed):
// the same activations and arithmetic as qlm_qgemv_vnni.c, with vpmaddubsw + vpmaddwd for the
// byte dot products. For CPUs without AVX-512 (most laptops and desktops before 2023), where
// the f32 kernels spend ~4 vector ops per 8 weights on unpacking, permuting and FMA.
//
// Per 32 weights of a row: codes as bytes q (≤ 15), activations xi = 128·xh + xl as two byte
// vectors (qlm_act_i16_prepare), ph = maddubs(q, xh), pl = maddubs(q, xl) — 16-bit pair sums,
// |ph| ≤ 2·15·128 = 3840, so the ≤ 4 chunks of a 128-column segment sum in 16 bits without
// overflow (≤ 15360) — then once per segment acc = madd(Σph, 128) + madd(Σpl, 1) (exact int32)
// and y += cvt(acc)·(s_g·d_seg). Zero points as in the VNNI kernel: y −= Σ_g s_g·z_g·Σ_{j∈g} x̂_j.
// So results equal the reference applied to x̂ up to summation order (tests: every format and
// shape against qlm_qgemv_ref on x̂). 8-bit codes and LUT bytes (up to 255) would overflow the
// 16-bit pair sums; those multiply 16-bit weights by 16-bit activations instead (qi_rows_block_w16).
//
// Code decode into byte lanes (layouts in qlm_quant.h), per 64-weight superblock → two vectors
// (weights 0..31, 32..63):
//   4-bit: byte j holds w[j] (low nibble) and w[j + 32] (high nibble): and / shift + and;
//   2-bit: bits 2k..2k+1 of byte j hold w[16k + j]: the 16 bytes in both 128-bit lanes, per-lane
//          shifts (0 | 2) and (4 | 6), and 3;
//   3-bit: the 2-bit plane as above, + 4 where bit j of the u64 at byte 16 is set.
#if defined(__x86_64__) || defined(__i386__)
#include "qlm_quant_impl.h"
#include "qlm_x86_common.h"

#include <immintrin.h>
#include <string.h>

#define QI256 __attribute__((target("avx2,fma,f16c")))
#define QIINL __attribute__((always_inline)) static inline

int qlm_cpu_has_avx2_int(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

// The two 32-weight halves of the single superblock at p as code bytes.
QI256 QIINL void qi_decode1(const uint8_t *p, const int BITS, __m256i *a, __m256i *b) {
    if (BITS == 4) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)p), m = _mm256_set1_epi8(0x0F);
        *a = _mm256_and_si256(v, m);
        *b = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
        return;
    }
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p)), m = _mm256_set1_epi8(0x03);
    __m256i lo = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)), m);
    __m256i hi = _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6)), m);
    if (BITS == 3) {
        // Lane j of each half: bit j of its 32-bit slice of the mask → +4.
        const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                                2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL), four = _mm256_set1_epi8(4);
        uint32_t ma, mb;
        memcpy(&ma, p + 16, 4);
        memcpy(&mb, p + 20, 4);
        const __m256i ba = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)ma), spread), bit);
        const __m256i bb = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)mb), spread), bit);
        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(ba, bit), four));
        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(bb, bit), four));
    }
    *a = lo;
    *b = hi;
}

// The two 32-weight halves of superblock b of a row of nsb superblocks as code bytes.
QI256 QIINL void qi_decode(const uint8_t *row, const int nsb, const int b, const int BITS, __m256i *qa, __m256i *qb) {
    if (BITS == 3 && qlm_sb3_in_octet(b, nsb)) {
        const uint8_t *o = row + (size_t)(b & ~7) * 24;
        *qa = qlm_oct3_256(o, b & 7);
        *qb = qlm_oct3_256(o + 32, b & 7);
        return;
    }
    qi_decode1(row + (size_t)b * (size_t)(BITS * 8), BITS, qa, qb);
}

// s_g·d_t: scale of segment t's group in `row` times the segment's activation scale (GK segments
// per group, 0: one group per row; the padding past the last group uses the last one, d = 0 there).
QI256 QIINL float qi_seg_scale(const qlm_qctx *c, int row, int t, const int GK) {
    const int ng = c->n_groups, g = GK == 0 ? 0 : (t / GK < ng ? t / GK : ng - 1);
    return _cvtsh_ss(c->m->scales[(size_t)row * (size_t)ng + (size_t)g]) * c->xd[t];
}

// y[r + i] = Σ lanes of fv[i] − Σ_g s_g·z_g·Σ_{j∈g} x̂_j (the zero points), for NR rows.
QI256 QIINL void qi_finish_rows(const qlm_qctx *c, float *y, const int r, const int NR, const __m256 *fv) {
    for (int i = 0; i < NR; i++) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(fv[i]), _mm256_extractf128_ps(fv[i], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[r + i] = _mm_cvtss_f32(s) - qlm_i16_zero_term(c, r + i);
    }
}

// NR rows (1 or 2; more would spill: AVX2 has 16 vector registers) from row r. SEG: columns per
// activation segment (32, 64 or 128); GK: segments per group (0: one group per row).
QI256 QIINL void qi_rows_block(const qlm_qctx *c, float *y, const int r, const int NR, const int BITS, const int SEG,
                               const int GK) {
    const qlm_qmatrix *m = c->m;
    const int ng = c->n_groups, SBB = BITS * 8, cp = c->cols_pad;
    const size_t rb = c->rb;
    const uint8_t *cp0 = m->codes + (size_t)r * rb;
    const int8_t *xh = c->xh, *xl = c->xl;
    const __m256i k128 = _mm256_set1_epi16(128), k1 = _mm256_set1_epi16(1);
    const size_t pf = qlm_pf_distance((size_t)NR * rb);  // the rows stream from DRAM: prefetch ahead
    if (NR == 2 && (r & 3) == 0) qlm_pf_row_meta(m, r + QLM_META_AHEAD, ng);
    __m256 fv[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int s0 = 0, t = 0; s0 < cp; s0 += SEG, t++) {
        const int n32 = (cp - s0 < SEG ? cp - s0 : SEG) / 32;  // 32-column chunks (the last segment may be short)
        if (SEG >= 64) {
            const char *p = (const char *)cp0 + pf + (size_t)(s0 / 64) * (size_t)(NR * SBB);
            for (int o = 0; o < NR * SBB * (SEG / 64); o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
        } else if (!(s0 & 32)) {
            const char *p = (const char *)cp0 + pf + (size_t)(s0 / 64) * (size_t)(NR * SBB);
            for (int o = 0; o < NR * SBB; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
        }
        __m256i sh[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        __m256i sl[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int u = 0; u < n32; u += 2) {  // one superblock (two chunks) per step; n32 is even unless SEG = 32
            const int j = s0 + 32 * u;
            const __m256i h0 = _mm256_loadu_si256((const __m256i *)(xh + j)), l0 = _mm256_loadu_si256((const __m256i *)(xl + j));
            const int two = SEG > 32;  // SEG = 32: a chunk is half a superblock
            __m256i h1 = h0, l1 = l0;
            if (two) {
                h1 = _mm256_loadu_si256((const __m256i *)(xh + j + 32));
                l1 = _mm256_loadu_si256((const __m256i *)(xl + j + 32));
            }
            for (int i = 0; i < NR; i++) {
                __m256i qa, qb;
                qi_decode(cp0 + (size_t)i * rb, c->nsb, j / 64, BITS, &qa, &qb);
                if (!two && (j & 32)) qa = qb;  // SEG = 32, odd chunk: the superblock's second half
                sh[i] = _mm256_add_epi16(sh[i], _mm256_maddubs_epi16(qa, h0));
                sl[i] = _mm256_add_epi16(sl[i], _mm256_maddubs_epi16(qa, l0));
                if (two) {
                    sh[i] = _mm256_add_epi16(sh[i], _mm256_maddubs_epi16(qb, h1));
                    sl[i] = _mm256_add_epi16(sl[i], _mm256_maddubs_epi16(qb, l1));
                }
            }
            if (!two) break;  // SEG = 32: one chunk per segment
        }
        for (int i = 0; i < NR; i++) {
            const __m256i acc = _mm256_add_epi32(_mm256_madd_epi16(sh[i], k128), _mm256_madd_epi16(sl[i], k1));
            fv[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(qi_seg_scale(c, r + i, t, GK)), fv[i]);
        }
    }
    qi_finish_rows(c, y, r, NR, fv);
}

// Weight bytes up to 255 (8-bit codes, LUT codebook entries): 16-bit weights × 16-bit activations
// xi (c->x16) with vpmaddwd, 16 weights per instruction (|pair sum| ≤ 2·255·16383; a 256-column
// segment keeps every int32 lane below 2^27). LUT rows look their codes up in the row's codebook
// bytes first (vpshufb; 2-, 3-bit codebooks repeat to 16 entries, as in the VNNI kernel).
QI256 QIINL __m256i qi_madd_bytes(__m256i acc, const __m128i w, const int16_t *x) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(w), _mm256_loadu_si256((const __m256i *)x)));
}

QI256 QIINL void qi_rows_block_w16(const qlm_qctx *c, float *y, const int r, const int NR, const int BITS, const int SEG,
                                   const int GK, const int LUT) {
    const qlm_qmatrix *m = c->m;
    const int ng = c->n_groups, SBB = BITS * 8, cp = c->cols_pad;
    const size_t rb = c->rb;
    const uint8_t *cp0 = m->codes + (size_t)r * rb;
    const int16_t *x16 = c->x16;
    const size_t pf = qlm_pf_distance((size_t)NR * rb);
    if (NR == 2 && (r & 3) == 0) qlm_pf_row_meta(m, r + QLM_META_AHEAD, ng);
    __m256 fv[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256i tb[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    if (LUT) {
        for (int i = 0; i < NR; i++) {
            uint8_t t16[16];
            qlm_lut_row_bytes(m, r + i, t16);
            tb[i] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)t16));
        }
    }
    for (int s0 = 0, t = 0; s0 < cp; s0 += SEG, t++) {
        const int n = cp - s0 < SEG ? cp - s0 : SEG;
        __m256i acc[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        {
            const char *p = (const char *)cp0 + pf + (size_t)(s0 / 64) * (size_t)(NR * SBB);
            for (int o = 0; o < NR * SBB * ((n + 63) / 64); o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
        }
        if (LUT) {
            for (int j = s0; j < s0 + n; j += 64) {
                for (int i = 0; i < NR; i++) {
                    __m256i qa, qb;
                    qi_decode(cp0 + (size_t)i * rb, c->nsb, j / 64, BITS, &qa, &qb);
                    qa = _mm256_shuffle_epi8(tb[i], qa);
                    qb = _mm256_shuffle_epi8(tb[i], qb);
                    acc[i] = qi_madd_bytes(acc[i], _mm256_castsi256_si128(qa), x16 + j);
                    acc[i] = qi_madd_bytes(acc[i], _mm256_extracti128_si256(qa, 1), x16 + j + 16);
                    acc[i] = qi_madd_bytes(acc[i], _mm256_castsi256_si128(qb), x16 + j + 32);
                    acc[i] = qi_madd_bytes(acc[i], _mm256_extracti128_si256(qb, 1), x16 + j + 48);
                }
            }
        } else {  // 8-bit: byte j of the row is w[j]
            for (int j = s0; j < s0 + n; j += 16)
                for (int i = 0; i < NR; i++)
                    acc[i] = qi_madd_bytes(acc[i], _mm_loadu_si128((const __m128i *)(cp0 + (size_t)i * rb + (size_t)j)), x16 + j);
        }
        for (int i = 0; i < NR; i++) fv[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), _mm256_set1_ps(qi_seg_scale(c, r + i, t, GK)), fv[i]);
    }
    qi_finish_rows(c, y, r, NR, fv);
}

QI256 QIINL void qi_rows(const qlm_qctx *c, float *y, int r0, int r1, const int BITS, const int SEG, const int GK) {
    int r = r0;
    if (BITS == 8) {
        for (; r + 2 <= r1; r += 2) qi_rows_block_w16(c, y, r, 2, 8, SEG, GK, 0);
        for (; r < r1; r++) qi_rows_block_w16(c, y, r, 1, 8, SEG, GK, 0);
        return;
    }
    for (; r + 2 <= r1; r += 2) qi_rows_block(c, y, r, 2, BITS, SEG, GK);
    for (; r < r1; r++) qi_rows_block(c, y, r, 1, BITS, SEG, GK);
}

// LUT rows: one group per row, segments of qlm_act_i16_segment (256 columns).
QI256 QIINL void qi_lut_rows(const qlm_qctx *c, float *y, int r0, int r1, const int BITS) {
    int r = r0;
    for (; r + 2 <= r1; r += 2) qi_rows_block_w16(c, y, r, 2, BITS, 256, 0, 1);
    for (; r < r1; r++) qi_rows_block_w16(c, y, r, 1, BITS, 256, 0, 1);
}
QI256 static void qi_l2(const qlm_qctx *c, float *y, int r0, int r1) { qi_lut_rows(c, y, r0, r1, 2); }
QI256 static void qi_l3(const qlm_qctx *c, float *y, int r0, int r1) { qi_lut_rows(c, y, r0, r1, 3); }
QI256 static void qi_l4(const qlm_qctx *c, float *y, int r0, int r1) { qi_lut_rows(c, y, r0, r1, 4); }

// row (one group) / g32 / g64 / g128 / groups of 128·k / groups of 64·k (k odd).
#define QI_DEF(B)                                                                                                     \
    QI256 static void qi_b##B##_row(const qlm_qctx *c, float *y, int r0, int r1) { qi_rows(c, y, r0, r1, B, 128, 0); }  \
    QI256 static void qi_b##B##_g32(const qlm_qctx *c, float *y, int r0, int r1) { qi_rows(c, y, r0, r1, B, 32, 1); }   \
    QI256 static void qi_b##B##_g64(const qlm_qctx *c, float *y, int r0, int r1) { qi_rows(c, y, r0, r1, B, 64, 1); }   \
    QI256 static void qi_b##B##_g128(const qlm_qctx *c, float *y, int r0, int r1) { qi_rows(c, y, r0, r1, B, 128, 1); } \
    QI256 static void qi_b##B##_g128k(const qlm_qctx *c, float *y, int r0, int r1) {                                  \
        qi_rows(c, y, r0, r1, B, 128, c->m->group_size / 128);                                                        \
    }                                                                                                                 \
    QI256 static void qi_b##B##_g64k(const qlm_qctx *c, float *y, int r0, int r1) {                                   \
        qi_rows(c, y, r0, r1, B, 64, c->m->group_size / 64);                                                          \
    }
QI_DEF(2)
QI_DEF(3)
QI_DEF(4)
QI_DEF(8)

qlm_qrows_fn qlm_qrows_pick_avx2i(const qlm_qmatrix *m) {
    if (!qlm_cpu_has_avx2_int() || !m->scales || !m->zeros) return NULL;
    if (m->format == QLM_FMT_LUT) {
        if (!m->lut || qlm_act_i16_segment(m) != 256) return NULL;
        return m->bits == 2 ? qi_l2 : m->bits == 3 ? qi_l3 : m->bits == 4 ? qi_l4 : NULL;
    }
    if (m->format != QLM_FMT_AFFINE) return NULL;
    const int ng = qlm_n_groups(m), g = m->group_size;
    int kind;  // as qlm_qrows_pick_vnni (the activation segments must be the same: qlm_act_i16_segment)
    if (ng <= 1) kind = 0;
    else if (g == 32) kind = 1;
    else if (g == 64) kind = 2;
    else if (g == 128) kind = 3;
    else if (g % 128 == 0) kind = 4;
    else if (g % 64 == 0) kind = 5;
    else return NULL;
#define QI_PICK(B)                                                                                                 \
    case B: {                                                                                                      \
        static const qlm_qrows_fn fns[6] = {qi_b##B##_row, qi_b##B##_g32, qi_b##B##_g64, qi_b##B##_g128, qi_b##B##_g128k, \
                                            qi_b##B##_g64k};                                                       \
        return fns[kind];                                                                                          \
    }
    switch (m->bits) {
        QI_PICK(2)
        QI_PICK(3)
        QI_PICK(4)
        QI_PICK(8)
    default: return NULL;
    }
#undef QI_PICK
}

// AVX2 twin of the portable activation quantiser in qlm_quant.c (same arithmetic, same bytes).
QI256 void qlm_act_i16_prepare_avx2(const float *xs, int cols_pad, int seg, int8_t *xh, int8_t *xl, float *d, int *isum) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 inf = _mm256_set1_ps(__builtin_inff());
    const int seg_full = seg;
    for (int s0 = 0, k = 0; s0 < cols_pad; s0 += seg_full, k++) {
        seg = cols_pad - s0 < seg_full ? cols_pad - s0 : seg_full;
        __m256 mx = _mm256_setzero_ps();
        int bad = 0;
        for (int j = 0; j < seg; j += 8) {
            const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xs + s0 + j), absmask);
            bad |= _mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_NLT_UQ));
            mx = _mm256_max_ps(mx, a);
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float m = _mm_cvtss_f32(m4);
        if (bad || m == 0.0f) {
            d[k] = bad ? __builtin_nanf("") : 0.0f;
            memset(xh + s0, 0, (size_t)seg);
            memset(xl + s0, 0, (size_t)seg);
            isum[k] = 0;
            continue;
        }
        const float inv = 16383.0f / m;
        d[k] = m / 16383.0f;
        __m256i tot = _mm256_setzero_si256();
        for (int j = 0; j < seg; j += 8) {
            const __m256i xi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xs + s0 + j), _mm256_set1_ps(inv)));
            tot = _mm256_add_epi32(tot, xi);
            int32_t hv[8], lv[8];
            _mm256_storeu_si256((__m256i *)hv, _mm256_srai_epi32(xi, 7));
            _mm256_storeu_si256((__m256i *)lv, _mm256_and_si256(xi, _mm256_set1_epi32(127)));
            for (int e = 0; e < 8; e++) {
                xh[s0 + j + e] = (int8_t)hv[e];
                xl[s0 + j + e] = (int8_t)lv[e];
            }
        }
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(tot), _mm256_extracti128_si256(tot, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1));
        isum[k] = _mm_cvtsi128_si32(t4);
    }
}

#endif
