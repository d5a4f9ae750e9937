import Foundation
import QLMKernels

public struct MeanSD: Codable, Sendable {
    public var mean: Double
    public var sd: Double
    public init(_ xs: [Double]) {
        mean = xs.isEmpty ? .nan : xs.reduce(0, +) / Double(xs.count)
        let m = mean
        sd = xs.count > 1 ? (xs.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(xs.count - 1)).squareRoot() : 0
    }
}

public struct BenchResult: Codable, Sendable {
    public var model: String
    public var threads: Int
    public var isa: String
    public var kv_cache: String
    public var promptTokens: Int
    public var decodeTokens: Int
    public var repetitions: Int
    public var prefill_tps: Double
    public var prefill_tps_sd: Double
    public var decode_tps: Double
    public var decode_tps_sd: Double
    public var decode_ms_p50: Double
    public var decode_ms_p90: Double
    public var decode_ms_p99: Double
    public var peak_rss_bytes: Int
    public var weight_bytes_per_token: Int
    /// weight_bytes_per_token × decode_tps: the memory bandwidth decode achieves on weights.
    public var decode_weight_gbps: Double
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let r = p / 100 * Double(sorted.count - 1)
    let lo = Int(r.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (r - Double(lo))
}

/// Prefill `promptTokens` fixed ids, then decode `decodeTokens` greedily, `repetitions` times
/// (after one untimed warm-up). Token ids are a fixed pseudo-random sequence so runs compare.
public func runBench(model: LlamaModel, name: String, promptTokens: Int, decodeTokens: Int, repetitions: Int,
                     kvCache: KVCachePrecision = .f32, progress: ((Int) -> Void)? = nil) throws -> BenchResult {
    guard promptTokens >= 1, decodeTokens >= 1, repetitions >= 1 else {
        throw QLMError.invalidArgument("-p, -n and -r must be at least 1")
    }
    let V = model.config.vocabSize
    var rng = SeededRNG(seed: 1234)
    let prompt = (0..<promptTokens).map { _ in Int32(truncatingIfNeeded: rng.next() % UInt64(min(V, 32000))) }
    let session = model.makeSession(maxContext: promptTokens + decodeTokens + 1, maxBatch: min(promptTokens, 512), kvCache: kvCache)
    var prefill: [Double] = [], decode: [Double] = [], lat: [Double] = []
    var tok = [Int32](repeating: 0, count: 1)
    for rep in 0...repetitions {
        session.reset()
        let t0 = DispatchTime.now().uptimeNanoseconds
        try session.forward(prompt, logits: true)
        let t1 = DispatchTime.now().uptimeNanoseconds
        var last = t1
        var lats: [Double] = []
        lats.reserveCapacity(decodeTokens)
        for _ in 0..<decodeTokens {
            var best = 0
            let l = session.logits.ptr
            for i in 1..<V where l[i] > l[best] { best = i }
            tok[0] = Int32(best)
            try session.forward(tok, logits: true)
            let now = DispatchTime.now().uptimeNanoseconds
            lats.append(Double(now - last) / 1e6)
            last = now
        }
        if rep == 0 { continue }  // warm-up: page in weights, settle clocks
        prefill.append(Double(promptTokens) / (Double(t1 - t0) / 1e9))
        decode.append(Double(decodeTokens) / (Double(last - t1) / 1e9))
        lat += lats
        progress?(rep)
    }
    lat.sort()
    let p = MeanSD(prefill), d = MeanSD(decode)
    let wb = model.weights.weightBytesPerToken
    return BenchResult(model: name, threads: Int(qlm_get_threads()), isa: activeKernelPath(), kv_cache: kvCache.rawValue,
                       promptTokens: promptTokens, decodeTokens: decodeTokens, repetitions: repetitions,
                       prefill_tps: p.mean, prefill_tps_sd: p.sd, decode_tps: d.mean, decode_tps_sd: d.sd,
                       decode_ms_p50: percentile(lat, 50), decode_ms_p90: percentile(lat, 90), decode_ms_p99: percentile(lat, 99),
                       peak_rss_bytes: peakRSSBytes(), weight_bytes_per_token: wb,
                       decode_weight_gbps: Double(wb) * d.mean / 1e9)
}
