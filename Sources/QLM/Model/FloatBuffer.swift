import Foundation

/// A fixed-size, 64-byte-aligned f32 buffer with a stable address. Weights and activations live
/// in these so the decode loop passes raw pointers to C without copies or allocation.
public final class FloatBuffer: @unchecked Sendable {
    public let count: Int
    public let ptr: UnsafeMutablePointer<Float>

    public init(count: Int, zeroed: Bool = true) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        ptr = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        if zeroed { ptr.initialize(repeating: 0, count: max(count, 1)) }
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count, zeroed: false)
        values.withUnsafeBufferPointer { ptr.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { ptr.deallocate() }

    public var array: [Float] { Array(UnsafeBufferPointer(start: ptr, count: count)) }
    public subscript(i: Int) -> Float {
        get { ptr[i] }
        set { ptr[i] = newValue }
    }
}

/// The same for f16 values (the f16 KV cache), zero-filled.
public final class HalfBuffer: @unchecked Sendable {
    public let count: Int
    public let ptr: UnsafeMutablePointer<UInt16>

    public init(count: Int) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 2, alignment: 64)
        ptr = raw.bindMemory(to: UInt16.self, capacity: max(count, 1))
        ptr.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { ptr.deallocate() }
}
