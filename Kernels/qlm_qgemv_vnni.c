// Affine and LUT packed GEMV with 16-bit integer activations and VNNI dot products (AVX-512 F/BW/VL + VNNI, GFNI).
//
// Why: with f32 activations every 16 weights cost one table permute and one FMA, so below 4 bits
// the f32 kernels (qlm_qgemv_x86.c) are bound by vector ops, not by memory. Here the codes stay
// bytes and vpdpbusd multiplies 64 of them per instruction.
//
// Activations (qlm_act_i16_prepare): x (stored order, padded) is cut into segments of 128 values
// (one group per row, or groups of 128·k), 64 (other groups of 64·k) or 32 (groups of 32); each segment gets d = max|x| / 16383 and xi = round(x / d) in
// [-16383, 16383], split into two signed bytes xi = 128·xh + xl (xh in [-128, 127], xl in [0, 127]).
// That is 15 bits per value relative to its segment's largest one, so the product differs from
// the f32 one by far less than the 0.1% perplexity budget (see README: measured through the decode
// path). Per superblock and row:
//   acc = dpbusd(0, q, xh); acc <<= 7; acc = dpbusd(acc, q, xl)   (exact: |acc| < 2^25)
//   y  += cvt(acc) · (s_g · d_seg)
// and per row, once: y -= Σ_g s_g · z_g · Σ_{j in g} x̂_j (the zero points, from per-group sums of
// the quantized activations). So the result equals the f32 reference applied to x̂ = d·xi, up to
// summation order; tests check exactly that (qlm_qgemv_act_i16_roundtrip gives x̂).
//
// Code decode per 64-weight superblock into 64 byte lanes, lane j = w[j] (layouts in qlm_quant.h):
//   2-bit: broadcast the 16 bytes to the four 128-bit lanes, lane k takes bits 2k..2k+1 of each
//          byte (one vgf2p8affineqb, see qv_bitfield);
//   4-bit: broadcast the 32 bytes to both halves, the low half takes the low nibbles, the high
//          half the high ones (likewise);
//   3-bit: whole octets of superblocks (code layout 3) eight at a time from three 64-byte loads
//          (qv_octet); a row's last nsb mod 8 superblocks: the 2-bit plane as above, then + 4 under
//          the high-bit plane, which is stored as the 64-bit lane mask itself (one kmovq);
//   8-bit: the bytes as they are.
// LUT matrices then map the codes to their codebook bytes with one vpshufb (w = s_r·(lut[q] − z_r)
// is affine in the byte lut[q], so everything above applies with one group per row).
// 4-bit with segments of 128 or more (one group per row, groups of 128·k, LUT) instead decodes a
// pair of superblocks from one 64-byte load (see qv_segment_dot).
// Tried and dropped (2026-11-23): a load-time execution copy of 3-bit codes as one 192-bit stream per
// superblock (w[j] at bits 3j..3j+2), decoded with vpermb (bytes 3q..3q+7 to qword lane q) +
// vpmultishiftqb (8 bits from 3·(j mod 8)) + a mask, or for LUT-3 a vpermb on the codebook repeated
// every 8 bytes: no mask register (with a constant mask, layout 2's affine3 g128 ceiling rose 39 -> 45
// Gw/s; through a GPR, no change). Ceiling affine3 g128 ~39 -> ~44 Gw/s, LUT-3 ~37.6 -> ~43, results
// bit-identical; but in a decode step the kernel's CPU time did not move beyond noise (perf record
// over `qlm bench DIR -p 1 -n 256 -r 1 --threads 1`, 4 runs each, RTN w3 g128: 2.02-2.37 s without,
// 1.93-2.21 s with, means 2.16 / 2.12; LUT-3 2.0-2.18 / 2.1-2.26; this VM has no cycle counter, perf
// samples cpu-clock), while the copy cost +39 MB RSS (+26%) and doubled load time. Presumably the
// ALU work it saves overlaps with the stalls of the weight stream. (A vpexpandb load instead of
// the vpermb is microcoded on Zen 5: 12 Gw/s.)
#if defined(__x86_64__) || defined(__i386__)
#include "qlm_quant_impl.h"
#include "qlm_x86_common.h"

#include <immintrin.h>
#include <string.h>

#define QV512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,gfni,avx2,fma,f16c")))
#define QVINL __attribute__((always_inline)) static inline

// (VBMI too: the LUT-4 kernel's vpermb. Every CPU with VNNI + GFNI has it.)
int qlm_cpu_has_vnni_gfni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
           __builtin_cpu_supports("gfni") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

// G == 32: lanes 0..7 take entry 2t, lanes 8..15 entry 2t + 1 of a 16-entry scale vector.
static int32_t qv_pair[8][16];
// Lanes 4s..4s + 3 take entry 4q + s of a 16-entry per-superblock vector (quad q of a chunk).
static int32_t qv_quad[4][16];

// Bit-field extraction per byte as a GF(2) affine map (vgf2p8affineqb: one op instead of a shift
// and a mask, ~4-11% faster kernels one superblock at a time). It shares a port with vpdpbusd, so
// the 4-bit pair and 2-bit quad kernels, which unpack several superblocks per load, use shifts and
// masks instead. (A 3-bit pair kernel of that kind, vpsrlvw + mask on P0 | P1 broadcast to lane
// pairs and the high-bit masks spliced from the halves of M0 and M1, was slower: affine3 g128
// 39.4 -> 33 Gw/s, LUT-3 37 -> 31. So was a 3-bit quad kernel on the stored layout, run as the
// 2-bit one with activations quad-swizzled: two vpermt2q gather the four planes into the 128-bit
// lanes and each superblock's high-bit mask into its lane's qwords, fields by shift + mask, the +4
// masks by vpshufbitqmb (or vpshufb + vptestmb): interleaved ceiling runs affine3 g128 30-36 ->
// 25 (22) Gw/s, LUT-3 29-31 -> 22 (21): 4.25 non-dot ops per superblock instead of ~2.)
// The 8x8 bit matrix of each qword lane picks `width` bits from `shift` up. 4-bit: the low 256 bits
// take the low nibbles, the high 256 bits the high ones; 2-bit: 128-bit lane k takes bits 2k, 2k+1.
static uint64_t qv_gf4[8], qv_gf2[8];
static uint64_t qv_bitfield(int shift, int width) {  // output bit i = input bit i + shift (i < width)
    uint64_t a = 0;
    for (int i = 0; i < width; i++) a |= (uint64_t)(1u << (i + shift)) << (8 * (7 - i));
    return a;
}

static void qv_tables_init(void) {
    for (int l = 0; l < 8; l++) {
        qv_gf4[l] = qv_bitfield(l < 4 ? 0 : 4, 4);
        qv_gf2[l] = qv_bitfield(2 * (l / 2), 2);
    }
    for (int t = 0; t < 8; t++)
        for (int l = 0; l < 16; l++) qv_pair[t][l] = 2 * t + (l >= 8);
    for (int q = 0; q < 4; q++)
        for (int l = 0; l < 16; l++) qv_quad[q][l] = 4 * q + l / 4;
}


// 64 codes of one superblock as byte lanes (lane j = w[j]).
QV512 QVINL __m512i qv_decode(const uint8_t *p, const int BITS) {
    if (BITS == 8) return _mm512_loadu_si512((const void *)p);
    if (BITS == 4) {
        const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
        return _mm512_gf2p8affine_epi64_epi8(v, _mm512_loadu_si512((const void *)qv_gf4), 0);
    }
    const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
    const __m512i lo = _mm512_gf2p8affine_epi64_epi8(v, _mm512_loadu_si512((const void *)qv_gf2), 0);
    if (BITS == 2) return lo;
    return _mm512_mask_add_epi8(lo, _load_mask64((__mmask64 *)(void *)(p + 16)), lo, _mm512_set1_epi8(4));
}


// The eight superblocks of a 3-bit octet (code layout 3) as byte lanes, c[s] lane j = w[j] of superblock s.
// 16-bit shifts and masks (17 ops; the junk a 16-bit shift brings into a byte is masked off, and the
// straddling codes 2 and 5 merge their two parts with one vpternlogd: (a & 3) | b, b = the high bit
// already at bit 2 and masked). The same with vgf2p8affineqb for each field (12 ops, 8 of them on the
// port vpdpbusd needs): per-core ceiling affine3 g128 49 Gw/s against 51 here.
QV512 QVINL void qv_octet(const uint8_t *p, __m512i c[8]) {
    const __m512i v0 = _mm512_loadu_si512((const void *)p), v1 = _mm512_loadu_si512((const void *)(p + 64)),
                  v2 = _mm512_loadu_si512((const void *)(p + 128));
    const __m512i m7 = _mm512_set1_epi8(7), m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(4);
    c[0] = _mm512_and_si512(v0, m7);
    c[1] = _mm512_and_si512(_mm512_srli_epi16(v0, 3), m7);
    c[2] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v0, 6), m3, _mm512_and_si512(_mm512_srli_epi16(v2, 4), m4), 0xEA);
    c[3] = _mm512_and_si512(v1, m7);
    c[4] = _mm512_and_si512(_mm512_srli_epi16(v1, 3), m7);
    c[5] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(v1, 6), m3, _mm512_and_si512(_mm512_srli_epi16(v2, 5), m4), 0xEA);
    c[6] = _mm512_and_si512(v2, m7);
    c[7] = _mm512_and_si512(_mm512_srli_epi16(v2, 3), m7);
}

// LUT-3 octet: the codebook entries of the eight superblocks. vpermb reads index bits 0..5 and the row's
// codebook is repeated every 8 bytes in tb, so the bits above a code need no mask: codes 0, 3, 6 index
// with the loaded vector itself, 1, 4, 7 after one shift, 2 and 5 after the high bit is merged in at
// bit 2 (vpternlogd, c ? b : a with c = the bit-2 mask). 17 ops per 512 weights against 25 for qv_octet
// + vpshufb; per-core ceiling (6 alternating runs each, this VM's runs are bimodal) best 54.4 against
// 47.7 Gw/s, medians 47 / 47.
QV512 QVINL void qv_octet_lut(const uint8_t *p, const __m512i tb, __m512i c[8]) {
    const __m512i v0 = _mm512_loadu_si512((const void *)p), v1 = _mm512_loadu_si512((const void *)(p + 64)),
                  v2 = _mm512_loadu_si512((const void *)(p + 128));
    const __m512i m4 = _mm512_set1_epi8(4);
    c[0] = _mm512_permutexvar_epi8(v0, tb);
    c[1] = _mm512_permutexvar_epi8(_mm512_srli_epi16(v0, 3), tb);
    c[2] = _mm512_permutexvar_epi8(_mm512_ternarylogic_epi32(_mm512_srli_epi16(v0, 6), _mm512_srli_epi16(v2, 4), m4, 0xD8), tb);
    c[3] = _mm512_permutexvar_epi8(v1, tb);
    c[4] = _mm512_permutexvar_epi8(_mm512_srli_epi16(v1, 3), tb);
    c[5] = _mm512_permutexvar_epi8(_mm512_ternarylogic_epi32(_mm512_srli_epi16(v1, 6), _mm512_srli_epi16(v2, 5), m4, 0xD8), tb);
    c[6] = _mm512_permutexvar_epi8(v2, tb);
    c[7] = _mm512_permutexvar_epi8(_mm512_srli_epi16(v2, 3), tb);
}

// One superblock's 64 weight bytes: the codes, or for LUT matrices the codebook entries they
// select. tb: the row's codebook in each 128-bit lane (vpshufb; tried vpermb on 64-byte tables,
// which needs no masking of the codes: 1.6x slower on Zen 5; and for LUT-3 a vpsrlvw + vpermb on
// entries 0..3 + a masked vpermb on entries 4..7 instead of the unpack, +4 and vpshufb: 37.1 -> 35.5
// Gw/s. The 4-bit pair kernel's vpermb gains because it replaces the unpack as well).
QV512 QVINL __m512i qv_weights(const uint8_t *p, const int BITS, const int LUT, const __m512i tb) {
    const __m512i q = qv_decode(p, BITS);
    return LUT ? _mm512_shuffle_epi8(tb, q) : q;
}

// One row's integer dot over a segment of N (1..4) superblocks starting at superblock b (N is
// SPS for whole segments, fewer for the last one of a row). Weight bytes up to 255 (8-bit, LUT
// entries) keep |acc| < 2^31: 16 products of 255·128 per lane, shifted by 7, plus 16 of 255·127.
QV512 QVINL __m512i qv_segment_dot(const uint8_t *cp, int b, const __m512i *vh, const __m512i *vl, const int BITS,
                                   const int LUT, const __m512i tb, const int N) {
    const int SBB = BITS * 8;
    __m512i q[4];
    __m512i acc = _mm512_setzero_si512();
    if (BITS == 4 && N >= 2) {
        // Whole pairs of superblocks as one 64-byte load: the low nibbles of both (lanes 0..31 from the
        // first, 32..63 from the second), then the high nibbles. The activations of each pair were
        // swizzled to match (qlm_act_i16_swizzle, k = 2). Affine: a mask (and a shift); LUT: one vpermb
        // on the codebook repeated every 16 bytes (vpermb reads index bits 0..5, so the other nibble's
        // bits 4..5 select the same entry: no masking). Per-core ceiling (Kernels/bench/run.sh
        // ceiling) against a broadcast load + vgf2p8affineqb (+ vpshufb) per superblock: affine4
        // g128 48.5 -> 56.1 Gw/s, LUT-4 45 -> 56.
        int u = 0;
        for (; u + 1 < N; u += 2) {
            const __m512i v = _mm512_loadu_si512((const void *)(cp + (size_t)(b + u) * (size_t)SBB));
            if (LUT) {
                q[u] = _mm512_permutexvar_epi8(v, tb);
                q[u + 1] = _mm512_permutexvar_epi8(_mm512_srli_epi16(v, 4), tb);
            } else {  // (two vgf2p8affineqb instead: 50 Gw/s; they share a port with vpdpbusd)
                q[u] = _mm512_and_si512(v, _mm512_set1_epi8(15));
                q[u + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(15));
            }
        }
        if (u < N) q[u] = qv_weights(cp + (size_t)(b + u) * (size_t)SBB, BITS, LUT, tb);  // a row's odd last one
        for (u = 0; u < N; u++) acc = _mm512_dpbusd_epi32(acc, q[u], vh[u]);
        acc = _mm512_slli_epi32(acc, 7);
        for (u = 0; u < N; u++) acc = _mm512_dpbusd_epi32(acc, q[u], vl[u]);
        return acc;
    }
    if (BITS == 2 && LUT && N == 4) {
        // LUT-2 rows: a whole segment (256 columns) is one quad of superblocks, read with one 64-byte
        // load; field u (a 16-bit shift) holds columns 16u..16u+15 of each superblock in its 128-bit
        // lane, the activations of each quad were swizzled to match (qlm_act_i16_swizzle, k = 4), and
        // vpermb on the codebook repeated every 4 bytes needs no mask. Per-core ceiling against a
        // broadcast + vgf2p8affineqb + vpshufb per superblock: 46-47 -> 57 Gw/s. (The earlier quad
        // try for LUT-2 went through qv_q2's per-superblock scale vectors: no gain.)
        const __m512i v = _mm512_loadu_si512((const void *)(cp + (size_t)b * 16));
        for (int u = 0; u < 4; u++) q[u] = _mm512_permutexvar_epi8(u ? _mm512_srli_epi16(v, 2 * u) : v, tb);
        for (int u = 0; u < N; u++) acc = _mm512_dpbusd_epi32(acc, q[u], vh[u]);
        acc = _mm512_slli_epi32(acc, 7);
        for (int u = 0; u < N; u++) acc = _mm512_dpbusd_epi32(acc, q[u], vl[u]);
        return acc;
    }
    for (int u = 0; u < N; u++) {
        q[u] = qv_weights(cp + (size_t)(b + u) * (size_t)SBB, BITS, LUT, tb);
        acc = _mm512_dpbusd_epi32(acc, q[u], vh[u]);
    }
    acc = _mm512_slli_epi32(acc, 7);
    for (int u = 0; u < N; u++) acc = _mm512_dpbusd_epi32(acc, q[u], vl[u]);
    return acc;
}

// acc − the zero points of row r (Σ_g s_g · z_g · gsum_g), lane-wise: one horizontal sum then serves both.
QV512 QVINL __m512 qv_sub_zero_terms(const qlm_qctx *c, const int r, __m512 acc) {
    const qlm_qmatrix *m = c->m;
    const int ng = c->n_groups;
    const uint16_t *sc = m->scales + (size_t)r * (size_t)ng;
    const uint16_t *zc = m->zeros + (size_t)r * (size_t)ng;
    for (int g = 0; g < ng; g += 16) {
        const int n = ng - g < 16 ? ng - g : 16;
        const __mmask16 mk = (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u));
        const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, sc + g));
        const __m512 z = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, zc + g));
        acc = _mm512_fnmadd_ps(_mm512_mul_ps(s, z), _mm512_maskz_loadu_ps(mk, c->gsum + g), acc);
    }
    return acc;
}

// Row results of a block: y[r + i] = Σ lanes of fv[i] − zero points. For 4 rows one transposing
// reduction (7 shuffles, 7 adds) replaces four horizontal sums: with the model's 576-column rows
// (9 superblocks) the per-row tail is a large share of a row's work.
QV512 QVINL void qv_store_rows(const qlm_qctx *c, float *y, const int r, const int NR, __m512 *fv) {
    for (int i = 0; i < NR; i++) fv[i] = qv_sub_zero_terms(c, r + i, fv[i]);
    if (NR == 4) {
        // 128-bit lanes: ab = [a0 + a2, a1 + a3, b0 + b2, b1 + b3], likewise cd; then [A, B, C, D] (4 floats each).
        const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(fv[0], fv[1], 0x44), _mm512_shuffle_f32x4(fv[0], fv[1], 0xEE));
        const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(fv[2], fv[3], 0x44), _mm512_shuffle_f32x4(fv[2], fv[3], 0xEE));
        const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
        const __m512 h = _mm512_add_ps(q, _mm512_permute_ps(q, 0xB1));        // (x0 + x1, x0 + x1, x2 + x3, x2 + x3)
        const __m512 t = _mm512_add_ps(h, _mm512_permute_ps(h, 0x4E));        // every float: its lane's total
        _mm_storeu_ps(y + r, _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), t)));
    } else {
        for (int i = 0; i < NR; i++) y[r + i] = qlm_hsum512(fv[i]);
    }
}

// SPS: superblocks per activation segment (4: segments of 256 columns, LUT rows; 2: segments of
// 128, one group per row or groups of 128·k; 1: segments of 64 or, for groups of 32, of 32).
// GK: 0 = one group per row; -1 = groups of 32; k > 0 = k segments per group.
// LUT: the LUT format (GK = 0: its per-row scale and zero play the one group's).
// Segment scales s_g·d are built per chunk of 16 segments (8 superblocks for GK = -1) for NR rows.
QV512 QVINL void qv_rows_block(const qlm_qctx *c, float *y, const int r, const int NR, const int BITS, const int GK,
                               const int SPS, const int LUT) {
    const qlm_qmatrix *m = c->m;
    const int nsb = c->nsb, ng = c->n_groups, SBB = BITS * 8;
    const int nseg = (nsb + SPS - 1) / SPS;
    const size_t rb = c->rb;
    const uint8_t *cp = m->codes + (size_t)r * rb;
    const int8_t *xh = c->xh, *xl = c->xl;
    const float *xd = c->xd;
    const size_t pf = qlm_pf_distance((size_t)NR * rb);
    if (NR == 4) qlm_pf_row_meta(m, r + QLM_META_AHEAD, ng);
    __m512 fv[4], sdr[4];
    // Segment scales, written as whole vectors, read one float at a time (broadcast) right after. 64-byte
    // aligned: a 64-byte store that straddles two cache lines cannot forward to those loads, which
    // then wait for it to retire. Unaligned, whether it straddled depended on where the stack of the
    // calling thread happened to sit: per-core ceiling at 1536x576 under `setarch -R` with 8 stack
    // offsets, LUT-3 24-42 Gw/s -> 40-42, affine3 g128 35-43.7 -> 44.2-45.1.
    float sd[4][16] __attribute__((aligned(64)));
    __m512i tb[4];
    for (int i = 0; i < NR; i++) {
        fv[i] = _mm512_setzero_ps();
        tb[i] = _mm512_setzero_si512();
        if (LUT) {  // the codebook in every 128-bit lane; 2-, 3-bit codebooks repeat (never selected)
            const uint8_t *l = m->lut + ((size_t)(r + i) << BITS);
            if (BITS == 4) {
                tb[i] = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)l));
            } else if (BITS == 3) {
                uint64_t v;
                memcpy(&v, l, 8);
                tb[i] = _mm512_set1_epi64((long long)v);
            } else {
                uint32_t v;
                memcpy(&v, l, 4);
                tb[i] = _mm512_set1_epi32((int)v);
            }
        }
    }
    const int CH = GK == -1 ? 8 : 16;
    for (int t0 = 0; t0 < nseg; t0 += CH) {
        const int t1 = t0 + CH < nseg ? t0 + CH : nseg;
        // Scales of this chunk: sd[i][u] = s_{g(t0 + u)} · d_{t0 + u} (GK = -1: sdr[i] lane u = s_{2·t0 + u} · d32_{2·t0 + u}).
        for (int i = 0; i < NR; i++) {
            const uint16_t *sc = m->scales + (size_t)(r + i) * (size_t)ng;
            if (GK == 0) {
                const __mmask16 mk = (__mmask16)((1u << (t1 - t0)) - 1u);
                const __m512 s = _mm512_set1_ps(_cvtsh_ss(sc[0]));
                _mm512_storeu_ps(sd[i], _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mk, xd + t0)));
            } else if (GK == -1) {
                const int g0 = 2 * t0, n = ng - g0 < 16 ? ng - g0 : 16;  // groups past the row's end: scale 0
                const __mmask16 mk = (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u));
                const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, sc + g0));
                sdr[i] = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mk, xd + g0));
            } else if (GK == 1) {  // one segment per group: segment t's scale is group t's (no seggroup
                                   // load and permute: 576-column rows, 4-bit ceiling 46.7 -> 48.6, 3-bit 43.2 -> 44.5 Gw/s)
                const __mmask16 mb = (__mmask16)((1u << (t1 - t0)) - 1u);
                const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mb, sc + t0));
                _mm512_storeu_ps(sd[i], _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mb, xd + t0)));
            } else {
                const int g0 = t0 / GK, n = ng - g0 < 16 ? ng - g0 : 16;
                const __mmask16 mk = (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u));
                const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, sc + g0));
                const __mmask16 mb = (__mmask16)((1u << (t1 - t0)) - 1u);
                const __m512i gi = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(mb, c->seggroup + t0), _mm512_set1_epi32(g0));
                _mm512_storeu_ps(sd[i], _mm512_mul_ps(_mm512_permutexvar_ps(gi, s), _mm512_maskz_loadu_ps(mb, xd + t0)));
            }
        }
        for (int t = t0; t < t1; t++) {
            const int b = t * SPS, n = nsb - b < SPS ? nsb - b : SPS;  // the row's last segment may be short
            if (BITS == 3 && qlm_sb3_in_octet(b, nsb)) {
                // A whole octet: 8 / SPS segments (chunks and octets both start at multiples of 8 superblocks).
                // Affine3 g128 per-core ceiling 40.6 -> 51 Gw/s against the single-superblock decode.
                const int NS = 8 / SPS;
                if (NR == 4) {
                    const char *p = (const char *)cp + pf + (size_t)b * (size_t)(4 * SBB);
                    for (int o = 0; o < 4 * SBB * 8; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
                }
                for (int i = 0; i < NR; i++) {
                    __m512i cw[8];
                    if (LUT) qv_octet_lut(cp + (size_t)i * rb + (size_t)b * 24, tb[i], cw);
                    else qv_octet(cp + (size_t)i * rb + (size_t)b * 24, cw);
                    for (int sg = 0; sg < NS; sg++) {
                        const int b1 = b + sg * SPS;
                        __m512i acc = _mm512_setzero_si512();
                        for (int u = 0; u < SPS; u++)
                            acc = _mm512_dpbusd_epi32(acc, cw[sg * SPS + u], _mm512_loadu_si512((const void *)(xh + (size_t)(b1 + u) * 64)));
                        acc = _mm512_slli_epi32(acc, 7);
                        for (int u = 0; u < SPS; u++)
                            acc = _mm512_dpbusd_epi32(acc, cw[sg * SPS + u], _mm512_loadu_si512((const void *)(xl + (size_t)(b1 + u) * 64)));
                        const int ts = t + sg - t0;
                        const __m512 sv = GK == -1 ? _mm512_permutexvar_ps(_mm512_loadu_si512((const void *)qv_pair[ts]), sdr[i])
                                                   : _mm512_set1_ps(sd[i][ts]);
                        fv[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), sv, fv[i]);
                    }
                }
                t += NS - 1;
                continue;
            }
            if (NR == 4) {
                const char *p = (const char *)cp + pf + (size_t)b * (size_t)(4 * SBB);
                for (int o = 0; o < 4 * SBB * SPS; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
            }
            __m512i vh[4], vl[4];
            for (int u = 0; u < SPS; u++) {
                vh[u] = u < n ? _mm512_loadu_si512((const void *)(xh + (size_t)(b + u) * 64)) : _mm512_setzero_si512();
                vl[u] = u < n ? _mm512_loadu_si512((const void *)(xl + (size_t)(b + u) * 64)) : _mm512_setzero_si512();
            }
            for (int i = 0; i < NR; i++) {
                const uint8_t *row = cp + (size_t)i * rb;
                __m512i acc;
                if (n == SPS) acc = qv_segment_dot(row, b, vh, vl, BITS, LUT, tb[i], SPS);  // unrolled
                else if (n == 3) acc = qv_segment_dot(row, b, vh, vl, BITS, LUT, tb[i], 3);
                else if (n == 2) acc = qv_segment_dot(row, b, vh, vl, BITS, LUT, tb[i], 2);
                else acc = qv_segment_dot(row, b, vh, vl, BITS, LUT, tb[i], 1);
                const __m512 sv = GK == -1 ? _mm512_permutexvar_ps(_mm512_loadu_si512((const void *)qv_pair[t - t0]), sdr[i])
                                           : _mm512_set1_ps(sd[i][t - t0]);
                fv[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), sv, fv[i]);
            }
        }
    }
    qv_store_rows(c, y, r, NR, fv);
}

QV512 QVINL void qv_rows(const qlm_qctx *c, float *y, int r0, int r1, const int BITS, const int GK, const int SPS,
                         const int LUT) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) qv_rows_block(c, y, r, 4, BITS, GK, SPS, LUT);
    for (; r < r1; r++) qv_rows_block(c, y, r, 1, BITS, GK, SPS, LUT);
}

// 2-bit affine with groups of 64·k or one group per row: four superblocks from one 64-byte load.
// 128-bit lane s of the load is superblock s's 16 code bytes, so field u (bits 2u, 2u + 1 of each
// byte, a shift and a mask) gives, in lane s, columns 16u..16u + 15 of superblock s; the
// activations of each quad were swizzled to match (qlm_act_i16_swizzle, k = 4; a row's last 1-3
// superblocks go one at a time as in qv_segment_dot: a padded quad costs as much as a whole one).
// Every dword lane of the accumulator then belongs to one superblock, so one convert and one FMA
// with a vector of per-superblock scales s_g·d_seg serve all four
// (the one-superblock-per-segment kernel spends a convert, an FMA and a scale per 64 weights).
// Per-core ceiling (Kernels/bench/run.sh ceiling): affine2 g64 42.5 -> 48 Gw/s, g128 unchanged
// (~48; fields 1 and 2 by vgf2p8affineqb instead: no change); decode of RTN w2 g64 at 1 thread vs
// w4 g128, median of 4 interleaved rounds: 0.97 -> 1.02. Tried for LUT-2 (vpermb on the codebook
// repeated every 4 bytes instead of the mask) and dropped: ceiling ~46 Gw/s both ways, decode 3%
// slower, so LUT-2 keeps qv_l2. The tail prefetch matters: without it, decode was 10% slower.
QV512 QVINL __m512i qv_q2_field(const __m512i v, const int u) {
    return _mm512_and_si512(u ? _mm512_srli_epi16(v, 2 * u) : v, _mm512_set1_epi8(3));
}

// G64: groups of 64 (superblock b is group b and activation segment b: no gather, no permute; per-core
// ceiling at 1536x576, the model's gate/up shape: affine2 g64 42.5 -> 50 Gw/s).
QV512 QVINL void qv_q2_block(const qlm_qctx *c, float *y, const int r, const int NR, const int G64) {
    const qlm_qmatrix *m = c->m;
    const int nsb = c->nsb, ng = c->n_groups;
    const size_t rb = c->rb;
    const uint8_t *cp = m->codes + (size_t)r * rb;
    const int8_t *xh = c->xh, *xl = c->xl;
    const size_t pf = qlm_pf_distance((size_t)NR * rb);
    if (NR == 4) qlm_pf_row_meta(m, r + QLM_META_AHEAD, ng);
    __m512 fv[4], S[4];
    for (int i = 0; i < NR; i++) fv[i] = _mm512_setzero_ps();
    for (int b0 = 0; b0 < nsb; b0 += 16) {
        const int nb = nsb - b0 < 16 ? nsb - b0 : 16;
        const __mmask16 mb = (__mmask16)(nb >= 16 ? 0xFFFFu : ((1u << nb) - 1u));
        // S[i] lane u = s_{g(b0 + u)} · d_{seg(b0 + u)} (0 past the row's end).
        const __m512 dv = G64 ? _mm512_maskz_loadu_ps(mb, c->xd + b0)
                              : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mb, _mm512_maskz_loadu_epi32(mb, c->sbseg + b0), c->xd, 4);
        for (int i = 0; i < NR; i++) {
            const uint16_t *sc = m->scales + (size_t)(r + i) * (size_t)ng;
            if (G64) {
                S[i] = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mb, sc + b0)), dv);
            } else if (ng <= 1) {
                S[i] = _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(sc[0])), dv);
            } else {
                const int g0 = c->sbgroup[b0], n = ng - g0 < 16 ? ng - g0 : 16;
                const __mmask16 mk = (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u));
                const __m512 s = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, sc + g0));
                const __m512i gi = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(mb, c->sbgroup + b0), _mm512_set1_epi32(g0));
                S[i] = _mm512_mul_ps(_mm512_permutexvar_ps(gi, s), dv);
            }
        }
        for (int q = 0; q < nb; q += 4) {
            const int b = b0 + q, n = nsb - b < 4 ? nsb - b : 4;
            if (NR == 4) {  // 4 rows x 4 superblocks (the tail too: it would miss otherwise)
                const char *p = (const char *)cp + pf + (size_t)b * 64;
                for (int o = 0; o < 256; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
            }
            if (n < 4) {  // a row's last 1-3 superblocks, activations in stored order: one at a time
                for (int u = 0; u < n; u++) {
                    const __m512i h = _mm512_loadu_si512((const void *)(xh + (size_t)(b + u) * 64));
                    const __m512i l = _mm512_loadu_si512((const void *)(xl + (size_t)(b + u) * 64));
                    const __m512i si = _mm512_set1_epi32(q + u);
                    for (int i = 0; i < NR; i++) {
                        const __m512i w = qv_decode(cp + (size_t)i * rb + (size_t)(b + u) * 16, 2);
                        const __m512i acc = _mm512_dpbusd_epi32(_mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), w, h), 7), w, l);
                        fv[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(si, S[i]), fv[i]);
                    }
                }
                break;
            }
            __m512i vh[4], vl[4];
            for (int u = 0; u < 4; u++) {
                vh[u] = _mm512_loadu_si512((const void *)(xh + (size_t)b * 64 + 64 * u));
                vl[u] = _mm512_loadu_si512((const void *)(xl + (size_t)b * 64 + 64 * u));
            }
            const __m512i qi = _mm512_loadu_si512((const void *)qv_quad[q / 4]);
            for (int i = 0; i < NR; i++) {
                const __m512i v = _mm512_loadu_si512((const void *)(cp + (size_t)i * rb + (size_t)b * 16));
                __m512i w[4], acc = _mm512_setzero_si512();
                for (int u = 0; u < 4; u++) {
                    w[u] = qv_q2_field(v, u);
                    acc = _mm512_dpbusd_epi32(acc, w[u], vh[u]);
                }
                acc = _mm512_slli_epi32(acc, 7);
                for (int u = 0; u < 4; u++) acc = _mm512_dpbusd_epi32(acc, w[u], vl[u]);
                fv[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_permutexvar_ps(qi, S[i]), fv[i]);
            }
        }
    }
    qv_store_rows(c, y, r, NR, fv);
}

QV512 static void qv_q2(const qlm_qctx *c, float *y, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) qv_q2_block(c, y, r, 4, 0);
    for (; r < r1; r++) qv_q2_block(c, y, r, 1, 0);
}
QV512 static void qv_q2_g64(const qlm_qctx *c, float *y, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) qv_q2_block(c, y, r, 4, 1);
    for (; r < r1; r++) qv_q2_block(c, y, r, 1, 1);
}

// row / g32 / g64 / g128 (one segment per group) / groups of 128·k (k segments) / groups of 64·k, k odd.
#define QV_DEF(B)                                                                                                       \
    QV512 static void qv_b##B##_row(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, B, 0, 2, 0); }   \
    QV512 static void qv_b##B##_g32(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, B, -1, 1, 0); }  \
    QV512 static void qv_b##B##_g64(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, B, 1, 1, 0); }   \
    QV512 static void qv_b##B##_g128(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, B, 1, 2, 0); }  \
    QV512 static void qv_b##B##_g128k(const qlm_qctx *c, float *y, int r0, int r1) {                                   \
        qv_rows(c, y, r0, r1, B, c->gchunks / 8, 2, 0);                                                                   \
    }                                                                                                                  \
    QV512 static void qv_b##B##_g64k(const qlm_qctx *c, float *y, int r0, int r1) {                                    \
        qv_rows(c, y, r0, r1, B, c->gchunks / 4, 1, 0);                                                                   \
    }
// 2-bit: groups of 32 here; every other grouping runs the quad kernel qv_q2.
QV512 static void qv_b2_g32(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, 2, -1, 1, 0); }
QV_DEF(3)
QV_DEF(4)
QV_DEF(8)
// LUT rows: segments of 256 columns (one convert + FMA per 256 weights pays for the lookups).
QV512 static void qv_l2(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, 2, 0, 4, 1); }
QV512 static void qv_l3(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, 3, 0, 4, 1); }
QV512 static void qv_l4(const qlm_qctx *c, float *y, int r0, int r1) { qv_rows(c, y, r0, r1, 4, 0, 4, 1); }

qlm_qrows_fn qlm_qrows_pick_vnni(const qlm_qmatrix *m) {
    static int once = 0;
    if (!__atomic_load_n(&once, __ATOMIC_ACQUIRE)) {  // idempotent: racing initialisers write the same bytes
        qv_tables_init();
        __atomic_store_n(&once, 1, __ATOMIC_RELEASE);
    }
    if (!m->scales || !m->zeros) return NULL;
    if (m->format == QLM_FMT_LUT) {
        if (!m->lut) return NULL;
        return m->bits == 2 ? qv_l2 : m->bits == 3 ? qv_l3 : m->bits == 4 ? qv_l4 : NULL;
    }
    if (m->format != QLM_FMT_AFFINE) return NULL;
    const int ng = qlm_n_groups(m), g = m->group_size;
    int kind;  // 0 row, 1 g32, 2 g64, 3 g128, 4 groups of 128·k, 5 groups of 64·k (k odd)
    if (ng <= 1) kind = 0;
    else if (g == 32) kind = 1;
    else if (g == 64) kind = 2;
    else if (g == 128) kind = 3;
    else if (g % 128 == 0) kind = 4;
    else if (g % 64 == 0) kind = 5;
    else return NULL;  // other group sizes keep f32 activations
#define QV_PICK(B)                                                                   \
    case B: {                                                                        \
        static const qlm_qrows_fn fns[6] = {qv_b##B##_row, qv_b##B##_g32, qv_b##B##_g64, \
                                            qv_b##B##_g128, qv_b##B##_g128k, qv_b##B##_g64k}; \
        return fns[kind];                                                            \
    }
    if (m->bits == 2) return kind == 1 ? qv_b2_g32 : kind == 2 ? qv_q2_g64 : qv_q2;
    switch (m->bits) {
        QV_PICK(3)
        QV_PICK(4)
        QV_PICK(8)
    default: return NULL;
    }
#undef QV_PICK
}

// Quads for the kernels qv_q2 and qv_l2; pairs where 4-bit segments span two or more superblocks (qv_segment_dot
// then takes them in pairs).
int qlm_vnni_act_blocks(const qlm_qmatrix *m) {
    const qlm_qrows_fn f = qlm_qrows_pick_vnni(m);
    if (f == qv_q2 || f == qv_q2_g64 || f == qv_l2) return 4;
    return m->bits == 4 && qlm_act_i16_segment(m) >= 128 ? 2 : 1;
}

// AVX-512 twin of the portable activation quantiser in qlm_quant.c (same arithmetic, same bytes).
QV512 void qlm_act_i16_prepare_avx512(const float *xs, int cols_pad, int seg, int8_t *xh, int8_t *xl, float *d,
                                      int *isum) {
    const __m512i signmask = _mm512_set1_epi32(0x7FFFFFFF);
    const __m512 inf = _mm512_set1_ps(__builtin_inff());
    const int seg_full = seg;
    for (int s0 = 0, k = 0; s0 < cols_pad; s0 += seg_full, k++) {
        seg = cols_pad - s0 < seg_full ? cols_pad - s0 : seg_full;  // the last one may be short
        __m512 mx = _mm512_setzero_ps();
        __mmask16 bad = 0;  // NaN or infinite values
        for (int j = 0; j < seg; j += 16) {
            const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(xs + s0 + j)), signmask));
            bad |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ);
            mx = _mm512_max_ps(mx, a);
        }
        const float m = _mm512_reduce_max_ps(mx);
        if (bad || m == 0.0f) {  // no usable scale: zeros, and d = NaN makes the row results NaN
            d[k] = bad ? __builtin_nanf("") : 0.0f;
            memset(xh + s0, 0, (size_t)seg);
            memset(xl + s0, 0, (size_t)seg);
            isum[k] = 0;
            continue;
        }
        const float inv = 16383.0f / m;
        d[k] = m / 16383.0f;
        __m512i tot = _mm512_setzero_si512();
        for (int j = 0; j < seg; j += 16) {
            const __m512i xi = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xs + s0 + j), _mm512_set1_ps(inv)));
            tot = _mm512_add_epi32(tot, xi);
            _mm_storeu_si128((__m128i *)(xh + s0 + j), _mm512_cvtepi32_epi8(_mm512_srai_epi32(xi, 7)));
            _mm_storeu_si128((__m128i *)(xl + s0 + j), _mm512_cvtepi32_epi8(_mm512_and_si512(xi, _mm512_set1_epi32(127))));
        }
        isum[k] = _mm512_reduce_add_epi32(tot);
    }
}

#endif
