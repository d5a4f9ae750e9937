import Foundation
import QLMKernels

/// A linear layer's weight W [rows = out, cols = in]. The storage is an enum so packed low-bit
/// formats slot in beside dense f32 without touching the model code: every caller goes through
/// `gemv` (decode) and `gemm` (prefill).
public final class Linear: @unchecked Sendable {
    public enum Storage {
        case f32(FloatBuffer)  // row-major [rows, cols]
    }
    public let rows: Int
    public let cols: Int
    public let storage: Storage

    public init(rows: Int, cols: Int, f32: FloatBuffer) {
        precondition(f32.count == rows * cols)
        self.rows = rows; self.cols = cols; storage = .f32(f32)
    }

    /// Bytes streamed from memory for one GEMV (what decode speed is bounded by).
    public var bytesPerToken: Int {
        switch storage {
        case .f32: return rows * cols * 4
        }
    }

    /// y[rows] = W · x[cols]
    @inline(__always)
    public func gemv(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        switch storage {
        case let .f32(w): qlm_gemv_f32(w.ptr, x, y, Int32(rows), Int32(cols))
        }
    }

    /// Y[T, rows] = X[T, cols] · Wᵀ (+ beta·Y). T == 1 takes the GEMV path.
    public func gemm(_ X: UnsafePointer<Float>, _ Y: UnsafeMutablePointer<Float>, T: Int, beta: Float = 0,
                     scratch: UnsafeMutablePointer<Float>? = nil) {
        switch storage {
        case let .f32(w):
            if T == 1 && beta == 0 { qlm_gemv_f32(w.ptr, X, Y, Int32(rows), Int32(cols)); return }
            qlm_sgemm_nt(Int32(T), Int32(rows), Int32(cols), X, Int32(cols), w.ptr, Int32(cols), Y, Int32(rows), beta)
        }
    }
}
