import Foundation
import QLMKernels

/// Which positions of each window are scored.
public enum PerplexityProtocol: String, Codable, Sendable, CaseIterable {
    /// GPTQ / HF: every window scored on its L-1 shifted positions; PPL = exp(mean window NLL).
    case gptq
    /// llama.cpp `llama-perplexity`: only the second half of each window is scored.
    case llamacpp

    public var scoringDescription: String {
        switch self {
        case .gptq: return "all L-1 positions per window (GPTQ)"
        case .llamacpp: return "second half of each window (llama.cpp)"
        }
    }
}

public struct PerplexityResult: Codable, Sendable {
    public var dataset: String
    public var `protocol`: PerplexityProtocol
    public var tokens: Int          // tokens in the whole evaluation text
    public var seqlen: Int
    public var windows: Int
    public var scoredTokens: Int
    public var ppl: Double
    /// Standard error of PPL by the delta method over per-token NLLs: PPL · sd(nll) / sqrt(n).
    public var se: Double
    public var nll: [Double]        // mean NLL of each window
    public var seconds: Double
}

/// Non-overlapping windows of `seqlen` tokens from token 0 (no BOS), as the protocols prescribe.
public func evaluatePerplexity(model: LlamaModel, tokens: [Int32], seqlen: Int, maxWindows: Int? = nil,
                               protocol proto: PerplexityProtocol, dataset: String, decodePath: Bool = false,
                               progress: ((_ done: Int, _ total: Int, _ result: PerplexityResult) -> Void)? = nil) throws -> PerplexityResult {
    guard seqlen >= 2 else { throw QLMError.invalidArgument("--seqlen must be at least 2") }
    let available = tokens.count / seqlen
    guard available > 0 else {
        throw QLMError.invalidArgument("the text has \(tokens.count) tokens, fewer than one window of \(seqlen)")
    }
    let nWin = min(available, maxWindows ?? available)
    guard nWin > 0 else { throw QLMError.invalidArgument("--windows must be positive") }
    let V = model.config.vocabSize
    let session = model.makeSession(maxContext: seqlen, maxBatch: seqlen)
    let first = proto == .gptq ? 0 : seqlen / 2   // first scored position (predicting token first+1)
    let chunk = 128
    let logits = FloatBuffer(count: chunk * V)     // [chunk, V]
    var nllRow = [Double](repeating: 0, count: chunk)
    var sum = 0.0, sumSq = 0.0, count = 0
    var result = PerplexityResult(dataset: dataset, protocol: proto, tokens: tokens.count, seqlen: seqlen, windows: nWin,
                                  scoredTokens: 0, ppl: .nan, se: .nan, nll: [], seconds: 0)
    let t0 = Date()
    for w in 0..<nWin {
        let window = Array(tokens[(w * seqlen)..<((w + 1) * seqlen)])
        session.reset()
        var winSum = 0.0
        if decodePath {
            // One token at a time through the decode kernels (GEMV, integer activations where they
            // apply), to measure what generation computes; positions before `first` only fill the cache.
            var nll = 0.0
            for i in 0..<(seqlen - 1) {
                try window.withUnsafeBufferPointer { try session.forward(UnsafeBufferPointer(rebasing: $0[i...i]), logits: i >= first) }
                guard i >= first else { continue }
                var target = window[i + 1]
                qlm_nll_rows(session.logits.ptr, 1, Int32(V), &target, &nll)
                winSum += nll; sumSq += nll * nll
            }
        } else {
            try session.forward(window, logits: false, allHidden: true)
        }
        var r0 = decodePath ? seqlen - 1 : first
        while r0 < seqlen - 1 {
            let n = min(chunk, seqlen - 1 - r0)
            model.weights.lmHead.gemm(session.hidden + r0 * model.config.hiddenSize, logits.ptr, T: n, scratch: session.qscratch.ptr)
            window.withUnsafeBufferPointer { wp in
                nllRow.withUnsafeMutableBufferPointer { out in
                    qlm_nll_rows(logits.ptr, Int32(n), Int32(V), wp.baseAddress! + r0 + 1, out.baseAddress!)
                }
            }
            for i in 0..<n { winSum += nllRow[i]; sumSq += nllRow[i] * nllRow[i] }
            r0 += n
        }
        let scored = seqlen - 1 - first
        sum += winSum; count += scored
        result.nll.append(winSum / Double(scored))
        let mean = sum / Double(count)
        result.scoredTokens = count
        result.ppl = exp(result.nll.reduce(0, +) / Double(result.nll.count))
        let variance = max(0, sumSq / Double(count) - mean * mean)
        result.se = count > 1 ? result.ppl * (variance / Double(count - 1)).squareRoot() : .nan
        result.seconds = Date().timeIntervalSince(t0)
        progress?(w + 1, nWin, result)
    }
    return result
}
