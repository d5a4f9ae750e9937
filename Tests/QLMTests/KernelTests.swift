import Foundation
import QLMKernels
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// C kernel tests: ISA dispatch, f32 GEMV on every path this CPU supports, f16/bf16 conversions,
/// GGUF block dequantisation. Serialized: the tests force the ISA path and the thread count.
@Suite(.serialized)
final class KernelTests: HoldsKernelState {
    static let allISAs: [qlm_isa] = [QLM_ISA_SCALAR, QLM_ISA_AVX2, QLM_ISA_AVX512, QLM_ISA_NEON]
    static var supportedISAs: [qlm_isa] { allISAs.filter { qlm_isa_supported($0) == 1 } }

    /// Deterministic xorshift generator: uniform floats in [-1, 1).
    struct Rng {
        var s: UInt64
        init(_ seed: UInt64) { s = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
        mutating func next() -> UInt64 {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            return s
        }
        mutating func float() -> Float { Float(next() >> 40) / Float(1 << 24) * 2 - 1 }
        mutating func floats(_ n: Int) -> [Float] { (0..<n).map { _ in float() } }
    }

    /// Restores the default path and thread count after a test that changes them.
    static func restoreDefaults() {
        _ = qlm_isa_force(qlm_isa_best())
        qlm_set_threads(0)
    }

    static func gemv(_ isa: qlm_isa?, _ w: [Float], _ x: [Float], rows: Int, cols: Int) -> [Float] {
        var y = [Float](repeating: .nan, count: rows)  // a row left unwritten stays NaN
        w.withUnsafeBufferPointer { wp in
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    if let isa {
                        qlm_gemv_f32_isa(isa, wp.baseAddress, xp.baseAddress, yp.baseAddress, Int32(rows), Int32(cols))
                    } else {
                        qlm_gemv_f32(wp.baseAddress, xp.baseAddress, yp.baseAddress, Int32(rows), Int32(cols))
                    }
                }
            }
        }
        return y
    }

    static func gemvRef(_ w: [Float], _ x: [Float], rows: Int, cols: Int) -> [Float] {
        var y = [Float](repeating: .nan, count: rows)
        qlm_gemv_f32_ref(w, x, &y, Int32(rows), Int32(cols))
        return y
    }

    // MARK: - Dispatch and threads

    @Test func dispatchReportsConsistentPaths() {
        defer { Self.restoreDefaults() }
        #expect(qlm_isa_supported(QLM_ISA_SCALAR) == 1)
        #expect(qlm_isa_supported(qlm_isa_best()) == 1)
        #expect(qlm_isa_supported(qlm_isa_active()) == 1)
        #expect(String(cString: qlm_isa_name(QLM_ISA_SCALAR)) == "scalar")
        #expect(String(cString: qlm_isa_name(QLM_ISA_AVX2)) == "avx2")
        #expect(String(cString: qlm_isa_name(QLM_ISA_AVX512)) == "avx512")
        #expect(String(cString: qlm_isa_name(QLM_ISA_NEON)) == "neon")
        #if arch(arm64)
        #expect(qlm_isa_best() == QLM_ISA_NEON)
        #expect(qlm_isa_supported(QLM_ISA_AVX2) == 0)
        #elseif arch(x86_64)
        #expect(qlm_isa_supported(QLM_ISA_NEON) == 0)
        // AVX-512 is only claimed together with AVX2 (+FMA); the best path is the widest one.
        if qlm_isa_supported(QLM_ISA_AVX512) == 1 {
            #expect(qlm_isa_supported(QLM_ISA_AVX2) == 1)
            #expect(qlm_isa_best() == QLM_ISA_AVX512)
        }
        #endif
        for isa in Self.allISAs {
            let before = qlm_isa_active()
            let rc = qlm_isa_force(isa)
            if qlm_isa_supported(isa) == 1 {
                #expect(rc == 0)
                #expect(qlm_isa_active() == isa)
            } else {
                #expect(rc == -1)
                #expect(qlm_isa_active() == before, "an unsupported force must leave the path unchanged")
            }
        }
    }

    @Test func threadCountIsSettable() {
        defer { Self.restoreDefaults() }
        qlm_set_threads(3)
        #expect(qlm_get_threads() == 3)
        qlm_set_threads(1)
        #expect(qlm_get_threads() == 1)
        qlm_set_threads(0)
        #expect(qlm_get_threads() == Int32(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        qlm_set_threads(-5)
        #expect(qlm_get_threads() >= 1)
    }

    // MARK: - GEMV

    static let dims = [1, 3, 7, 31, 33, 64, 100, 257, 576, 1000]
    static let smallCols = [1, 2, 5, 8, 9, 15, 16, 17]

    /// Relative tolerance against Σ|w·x| for two f32 summations in different orders.
    static func tolerance(cols: Int) -> Float { Float.ulpOfOne * (2 * Float(cols).squareRoot() + 2) }

    /// Largest |a - b| / Σ|w·x| over rows (infinite when a row is NaN, i.e. never written).
    static func maxRelError(_ a: [Float], _ b: [Float], _ w: [Float], _ x: [Float], rows: Int, cols: Int) -> Float {
        var worst: Float = 0
        for r in 0..<rows {
            var mag: Float = 0
            for j in 0..<cols { mag += abs(w[r * cols + j] * x[j]) }
            let d = abs(a[r] - b[r])
            if d.isNaN { return .infinity }
            worst = max(worst, d / max(mag, .leastNormalMagnitude))
        }
        return worst
    }

    @Test(arguments: ["scalar", "avx2", "avx512", "neon"])
    func gemvMatchesReference(isaName: String) throws {
        let isa = try #require(Self.allISAs.first { String(cString: qlm_isa_name($0)) == isaName })
        guard qlm_isa_supported(isa) == 1 else { return }  // nothing to run on this CPU
        defer { Self.restoreDefaults() }
        qlm_set_threads(2)
        var rng = Rng(UInt64(isa.rawValue) + 7)
        var shapes: [(Int, Int)] = []
        for r in Self.dims { for c in Self.dims { shapes.append((r, c)) } }
        for r in [1, 4, 5, 63, 1000] { for c in Self.smallCols { shapes.append((r, c)) } }
        for (rows, cols) in shapes {
            let w = rng.floats(rows * cols), x = rng.floats(cols)
            let y = Self.gemv(isa, w, x, rows: rows, cols: cols)
            let ref = Self.gemvRef(w, x, rows: rows, cols: cols)
            let err = Self.maxRelError(y, ref, w, x, rows: rows, cols: cols)
            #expect(err <= Self.tolerance(cols: cols),
                    "\(String(cString: qlm_isa_name(isa))) \(rows)x\(cols): rel err \(err)")
        }
    }

    @Test func gemvReferenceIsExactOnIntegers() {
        // Small integers: every partial sum is exact, so all paths must agree bit for bit with the
        // hand-computed result (catches a wrong element, a lost tail or a row mix-up).
        let rows = 37, cols = 45
        let w = (0..<(rows * cols)).map { Float(($0 * 7) % 11) - 5 }
        let x = (0..<cols).map { Float(($0 * 3) % 5) - 2 }
        var expected = [Float](repeating: 0, count: rows)
        for r in 0..<rows { for j in 0..<cols { expected[r] += w[r * cols + j] * x[j] } }
        #expect(Self.gemvRef(w, x, rows: rows, cols: cols) == expected)
        for isa in Self.supportedISAs {
            #expect(Self.gemv(isa, w, x, rows: rows, cols: cols) == expected, "\(String(cString: qlm_isa_name(isa)))")
        }
    }

    @Test func gemvIsIndependentOfThreadCount() {
        defer { Self.restoreDefaults() }
        var rng = Rng(42)
        // Large enough to be split across threads (≥ 64K weights), with ragged rows and columns.
        let shapes = [(1000, 576), (4099, 33), (257, 1000), (49, 2053), (576, 1536)]
        for isa in Self.supportedISAs {
            for (rows, cols) in shapes {
                let w = rng.floats(rows * cols), x = rng.floats(cols)
                qlm_set_threads(1)
                let one = Self.gemv(isa, w, x, rows: rows, cols: cols)
                #expect(!one.contains { $0.isNaN })
                for threads in [2, 3, 4] {
                    qlm_set_threads(Int32(threads))
                    let many = Self.gemv(isa, w, x, rows: rows, cols: cols)
                    #expect(many.map(\.bitPattern) == one.map(\.bitPattern),
                            "\(String(cString: qlm_isa_name(isa))) \(rows)x\(cols) at \(threads) threads")
                }
                // The dispatching entry point uses the active path.
                #expect(qlm_isa_force(isa) == 0)
                #expect(Self.gemv(nil, w, x, rows: rows, cols: cols).map(\.bitPattern) == one.map(\.bitPattern))
                let ref = Self.gemvRef(w, x, rows: rows, cols: cols)
                #expect(Self.maxRelError(one, ref, w, x, rows: rows, cols: cols) <= Self.tolerance(cols: cols))
            }
        }
    }

    // MARK: - f16 / bf16

    @Test func f16RoundTripsEveryBitPattern() {
        for h in 0...UInt16.max {
            let f = qlm_f16_to_f32(h)
            let back = qlm_f32_to_f16(f)
            let isNaN = (h & 0x7C00) == 0x7C00 && (h & 0x03FF) != 0
            if f.isNaN != isNaN { Issue.record("f16 0x\(String(h, radix: 16)): NaN-ness changed") }
            if back != h { Issue.record("f16 0x\(String(h, radix: 16)) → \(f) → 0x\(String(back, radix: 16))") }
            #if !(os(macOS) && arch(x86_64))
            if !isNaN {
                let swiftValue = Float(Float16(bitPattern: h))
                if f.bitPattern != swiftValue.bitPattern { Issue.record("f16→f32 0x\(String(h, radix: 16)): \(f) vs \(swiftValue)") }
            }
            #endif
        }
        // Known values: subnormal, smallest normal, max, infinities, signed zero.
        #expect(qlm_f16_to_f32(0x0001) == 0x1p-24)
        #expect(qlm_f16_to_f32(0x0400) == 0x1p-14)
        #expect(qlm_f16_to_f32(0x7BFF) == 65504)
        #expect(qlm_f16_to_f32(0xFC00) == -.infinity)
        #expect(qlm_f16_to_f32(0x8000).bitPattern == (-0.0 as Float).bitPattern)
        #expect(qlm_f16_to_f32(0x3C00) == 1)
        #expect(qlm_f16_to_f32(0xC000) == -2)
    }

    @Test func f32ToF16RoundsToNearestEven() {
        #expect(qlm_f32_to_f16(1) == 0x3C00)
        #expect(qlm_f32_to_f16(1 + 0x1p-11) == 0x3C00)          // tie → even (down)
        #expect(qlm_f32_to_f16(1 + 3 * 0x1p-11) == 0x3C02)      // tie → even (up)
        #expect(qlm_f32_to_f16(1 + 0x1p-11 + 0x1p-20) == 0x3C01) // above the tie
        #expect(qlm_f32_to_f16(65504) == 0x7BFF)
        #expect(qlm_f32_to_f16(65519.996) == 0x7BFF)            // just below the tie with 65536
        #expect(qlm_f32_to_f16(65520) == 0x7C00)                // tie → even = overflow → inf
        #expect(qlm_f32_to_f16(1e10) == 0x7C00)
        #expect(qlm_f32_to_f16(-.infinity) == 0xFC00)
        #expect(qlm_f32_to_f16(0x1p-25) == 0x0000)              // half the smallest subnormal: tie → 0
        #expect(qlm_f32_to_f16(0x1p-25 + 0x1p-40) == 0x0001)
        #expect(qlm_f32_to_f16(3 * 0x1p-25) == 0x0002)          // 1.5 ulp: tie → even (2)
        #expect(qlm_f32_to_f16(0x1p-14 - 0x1p-25) == 0x0400)    // rounds up into the normals
        #expect(qlm_f32_to_f16(-0.0) == 0x8000)
        #expect(qlm_f32_to_f16(1e-30) == 0x0000)
        let nanBits = qlm_f32_to_f16(Float(bitPattern: 0x7F80_0001))  // payload below f16 precision
        #expect(nanBits & 0x7C00 == 0x7C00 && nanBits & 0x03FF != 0)
        #if !(os(macOS) && arch(x86_64))
        // Against Swift's own conversion on a stride through every f32 bit pattern.
        var u: UInt32 = 0
        var mismatches = 0
        while true {
            let f = Float(bitPattern: u)
            if !f.isNaN && qlm_f32_to_f16(f) != Float16(f).bitPattern { mismatches += 1 }
            let (next, overflow) = u.addingReportingOverflow(4099)
            if overflow { break }
            u = next
        }
        #expect(mismatches == 0)
        #endif
    }

    /// bf16 reference: nearest of the two bf16 neighbours, ties to even, in exact Double arithmetic.
    static func bf16Reference(_ f: Float) -> UInt16 {
        let u = f.bitPattern
        let lo = u & 0xFFFF_0000
        if u == lo { return UInt16(u >> 16) }
        let dLo = Double(Float(bitPattern: lo))
        let dHi: Double = (lo & 0x7FFF_FFFF) == 0x7F7F_0000
            ? (f < 0 ? -0x1p128 : 0x1p128) : Double(Float(bitPattern: lo + 0x1_0000))
        let a = abs(Double(f) - dLo), b = abs(Double(f) - dHi)
        if a < b || (a == b && (lo >> 16) & 1 == 0) { return UInt16(lo >> 16) }
        return UInt16((lo + 0x1_0000) >> 16)
    }

    @Test func bf16RoundTripsAndRounds() {
        for h in 0...UInt16.max {
            let f = qlm_bf16_to_f32(h)
            if f.bitPattern != UInt32(h) << 16 { Issue.record("bf16 0x\(String(h, radix: 16)) → \(f)") }
            let back = qlm_f32_to_bf16(f)
            if back != h { Issue.record("bf16 0x\(String(h, radix: 16)) → 0x\(String(back, radix: 16))") }
        }
        #expect(qlm_f32_to_bf16(Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie → even (down)
        #expect(qlm_f32_to_bf16(Float(bitPattern: 0x3F81_8000)) == 0x3F82)  // tie → even (up)
        #expect(qlm_f32_to_bf16(Float(bitPattern: 0x3F80_8001)) == 0x3F81)
        #expect(qlm_f32_to_bf16(.greatestFiniteMagnitude) == 0x7F80)       // rounds to inf
        #expect(qlm_f32_to_bf16(-.infinity) == 0xFF80)
        let nanBits = qlm_f32_to_bf16(Float(bitPattern: 0x7F80_0001))
        #expect(nanBits & 0x7F80 == 0x7F80 && nanBits & 0x007F != 0, "NaN stays NaN")
        var u: UInt32 = 0
        var mismatches = 0
        while true {
            let f = Float(bitPattern: u)
            if !f.isNaN && qlm_f32_to_bf16(f) != Self.bf16Reference(f) { mismatches += 1 }
            let (next, overflow) = u.addingReportingOverflow(4111)
            if overflow { break }
            u = next
        }
        #expect(mismatches == 0)
    }

    @Test func bulkConversionsMatchScalar() {
        defer { Self.restoreDefaults() }
        qlm_set_threads(2)
        let n = (1 << 18) + 77  // large enough for the parallel path, ragged
        var rng = Rng(9)
        let f = (0..<n).map { _ in rng.float() * 300 }
        var h = [UInt16](repeating: 0, count: n), b = [UInt16](repeating: 0, count: n)
        qlm_quant_f16(f, &h, n)
        qlm_quant_bf16(f, &b, n)
        var fh = [Float](repeating: .nan, count: n), fb = [Float](repeating: .nan, count: n)
        qlm_dequant_f16(h, &fh, n)
        qlm_dequant_bf16(b, &fb, n)
        var bad = 0
        for i in 0..<n {
            if h[i] != qlm_f32_to_f16(f[i]) || b[i] != qlm_f32_to_bf16(f[i]) { bad += 1 }
            if fh[i].bitPattern != qlm_f16_to_f32(h[i]).bitPattern || fb[i].bitPattern != qlm_bf16_to_f32(b[i]).bitPattern { bad += 1 }
        }
        #expect(bad == 0)
        #expect(abs(fh[12345] - f[12345]) <= abs(f[12345]) * 0x1p-11)
    }

    // MARK: - GGUF blocks (built byte by byte in the ggml layout)

    static func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }

    @Test func blockLayoutsMatchGGML() {
        #expect(MemoryLayout<qlm_block_q8_0>.size == 34)
        #expect(MemoryLayout<qlm_block_q4_0>.size == 18)
        #expect(MemoryLayout<qlm_block_q4_1>.size == 20)
    }

    @Test func dequantQ4_1() {
        // Two blocks: (d, m) = (0.5, -1.25) and (-0.25, 3); byte j holds q_j (low) and q_{j+16} (high).
        let params: [(Float, Float)] = [(0.5, -1.25), (-0.25, 3)]
        var bytes: [UInt8] = []
        var expected: [Float] = []
        for (k, (d, m)) in params.enumerated() {
            bytes += Self.le16(qlm_f32_to_f16(d)) + Self.le16(qlm_f32_to_f16(m))
            let q = (0..<32).map { ($0 * 5 + k * 3) % 16 }
            for j in 0..<16 { bytes.append(UInt8(q[j] | (q[j + 16] << 4))) }
            expected += q.map { d * Float($0) + m }
        }
        #expect(bytes.count == 40)
        var out = [Float](repeating: .nan, count: 64)
        qlm_dequant_q4_1(bytes, &out, 64)
        #expect(out == expected)
        #expect(out[0] == -1.25 && out[1] == 1.25 && out[16] == -1.25 && out[17] == 1.25)  // q: 0, 5, 0, 5
    }

    @Test func dequantQ4_0() {
        let scales: [Float] = [0.25, -2]
        var bytes: [UInt8] = []
        var expected: [Float] = []
        for (k, d) in scales.enumerated() {
            bytes += Self.le16(qlm_f32_to_f16(d))
            let q = (0..<32).map { ($0 * 7 + k) % 16 }
            for j in 0..<16 { bytes.append(UInt8(q[j] | (q[j + 16] << 4))) }
            expected += q.map { d * Float($0 - 8) }
        }
        #expect(bytes.count == 36)
        var out = [Float](repeating: .nan, count: 64)
        qlm_dequant_q4_0(bytes, &out, 64)
        #expect(out == expected)
        #expect(out[0] == -2 && out[32] == 14)  // (0-8)·0.25, (1-8)·-2
    }

    @Test func dequantQ8_0() {
        let scales: [Float] = [0.125, -3]
        var bytes: [UInt8] = []
        var expected: [Float] = []
        for (k, d) in scales.enumerated() {
            bytes += Self.le16(qlm_f32_to_f16(d))
            let q = (0..<32).map { Int8(truncatingIfNeeded: $0 * 9 - 128 + k) }
            bytes += q.map { UInt8(bitPattern: $0) }
            expected += q.map { d * Float($0) }
        }
        #expect(bytes.count == 68)
        var out = [Float](repeating: .nan, count: 64)
        qlm_dequant_q8_0(bytes, &out, 64)
        #expect(out == expected)
        #expect(out[0] == -16 && out[32] == 381)  // -128·0.125, -127·-3
    }

    @Test func dequantLargeBuffersInParallel() {
        defer { Self.restoreDefaults() }
        // Many Q4_1 blocks (parallel path) with block-dependent scales: each output must come from
        // its own block.
        let nb = 20_000
        var bytes = [UInt8](repeating: 0, count: nb * 20)
        for b in 0..<nb {
            let d = qlm_f32_to_f16(Float(b % 97 + 1) * 0.125), m = qlm_f32_to_f16(-Float(b % 13))
            bytes[b * 20] = UInt8(d & 0xFF); bytes[b * 20 + 1] = UInt8(d >> 8)
            bytes[b * 20 + 2] = UInt8(m & 0xFF); bytes[b * 20 + 3] = UInt8(m >> 8)
            for j in 0..<16 { bytes[b * 20 + 4 + j] = UInt8((j + b) % 16) | UInt8(((15 - j) % 16) << 4) }
        }
        for threads: Int32 in [1, 2] {
            qlm_set_threads(threads)
            var out = [Float](repeating: .nan, count: nb * 32)
            qlm_dequant_q4_1(bytes, &out, nb * 32)
            var bad = 0
            for b in 0..<nb {
                let d = Float(b % 97 + 1) * 0.125, m = -Float(b % 13)
                for j in 0..<16 {
                    if out[b * 32 + j] != d * Float((j + b) % 16) + m { bad += 1 }
                    if out[b * 32 + j + 16] != d * Float(15 - j) + m { bad += 1 }
                }
            }
            #expect(bad == 0, "\(threads) threads")
        }
    }

    /// A Gram output (kernel or twin); entries above the diagonal stay NaN unless written.
    static func gramBF16(_ a: [Float], n: Int, k: Int, alpha: Float, ref: Bool = false) -> [Float] {
        var c = [Float](repeating: .nan, count: n * n)  // above the diagonal stays NaN (untouched)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(1, qlm_gram_bf16_scratch_bytes(Int32(n), Int32(k))), alignment: 64)
        defer { scratch.deallocate() }
        a.withUnsafeBufferPointer { ap in
            c.withUnsafeMutableBufferPointer { cp in
                if ref { qlm_gram_bf16_ref(Int32(n), Int32(k), alpha, ap.baseAddress!, Int32(n), cp.baseAddress!, Int32(n)) }
                else { qlm_gram_bf16(Int32(n), Int32(k), alpha, ap.baseAddress!, Int32(n), cp.baseAddress!, Int32(n), scratch) }
            }
        }
        return c
    }

    @Test("bf16 Gram (Hessians): kernel = twin bit for bit, within bf16 rounding of the f64 Gram, thread-count independent",
          arguments: [(1, 1), (5, 3), (16, 2), (17, 33), (47, 101), (49, 256), (50, 257), (97, 300), (130, 1001)])
    func gramBF16(_ shape: (Int, Int)) {
        defer { Self.restoreDefaults() }
        let (n, k) = shape
        var rng = Rng(UInt64(n * 7919 + k))
        // Columns with different scales and a shared factor (correlated, like activations).
        let f = rng.floats(k)
        var a = [Float](repeating: 0, count: k * n)
        for t in 0..<k { for c in 0..<n { a[t * n + c] = (rng.float() + 0.7 * f[t]) * Float(1 + c % 5) } }
        let alpha: Float = 0.37
        let got = Self.gramBF16(a, n: n, k: k, alpha: alpha)
        let twin = Self.gramBF16(a, n: n, k: k, alpha: alpha, ref: true)
        var diffTwin = 0, badBound = 0, touchedUpper = 0
        for j in 0..<n {
            for i in 0..<n {
                if i > j { if !got[j * n + i].isNaN { touchedUpper += 1 }; continue }
                if got[j * n + i].bitPattern != twin[j * n + i].bitPattern { diffTwin += 1 }
                // Exact f64 Gram and a bound no correct bf16 kernel exceeds: each rounded input is off
                // by ≤ 2^-8 relative (8 significant bits; products ≤ ~2^-7), plus f32 summation of ≤ k terms.
                var exact = 0.0, absSum = 0.0
                for t in 0..<k { let p = Double(a[t * n + i]) * Double(a[t * n + j]); exact += p; absSum += abs(p) }
                exact *= Double(alpha); absSum *= Double(alpha)
                let bound = (0.0080 + Double(k) * 1.2e-7) * absSum + 1e-30
                if abs(Double(got[j * n + i]) - exact) > bound { badBound += 1 }
            }
        }
        #expect(diffTwin == 0, "n \(n) k \(k): \(diffTwin) entries differ from the scalar twin")
        #expect(badBound == 0, "n \(n) k \(k): \(badBound) entries outside the bf16 error bound")
        #expect(touchedUpper == 0, "n \(n) k \(k): wrote above the diagonal")
        for threads in [1, 2, 3] {
            qlm_set_threads(Int32(threads))
            let again = Self.gramBF16(a, n: n, k: k, alpha: alpha)
            var d = 0
            for j in 0..<n { for i in 0...j where again[j * n + i].bitPattern != got[j * n + i].bitPattern { d += 1 } }
            #expect(d == 0, "n \(n) k \(k): \(threads) threads changed \(d) entries")
        }
    }
}
