import Foundation

/// One finished matrix, for progress output (`--json` prints these one per line).
public struct QuantizeEvent: Codable, Sendable {
    public var event = "tensor"
    public var block: Int          // decoder block index, -1 for the embedding/head
    public var blocks: Int
    public var name: String
    public var format: String
    public var bitsPerWeight: Double
    public var loss: Double?       // Σ (w − ŵ)² for RTN (weight-space error)
    public var seconds: Double
    public var elapsed: Double
}

/// Parses `--head-bits`: f16, or 8/4/3/2 (affine, or the layer format when it is lut and bits ≤ 4).
public func headSpec(_ s: String, layer: QuantSpec) throws -> QuantSpec {
    switch s {
    case "f16": return QuantSpec(format: .f16, bits: 16, groupSize: nil)
    case "8": return QuantSpec(format: .affine, bits: 8, groupSize: 128)
    case "2", "3", "4":
        let b = Int(s)!
        if layer.format == .lut { return QuantSpec(format: .lut, bits: b, groupSize: nil) }
        return QuantSpec(format: .affine, bits: b, groupSize: layer.groupSize ?? 128, sym: layer.sym)
    default: throw QLMError.invalidArgument("--head-bits must be f16, 8, 4, 3 or 2, not '\(s)'")
    }
}

/// Round-to-nearest quantization of a whole model (no calibration data).
public func quantizeModelRTN(modelPath: String, outDir: String, spec: QuantSpec, head: QuantSpec,
                             options: [String: String] = [:], progress: ((QuantizeEvent) -> Void)? = nil) throws -> QuantizedManifest {
    try spec.validate(); try head.validate()
    let t0 = Date()
    try ensureFreshOutputFolder(outDir)
    let ckpt = try openCheckpoint(modelPath)
    guard ckpt.format != .qlm else { throw QLMError.invalidArgument("\(modelPath) is already quantized; quantize the full-precision model") }
    let weights = try ckpt.loadWeights()
    let c = weights.config
    if spec.outlierFraction > 0, max(c.hiddenSize, c.intermediateSize) > 65535 {
        throw QLMError.unsupported("outliers need matrices with at most 65535 columns")
    }
    let sha = try ckpt.sourceSHA256()

    var jobs: [(block: Int, name: String, linear: Linear, spec: QuantSpec)] = []
    for (i, L) in weights.layers.enumerated() {
        let p = "model.layers.\(i)."
        jobs += [(i, p + "self_attn.q_proj", L.wq, spec), (i, p + "self_attn.k_proj", L.wk, spec),
                 (i, p + "self_attn.v_proj", L.wv, spec), (i, p + "self_attn.o_proj", L.wo, spec),
                 (i, p + "mlp.gate_proj", L.wGate, spec), (i, p + "mlp.up_proj", L.wUp, spec),
                 (i, p + "mlp.down_proj", L.wDown, spec)]
    }
    jobs.append((-1, "model.embed_tokens", weights.embed, head))
    if !c.tieWordEmbeddings { jobs.append((-1, "lm_head", weights.lmHead, head)) }

    var results = [(String, QuantizedMatrix)?](repeating: nil, count: jobs.count)
    var tensors = [QuantizedManifest.Tensor?](repeating: nil, count: jobs.count)
    let lock = NSLock()
    var firstError: Error?
    // Matrices are independent under RTN: two at a time keeps both cores busy.
    DispatchQueue.concurrentPerform(iterations: jobs.count) { i in
        let job = jobs[i]
        let ts = Date()
        do {
            let W = job.linear.denseF32()
            let q = try quantizeRTN(W, rows: job.linear.rows, cols: job.linear.cols, spec: job.spec)
            let pm = q.packed()
            let deq = pm.dequantized()
            var loss = 0.0
            for k in 0..<W.count { let d = Double(W[k] - deq[k]); loss += d * d }
            let t = QuantizedManifest.Tensor(name: job.name, q, packed: pm, loss: loss, seconds: Date().timeIntervalSince(ts))
            lock.lock()
            results[i] = (job.name, q); tensors[i] = t
            let ev = QuantizeEvent(block: job.block, blocks: c.numLayers, name: job.name, format: job.spec.label,
                                   bitsPerWeight: t.bitsPerWeight, loss: loss, seconds: t.seconds ?? 0, elapsed: Date().timeIntervalSince(t0))
            progress?(ev)
            lock.unlock()
        } catch {
            lock.lock(); if firstError == nil { firstError = error }; lock.unlock()
        }
    }
    if let e = firstError { throw e }
    let all = tensors.compactMap { $0 }
    let bpw = QuantizedManifest.bitsPerWeight
    let manifest = QuantizedManifest(method: "rtn", spec: spec, head: head, sourcePath: modelPath, sourceSHA256: sha,
                                     tensors: all, layerBitsPerWeight: bpw(all.filter { $0.name.hasPrefix("model.layers.") }),
                                     totalBitsPerWeight: bpw(all), quantizeSeconds: Date().timeIntervalSince(t0), options: options)
    try writeQuantizedFolder(outDir: outDir, source: ckpt, weights: weights, matrices: results.compactMap { $0 }, manifest: manifest)
    return manifest
}

/// Hash of an HF folder's config and weight files (sorted by name), for provenance.
func hashFolder(_ dir: String) throws -> String {
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
        .filter { $0 == "config.json" || $0.hasSuffix(".safetensors") }.sorted()
    var combined = ""
    for f in files { combined += f + ":" + (try SHA256Digest.hashFile(dir + "/" + f)) + "\n" }
    return SHA256Digest.hash(Data(combined.utf8))
}
