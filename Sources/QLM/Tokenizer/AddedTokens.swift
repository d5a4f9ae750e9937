import Foundation

/// A token matched as a whole in the input before any pre-tokenization (HF "added tokens",
/// GGUF control and user-defined tokens).
struct AddedToken: Sendable, Equatable {
    var id: Int32
    var content: String
    /// Special tokens (`<|im_start|>`, GGUF control tokens) are matched only with parseSpecial;
    /// other added tokens always are.
    var special: Bool
}

/// One piece of input after cutting out added tokens.
enum TextFragment: Equatable {
    /// Ordinary text: scalar indices into the ScalarText.
    case text(Int, Int)
    case token(Int32)
}

/// Finds added tokens in text, leftmost-longest (as HF's Aho-Corasick matcher does).
struct AddedTokenMatcher: Sendable {
    private struct Entry: Sendable {
        var scalars: [UInt32]
        var id: Int32
        var special: Bool
    }

    /// Candidates by first scalar, longest first.
    private let byFirst: [UInt32: [Entry]]
    /// Quick rejection of ASCII positions that no token starts with.
    private let asciiStarts: [Bool]
    private let hasSpecial: Bool
    private let hasNonSpecial: Bool

    init(_ tokens: [AddedToken]) {
        var map: [UInt32: [Entry]] = [:]
        var ascii = [Bool](repeating: false, count: 128)
        for t in tokens where !t.content.isEmpty {
            let s = t.content.unicodeScalars.map(\.value)
            map[s[0], default: []].append(Entry(scalars: s, id: t.id, special: t.special))
            if s[0] < 128 { ascii[Int(s[0])] = true }
        }
        for k in map.keys { map[k]!.sort { $0.scalars.count > $1.scalars.count } }
        byFirst = map
        asciiStarts = ascii
        hasSpecial = tokens.contains { $0.special }
        hasNonSpecial = tokens.contains { !$0.special }
    }

    func split(_ t: ScalarText, parseSpecial: Bool) -> [TextFragment] {
        let n = t.count
        if n == 0 { return [] }
        if !hasNonSpecial && !(parseSpecial && hasSpecial) { return [.text(0, n)] }
        let cp = t.scalars
        var out: [TextFragment] = []
        var textStart = 0
        var i = 0
        while i < n {
            let c = cp[i]
            if c < 128 && !asciiStarts[Int(c)] { i += 1; continue }
            var matched: Entry?
            if let cands = byFirst[c] {
                for e in cands where parseSpecial || !e.special {
                    let m = e.scalars.count
                    if i + m <= n && cp[i..<(i + m)].elementsEqual(e.scalars) { matched = e; break }
                }
            }
            if let e = matched {
                if textStart < i { out.append(.text(textStart, i)) }
                out.append(.token(e.id))
                i += e.scalars.count
                textStart = i
            } else {
                i += 1
            }
        }
        if textStart < n { out.append(.text(textStart, n)) }
        return out
    }
}
