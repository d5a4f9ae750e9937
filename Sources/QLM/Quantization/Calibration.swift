import Foundation

/// Where calibration text comes from. Evaluation sets (WikiText-2 test, PTB test) are refused.
public struct CalibrationOptions: Codable, Sendable, Equatable {
    public var source: String = "c4"   // c4 | wikipedia | groups_merged | <path to a text file>
    public var nsamples: Int = 128
    public var seqlen: Int = 512
    public var seed: UInt64 = 0
    public init() {}
}

public struct CalibrationSet: Sendable {
    public var description: String
    public var windows: [[Int32]]     // nsamples × seqlen token ids
    public var sourceTokens: Int
}

/// Tokenizes the calibration source and draws `nsamples` windows of `seqlen` tokens.
/// The documents are joined with "\n\n" and tokenized once; windows start at offsets drawn
/// uniformly with the seeded PRNG (GPTQ draws per document, but with 1000 short C4 documents
/// many are shorter than a window; one stream keeps every draw full-length).
public func loadCalibration(_ o: CalibrationOptions, tokenizer: any Tokenizer) throws -> CalibrationSet {
    guard o.nsamples >= 1, o.seqlen >= 2 else { throw QLMError.invalidArgument("--nsamples and --seqlen must be positive") }
    let text: String
    let name: String
    func shared(_ rel: String) throws -> String {
        guard let s = locateSharedDir() else {
            throw QLMError.io(path: "shared/data/calibration", detail: "cannot find the shared data folder; set QLM_SHARED or pass --calib <file>")
        }
        return s + "/data/calibration/" + rel
    }
    func read(_ path: String) throws -> String {
        guard let d = FileManager.default.contents(atPath: path) else { throw QLMError.io(path: path, detail: "cannot read calibration text") }
        guard let s = String(data: d, encoding: .utf8) else { throw QLMError.corrupt(path: path, detail: "not UTF-8 text") }
        return s
    }
    switch o.source {
    case "c4":
        let path = try shared("c4-train.00000-of-01024.head1000.jsonl")
        var docs: [String] = []
        for (i, line) in try read(path).split(separator: "\n").enumerated() {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let t = obj["text"] as? String else {
                throw QLMError.corrupt(path: path, detail: "line \(i + 1) is not a JSON object with a \"text\" field")
            }
            docs.append(t)
        }
        text = docs.joined(separator: "\n\n"); name = "c4 (\(docs.count) documents of c4-train.00000-of-01024)"
    case "wikipedia":
        let path = try shared("wikipedia-en.exllamav2.txt")
        text = try read(path).split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("<doc ") && $0 != "</doc>" }.joined(separator: "\n")
        name = "wikipedia (exllamav2 standard calibration set, <doc> lines removed)"
    case "groups_merged":
        text = try read(try shared("groups_merged.txt")); name = "groups_merged.txt"
    default:
        let base = URL(fileURLWithPath: o.source).lastPathComponent
        if base.hasPrefix("wiki.test") || base.hasPrefix("ptb.test") || base.hasPrefix("ptb.valid") {
            throw QLMError.invalidArgument("\(o.source) is an evaluation set; calibration must never see it")
        }
        text = try read(o.source); name = o.source
    }
    let ids = tokenizer.encode(text, parseSpecial: false)
    guard ids.count > o.seqlen else {
        throw QLMError.invalidArgument("calibration text has \(ids.count) tokens, fewer than one window of \(o.seqlen)")
    }
    var rng = SeededRNG(seed: o.seed)
    let span = UInt64(ids.count - o.seqlen)
    let windows = (0..<o.nsamples).map { _ -> [Int32] in
        let start = Int(rng.next() % (span + 1))
        return Array(ids[start..<(start + o.seqlen)])
    }
    return CalibrationSet(description: "\(o.nsamples) windows × \(o.seqlen) tokens drawn (seed \(o.seed)) from \(name), \(ids.count) tokens",
                          windows: windows, sourceTokens: ids.count)
}
