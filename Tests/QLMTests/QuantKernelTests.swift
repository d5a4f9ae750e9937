import Foundation
import QLMKernels
import Testing

/// Packed low-bit weight kernels (qlm_quant.h): superblock layouts, pack/unpack, storage
/// accounting, dequantisation against an independent Swift model of the formats, GEMV on every
/// ISA this CPU supports against the scalar reference and against dequantize-then-dot, prefill
/// GEMM, and bit-identical results across thread counts.
/// Serialized: the tests force the ISA path and the thread count.
@Suite(.serialized)
final class QuantKernelTests: HoldsKernelState {
    static let allISAs: [qlm_isa] = [QLM_ISA_SCALAR, QLM_ISA_AVX2, QLM_ISA_AVX512, QLM_ISA_NEON]
    static var supportedISAs: [qlm_isa] { allISAs.filter { qlm_isa_supported($0) == 1 } }
    /// Paths with an integer-activation kernel on this CPU (AVX-512 VNNI + VBMI + GFNI, AVX2, NEON dot product).
    static var int16ISAs: [qlm_isa] {
        var rng = Rng(1)
        let p = random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 4, cols: 128)
        return supportedISAs.filter { isa in withUnsafePointer(to: p.m) { qlm_qgemv_i16_kernel_exists_on(isa, $0) } == 1 }
    }

    /// Deterministic xorshift generator.
    struct Rng {
        var s: UInt64
        init(_ seed: UInt64) { s = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
        mutating func next() -> UInt64 {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17
            return s
        }
        /// Uniform in [-1, 1).
        mutating func float() -> Float { Float(next() >> 40) / Float(1 << 24) * 2 - 1 }
        mutating func floats(_ n: Int) -> [Float] { (0..<n).map { _ in float() } }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    static func restoreDefaults() {
        _ = qlm_isa_force(qlm_isa_best())
        qlm_set_threads(0)
        qlm_qgemv_set_act(qlm_act_i16_supported() == 1 ? QLM_ACT_I16 : QLM_ACT_F32)
    }

    static func name(_ isa: qlm_isa) -> String { String(cString: qlm_isa_name(isa)) }

    // MARK: - A packed matrix built from unpacked parts (owns its buffers)

    final class Packed {
        let rows: Int, cols: Int, format: qlm_format, bits: Int, groupSize: Int
        let codes: [UInt8]              // unpacked, stored column order; f16: empty
        let scales: [UInt16], zeros: [UInt16], lut: [UInt8], halves: [UInt16]
        let perm: [Int32]?
        let rowPtr: [Int32], outCol: [UInt16], outVal: [Float]
        private var buffers: [UnsafeMutableRawPointer] = []
        var m = qlm_qmatrix()

        init(format: qlm_format, bits: Int, groupSize: Int?, rows: Int, cols: Int, codes: [UInt8] = [],
             scales: [UInt16] = [], zeros: [UInt16] = [], lut: [UInt8] = [], halves: [UInt16] = [],
             perm: [Int32]? = nil, rowPtr: [Int32] = [], outCol: [UInt16] = [], outVal: [Float] = []) {
            self.rows = rows; self.cols = cols; self.format = format; self.bits = bits
            self.groupSize = groupSize ?? cols
            self.codes = codes; self.scales = scales; self.zeros = zeros; self.lut = lut; self.halves = halves
            self.perm = perm; self.rowPtr = rowPtr; self.outCol = outCol; self.outVal = outVal
            m.rows = Int32(rows); m.cols = Int32(cols); m.format = Int32(format.rawValue); m.bits = Int32(bits)
            m.group_size = Int32(self.groupSize)
            if format == QLM_FMT_F16 {
                m.codes = UnsafePointer(copy(halves).assumingMemoryBound(to: UInt8.self))
            } else {
                let rb = qlm_row_bytes(Int32(bits), Int32(cols))
                let dst = alloc(rows * rb).assumingMemoryBound(to: UInt8.self)
                codes.withUnsafeBufferPointer { qlm_pack_codes(Int32(bits), $0.baseAddress, dst, Int32(rows), Int32(cols)) }
                m.codes = UnsafePointer(dst)
            }
            if !scales.isEmpty { m.scales = UnsafePointer(copy(scales).assumingMemoryBound(to: UInt16.self)) }
            if !zeros.isEmpty { m.zeros = UnsafePointer(copy(zeros).assumingMemoryBound(to: UInt16.self)) }
            if !lut.isEmpty { m.lut = UnsafePointer(copy(lut).assumingMemoryBound(to: UInt8.self)) }
            if let perm { m.perm = UnsafePointer(copy(perm).assumingMemoryBound(to: Int32.self)) }
            if !outVal.isEmpty {
                m.n_outliers = Int32(outVal.count)
                m.out_rowptr = UnsafePointer(copy(rowPtr).assumingMemoryBound(to: Int32.self))
                m.out_col = UnsafePointer(copy(outCol).assumingMemoryBound(to: UInt16.self))
                m.out_val = UnsafePointer(copy(outVal).assumingMemoryBound(to: Float.self))
            }
        }

        deinit { for b in buffers { b.deallocate() } }

        private func alloc(_ bytes: Int) -> UnsafeMutableRawPointer {
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
            buffers.append(p)
            return p
        }

        private func copy<T>(_ a: [T]) -> UnsafeMutableRawPointer {
            let p = alloc(a.count * MemoryLayout<T>.stride)
            a.withUnsafeBytes { if $0.count > 0 { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            return p
        }

        var nGroups: Int { format == QLM_FMT_AFFINE ? (cols + groupSize - 1) / groupSize : 1 }

        /// Independent model of the formats: f32 weights [rows, cols] in ORIGINAL column order,
        /// outliers included unless asked not to (w = s·(q − z) with f16 s, z; s_r·(lut[q] − z_r); half).
        func expectedWeights(outliers withOutliers: Bool = true) -> [Float] {
            var w = [Float](repeating: 0, count: rows * cols)
            let g = min(groupSize, cols)
            for r in 0..<rows {
                for j in 0..<cols {
                    let v: Float
                    switch format {
                    case QLM_FMT_F16: v = qlm_f16_to_f32(halves[r * cols + j])
                    case QLM_FMT_LUT:
                        let s = qlm_f16_to_f32(scales[r]), z = qlm_f16_to_f32(zeros[r])
                        v = s * (Float(lut[r * (1 << bits) + Int(codes[r * cols + j])]) - z)
                    default:
                        let gi = min(j / g, nGroups - 1)
                        let s = qlm_f16_to_f32(scales[r * nGroups + gi]), z = qlm_f16_to_f32(zeros[r * nGroups + gi])
                        v = s * (Float(codes[r * cols + j]) - z)
                    }
                    w[r * cols + Int(perm?[j] ?? Int32(j))] = v
                }
                if withOutliers && !outVal.isEmpty {
                    for e in Int(rowPtr[r])..<Int(rowPtr[r + 1]) { w[r * cols + Int(outCol[e])] += outVal[e] }
                }
            }
            return w
        }

        func dequantRows(_ r0: Int, _ r1: Int) -> [Float] {
            var out = [Float](repeating: .nan, count: (r1 - r0) * cols)
            withUnsafePointer(to: m) { qlm_qmatrix_dequant_rows($0, Int32(r0), Int32(r1), &out) }
            return out
        }

        func gemv(_ isa: qlm_isa?, _ x: [Float]) -> [Float] {
            var y = [Float](repeating: .nan, count: rows)  // a row left unwritten stays NaN
            let n = withUnsafePointer(to: m) { qlm_qgemv_scratch_floats($0) }
            // 8 canary floats past the advertised scratch: a kernel writing beyond it fails here.
            var scratch = [Float](repeating: .nan, count: n) + [Float](repeating: 12345, count: 8)
            withUnsafePointer(to: m) { mp in
                if let isa { qlm_qgemv_isa(isa, mp, x, &y, &scratch) } else { qlm_qgemv(mp, x, &y, &scratch) }
            }
            #expect(scratch[n...].allSatisfy { $0 == 12345 }, "GEMV wrote past its \(n)-float scratch")
            return y
        }

        func gemvRef(_ x: [Float]) -> [Float] {
            var y = [Float](repeating: .nan, count: rows)
            withUnsafePointer(to: m) { qlm_qgemv_ref($0, x, &y) }
            return y
        }

        /// True when a GEMV on `isa` runs an integer-activation kernel (QLM_ACT_I16 on AVX-512 VNNI or AVX2).
        func usesInt16(_ isa: qlm_isa) -> Bool {
            qlm_qgemv_act() == QLM_ACT_I16 && withUnsafePointer(to: m) { qlm_qgemv_i16_kernel_exists_on(isa, $0) } == 1
        }

        /// x̂: the activations the integer path multiplies the dense part by (original order).
        func int16Activations(_ x: [Float], simd: Bool = false) -> [Float] {
            var xh = [Float](repeating: .nan, count: cols)
            withUnsafePointer(to: m) { qlm_qgemv_act_i16_roundtrip($0, x, &xh, simd ? 1 : 0) }
            return xh
        }

        /// Per row Σ_j s_g·(q_j + |z_g|)·|x_j| (LUT: q_j = lut[code]) (+ Σ|outlier·x|): the size of the two terms the integer path subtracts
        /// (s·Σq·x̂ and s·z·Σx̂), which bounds its rounding where the f32 path's bound is Σ|w·x|.
        func splitMagnitude(_ x: [Float]) -> [Double] {
            let g = min(groupSize, cols)
            return (0..<rows).map { r in
                var mag = 0.0
                for j in 0..<cols {
                    let gi = min(j / g, nGroups - 1)  // (LUT: one group per row)
                    let s = Double(qlm_f16_to_f32(scales[r * nGroups + gi])), z = Double(qlm_f16_to_f32(zeros[r * nGroups + gi]))
                    let level = format == QLM_FMT_LUT ? Double(lut[r * (1 << bits) + Int(codes[r * cols + j])]) : Double(codes[r * cols + j])
                    mag += abs(s) * (level + abs(z)) * abs(Double(x[Int(perm?[j] ?? Int32(j))]))
                }
                if !outVal.isEmpty {
                    for e in Int(rowPtr[r])..<Int(rowPtr[r + 1]) { mag += abs(Double(outVal[e]) * Double(x[Int(outCol[e])])) }
                }
                return mag
            }
        }

        /// What a GEMV on `isa` must return up to summation order: the scalar reference, or for the
        /// integer path the dense weights times x̂ plus the outliers times the exact x.
        func expectedGemv(_ isa: qlm_isa, _ x: [Float]) -> [Float] {
            guard usesInt16(isa) else { return gemvRef(x) }
            let xh = int16Activations(x)
            let wd = expectedWeights(outliers: false)
            return (0..<rows).map { r in
                var s = 0.0
                for j in 0..<cols { s += Double(wd[r * cols + j]) * Double(xh[j]) }
                if !outVal.isEmpty {
                    for e in Int(rowPtr[r])..<Int(rowPtr[r + 1]) { s += Double(outVal[e]) * Double(x[Int(outCol[e])]) }
                }
                return Float(s)
            }
        }

        var bitsPerWeight: Double { withUnsafePointer(to: m) { qlm_bits_per_weight($0) } }
        var storageBytes: Int { withUnsafePointer(to: m) { qlm_storage_bytes($0) } }
    }

    /// Random matrix: random codes, f16 scales in [0.01, 0.11), zeros in [0, 2^bits − 1] (fractional),
    /// byte codebooks with per-row scale/zero (values within about ±1), a random permutation and up to 3 outliers per row when asked.
    static func random(_ rng: inout Rng, format: qlm_format, bits: Int, groupSize: Int?, rows: Int, cols: Int,
                       perm: Bool = false, outliers: Bool = false, symmetric: Bool = false) -> Packed {
        let g = min(groupSize ?? cols, cols)
        let ng = format == QLM_FMT_AFFINE ? (cols + g - 1) / g : 1
        var codes: [UInt8] = [], scales: [UInt16] = [], zeros: [UInt16] = [], lut: [UInt8] = [], halves: [UInt16] = []
        switch format {
        case QLM_FMT_F16:
            halves = (0..<(rows * cols)).map { _ in qlm_f32_to_f16(rng.float()) }
        default:
            codes = (0..<(rows * cols)).map { _ in UInt8(rng.below(1 << bits)) }
            if format == QLM_FMT_AFFINE {
                scales = (0..<(rows * ng)).map { _ in qlm_f32_to_f16(0.06 + 0.05 * rng.float()) }
                zeros = (0..<(rows * ng)).map { _ in
                    qlm_f32_to_f16(symmetric ? Float(1 << (bits - 1)) : Float((1 << bits) - 1) * 0.5 * (rng.float() + 1))
                }
            } else {
                // Byte codebooks over the whole range (incl. 0 and 255), zero near the middle: values in ±1.
                lut = (0..<(rows << bits)).map { (i: Int) -> UInt8 in
                    if i % 7 == 0 { return i / 7 % 2 == 0 ? 0 : 255 }
                    return UInt8(rng.below(256))
                }
                scales = (0..<rows).map { _ in qlm_f32_to_f16(0.004 + 0.004 * rng.float()) }
                zeros = (0..<rows).map { _ in qlm_f32_to_f16(127.5 + 20 * rng.float()) }
            }
        }
        var p: [Int32]? = nil
        if perm {
            var a = (0..<cols).map { Int32($0) }
            for j in stride(from: cols - 1, to: 0, by: -1) { a.swapAt(j, rng.below(j + 1)) }
            p = a
        }
        var rowPtr: [Int32] = [], outCol: [UInt16] = [], outVal: [Float] = []
        if outliers {
            for _ in 0..<rows {
                rowPtr.append(Int32(outVal.count))
                for _ in 0..<rng.below(4) {
                    outCol.append(UInt16(rng.below(cols)))
                    outVal.append(4 * rng.float())
                }
            }
            rowPtr.append(Int32(outVal.count))
            if outVal.isEmpty { rowPtr = [] }  // CSR only when there is something stored
        }
        return Packed(format: format, bits: bits, groupSize: groupSize, rows: rows, cols: cols, codes: codes,
                      scales: scales, zeros: zeros, lut: lut, halves: halves, perm: p, rowPtr: rowPtr,
                      outCol: outCol, outVal: outVal)
    }

    /// Summation-order tolerance relative to Σ|w·x|.
    static func tolerance(cols: Int) -> Double { Double(Float.ulpOfOne) * (4 * Double(cols).squareRoot() + 8) }

    /// Largest |a − b| / Σ|w·x| over rows (infinite when a value is NaN).
    static func maxRelError(_ a: [Float], _ b: [Float], w: [Float], x: [Float], rows: Int, cols: Int) -> Double {
        var worst = 0.0
        for r in 0..<rows {
            var mag = 0.0
            for j in 0..<cols { mag += abs(Double(w[r * cols + j]) * Double(x[j])) }
            let d = abs(Double(a[r]) - Double(b[r]))
            if d.isNaN { return .infinity }
            worst = max(worst, d / max(mag, 1e-30))
        }
        return worst
    }

    static func dot(_ w: [Float], _ x: [Float], rows: Int, cols: Int) -> [Float] {
        (0..<rows).map { r in
            var s = 0.0
            for j in 0..<cols { s += Double(w[r * cols + j]) * Double(x[j]) }
            return Float(s)
        }
    }

    struct Config: CustomStringConvertible {
        let format: qlm_format, bits: Int, groupSize: Int?
        var description: String {
            switch format {
            case QLM_FMT_AFFINE: return "affine\(bits)-" + (groupSize.map { "g\($0)" } ?? "row")
            case QLM_FMT_LUT: return "lut\(bits)"
            default: return "f16"
            }
        }
    }

    static let configs: [Config] = {
        var c: [Config] = []
        for b in [2, 3, 4, 8] { for g in [32, 64, 128, nil] as [Int?] { c.append(Config(format: QLM_FMT_AFFINE, bits: b, groupSize: g)) } }
        for b in [2, 3, 4] { c.append(Config(format: QLM_FMT_LUT, bits: b, groupSize: nil)) }
        c.append(Config(format: QLM_FMT_F16, bits: 16, groupSize: nil))
        return c
    }()

    static let testRows = [1, 3, 7, 33, 100]
    static let testCols = [16, 31, 64, 100, 130, 576]

    // MARK: - Layout and pack/unpack

    /// Packs one superblock holding a single non-zero code and returns the packed bytes.
    static func packSingle(bits: Int, index: Int, value: UInt8) -> [UInt8] {
        var q = [UInt8](repeating: 0, count: 64)
        q[index] = value
        var out = [UInt8](repeating: 0xEE, count: qlm_row_bytes(Int32(bits), 64))
        qlm_pack_codes(Int32(bits), q, &out, 1, 64)
        return out
    }

    @Test func superblockLayoutsFollowTheSpec() {
        #expect(qlm_row_bytes(2, 64) == 16 && qlm_row_bytes(3, 64) == 24 && qlm_row_bytes(4, 64) == 32 && qlm_row_bytes(8, 64) == 64)
        #expect(qlm_row_bytes(2, 65) == 32 && qlm_row_bytes(3, 100) == 48 && qlm_row_bytes(4, 1) == 32 && qlm_row_bytes(16, 100) == 200)
        for k in 0..<64 {
            // 2-bit: byte k % 16, bits 2·(k / 16).
            var e2 = [UInt8](repeating: 0, count: 16)
            e2[k % 16] = 3 << (2 * (k / 16))
            #expect(Self.packSingle(bits: 2, index: k, value: 3) == e2, "2-bit weight \(k)")
            // 3-bit: low bits as 2-bit; high bit = bit k of the little-endian u64 at byte 16.
            var e3 = [UInt8](repeating: 0, count: 24)
            e3[k % 16] = 1 << (2 * (k / 16))
            e3[16 + k / 8] = 1 << (k % 8)
            #expect(Self.packSingle(bits: 3, index: k, value: 5) == e3, "3-bit weight \(k)")
            // Code layout 1 (before 2026-11-22): high bit in byte 16 + (k % 8), bit (k / 16) + 4·((k % 16) / 8);
            // qlm_codes_from_layout(1, ...) turns it into the current layout.
            var old3 = e3
            old3[16 + k / 8] = 0
            old3[16 + k % 8] |= 1 << ((k / 16) + 4 * ((k % 16) / 8))
            var conv = [UInt8](repeating: 0xEE, count: 24)
            _ = qlm_codes_from_layout(1, 3, old3, &conv, 1, 64)
            #expect(conv == e3, "3-bit layout 1 → 2, weight \(k)")
            // 4-bit: byte k % 32, low nibble for k < 32.
            var e4 = [UInt8](repeating: 0, count: 32)
            e4[k % 32] = k < 32 ? 0x0B : 0xB0
            #expect(Self.packSingle(bits: 4, index: k, value: 11) == e4, "4-bit weight \(k)")
            var e8 = [UInt8](repeating: 0, count: 64)
            e8[k] = 200
            #expect(Self.packSingle(bits: 8, index: k, value: 200) == e8, "8-bit weight \(k)")
        }
    }

    /// Layout 2 (and the single superblocks at a row's end in layout 3): 2-bit plane + 64-bit high-bit mask.
    static func packSingleSuperblocks3(_ q: [UInt8], rows: Int, cols: Int) -> [UInt8] {
        let rb = qlm_row_bytes(3, Int32(cols))
        var out = [UInt8](repeating: 0, count: rows * rb)
        for r in 0..<rows {
            for j in 0..<cols {
                let sb = j / 64, k = j % 64, base = r * rb + sb * 24, c = q[r * cols + j]
                out[base + k % 16] |= (c & 3) << (2 * (k / 16))
                out[base + 16 + k / 8] |= ((c >> 2) & 1) << (k % 8)
            }
        }
        return out
    }

    @Test func octetLayoutFollowsTheSpec() {
        var rng = Rng(21)
        for (rows, cols) in [(2, 512), (3, 576), (1, 1000), (2, 1536), (1, 449)] {
            let q = (0..<(rows * cols)).map { _ in UInt8(rng.below(8)) }
            let rb = qlm_row_bytes(3, Int32(cols)), nsb = rb / 24
            var packed = [UInt8](repeating: 0xEE, count: rows * rb)
            qlm_pack_codes(3, q, &packed, Int32(rows), Int32(cols))
            let single = Self.packSingleSuperblocks3(q, rows: rows, cols: cols)
            for r in 0..<rows {
                func code(_ b: Int, _ j: Int) -> UInt8 { let col = b * 64 + j; return col < cols ? q[r * cols + col] : 0 }
                for b0 in stride(from: 0, to: nsb & ~7, by: 8) {
                    let o = r * rb + b0 * 24
                    for j in 0..<64 {
                        let c = (0..<8).map { code(b0 + $0, j) }
                        #expect(packed[o + j] == c[0] | c[1] << 3 | (c[2] & 3) << 6, "\(rows)x\(cols) V0")
                        #expect(packed[o + 64 + j] == c[3] | c[4] << 3 | (c[5] & 3) << 6, "\(rows)x\(cols) V1")
                        #expect(packed[o + 128 + j] == c[6] | c[7] << 3 | (c[2] >> 2) << 6 | (c[5] >> 2) << 7, "\(rows)x\(cols) V2")
                    }
                }
                let tail = r * rb + (nsb & ~7) * 24  // the last nsb mod 8 superblocks: single form, as in layout 2
                #expect(Array(packed[tail..<(r * rb + rb)]) == Array(single[tail..<(r * rb + rb)]), "\(rows)x\(cols) tail")
            }
            var back = [UInt8](repeating: 0xFF, count: rows * cols)
            qlm_unpack_codes(3, packed, &back, Int32(rows), Int32(cols))
            #expect(back == q, "\(rows)x\(cols) round trip")
            // Files written with layout 2 (every superblock single) convert to the same bytes.
            var conv = [UInt8](repeating: 0, count: rows * rb)
            #expect(qlm_codes_from_layout(2, 3, single, &conv, Int32(rows), Int32(cols)) == 0)
            #expect(conv == packed, "\(rows)x\(cols) layout 2 → 3")
            #expect(qlm_codes_from_layout(Int32(QLM_CODE_LAYOUT) + 1, 3, single, &conv, Int32(rows), Int32(cols)) == -1)
            // Superblock accessor used by the reference kernels.
            for b in [0, nsb / 2, nsb - 1] {
                var w = [UInt8](repeating: 0xFF, count: 64)
                packed.withUnsafeBufferPointer { qlm_sb_codes(3, $0.baseAddress! + (rows - 1) * rb, Int32(nsb), Int32(b), &w) }
                for j in 0..<64 where b * 64 + j < cols { #expect(w[j] == q[(rows - 1) * cols + b * 64 + j]) }
            }
        }
    }

    @Test func layout1ConversionMatchesTheOldSpec() {
        var rng = Rng(12)
        for (rows, cols) in [(1, 64), (3, 100), (2, 576)] {
            let q = (0..<(rows * cols)).map { _ in UInt8(rng.below(8)) }
            let rb = qlm_row_bytes(3, Int32(cols))
            // Pack with the old layout by hand: 2-bit plane as now, high bits interleaved per nibble.
            var old = [UInt8](repeating: 0, count: rows * rb)
            for r in 0..<rows {
                for j in 0..<cols {
                    let sb = j / 64, k = j % 64, base = r * rb + sb * 24
                    old[base + k % 16] |= (q[r * cols + j] & 3) << (2 * (k / 16))
                    old[base + 16 + k % 8] |= ((q[r * cols + j] >> 2) & 1) << ((k / 16) + 4 * ((k % 16) / 8))
                }
            }
            var conv = [UInt8](repeating: 0, count: rows * rb)
            _ = qlm_codes_from_layout(1, 3, old, &conv, Int32(rows), Int32(cols))
            var back = [UInt8](repeating: 0xFF, count: rows * cols)
            qlm_unpack_codes(3, conv, &back, Int32(rows), Int32(cols))
            #expect(back == q, "\(rows)x\(cols)")
            var same = [UInt8](repeating: 0, count: rows * Int(qlm_row_bytes(4, Int32(cols))))
            let src4 = (0..<same.count).map { _ in UInt8(rng.below(256)) }
            _ = qlm_codes_from_layout(1, 4, src4, &same, Int32(rows), Int32(cols))
            #expect(same == src4, "other widths are copied")
        }
    }

    @Test func packUnpackRoundTripsWithZeroPadding() {
        var rng = Rng(11)
        for bits in [2, 3, 4, 8] {
            for cols in [1, 5, 16, 31, 63, 64, 65, 100, 130, 576] {
                for rows in [1, 3, 7] {
                    let q = (0..<(rows * cols)).map { _ in UInt8(rng.below(1 << bits)) }
                    let rb = qlm_row_bytes(Int32(bits), Int32(cols))
                    var packed = [UInt8](repeating: 0xA5, count: rows * rb)
                    qlm_pack_codes(Int32(bits), q, &packed, Int32(rows), Int32(cols))
                    var back = [UInt8](repeating: 0xFF, count: rows * cols)
                    qlm_unpack_codes(Int32(bits), packed, &back, Int32(rows), Int32(cols))
                    #expect(back == q, "\(bits)-bit \(rows)x\(cols)")
                    // Reading each row as a full superblock-padded row shows the padding codes: all 0.
                    let padCols = (cols + 63) / 64 * 64
                    for r in 0..<rows {
                        var full = [UInt8](repeating: 0xFF, count: padCols)
                        Array(packed[(r * rb)..<((r + 1) * rb)]).withUnsafeBufferPointer {
                            qlm_unpack_codes(Int32(bits), $0.baseAddress, &full, 1, Int32(padCols))
                        }
                        #expect(Array(full[0..<cols]) == Array(q[(r * cols)..<((r + 1) * cols)]))
                        #expect(full[cols...].allSatisfy { $0 == 0 }, "\(bits)-bit \(rows)x\(cols): padding codes")
                    }
                }
            }
        }
    }

    // MARK: - Storage accounting

    @Test func bitsPerWeightCountsEverythingStored() {
        var rng = Rng(3)
        // 4-bit g128 on 8x256: 4 bits of codes + (16 + 16) bits per 128 weights = 4.25.
        let a = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 8, cols: 256)
        #expect(a.bitsPerWeight == 4.25)
        #expect(a.storageBytes == 8 * 128 + 8 * 2 * 2 * 2)
        withUnsafePointer(to: a.m) { #expect(qlm_n_groups($0) == 2) }
        // + a permutation: 32 bits per column = 32 · 256 / (8 · 256) = 4 more.
        let ap = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 8, cols: 256, perm: true)
        #expect(ap.bitsPerWeight == 8.25)
        // + outliers: 32-bit row pointers (rows + 1) and 16-bit column + 32-bit value each.
        let ao = Packed(format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 8, cols: 256, codes: a.codes,
                        scales: a.scales, zeros: a.zeros, rowPtr: [0, 1, 2, 3, 4, 5, 6, 8, 10],
                        outCol: Array(repeating: 7, count: 10), outVal: Array(repeating: 1, count: 10))
        #expect(ao.bitsPerWeight == 4.25 + Double(9 * 32 + 10 * 48) / 2048)
        #expect(ao.storageBytes == 8 * 128 + 64 + 9 * 4 + 10 * 6)
        // Ragged 3-bit per-row codebooks on 4x100: 2 superblocks of 24 bytes per row + 8 byte entries
        // + f16 scale and zero.
        let l = Self.random(&rng, format: QLM_FMT_LUT, bits: 3, groupSize: nil, rows: 4, cols: 100)
        #expect(abs(l.bitsPerWeight - (48.0 * 8 + 8 * 8 + 32) / 100) < 1e-12)
        #expect(l.storageBytes == 4 * (48 + 8 + 4))
        // Ragged 2-bit g32 on 3x100: 4 groups per row (the last one partial), 32 bytes of codes per row.
        let r = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 2, groupSize: 32, rows: 3, cols: 100)
        #expect(abs(r.bitsPerWeight - (32.0 * 8 + 4 * 32) / 100) < 1e-12)
        // One group per row, and group sizes larger than the row.
        let pr = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 8, groupSize: nil, rows: 2, cols: 576)
        #expect(abs(pr.bitsPerWeight - (8 + 32.0 / 576)) < 1e-12)
        let big = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 2, cols: 100)
        withUnsafePointer(to: big.m) { #expect(qlm_n_groups($0) == 1) }
        let h = Self.random(&rng, format: QLM_FMT_F16, bits: 16, groupSize: nil, rows: 3, cols: 31)
        #expect(h.bitsPerWeight == 16)
        #expect(h.storageBytes == 3 * 31 * 2)
    }

    // MARK: - Dequantisation and GEMV

    @Test func dequantRowsMatchesTheFormatModel() {
        var rng = Rng(5)
        for cfg in Self.configs {
            for (rows, cols) in [(3, 100), (7, 130), (5, 576), (2, 31)] {
                for variant in 0..<4 {
                    let p = Self.random(&rng, format: cfg.format, bits: cfg.bits, groupSize: cfg.groupSize, rows: rows,
                                        cols: cols, perm: variant & 1 == 1, outliers: variant & 2 == 2)
                    let expected = p.expectedWeights()
                    #expect(p.dequantRows(0, rows).map(\.bitPattern) == expected.map(\.bitPattern), "\(cfg) \(rows)x\(cols) v\(variant)")
                    // A sub-range of rows.
                    let sub = p.dequantRows(1, rows)
                    #expect(sub.map(\.bitPattern) == expected[cols...].map(\.bitPattern), "\(cfg) rows 1..<\(rows)")
                }
            }
        }
    }

    /// The SIMD prefill dequantisation (qlm_qmatrix_dequant_rows on the active ISA) writes exactly
    /// the scalar path's bits: every format × bits × group size (incl. sizes that are not a multiple
    /// of 16, which fall back) × ragged shapes × permutation/outliers, on every supported ISA.
    @Test func simdDequantIsBitIdenticalToScalar() {
        defer { Self.restoreDefaults() }
        var rng = Rng(4242)
        var cfgs = Self.configs
        for b in [2, 3, 4, 8] { for g in [16, 48, 80, 24] { cfgs.append(Config(format: QLM_FMT_AFFINE, bits: b, groupSize: g)) } }
        let shapes = [(1, 16), (3, 31), (2, 64), (5, 65), (4, 100), (3, 130), (2, 200), (6, 576), (2, 1000)]
        var failures = 0
        for cfg in cfgs {
            for (rows, cols) in shapes {
                for variant in 0..<4 {
                    let p = Self.random(&rng, format: cfg.format, bits: cfg.bits, groupSize: cfg.groupSize, rows: rows,
                                        cols: cols, perm: variant & 1 == 1, outliers: variant & 2 == 2)
                    #expect(qlm_isa_force(QLM_ISA_SCALAR) == 0)
                    let ref = p.dequantRows(0, rows).map(\.bitPattern)
                    let refSub = p.dequantRows(1, rows).map(\.bitPattern)
                    for isa in Self.supportedISAs where isa != QLM_ISA_SCALAR {
                        #expect(qlm_isa_force(isa) == 0)
                        let got = p.dequantRows(0, rows).map(\.bitPattern)
                        let sub = rows > 1 ? p.dequantRows(1, rows).map(\.bitPattern) : refSub
                        if got != ref || sub != refSub {
                            failures += 1
                            if failures <= 20 { Issue.record("\(Self.name(isa)) \(cfg) \(rows)x\(cols) v\(variant): SIMD dequant differs from scalar") }
                        }
                    }
                }
            }
        }
        #expect(failures == 0)
    }

    /// "avx512" runs the f32-activation kernels; "avx512-i16" the integer-activation ones (affine and
    /// LUT formats; f16 stays f32), "avx2-i16" AVX2's, "neon-i16" the NEON dot-product ones (on an
    /// AArch64 machine; `bash Kernels/bench/run.sh neon-check` covers them under qemu), checked against the
    /// reference applied to x̂, and x̂ against x.
    @Test(arguments: ["scalar", "avx2", "avx512", "avx512-i16", "avx2-i16", "neon", "neon-i16"])
    func gemvMatchesReferenceOnEveryFormat(isaName: String) throws {
        let int16 = isaName.hasSuffix("-i16")
        let isa = try #require(Self.allISAs.first { Self.name($0) == (int16 ? String(isaName.dropLast(4)) : isaName) })
        guard qlm_isa_supported(isa) == 1, !int16 || Self.int16ISAs.contains(isa) else { return }  // nothing to run here
        defer { Self.restoreDefaults() }
        qlm_qgemv_set_act(int16 ? QLM_ACT_I16 : QLM_ACT_F32)
        qlm_set_threads(2)
        var rng = Rng(UInt64(isa.rawValue) + (int16 ? 7 : 0) + 101)
        var failures = 0, intRuns = 0
        var cfgs = Self.configs
        if int16 { for b in [2, 3, 4, 8] { for g in [192, 256] { cfgs.append(Config(format: QLM_FMT_AFFINE, bits: b, groupSize: g)) } } }
        let cols = int16 ? Self.testCols + [1100, 1536] : Self.testCols
        for cfg in cfgs {
            for rows in Self.testRows {
                for cols in cols {
                    for variant in 0..<4 {
                        let p = Self.random(&rng, format: cfg.format, bits: cfg.bits, groupSize: cfg.groupSize, rows: rows,
                                            cols: cols, perm: variant & 1 == 1, outliers: variant & 2 == 2)
                        // Activations with a few large entries, as after RMSNorm.
                        var x = rng.floats(cols)
                        if int16 { for _ in 0..<3 { x[rng.below(cols)] *= 40 } }
                        let w = p.expectedWeights()
                        let y = p.gemv(isa, x)
                        let ref = p.expectedGemv(isa, x)
                        if p.usesInt16(isa) { intRuns += 1 }
                        let tol = Self.tolerance(cols: cols) * (int16 ? 2 : 1)
                        var e1 = Self.maxRelError(y, ref, w: w, x: x, rows: rows, cols: cols)
                        if p.usesInt16(isa) {  // rounding relative to the split terms' size
                            let mag = p.splitMagnitude(x)
                            e1 = (0..<rows).map { r in
                                let d = abs(Double(y[r]) - Double(ref[r]))
                                return d.isNaN ? .infinity : d / max(mag[r], 1e-30)
                            }.max() ?? 0
                        }
                        let exact = Self.dot(w, x, rows: rows, cols: cols)
                        var e2 = Self.maxRelError(y, exact, w: w, x: x, rows: rows, cols: cols)
                        if p.usesInt16(isa) {
                            // vs the exact product: off by at most Σ|w_j|·|x_j − x̂_j| (+ rounding).
                            let xh = p.int16Activations(x), wd = p.expectedWeights(outliers: false)
                            e2 = 0
                            for r in 0..<rows {
                                var bound = 0.0, mag = 0.0
                                for j in 0..<cols {
                                    bound += abs(Double(wd[r * cols + j])) * abs(Double(x[j]) - Double(xh[j]))
                                    mag += abs(Double(w[r * cols + j]) * Double(x[j]))
                                }
                                let d = abs(Double(y[r]) - Double(exact[r]))
                                e2 = max(e2, d.isNaN ? .infinity : max(0, d - 1.001 * bound) / max(mag, 1e-30))
                            }
                        }
                        let e3 = Self.maxRelError(p.gemvRef(x), exact, w: w, x: x, rows: rows, cols: cols)
                        if !(e1 <= tol && e2 <= tol && e3 <= Self.tolerance(cols: cols)) {
                            failures += 1
                            if failures <= 20 {
                                Issue.record("\(isaName) \(cfg) \(rows)x\(cols) perm \(variant & 1) outliers \(variant >> 1): vs ref \(e1), vs dequant·x \(e2), ref vs dequant·x \(e3) (tol \(tol))")
                            }
                        }
                    }
                }
            }
        }
        #expect(failures == 0)
        if int16 { #expect(intRuns > 1000, "the integer kernels ran \(intRuns) times") }
    }

    /// x̂ is within half a quantisation step of x (step = segment max / 16383), exact for zero
    /// segments, NaN-propagating, and the SIMD quantiser writes the portable twin's bytes.
    @Test func int16ActivationsRoundTripWithinHalfAStep() {
        var rng = Rng(404)
        for (g, cols) in [(32, 100), (64, 576), (128, 1100), (1 << 30, 130)] {
            let p = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: g == 1 << 30 ? nil : g, rows: 2, cols: cols, perm: true)
            var x = rng.floats(cols).map { $0 * 3 }
            x[rng.below(cols)] = 250
            let seg = g == 32 ? 32 : g == 64 ? 64 : 128  // qlm_act_i16_segment
            let xs = (0..<cols).map { x[Int(p.perm![$0])] }  // stored order: segments are in stored order
            let xh = p.int16Activations(x)
            for j in 0..<cols {
                let s0 = j / seg * seg
                let mx = xs[s0..<min(s0 + seg, cols)].map { abs($0) }.max()!
                let k = Int(p.perm![j])
                #expect(abs(xh[k] - xs[j]) <= mx / 16383 * 0.505, "g\(g) col \(j)")
            }
            if qlm_act_i16_supported() == 1 {
                #expect(p.int16Activations(x, simd: true).map(\.bitPattern) == xh.map(\.bitPattern), "g\(g): SIMD quantiser")
            }
            #expect(p.int16Activations([Float](repeating: 0, count: cols)).allSatisfy { $0 == 0 })
            var bad = x
            bad[0] = .nan
            #expect(p.int16Activations(bad).contains { $0.isNaN })
            for isa in Self.int16ISAs {
                defer { Self.restoreDefaults() }
                _ = qlm_isa_force(isa)
                qlm_qgemv_set_act(QLM_ACT_I16)
                #expect(p.usesInt16(isa), "\(Self.name(isa))")
                #expect(p.gemv(isa, bad).allSatisfy { $0.isNaN }, "\(Self.name(isa)): NaN in x gives NaN rows")
                #expect(p.gemv(isa, [Float](repeating: 0, count: cols)).allSatisfy { $0 == 0 }, "\(Self.name(isa))")
            }
        }
    }

    @Test(arguments: [false, true]) func symmetricAndOddGroupSizesWork(int16: Bool) {
        guard !int16 || qlm_act_i16_supported() == 1 else { return }
        defer { Self.restoreDefaults() }
        qlm_qgemv_set_act(int16 ? QLM_ACT_I16 : QLM_ACT_F32)
        var rng = Rng(77)
        for isa in Self.supportedISAs {
            for bits in [2, 3, 4, 8] {
                // Symmetric: zero = 2^(bits-1); a group size that is not a multiple of 16 (portable path).
                for (g, sym) in [(64, true), (48, false), (16, false)] as [(Int, Bool)] {
                    for (rows, cols) in [(5, 100), (9, 576), (4, 40)] {
                        let p = Self.random(&rng, format: QLM_FMT_AFFINE, bits: bits, groupSize: g, rows: rows, cols: cols,
                                            perm: true, outliers: true, symmetric: sym)
                        let x = rng.floats(cols)
                        let w = p.expectedWeights()
                        let e = Self.maxRelError(p.gemv(isa, x), p.expectedGemv(isa, x), w: w, x: x, rows: rows, cols: cols)
                        #expect(e <= 2 * Self.tolerance(cols: cols), "\(Self.name(isa)) affine\(bits) g\(g) sym \(sym) \(rows)x\(cols) i16 \(p.usesInt16(isa)): \(e)")
                    }
                }
            }
        }
    }

    @Test func gemvIsBitIdenticalAcrossThreadCountsAndUsesTheActivePath() {
        defer { Self.restoreDefaults() }
        var rng = Rng(9)
        let shapes = [(1000, 576), (4099, 64), (257, 1000), (1536, 130)]
        for isa in Self.supportedISAs {
            for cfg in Self.configs where cfg.groupSize != 32 {
                let (rows, cols) = shapes[rng.below(shapes.count)]
                let p = Self.random(&rng, format: cfg.format, bits: cfg.bits, groupSize: cfg.groupSize, rows: rows, cols: cols,
                                    perm: true, outliers: true)
                let x = rng.floats(cols)
                qlm_set_threads(1)
                let one = p.gemv(isa, x)
                #expect(!one.contains { $0.isNaN })
                for threads in [2, 3] {
                    qlm_set_threads(Int32(threads))
                    let many = p.gemv(isa, x)
                    #expect(many.map(\.bitPattern) == one.map(\.bitPattern), "\(Self.name(isa)) \(cfg) \(rows)x\(cols) at \(threads) threads")
                }
                #expect(qlm_isa_force(isa) == 0)
                #expect(p.gemv(nil, x).map(\.bitPattern) == one.map(\.bitPattern), "\(Self.name(isa)) \(cfg): active path")
                let w = p.expectedWeights()
                #expect(Self.maxRelError(one, p.expectedGemv(isa, x), w: w, x: x, rows: rows, cols: cols) <= 2 * Self.tolerance(cols: cols))
            }
        }
    }

    /// qlm_qgemv_multi (decode's Q/K/V and gate/up in one parallel region) writes, for every matrix,
    /// exactly what a qlm_qgemv of it alone writes: matrices that share the quantised activations
    /// (same columns, grouping, and permutation by content), ones that cannot (another permutation,
    /// group size or format), outliers, f16, ragged shapes, small matrices, 1-3 threads, every path.
    @Test func multiGemvEqualsSeparateGemvs() {
        defer { Self.restoreDefaults() }
        var rng = Rng(31)
        func withPerm(_ q: Packed, _ perm: [Int32]?) -> Packed {
            Packed(format: q.format, bits: q.bits, groupSize: q.groupSize, rows: q.rows, cols: q.cols, codes: q.codes,
                   scales: q.scales, zeros: q.zeros, lut: q.lut, halves: q.halves, perm: perm, rowPtr: q.rowPtr,
                   outCol: q.outCol, outVal: q.outVal)
        }
        var groups: [[Packed]] = []
        // Q, K, V: one format, one permutation (equal content, separate arrays), then another permutation.
        let q = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 576, cols: 576, perm: true)
        let k = withPerm(Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 192, cols: 576), q.perm)
        let v = withPerm(Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 190, cols: 576, outliers: true), q.perm)
        let other = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 61, cols: 576, perm: true)
        groups.append([q, k, v, other])
        // Unpermuted 3-bit and 2-bit gate/up pairs, and mixed formats on ragged columns.
        for (bits, g) in [(3, 128), (2, 64)] {
            groups.append((0..<2).map { _ in Self.random(&rng, format: QLM_FMT_AFFINE, bits: bits, groupSize: g, rows: 1536, cols: 576) })
        }
        groups.append([
            Self.random(&rng, format: QLM_FMT_AFFINE, bits: 3, groupSize: 64, rows: 9, cols: 130, perm: true, outliers: true),
            Self.random(&rng, format: QLM_FMT_LUT, bits: 2, groupSize: nil, rows: 5, cols: 130),
            Self.random(&rng, format: QLM_FMT_LUT, bits: 3, groupSize: nil, rows: 700, cols: 130, outliers: true),
            Self.random(&rng, format: QLM_FMT_F16, bits: 16, groupSize: nil, rows: 7, cols: 130),
            Self.random(&rng, format: QLM_FMT_AFFINE, bits: 8, groupSize: 32, rows: 3, cols: 130),
            Self.random(&rng, format: QLM_FMT_AFFINE, bits: 2, groupSize: 64, rows: 1001, cols: 130),
        ])
        let acts = qlm_act_i16_supported() == 1 ? [QLM_ACT_F32, QLM_ACT_I16] : [QLM_ACT_F32]
        for isa in Self.supportedISAs {
            for act in acts {
                qlm_qgemv_set_act(act)
                for threads in [1, 2, 3] {
                    qlm_set_threads(Int32(threads))
                    for ms in groups {
                        let x = rng.floats(ms[0].cols).map { $0 * 2 }
                        let n = ms.count
                        let mats = UnsafeMutablePointer<qlm_qmatrix>.allocate(capacity: n)
                        let ptrs = UnsafeMutablePointer<UnsafePointer<qlm_qmatrix>?>.allocate(capacity: n)
                        let ys = UnsafeMutablePointer<UnsafeMutablePointer<Float>?>.allocate(capacity: n)
                        defer { mats.deallocate(); ptrs.deallocate(); ys.deallocate() }
                        for i in 0..<n { (mats + i).initialize(to: ms[i].m); ptrs[i] = UnsafePointer(mats + i) }
                        var outs = ms.map { [Float](repeating: .nan, count: $0.rows) }
                        let sn = qlm_qgemv_multi_scratch_floats(Int32(n), ptrs)
                        var scratch = [Float](repeating: .nan, count: sn) + [Float](repeating: 12345, count: 8)
                        for i in 0..<n { ys[i] = UnsafeMutablePointer<Float>.allocate(capacity: ms[i].rows) }
                        qlm_qgemv_multi_isa(isa, Int32(n), ptrs, x, ys, &scratch)
                        for i in 0..<n {
                            outs[i] = Array(UnsafeBufferPointer(start: ys[i], count: ms[i].rows))
                            ys[i]!.deallocate()
                        }
                        #expect(scratch[sn...].allSatisfy { $0 == 12345 }, "multi GEMV wrote past its \(sn)-float scratch")
                        for (i, p) in ms.enumerated() {
                            let one = p.gemv(isa, x)
                            #expect(!one.contains { $0.isNaN })
                            let same = outs[i].map(\.bitPattern) == one.map(\.bitPattern)
                            #expect(same, "\(Self.name(isa)) act \(act.rawValue) \(threads) thr: matrix \(i) (\(p.format.rawValue)/\(p.bits)-bit \(p.rows)x\(p.cols))")
                        }
                    }
                }
            }
        }
    }

    @Test func unsupportedPathFallsBackAndFormatTableIsComplete() {
        var rng = Rng(21)
        let p = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 64, rows: 9, cols: 130, perm: true, outliers: true)
        let x = rng.floats(130)
        let w = p.expectedWeights()
        for isa in Self.allISAs where qlm_isa_supported(isa) == 0 {
            let y = p.gemv(isa, x)
            #expect(Self.maxRelError(y, p.gemvRef(x), w: w, x: x, rows: 9, cols: 130) <= Self.tolerance(cols: 130))
        }
        for (f, n) in [(QLM_FMT_AFFINE, "affine"), (QLM_FMT_LUT, "lut"), (QLM_FMT_F16, "f16")] {
            let ops = qlm_format_table(f)
            #expect(ops != nil)
            guard let ops else { continue }
            #expect(ops.pointee.format == f)
            #expect(String(cString: ops.pointee.name) == n)
            #expect(ops.pointee.gemv != nil && ops.pointee.dequant_rows != nil)
            #expect((ops.pointee.pack != nil) == (f != QLM_FMT_F16))
        }
        #expect(qlm_format_table(qlm_format(rawValue: 7)) == nil)
        // Through the table: same as the public entry points.
        let ops = qlm_format_table(QLM_FMT_AFFINE)!.pointee
        var y = [Float](repeating: .nan, count: 9)
        var scratch = [Float](repeating: 0, count: withUnsafePointer(to: p.m) { qlm_qgemv_scratch_floats($0) })
        withUnsafePointer(to: p.m) { ops.gemv!(qlm_isa_active(), $0, x, &y, &scratch) }
        #expect(y.map(\.bitPattern) == p.gemv(qlm_isa_active(), x).map(\.bitPattern))
    }

    // MARK: - Prefill GEMM

    @Test func qgemmMatchesReference() {
        // The dequantised-tile path (f32 activations); the integer one is tested below.
        qlm_qgemv_set_act(QLM_ACT_F32)
        defer { Self.restoreDefaults() }
        var rng = Rng(31)
        // Small shapes (one tile) and one with several row tiles (tiles hold <= 2^20 floats).
        var cases: [(Config, Int, Int)] = []
        for cfg in Self.configs { cases.append((cfg, 33, 130)) }
        cases.append((Config(format: QLM_FMT_AFFINE, bits: 4, groupSize: 128), 2000, 576))
        cases.append((Config(format: QLM_FMT_LUT, bits: 3, groupSize: nil), 37, 100))
        for (cfg, rows, cols) in cases {
            let p = Self.random(&rng, format: cfg.format, bits: cfg.bits, groupSize: cfg.groupSize, rows: rows, cols: cols,
                                perm: true, outliers: true)
            let w = p.expectedWeights()
            let tileFloats = withUnsafePointer(to: p.m) { qlm_qgemm_tile_floats($0) }
            #expect(tileFloats >= cols && tileFloats <= max(1 << 20, cols))
            for T in [1, 5, 17] {
                let X = rng.floats(T * cols)
                for beta: Float in [0, 1] {
                    let Y0 = rng.floats(T * rows)
                    var Y = Y0
                    var tile = [Float](repeating: .nan, count: tileFloats)
                    withUnsafePointer(to: p.m) { qlm_qgemm($0, X, &Y, Int32(T), beta, &tile) }
                    var worst = 0.0
                    for t in 0..<T {
                        for r in 0..<rows {
                            var s = 0.0, mag = 0.0
                            for j in 0..<cols {
                                let v = Double(w[r * cols + j]) * Double(X[t * cols + j])
                                s += v; mag += abs(v)
                            }
                            let expected = s + Double(beta) * Double(Y0[t * rows + r])
                            let d = abs(Double(Y[t * rows + r]) - expected) / max(mag + abs(Double(beta * Y0[t * rows + r])), 1e-30)
                            worst = d.isNaN ? .infinity : max(worst, d)
                        }
                    }
                    #expect(worst <= Self.tolerance(cols: cols), "\(cfg) \(rows)x\(cols) T=\(T) beta=\(beta): \(worst)")
                }
            }
        }
    }

    /// The integer-activation prefill GEMM (qlm_qgemm_vnni.c): bit-identical to its portable twin on
    /// every affine/LUT format, ragged shapes, act-order, outliers, token counts that leave every register
    /// block tail (T mod 6) and both betas; the twin equals the f32 product with x̂ (each token's
    /// activations quantised as for the decode GEMV) up to rounding; results do not depend on the
    /// thread count; and qlm_qgemm takes this path exactly when the activations are I16.
    @Test func qgemmI16MatchesTwinAndReference() {
        var rng = Rng(47)
        var cfgs = Self.configs.filter { $0.format != QLM_FMT_F16 }
        for b in [2, 4] { cfgs.append(Config(format: QLM_FMT_AFFINE, bits: b, groupSize: 256)) }
        let simd = withUnsafePointer(to: Self.random(&rng, format: QLM_FMT_AFFINE, bits: 4, groupSize: 128, rows: 4, cols: 128).m) {
            qlm_qgemm_i16_available($0) == 1
        }
        var simdRuns = 0
        for cfg in cfgs {
            for (rows, cols) in [(1, 16), (7, 31), (33, 130), (70, 576), (40, 1100)] {
                let p = Self.random(&rng, format: cfg.format, bits: cfg.bits, groupSize: cfg.groupSize, rows: rows, cols: cols,
                                    perm: rng.below(2) == 1, outliers: rng.below(2) == 1)
                let wd = p.expectedWeights(outliers: false)
                for T in [1, 6, 11] {
                    var X = rng.floats(T * cols)
                    for _ in 0..<T { X[rng.below(T * cols)] *= 40 }  // a few large entries, as after RMSNorm
                    for beta: Float in [0, 0.5] {
                        let Y0 = rng.floats(T * rows)
                        var yRef = Y0
                        withUnsafePointer(to: p.m) { qlm_qgemm_i16_ref($0, X, &yRef, Int32(T), beta) }
                        // Twin vs Σ w·x̂ in f64, relative to the size of the split terms (as for the GEMV).
                        var worst = 0.0
                        for t in 0..<T {
                            let x = Array(X[(t * cols)..<((t + 1) * cols)])
                            let xh = p.int16Activations(x), mag = p.splitMagnitude(x)
                            for r in 0..<rows {
                                var s = 0.0
                                for j in 0..<cols { s += Double(wd[r * cols + j]) * Double(xh[j]) }
                                if !p.outVal.isEmpty {  // outliers times the exact x
                                    for e in Int(p.rowPtr[r])..<Int(p.rowPtr[r + 1]) { s += Double(p.outVal[e]) * Double(x[Int(p.outCol[e])]) }
                                }
                                let e = s + Double(beta) * Double(Y0[t * rows + r])
                                let d = abs(Double(yRef[t * rows + r]) - e) / max(mag[r] + abs(Double(beta * Y0[t * rows + r])), 1e-30)
                                worst = d.isNaN ? .infinity : max(worst, d)
                            }
                        }
                        #expect(worst <= Self.tolerance(cols: cols) * 2, "\(cfg) \(rows)x\(cols) T=\(T) beta=\(beta): \(worst)")
                        guard simd, withUnsafePointer(to: p.m, { qlm_qgemm_i16_available($0) }) == 1 else { continue }
                        simdRuns += 1
                        for threads: Int32 in [1, 2] {
                            qlm_set_threads(threads)
                            var y = Y0
                            withUnsafePointer(to: p.m) { qlm_qgemm_i16($0, X, &y, Int32(T), beta) }
                            #expect(y.map(\.bitPattern) == yRef.map(\.bitPattern), "\(cfg) \(rows)x\(cols) T=\(T) beta=\(beta) threads=\(threads)")
                        }
                        qlm_set_threads(0)
                    }
                }
            }
        }
        if simd {
            #expect(simdRuns > 200)
            // The dispatcher: I16 activations on AVX-512 take the integer kernel, F32 the dequantised tiles.
            let p = Self.random(&rng, format: QLM_FMT_AFFINE, bits: 3, groupSize: 128, rows: 50, cols: 300, perm: true)
            let T = 9, X = rng.floats(T * 300)
            var yInt = [Float](repeating: 0, count: T * 50)
            withUnsafePointer(to: p.m) { qlm_qgemm_i16($0, X, &yInt, Int32(T), 0) }
            var tile = [Float](repeating: .nan, count: withUnsafePointer(to: p.m) { qlm_qgemm_tile_floats($0) })
            for act in [QLM_ACT_I16, QLM_ACT_F32] {
                qlm_qgemv_set_act(act)
                _ = qlm_isa_force(QLM_ISA_AVX512)
                var y = [Float](repeating: .nan, count: T * 50)
                withUnsafePointer(to: p.m) { qlm_qgemm($0, X, &y, Int32(T), 0, &tile) }
                #expect((y.map(\.bitPattern) == yInt.map(\.bitPattern)) == (act == QLM_ACT_I16), "\(act)")
            }
            Self.restoreDefaults()
        }
    }
}
