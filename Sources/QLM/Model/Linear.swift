import Foundation
import QLMKernels

/// A linear layer's weight W [rows = out, cols = in]: dense f32, or a packed low-bit matrix run
/// by the quantized kernels. Every caller goes through `gemv` (decode) and `gemm` (prefill), so
/// the model code does not care which.
public final class Linear: @unchecked Sendable {
    public enum Storage {
        case f32(FloatBuffer)      // row-major [rows, cols]
        case packed(PackedMatrix)  // affine / lut / f16, optional outliers and permutation
    }
    public let rows: Int
    public let cols: Int
    public let storage: Storage

    public init(rows: Int, cols: Int, f32: FloatBuffer) {
        precondition(f32.count == rows * cols)
        self.rows = rows; self.cols = cols; storage = .f32(f32)
    }

    public init(packed: PackedMatrix) {
        rows = packed.rows; cols = packed.cols; storage = .packed(packed)
    }

    /// Bytes streamed from memory for one GEMV (what decode speed is bounded by).
    public var bytesPerToken: Int {
        switch storage {
        case .f32: return rows * cols * 4
        case let .packed(p): return p.storageBytes
        }
    }

    public var bitsPerWeight: Double {
        switch storage {
        case .f32: return 32
        case let .packed(p): return p.bitsPerWeight
        }
    }

    /// Floats of scratch `gemv`/`gemm` need (padded input, dequantized tiles).
    public var scratchFloats: Int {
        switch storage {
        case .f32: return 0
        case let .packed(p): return max(p.scratchFloats, p.tileFloats)
        }
    }

    /// y[rows] = W · x[cols]
    @inline(__always)
    public func gemv(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        switch storage {
        case let .f32(w): qlm_gemv_f32(w.ptr, x, y, Int32(rows), Int32(cols))
        case let .packed(p): p.gemv(x, y, scratch: scratch)
        }
    }

    /// Y[T, rows] = X[T, cols] · Wᵀ (+ beta·Y). T == 1 with beta 0 takes the GEMV path.
    public func gemm(_ X: UnsafePointer<Float>, _ Y: UnsafeMutablePointer<Float>, T: Int, beta: Float = 0,
                     scratch: UnsafeMutablePointer<Float>) {
        if T == 1 && beta == 0 { gemv(X, Y, scratch: scratch); return }
        switch storage {
        case let .f32(w):
            qlm_sgemm_nt(Int32(T), Int32(rows), Int32(cols), X, Int32(cols), w.ptr, Int32(cols), Y, Int32(rows), beta)
        case let .packed(p): p.gemm(X, Y, T: T, beta: beta, tile: scratch)
        }
    }

    /// Whether `gemm` runs on the OpenMP threads (the packed integer GEMM) rather than OpenBLAS's.
    public var gemmRunsOnOpenMP: Bool {
        switch storage {
        case .f32: return false
        case let .packed(p): return withUnsafePointer(to: p.m) { qlm_qgemm_uses_i16($0) } == 1
        }
    }

    /// Row r as f32 (embedding lookup).
    @inline(__always)
    public func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case let .f32(w): out.update(from: w.ptr + r * cols, count: cols)
        case let .packed(p): p.dequantRows(r, r + 1, into: out)
        }
    }

    /// The whole matrix as f32, row-major (dequantized when packed).
    public func denseF32() -> [Float] {
        switch storage {
        case let .f32(w): return w.array
        case let .packed(p): return p.dequantized()
        }
    }
}

/// Linears that read the same input (Q, K and V; gate and up). When all of them are packed, a decode
/// step runs their GEMVs in one parallel region (`qlm_qgemv_multi`): one fork/join instead of one per
/// matrix, and K and V, too small to be split alone, use every thread. Results are bit-identical to
/// separate `gemv` calls. Otherwise (an f32 model) the GEMVs run one after the other.
public final class SharedInputLinears: @unchecked Sendable {
    public let linears: [Linear]
    private let mats: UnsafeMutablePointer<qlm_qmatrix>?                 // [n] copies (the Linears keep their memory alive)
    private let matPtrs: UnsafeMutablePointer<UnsafePointer<qlm_qmatrix>?>?  // [n] → mats
    /// Floats of scratch `gemv` needs.
    public let scratchFloats: Int

    public init(_ linears: [Linear]) {
        precondition(!linears.isEmpty && linears.count <= Int(QLM_QGEMV_MULTI_MAX))
        precondition(linears.allSatisfy { $0.cols == linears[0].cols }, "linears sharing an input need equal column counts")
        self.linears = linears
        let packed = linears.compactMap { l -> qlm_qmatrix? in
            if case let .packed(p) = l.storage { return p.m }
            return nil
        }
        if packed.count == linears.count {
            let m = UnsafeMutablePointer<qlm_qmatrix>.allocate(capacity: packed.count)
            m.initialize(from: packed, count: packed.count)
            let ptrs = UnsafeMutablePointer<UnsafePointer<qlm_qmatrix>?>.allocate(capacity: packed.count)
            for i in 0..<packed.count { ptrs[i] = UnsafePointer(m + i) }
            mats = m; matPtrs = ptrs
            scratchFloats = qlm_qgemv_multi_scratch_floats(Int32(packed.count), ptrs)
        } else {
            mats = nil; matPtrs = nil
            scratchFloats = linears.map(\.scratchFloats).max() ?? 0
        }
    }

    deinit {
        if let m = mats { m.deinitialize(count: linears.count); m.deallocate() }
        matPtrs?.deallocate()
    }

    /// ys[k][rows_k] = W_k · x[cols] for every linear k (ys holds linears.count pointers).
    @inline(__always)
    public func gemv(_ x: UnsafePointer<Float>, _ ys: UnsafePointer<UnsafeMutablePointer<Float>?>, scratch: UnsafeMutablePointer<Float>) {
        if let p = matPtrs {
            qlm_qgemv_multi(Int32(linears.count), p, x, ys, scratch)
        } else {
            for (k, l) in linears.enumerated() { l.gemv(x, ys[k]!, scratch: scratch) }
        }
    }
}
