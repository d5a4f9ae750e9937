import Foundation
import Testing
import QLMKernels
@testable import QLM

/// Transformer ops against plain Swift references, on every ISA path this CPU has.
@Suite("Transformer ops", .serialized)
final class OpsTests: HoldsKernelState {
    static let isas: [qlm_isa] = [QLM_ISA_SCALAR, QLM_ISA_AVX2, QLM_ISA_AVX512, QLM_ISA_NEON].filter { qlm_isa_supported($0) != 0 }

    func random(_ n: Int, _ rng: inout SeededRNG, scale: Float = 1) -> [Float] {
        (0..<n).map { _ in (Float(rng.next() % 1_000_000) / 500_000 - 1) * scale }
    }

    func withISA(_ isa: qlm_isa, _ body: () throws -> Void) rethrows {
        let saved = qlm_isa_active()
        _ = qlm_isa_force(isa)
        defer { _ = qlm_isa_force(saved) }
        try body()
    }

    @Test("Vectorised exp, SwiGLU and NLL match the libm references")
    func expFamily() {
        var rng = SeededRNG(seed: 5)
        for isa in Self.isas {
            withISA(isa) {
                for n in [1, 7, 16, 17, 100, 1000, 49152] {
                    let x = random(n, &rng, scale: 30)
                    var a = x, b = x
                    let sa = qlm_exp_shift_sum(&a, Int32(n), 2.5, 0.7)
                    let sb = qlm_exp_shift_sum_ref(&b, Int32(n), 2.5, 0.7)
                    // f32 lane sums over up to 3072 terms per lane: relative error well under 1e-5.
                    #expect(abs(sa - sb) <= 1e-5 * sb, "isa \(isa.rawValue) n \(n)")
                    #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 3e-7 * max(abs($1), 1e-30) })
                    let g = random(n, &rng, scale: 20), u = random(n, &rng)
                    var h1 = [Float](repeating: 0, count: n), h2 = h1
                    qlm_swiglu(&h1, g, u, n); qlm_swiglu_ref(&h2, g, u, n)
                    #expect(zip(h1, h2).allSatisfy { abs($0 - $1) <= 1e-6 * max(abs($1), 1) })
                    let target = Int32(n / 2)
                    #expect(abs(qlm_nll_from_logits(x, Int32(n), target) - qlm_nll_from_logits_ref(x, Int32(n), target)) < 1e-5)
                }
            }
        }
    }

    /// Naive causal attention for queries at positions pos0..pos0+T-1.
    func referenceAttention(q: [Float], k: [Float], v: [Float], T: Int, pos0: Int, heads: Int, kvHeads: Int, hd: Int) -> [Float] {
        var out = [Float](repeating: 0, count: T * heads * hd)
        let group = heads / kvHeads
        for t in 0..<T {
            for h in 0..<heads {
                let g = h / group, n = pos0 + t + 1
                var s = [Double](repeating: 0, count: n)
                for j in 0..<n {
                    var d = 0.0
                    for i in 0..<hd { d += Double(q[(t * heads + h) * hd + i]) * Double(k[(j * kvHeads + g) * hd + i]) }
                    s[j] = d / Double(hd).squareRoot()
                }
                let mx = s.max()!
                let e = s.map { exp($0 - mx) }, z = e.reduce(0, +)
                for i in 0..<hd {
                    var o = 0.0
                    for j in 0..<n { o += e[j] / z * Double(v[(j * kvHeads + g) * hd + i]) }
                    out[(t * heads + h) * hd + i] = Float(o)
                }
            }
        }
        return out
    }

    // GQA packs on AVX-512 (attend_pack): (9, 3, 64) one pack of 3 per KV head, (12, 2, 64) two packs of 3,
    // (6, 3, 64) packs of 2, (8, 2, 32) packs of 4; the others one head at a time.
    @Test("Attention (decode loop and BLAS prefill) matches a naive reference",
          arguments: [(9, 3, 64), (4, 4, 24), (6, 2, 8), (2, 1, 128), (12, 2, 64), (6, 3, 64), (8, 2, 32)])
    func attention(heads: Int, kvHeads: Int, hd: Int) {
        var rng = SeededRNG(seed: UInt64(heads * 100 + hd))
        for isa in Self.isas {
            withISA(isa) {
                // Prefill (T >= 16) runs (KV head, 256-query chunk) tasks on the OpenMP threads with
                // per-thread scratch (omp_tasks = 1) or in order on OpenBLAS (0): 1 and 3 threads, and T = 600
                // for three chunks of unequal size.
                for (T, pos0) in [(1, 0), (1, 37), (3, 5), (4, 60), (1, 300), (20, 0), (300, 0), (33, 270), (600, 10)] {
                    let ctx = pos0 + T
                    let q = random(T * heads * hd, &rng), k = random(ctx * kvHeads * hd, &rng), v = random(ctx * kvHeads * hd, &rng)
                    let ref = referenceAttention(q: q, k: k, v: v, T: T, pos0: pos0, heads: heads, kvHeads: kvHeads, hd: hd)
                    for threads: Int32 in [1, 3] {
                        qlm_set_threads(threads)
                        for ompTasks: Int32 in [0, 1] {
                            var out = [Float](repeating: .nan, count: T * heads * hd)
                            var scratch = [Float](repeating: 0, count: qlm_attention_scratch_floats(Int32(T), Int32(ctx), Int32(heads), Int32(kvHeads), Int32(hd)))
                            qlm_attention(q, k, v, &out, Int32(T), Int32(pos0), Int32(heads), Int32(kvHeads), Int32(hd), &scratch, ompTasks)
                            let err = zip(out, ref).map { abs($0 - $1) }.max()!
                            #expect(err < 1e-4, "isa \(isa.rawValue) T \(T) pos0 \(pos0) heads \(heads)/\(kvHeads) hd \(hd) threads \(threads) omp \(ompTasks): \(err)")
                        }
                    }
                    qlm_set_threads(0)
                }
            }
        }
    }

    // Decode attention cuts the T · heads (query, head) items into one contiguous range per thread, so a
    // range may start or end inside a KV head's pack (9 heads in packs of 3 on 2 threads: heads 0-3 and
    // 4-8; T = 3 on 4 threads cuts inside queries too). Per head the arithmetic is the same in every
    // pack size: any thread count gives the 1-thread result bit for bit, f32 and f16 caches.
    @Test("Decode attention split over threads equals the one-thread result bit for bit",
          arguments: [(9, 3, 64), (12, 2, 64), (6, 3, 64), (8, 2, 32), (4, 4, 24)])
    func attentionDecodeThreadSplit(heads: Int, kvHeads: Int, hd: Int) {
        var rng = SeededRNG(seed: UInt64(heads * 31 + hd))
        defer { qlm_set_threads(0) }
        for isa in Self.isas {
            withISA(isa) {
                for (T, pos0) in [(1, 300), (1, 80), (3, 200)] {
                    let ctx = pos0 + T
                    let q = random(T * heads * hd, &rng), k = random(ctx * kvHeads * hd, &rng), v = random(ctx * kvHeads * hd, &rng)
                    var k16 = [UInt16](repeating: 0, count: k.count), v16 = k16
                    qlm_quant_f16(k, &k16, k.count)
                    qlm_quant_f16(v, &v16, v.count)
                    func run(_ threads: Int32, f16: Bool) -> [Float] {
                        qlm_set_threads(threads)
                        var out = [Float](repeating: .nan, count: T * heads * hd)
                        var s = [Float](repeating: 0, count: qlm_attention_kv16_scratch_floats(Int32(T), Int32(ctx), Int32(heads), Int32(kvHeads), Int32(hd)))
                        if f16 {
                            qlm_attention_kv16(q, k16, v16, &out, Int32(T), Int32(pos0), Int32(heads), Int32(kvHeads), Int32(hd), &s, 1)
                        } else {
                            qlm_attention(q, k, v, &out, Int32(T), Int32(pos0), Int32(heads), Int32(kvHeads), Int32(hd), &s, 1)
                        }
                        return out
                    }
                    for f16 in [false, true] {
                        let one = run(1, f16: f16)
                        #expect(!one.contains { $0.isNaN })
                        for threads: Int32 in [2, 3, 4] {
                            let out = run(threads, f16: f16)
                            #expect(out.elementsEqual(one, by: { $0.bitPattern == $1.bitPattern }),
                                    "isa \(isa.rawValue) T \(T) pos0 \(pos0) heads \(heads)/\(kvHeads) hd \(hd) f16 \(f16) threads \(threads)")
                        }
                    }
                }
            }
        }
    }

    @Test("Prefill attention's drop of OpenBLAS to one thread is never seen by another thread's BLAS calls")
    func blasPoolIsolation() {
        // OpenBLAS's thread count is process-wide; the attention's OpenMP tasks set it to 1 while they
        // run. Another thread's sgemm meanwhile would run on 1 thread and round differently (a
        // resumed quantization then differs from an uninterrupted one), so the pool is locked.
        qlm_set_threads(2)
        defer { qlm_set_threads(0) }
        var rng = SeededRNG(seed: 99)
        let (heads, kvHeads, hd, T) = (9, 3, 64, 600)
        let q = random(T * heads * hd, &rng), k = random(T * kvHeads * hd, &rng), v = random(T * kvHeads * hd, &rng)
        var out = [Float](repeating: 0, count: T * heads * hd)
        var scratch = [Float](repeating: 0, count: qlm_attention_scratch_floats(Int32(T), Int32(T), Int32(heads), Int32(kvHeads), Int32(hd)))
        final class Watch: @unchecked Sendable {
            let lock = NSLock(); var stop = false; var seen: Set<Int32> = []; var samples = 0
            let done = DispatchSemaphore(value: 0)
        }
        let w = Watch()
        let watcher = Thread {
            while true {
                let n = qlm_blas_threads_seen()
                w.lock.lock(); w.seen.insert(n); w.samples += 1; let stop = w.stop; w.lock.unlock()
                if stop { break }
            }
            w.done.signal()
        }
        watcher.start()
        // At least 30 prefills, and more until the watcher has sampled more than 30 times: on a loaded
        // 2-core CI machine the watcher can get the CPU only between calls (CI once saw exactly 30).
        var calls = 0
        while true {
            qlm_attention(q, k, v, &out, Int32(T), 0, Int32(heads), Int32(kvHeads), Int32(hd), &scratch, 1)
            calls += 1
            w.lock.lock(); let sampled = w.samples; w.lock.unlock()
            if calls >= 30 && (sampled > 30 || calls >= 2000) { break }
        }
        w.lock.lock(); w.stop = true; w.lock.unlock()
        w.done.wait()
        #expect(w.samples > 30)
        #expect(w.seen == [2], "another thread saw OpenBLAS on \(w.seen.sorted()) threads")
        #expect(qlm_blas_threads_seen() == 2)
    }

    @Test("Attention over an f16 KV cache equals the f32 attention on the cached halves' values",
          arguments: [(9, 3, 64), (4, 4, 24), (6, 2, 8), (2, 1, 128), (12, 2, 64), (8, 2, 32)])
    func attentionF16Cache(heads: Int, kvHeads: Int, hd: Int) {
        var rng = SeededRNG(seed: UInt64(heads * 100 + hd + 7))
        for isa in Self.isas {
            withISA(isa) {
                for (T, pos0) in [(1, 0), (1, 37), (3, 5), (4, 60), (1, 300), (20, 0), (300, 0), (33, 270)] {
                    let ctx = pos0 + T
                    let q = random(T * heads * hd, &rng), k = random(ctx * kvHeads * hd, &rng, scale: 3), v = random(ctx * kvHeads * hd, &rng)
                    var k16 = [UInt16](repeating: 0, count: k.count), v16 = k16
                    qlm_quant_f16(k, &k16, k.count)
                    qlm_quant_f16(v, &v16, v.count)
                    // The reference: the f32 kernel on exactly the values the halves hold.
                    let kh = k16.map { qlm_f16_to_f32($0) }, vh = v16.map { qlm_f16_to_f32($0) }
                    var ref = [Float](repeating: .nan, count: T * heads * hd), out = ref
                    var s32 = [Float](repeating: 0, count: qlm_attention_scratch_floats(Int32(T), Int32(ctx), Int32(heads), Int32(kvHeads), Int32(hd)))
                    qlm_attention(q, kh, vh, &ref, Int32(T), Int32(pos0), Int32(heads), Int32(kvHeads), Int32(hd), &s32, 0)
                    var s16 = [Float](repeating: 0, count: qlm_attention_kv16_scratch_floats(Int32(T), Int32(ctx), Int32(heads), Int32(kvHeads), Int32(hd)))
                    qlm_attention_kv16(q, k16, v16, &out, Int32(T), Int32(pos0), Int32(heads), Int32(kvHeads), Int32(hd), &s16, 1)
                    let err = zip(out, ref).map { abs($0 - $1) }.max()!
                    #expect(err < 1e-5, "isa \(isa.rawValue) T \(T) pos0 \(pos0) heads \(heads)/\(kvHeads) hd \(hd): \(err)")
                    // And against the naive f32 attention on the unrounded cache: off by the f16 rounding only.
                    let exact = referenceAttention(q: q, k: k, v: v, T: T, pos0: pos0, heads: heads, kvHeads: kvHeads, hd: hd)
                    let e2 = zip(out, exact).map { abs($0 - $1) }.max()!
                    #expect(e2 < 2e-2, "vs unrounded cache: \(e2)")
                }
            }
        }
    }

    @Test("RoPE rotates pairs (i, i+hd/2) by position × frequency")
    func rope() {
        let hd = 6, half = 3, T = 2, heads = 2
        let inv: [Float] = [1, 0.1, 0.01]
        var cs = [Float](repeating: 0, count: T * half), sn = cs
        qlm_rope_table(&cs, &sn, Int32(T), Int32(half), 5, inv)
        var x = (0..<(T * heads * hd)).map { Float($0 % 7) - 3 }
        let orig = x
        qlm_rope(&x, Int32(T), Int32(heads), Int32(hd), cs, sn)
        for t in 0..<T { for h in 0..<heads { for i in 0..<half {
            let a = Double((5 + t)) * Double(inv[i])
            let base = (t * heads + h) * hd
            let x0 = Double(orig[base + i]), x1 = Double(orig[base + i + half])
            #expect(abs(Double(x[base + i]) - (x0 * cos(a) - x1 * sin(a))) < 1e-5)
            #expect(abs(Double(x[base + i + half]) - (x1 * cos(a) + x0 * sin(a))) < 1e-5)
        } } }
    }
}
