import Foundation

/// Storage types a checkpoint may hold. Everything is dequantized to f32 at load.
public enum TensorDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", q8_0 = "Q8_0", q4_0 = "Q4_0", q4_1 = "Q4_1"

    /// Bytes for `count` elements, or nil if count does not fill whole blocks.
    public func byteCount(elements count: Int) -> Int? {
        switch self {
        case .f32: return count * 4
        case .f16, .bf16: return count * 2
        case .q8_0: return count % 32 == 0 ? count / 32 * 34 : nil
        case .q4_0: return count % 32 == 0 ? count / 32 * 18 : nil
        case .q4_1: return count % 32 == 0 ? count / 32 * 20 : nil
        }
    }
}

/// One tensor of a checkpoint. `shape` is row-major, outermost first: a linear layer's weight is
/// [out_features, in_features] whatever the file's own convention (GGUF lists dims innermost first).
public struct TensorInfo: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var dtype: TensorDType
    public var elementCount: Int { shape.reduce(1, *) }
    public init(name: String, shape: [Int], dtype: TensorDType) {
        self.name = name; self.shape = shape; self.dtype = dtype
    }
}

/// A named collection of tensors in one or more files (GGUF, safetensors, sharded safetensors).
public protocol TensorSource: AnyObject, Sendable {
    /// Human-readable location, used in errors.
    var path: String { get }
    var tensorNames: [String] { get }
    func info(_ name: String) -> TensorInfo?
    /// The tensor dequantized to f32, row-major.
    func loadF32(_ name: String) throws -> [Float]
}
