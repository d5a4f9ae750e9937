import Foundation

/// GPT-2-style byte-level BPE (SmolLM2, GPT-2, Llama 3): text is cut into pre-tokens by a split
/// regex, each pre-token's UTF-8 bytes start as single-byte tokens, and the lowest-ranked
/// adjacent merge is applied until none applies.
final class ByteLevelBPETokenizer: Tokenizer {
    let vocabSize: Int
    let bosId: Int32?
    let eosIds: [Int32]
    let addBOS: Bool
    let preTokenizer: PreTokenizer
    /// Llama 3 (HF `ignore_merges`): a pre-token that is itself a vocabulary entry is used whole.
    private let ignoreMerges: Bool
    /// Id of the token for each single byte, -1 where the vocabulary lacks it.
    private let byteIds: [Int32]
    /// (left id << 32 | right id) → (rank << 32 | merged id): comparing values compares ranks.
    private let merges: [UInt64: UInt64]
    /// Vocabulary strings as stored ("Ġthe") and added-token contents → id.
    private let pieceIds: [String: Int32]
    /// Raw bytes of ordinary vocabulary tokens → id.
    private let bytesIds: [ArraySlice<UInt8>: Int32]
    private let bytesOf: [[UInt8]]
    private let specialFlags: [Bool]
    private let added: AddedTokenMatcher

    /// - vocab: the vocabulary string of each id (nil for ids the vocabulary skips).
    /// - merges: in rank order; every part and every concatenation must be in the vocabulary.
    /// - eos: explicitly named eos ids; end-of-turn specials are added (see `collectEOSIds`).
    init(vocab: [String?], merges mergeList: [(String, String)], addedTokens: [AddedToken],
         preTokenizer: PreTokenizer, ignoreMerges: Bool, bosId: Int32?, eos: [Int32?],
         addBOS: Bool, path: String) throws {
        let size = max(vocab.count, (addedTokens.map { Int($0.id) }.max() ?? -1) + 1)
        vocabSize = size
        self.preTokenizer = preTokenizer
        self.ignoreMerges = ignoreMerges
        self.addBOS = addBOS

        var pieceIds: [String: Int32] = [:]
        pieceIds.reserveCapacity(size)
        var bytesOf = [[UInt8]](repeating: [], count: size)
        var bytesIds: [ArraySlice<UInt8>: Int32] = [:]
        bytesIds.reserveCapacity(size)
        let addedIds = Set(addedTokens.map(\.id))
        for (id, piece) in vocab.enumerated() {
            guard let piece else { continue }
            if pieceIds[piece] == nil { pieceIds[piece] = Int32(id) }
            if addedIds.contains(Int32(id)) { continue }
            let b = ByteLevel.decode(piece)
            bytesOf[id] = b
            if bytesIds[b[...]] == nil { bytesIds[b[...]] = Int32(id) }
        }
        var special = [Bool](repeating: false, count: size)
        for t in addedTokens {
            guard t.id >= 0 else { throw QLMError.corrupt(path: path, detail: "added token '\(t.content)' has id \(t.id)") }
            pieceIds[t.content] = t.id
            bytesOf[Int(t.id)] = Array(t.content.utf8)
            special[Int(t.id)] = t.special
        }

        var byteIds = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { byteIds[b] = pieceIds[ByteLevel.encode([UInt8(b)])] ?? -1 }

        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(mergeList.count)
        for (rank, (a, b)) in mergeList.enumerated() {
            // HF refuses such a file too (MergeTokenOutOfVocabulary): the merge table is broken.
            guard let ia = pieceIds[a], let ib = pieceIds[b], let ir = pieceIds[a + b] else {
                throw QLMError.corrupt(path: path, detail: "merge #\(rank) '\(a) \(b)' uses a token that is not in the vocabulary")
            }
            let key = UInt64(UInt32(bitPattern: ia)) << 32 | UInt64(UInt32(bitPattern: ib))
            if merges[key] == nil { merges[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: ir)) }
        }

        self.byteIds = byteIds
        self.merges = merges
        self.pieceIds = pieceIds
        self.bytesIds = bytesIds
        self.bytesOf = bytesOf
        self.specialFlags = special
        self.added = AddedTokenMatcher(addedTokens)
        self.bosId = bosId
        let specials = Dictionary(addedTokens.filter(\.special).map { ($0.content, $0.id) }, uniquingKeysWith: { a, _ in a })
        self.eosIds = collectEOSIds(explicit: eos, specialIdOf: { specials[$0] })
    }

    func encode(_ text: String, parseSpecial: Bool) -> [Int32] {
        let t = ScalarText(text)
        var out: [Int32] = []
        out.reserveCapacity(t.bytes.count / 3 + 4)
        // Natural text repeats words constantly; a per-call cache keeps the class immutable
        // (and so thread-safe) while still making corpus-sized inputs fast.
        var cache: [ArraySlice<UInt8>: [Int32]] = [:]
        for fragment in added.split(t, parseSpecial: parseSpecial) {
            switch fragment {
            case let .token(id):
                out.append(id)
            case let .text(s, e):
                if preTokenizer.addPrefixSpace && t.scalars[s] != 0x20 {
                    let sub = ScalarText(" " + String(decoding: t.byteSlice(s, e), as: UTF8.self))
                    encodeText(sub, 0, sub.count, &cache, &out)
                } else {
                    encodeText(t, s, e, &cache, &out)
                }
            }
        }
        return out
    }

    private func encodeText(_ t: ScalarText, _ lo: Int, _ hi: Int,
                            _ cache: inout [ArraySlice<UInt8>: [Int32]], _ out: inout [Int32]) {
        preTokenizer.split(t, lo, hi) { s, e in
            let word = t.byteSlice(s, e)
            if let ids = cache[word] {
                out.append(contentsOf: ids)
            } else {
                let ids = bpe(word)
                cache[word] = ids
                out.append(contentsOf: ids)
            }
        }
    }

    /// Merges one pre-token.
    private func bpe(_ word: ArraySlice<UInt8>) -> [Int32] {
        if ignoreMerges, let id = bytesIds[word] { return [id] }
        var syms: [Int32] = []
        syms.reserveCapacity(word.count)
        for b in word {
            let id = byteIds[Int(b)]
            if id >= 0 { syms.append(id) }
        }
        return mergeSymbols(syms, useHeap: syms.count > 64)
    }

    @inline(__always) private func mergeKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    /// Applies merges, lowest rank first and leftmost on ties (the same pair twice), as HF does.
    /// Pre-tokens are almost always short, where rescanning after each merge is cheapest; a heap
    /// keeps pathological inputs (a 100 kB run without spaces) O(n log n) instead of O(n²).
    func mergeSymbols(_ input: [Int32], useHeap: Bool) -> [Int32] {
        var syms = input
        if syms.count < 2 { return syms }
        if !useHeap {
            while syms.count > 1 {
                var best = UInt64.max
                var at = -1
                for k in 0..<(syms.count - 1) {
                    if let m = merges[mergeKey(syms[k], syms[k + 1])], m < best {
                        best = m
                        at = k
                    }
                }
                if at < 0 { break }
                syms[at] = Int32(bitPattern: UInt32(truncatingIfNeeded: best))
                syms.remove(at: at + 1)
            }
            return syms
        }

        // Doubly linked list over the symbols; a candidate is (merge value, left index) and is
        // stale when popped if its two symbols have changed since it was pushed.
        let n = syms.count
        var prev = Array(-1..<(n - 1))
        var next = Array(1...n)
        next[n - 1] = -1
        var alive = [Bool](repeating: true, count: n)
        var heap = BinaryHeap<(value: UInt64, left: Int)>(before: { a, b in
            a.value >> 32 < b.value >> 32 || (a.value >> 32 == b.value >> 32 && a.left < b.left)
        })
        for k in 0..<(n - 1) {
            if let m = merges[mergeKey(syms[k], syms[k + 1])] { heap.push((m, k)) }
        }
        while let c = heap.pop() {
            let l = c.left
            guard alive[l] else { continue }
            let r = next[l]
            guard r >= 0, merges[mergeKey(syms[l], syms[r])] == c.value else { continue }
            syms[l] = Int32(bitPattern: UInt32(truncatingIfNeeded: c.value))
            alive[r] = false
            next[l] = next[r]
            if next[r] >= 0 { prev[next[r]] = l }
            if prev[l] >= 0, let m = merges[mergeKey(syms[prev[l]], syms[l])] { heap.push((m, prev[l])) }
            if next[l] >= 0, let m = merges[mergeKey(syms[l], syms[next[l]])] { heap.push((m, l)) }
        }
        var out: [Int32] = []
        var k = 0
        while k >= 0 {
            out.append(syms[k])
            k = next[k]
        }
        return out
    }

    func decode(_ ids: [Int32]) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: tokenBytes(id)) }
        return String(decoding: bytes, as: UTF8.self)
    }

    func tokenBytes(_ id: Int32) -> [UInt8] {
        id >= 0 && Int(id) < vocabSize ? bytesOf[Int(id)] : []
    }

    func tokenId(_ text: String) -> Int32? {
        pieceIds[text] ?? bytesIds[Array(text.utf8)[...]]
    }

    func isSpecial(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < vocabSize && specialFlags[Int(id)]
    }
}
