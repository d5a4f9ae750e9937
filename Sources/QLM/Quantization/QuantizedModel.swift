import Foundation

/// A quantized model folder:
///   config.json            HF Llama config (hyper-parameters)
///   tokenizer.json, tokenizer_config.json
///   model.qlmw             packed weights (see QLMWeightsFile), memory-mapped at load
///   manifest.json          method, formats, exact bits per weight per tensor, source hash
/// The folder is written under a temporary name and renamed when complete, so a killed run
/// never leaves a folder that loads.
public struct QuantizedManifest: Codable, Sendable {
    public struct Tensor: Codable, Sendable {
        public var name: String
        public var format: String
        public var bits: Int
        public var groupSize: Int
        public var rows: Int
        public var cols: Int
        public var outliers: Int
        public var bitsPerWeight: Double
        public var bytes: Int
        public var loss: Double?
        public var seconds: Double?
    }
    public var qlmQuantized: Int = 1
    public var method: String
    public var spec: QuantSpec
    public var head: QuantSpec
    public var sourcePath: String
    public var sourceSHA256: String
    public var tensors: [Tensor]
    /// Bits per weight over the decoder layers' linear matrices (what the method quantizes).
    public var layerBitsPerWeight: Double
    /// Bits per weight over every matrix including the embedding/head.
    public var totalBitsPerWeight: Double
    public var quantizeSeconds: Double
    public var options: [String: String]
    /// What calibration data was drawn (methods that use it).
    public var calibration: String? = nil
    /// Where the time went: forward, hessian, solver, total, and the floor (one forward pass).
    public var timing: [String: Double]? = nil
    public var peakRSSBytes: Int? = nil

    public static let fileName = "manifest.json"
}

public func isQuantizedFolder(_ path: String) -> Bool {
    FileManager.default.fileExists(atPath: path + "/" + QuantizedManifest.fileName)
        && FileManager.default.fileExists(atPath: path + "/model.qlmw")
}

extension QLMWeightsFile: TensorSource {
    /// Dequantized view: every packed matrix appears as an f32 tensor "<name>.weight".
    public var tensorNames: [String] {
        header.matrices.keys.map { $0 + ".weight" }.sorted() + header.blobs.filter { $0.value.dtype == "f32" && $0.key.hasSuffix(".weight") }.map(\.key).sorted()
    }
    public func info(_ name: String) -> TensorInfo? {
        if name.hasSuffix(".weight"), let m = header.matrices[String(name.dropLast(7))] {
            return TensorInfo(name: name, shape: [m.rows, m.cols], dtype: .f32)
        }
        if let b = header.blobs[name], b.dtype == "f32" { return TensorInfo(name: name, shape: b.shape, dtype: .f32) }
        return nil
    }
    public func loadF32(_ name: String) throws -> [Float] {
        if name.hasSuffix(".weight"), header.matrices[String(name.dropLast(7))] != nil {
            return try matrix(String(name.dropLast(7))).dequantized()
        }
        guard let b = header.blobs[name] else { throw QLMError.tensor(path: path, tensor: name, detail: "missing") }
        return try floats(name, count: b.shape.reduce(1, *))
    }
}

extension LlamaWeights {
    /// Binds a quantized folder's weights strictly: exactly the expected matrices and norms.
    public static func loadPacked(config c: LlamaConfig, file: QLMWeightsFile) throws -> LlamaWeights {
        var expectedMatrices = Set<String>(), expectedBlobs = Set<String>()
        for (name, shape) in expectedTensors(c) {
            if shape.count == 2 { expectedMatrices.insert(String(name.dropLast(7))) } else { expectedBlobs.insert(name) }
        }
        for name in file.header.matrices.keys where !expectedMatrices.contains(name) {
            throw QLMError.tensor(path: file.path, tensor: name, detail: "unexpected matrix for this config")
        }
        for name in expectedMatrices where file.header.matrices[name] == nil {
            throw QLMError.tensor(path: file.path, tensor: name, detail: "missing")
        }
        for name in file.header.blobs.keys {
            let owner = expectedMatrices.contains { name.hasPrefix($0 + ".") }
            if !owner && !expectedBlobs.contains(name) {
                throw QLMError.tensor(path: file.path, tensor: name, detail: "unexpected blob")
            }
        }
        func lin(_ name: String, _ rows: Int, _ cols: Int) throws -> Linear {
            let m = try file.matrix(name)
            guard m.rows == rows, m.cols == cols else {
                throw QLMError.tensor(path: file.path, tensor: name, detail: "shape [\(m.rows), \(m.cols)], expected [\(rows), \(cols)]")
            }
            return Linear(packed: m)
        }
        func vec(_ name: String) throws -> FloatBuffer { FloatBuffer(try file.floats(name, count: c.hiddenSize)) }
        let layers = try (0..<c.numLayers).map { i -> Layer in
            let p = "model.layers.\(i)."
            return Layer(attnNorm: try vec(p + "input_layernorm.weight"),
                         wq: try lin(p + "self_attn.q_proj", c.qDim, c.hiddenSize),
                         wk: try lin(p + "self_attn.k_proj", c.kvDim, c.hiddenSize),
                         wv: try lin(p + "self_attn.v_proj", c.kvDim, c.hiddenSize),
                         wo: try lin(p + "self_attn.o_proj", c.hiddenSize, c.qDim),
                         ffnNorm: try vec(p + "post_attention_layernorm.weight"),
                         wGate: try lin(p + "mlp.gate_proj", c.intermediateSize, c.hiddenSize),
                         wUp: try lin(p + "mlp.up_proj", c.intermediateSize, c.hiddenSize),
                         wDown: try lin(p + "mlp.down_proj", c.hiddenSize, c.intermediateSize))
        }
        let embed = try lin("model.embed_tokens", c.vocabSize, c.hiddenSize)
        let head = c.tieWordEmbeddings ? nil : try lin("lm_head", c.vocabSize, c.hiddenSize)
        return LlamaWeights(config: c, embed: embed, layers: layers, norm: try vec("model.norm.weight"), lmHead: head)
    }
}

/// Writes a quantized folder from already-quantized matrices (canonical names without ".weight").
public func writeQuantizedFolder(outDir: String, source: ModelCheckpoint, weights: LlamaWeights,
                                 matrices: [(String, QuantizedMatrix)], manifest: QuantizedManifest) throws {
    try writeFolderAtomically(outDir) { tmp in
        func write(_ name: String, _ data: Data) throws { try writeFileAtomically(tmp + "/" + name) { try $0.write(contentsOf: data) } }
        try write("config.json", source.config.hfConfigJSON(torchDtype: "float16"))
        try copyTokenizerFiles(from: source, to: tmp)
        let w = QLMWeightsWriter()
        w.metadata = ["method": manifest.method, "source_sha256": manifest.sourceSHA256]
        for (name, q) in matrices { w.addMatrix(name, q) }
        w.add("model.norm.weight", floats: weights.norm.array, shape: [weights.norm.count])
        for (i, L) in weights.layers.enumerated() {
            w.add("model.layers.\(i).input_layernorm.weight", floats: L.attnNorm.array, shape: [L.attnNorm.count])
            w.add("model.layers.\(i).post_attention_layernorm.weight", floats: L.ffnNorm.array, shape: [L.ffnNorm.count])
        }
        try w.write(to: tmp + "/model.qlmw")
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys, .prettyPrinted]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        // The manifest is written last: a folder without it is never taken for a model.
        try write(QuantizedManifest.fileName, try enc.encode(manifest))
    }
}

extension QuantizedManifest {
    /// Bits per weight over a set of matrices, weighted by their sizes.
    static func bitsPerWeight(_ ts: [Tensor]) -> Double {
        ts.reduce(0.0) { $0 + $1.bitsPerWeight * Double($1.rows * $1.cols) } / Double(max(1, ts.reduce(0) { $0 + $1.rows * $1.cols }))
    }
}

extension ModelCheckpoint {
    /// Provenance hash recorded in manifests: the GGUF file, or an HF folder's config and weights.
    func sourceSHA256() throws -> String {
        format == .gguf ? try SHA256Digest.hashFile(path) : try hashFolder(path)
    }
}

extension QuantizedManifest.Tensor {
    /// The manifest entry of matrix `name`, quantized as `q` and packed as `pm`.
    init(name: String, _ q: QuantizedMatrix, packed pm: PackedMatrix, loss: Double?, seconds: Double?) {
        self.init(name: name, format: q.format.rawValue, bits: q.bits, groupSize: q.groupSize, rows: q.rows, cols: q.cols,
                  outliers: q.outVal.count, bitsPerWeight: pm.bitsPerWeight, bytes: pm.storageBytes, loss: loss, seconds: seconds)
    }
}
