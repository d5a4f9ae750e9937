import Foundation

/// GPT-2's `bytes_to_unicode`: byte-level vocabularies store each byte as a printable character
/// (printable Latin-1 bytes as themselves, the other 68 bytes as U+0100, U+0101, … in byte
/// order), so that "Ġthe" means the bytes " the".
enum ByteLevel {
    /// Character (as a scalar value) standing for each byte.
    static let byteToScalar: [UInt32] = {
        var map = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                map[b] = UInt32(b)
            } else {
                map[b] = next
                next += 1
            }
        }
        return map
    }()

    /// Inverse of byteToScalar, keyed by scalar value (all are < 324).
    static let scalarToByte: [Int16] = {
        var inv = [Int16](repeating: -1, count: 324)
        for (b, s) in byteToScalar.enumerated() { inv[Int(s)] = Int16(b) }
        return inv
    }()

    /// The vocabulary string for raw bytes (e.g. [0x20, 0x74] → "Ġt").
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)])!) }
        return String(s)
    }

    /// The bytes a vocabulary string stands for. Characters outside the mapping (added tokens
    /// stored verbatim, e.g. CJK) contribute their own UTF-8.
    static func decode(_ piece: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(piece.utf8.count)
        for u in piece.unicodeScalars {
            let v = Int(u.value)
            if v < scalarToByte.count, scalarToByte[v] >= 0 {
                out.append(UInt8(scalarToByte[v]))
            } else {
                out.append(contentsOf: String(u).utf8)
            }
        }
        return out
    }
}
