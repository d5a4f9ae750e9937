import Foundation

/// A string decoded once into parallel arrays, so that the pre-tokenizer can look at character
/// classes by index and BPE can key its cache by UTF-8 byte slices without allocating.
struct ScalarText {
    /// UTF-8 bytes of the whole text.
    let bytes: [UInt8]
    /// Unicode scalar values.
    private(set) var scalars: [UInt32] = []
    /// `CharClass` of each scalar.
    private(set) var classes: [UInt8] = []
    /// Byte offset of each scalar, plus one final entry = bytes.count.
    private(set) var offsets: [Int32] = []

    init(_ text: String) {
        bytes = Array(text.utf8)
        let n = bytes.count
        scalars.reserveCapacity(n)
        classes.reserveCapacity(n)
        offsets.reserveCapacity(n + 1)
        // A Swift String is always valid UTF-8, so a plain decoder without error paths suffices.
        var i = 0
        while i < n {
            let b0 = UInt32(bytes[i])
            var cp: UInt32
            var len: Int
            if b0 < 0x80 {
                cp = b0; len = 1
            } else if b0 < 0xE0 {
                cp = (b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F); len = 2
            } else if b0 < 0xF0 {
                cp = (b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F)
                len = 3
            } else {
                cp = (b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12
                    | UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F)
                len = 4
            }
            scalars.append(cp)
            classes.append(CharClass.of(cp))
            offsets.append(Int32(i))
            i += len
        }
        offsets.append(Int32(n))
    }

    var count: Int { scalars.count }

    /// UTF-8 bytes of scalars start..<end.
    @inline(__always) func byteSlice(_ start: Int, _ end: Int) -> ArraySlice<UInt8> {
        bytes[Int(offsets[start])..<Int(offsets[end])]
    }
}

/// The character classes the split regexes distinguish: `\p{L}`, `\p{N}`, `\s`, anything else.
enum CharClass {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 3

    /// `\p{L}` is general category L* (not `isAlphabetic`, which also admits marks and Nl);
    /// `\p{N}` is Nd/Nl/No; `\s` is the White_Space property (Oniguruma and Rust regex agree).
    @inline(__always) static func of(_ cp: UInt32) -> UInt8 {
        if cp < 0x80 {
            switch cp {
            case 0x41...0x5A, 0x61...0x7A: return letter
            case 0x30...0x39: return number
            case 0x09...0x0D, 0x20: return space
            default: return other
            }
        }
        let props = Unicode.Scalar(cp)!.properties
        if props.isWhitespace { return space }
        switch props.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return other
        }
    }
}

/// The split regexes byte-level BPE vocabularies are trained with.
enum SplitPattern: Sendable, Equatable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3

    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Regex =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
}

/// How HF's `Digits` pre-tokenizer (llama.cpp: "smollm" pre) isolates numbers before the regex.
enum DigitSplit: Sendable, Equatable {
    case none
    /// Every `\p{N}` character on its own (`individual_digits: true`).
    case individual
    /// Runs of `\p{N}` kept together.
    case contiguous
}

/// Splits text into the words BPE merges within. Hand-written equivalents of the regexes
/// (Swift Regex is far too slow for a 1.3M-character corpus); each `…End` function returns where
/// the regex's leftmost match starting at `i` ends, alternatives tried in the regex's order.
struct PreTokenizer: Sendable, Equatable {
    var pattern: SplitPattern
    var digits: DigitSplit = .none
    /// HF ByteLevel `add_prefix_space`: a space is prepended to each text fragment that does not
    /// start with one. Applied by the tokenizer (it changes the text), recorded here.
    var addPrefixSpace = false

    /// Calls `emit(start, end)` with the scalar range of each pre-token in `lo..<hi`.
    func split(_ t: ScalarText, _ lo: Int, _ hi: Int, _ emit: (Int, Int) -> Void) {
        if digits == .none {
            scan(t, lo, hi, emit)
            return
        }
        // Digits runs first; the regex then sees each non-digit piece on its own (so e.g. the
        // space before a number is a token by itself, as in HF's Sequence pre-tokenizer).
        let cls = t.classes
        var i = lo
        while i < hi {
            if cls[i] == CharClass.number {
                var e = i + 1
                if digits == .contiguous { while e < hi && cls[e] == CharClass.number { e += 1 } }
                emit(i, e)
                i = e
            } else {
                var e = i + 1
                while e < hi && cls[e] != CharClass.number { e += 1 }
                scan(t, i, e, emit)
                i = e
            }
        }
    }

    private func scan(_ t: ScalarText, _ lo: Int, _ hi: Int, _ emit: (Int, Int) -> Void) {
        var i = lo
        while i < hi {
            let e = pattern == .gpt2 ? gpt2End(t, i, hi) : llama3End(t, i, hi)
            emit(i, e)
            i = e
        }
    }
}

private let apostrophe: UInt32 = 0x27
private let space: UInt32 = 0x20
private let cr: UInt32 = 0x0D
private let lf: UInt32 = 0x0A

/// End of the whitespace alternatives `\s+(?!\S)|\s+` at i (t.scalars[i] is whitespace).
/// `\s+(?!\S)` gives back the last whitespace before a non-space so that it can prefix the next
/// word; a single whitespace before a non-space falls through to `\s+`.
@inline(__always)
private func whitespaceEnd(_ cls: [UInt8], _ i: Int, _ hi: Int) -> Int {
    var e = i + 1
    while e < hi && cls[e] == CharClass.space { e += 1 }
    if e == hi || e - i == 1 { return e }
    return e - 1
}

/// GPT-2 pattern (case-sensitive contractions, optional single U+0020 prefix for L/N/other runs).
@inline(__always)
private func gpt2End(_ t: ScalarText, _ i: Int, _ hi: Int) -> Int {
    let cp = t.scalars, cls = t.classes
    let c = cp[i]
    if c == apostrophe && i + 1 < hi {
        switch cp[i + 1] {
        case 0x73, 0x74, 0x6D, 0x64: return i + 2  // s t m d
        case 0x72, 0x76:  // r v → 're 've
            if i + 2 < hi && cp[i + 2] == 0x65 { return i + 3 }
        case 0x6C:  // ll
            if i + 2 < hi && cp[i + 2] == 0x6C { return i + 3 }
        default: break
        }
    }
    // ` ?X+`: the optional space only helps when the next character starts the run.
    var j = i
    if c == space && i + 1 < hi && cls[i + 1] != CharClass.space { j = i + 1 }
    let k = cls[j]
    if k != CharClass.space {
        var e = j + 1
        while e < hi && cls[e] == k { e += 1 }
        return e
    }
    return whitespaceEnd(cls, i, hi)
}

/// Case-insensitive ASCII letter (plus U+017F LONG S, which Unicode case folding maps to 's').
@inline(__always)
private func lowerASCII(_ c: UInt32) -> UInt32 {
    if c >= 0x41 && c <= 0x5A { return c + 0x20 }
    if c == 0x17F { return 0x73 }
    return c
}

/// Llama-3 pattern.
@inline(__always)
private func llama3End(_ t: ScalarText, _ i: Int, _ hi: Int) -> Int {
    let cp = t.scalars, cls = t.classes
    let c = cp[i]
    if c == apostrophe && i + 1 < hi {
        switch lowerASCII(cp[i + 1]) {
        case 0x73, 0x74, 0x6D, 0x64: return i + 2
        case 0x72, 0x76:
            if i + 2 < hi && lowerASCII(cp[i + 2]) == 0x65 { return i + 3 }
        case 0x6C:
            if i + 2 < hi && lowerASCII(cp[i + 2]) == 0x6C { return i + 3 }
        default: break
        }
    }
    let k = cls[i]
    // `[^\r\n\p{L}\p{N}]?\p{L}+`
    if k == CharClass.letter {
        var e = i + 1
        while e < hi && cls[e] == CharClass.letter { e += 1 }
        return e
    }
    if k != CharClass.number && c != cr && c != lf && i + 1 < hi && cls[i + 1] == CharClass.letter {
        var e = i + 2
        while e < hi && cls[e] == CharClass.letter { e += 1 }
        return e
    }
    // `\p{N}{1,3}`
    if k == CharClass.number {
        var e = i + 1
        while e < hi && e < i + 3 && cls[e] == CharClass.number { e += 1 }
        return e
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    var j = i
    if c == space && i + 1 < hi && cls[i + 1] == CharClass.other { j = i + 1 }
    if cls[j] == CharClass.other {
        var e = j + 1
        while e < hi && cls[e] == CharClass.other { e += 1 }
        while e < hi && (cp[e] == cr || cp[e] == lf) { e += 1 }
        return e
    }
    // Here c is whitespace. `\s*[\r\n]+`: the whitespace run up to and including its last newline.
    var e = i
    var lastNewline = -1
    while e < hi && cls[e] == CharClass.space {
        if cp[e] == cr || cp[e] == lf { lastNewline = e }
        e += 1
    }
    if lastNewline >= 0 { return lastNewline + 1 }
    return whitespaceEnd(cls, i, hi)
}

/// The pre-tokens of `text` as strings (for tests and debugging).
func preTokenize(_ text: String, _ pre: PreTokenizer) -> [String] {
    let t = ScalarText(text)
    var out: [String] = []
    pre.split(t, 0, t.count) { s, e in out.append(String(decoding: t.byteSlice(s, e), as: UTF8.self)) }
    return out
}
