import Foundation
import QLMKernels

/// A Llama-family decoder: RMSNorm → GQA attention with RoPE → RMSNorm → SwiGLU MLP, residuals,
/// final RMSNorm and a (tied or untied) output head. Weights are immutable and shared; all
/// mutable state lives in an `InferenceSession`.
public final class LlamaModel: @unchecked Sendable {
    public let config: LlamaConfig
    public let weights: LlamaWeights
    let invFreq: FloatBuffer   // [head_dim/2] RoPE inverse frequencies (scaling applied)
    let qkv: [SharedInputLinears]     // per layer: wq, wk, wv (one decode GEMV call)
    let gateUp: [SharedInputLinears]  // per layer: wGate, wUp

    public init(weights: LlamaWeights) {
        self.config = weights.config
        self.weights = weights
        var f = config.ropeInverseFrequencies()
        if let factors = weights.ropeFreqFactors {
            for i in 0..<f.count { f[i] /= factors[i] }
        }
        invFreq = FloatBuffer(f)
        qkv = weights.layers.map { SharedInputLinears([$0.wq, $0.wk, $0.wv]) }
        gateUp = weights.layers.map { SharedInputLinears([$0.wGate, $0.wUp]) }
    }

    public func makeSession(maxContext: Int, maxBatch: Int = 512, kvCache: KVCachePrecision = .f32) -> InferenceSession {
        InferenceSession(model: self, maxContext: maxContext, maxBatch: max(1, min(maxBatch, maxContext)), kvCache: kvCache)
    }
}

/// Precision of the KV cache. f16 halves the bytes decode attention reads per token (after a long
/// prompt they cost as much as the weights); f32 reproduces the reference exactly (perplexity).
public enum KVCachePrecision: String, Sendable, CaseIterable {
    case f32, f16
}

/// KV cache plus every activation buffer, allocated once. `forward` never allocates, so the
/// decode loop (T = 1) runs without touching the heap.
public final class InferenceSession: @unchecked Sendable {
    public let model: LlamaModel
    public let maxContext: Int
    public let maxBatch: Int
    public let kvCache: KVCachePrecision
    /// Tokens already in the KV cache.
    public private(set) var position = 0

    // Shapes: B = maxBatch, C = maxContext, d = hidden, f = ffn, V = vocab.
    let kcache: [FloatBuffer]   // per layer [C, n_kv*hd] (f32 cache; empty for f16)
    let vcache: [FloatBuffer]   // per layer [C, n_kv*hd]
    let kcache16: [HalfBuffer]  // per layer [C, n_kv*hd] (f16 cache; empty for f32)
    let vcache16: [HalfBuffer]  // per layer [C, n_kv*hd]
    let kNew: FloatBuffer       // [B, n_kv*hd] this batch's K (f16 cache: projected and roped here first)
    let vNew: FloatBuffer       // [B, n_kv*hd]
    let x: FloatBuffer          // [B, d] residual stream
    let xn: FloatBuffer         // [B, d] normed input of the current sub-block; final hidden states
    let q: FloatBuffer          // [B, n_heads*hd]
    let att: FloatBuffer        // [B, n_heads*hd] attention output
    let gate: FloatBuffer       // [B, f]
    let up: FloatBuffer         // [B, f]
    let tmp: FloatBuffer        // [1, d] decode residual branch
    let attnScratch: FloatBuffer
    let ropeCos: FloatBuffer    // [B, hd/2] cos of the current batch's positions
    let ropeSin: FloatBuffer    // [B, hd/2]
    let qscratch: FloatBuffer   // padded inputs / dequantized tiles for packed matrices
    let gemvOuts: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>  // [3] outputs of a SharedInputLinears GEMV
    public let logits: FloatBuffer  // [V] logits of the last token after `forward(..., logits: true)`

    init(model: LlamaModel, maxContext: Int, maxBatch: Int, kvCache: KVCachePrecision = .f32) {
        let c = model.config
        self.model = model; self.maxContext = maxContext; self.maxBatch = maxBatch; self.kvCache = kvCache
        let half = kvCache == .f16
        kcache = half ? [] : (0..<c.numLayers).map { _ in FloatBuffer(count: maxContext * c.kvDim) }
        vcache = half ? [] : (0..<c.numLayers).map { _ in FloatBuffer(count: maxContext * c.kvDim) }
        kcache16 = half ? (0..<c.numLayers).map { _ in HalfBuffer(count: maxContext * c.kvDim) } : []
        vcache16 = half ? (0..<c.numLayers).map { _ in HalfBuffer(count: maxContext * c.kvDim) } : []
        kNew = FloatBuffer(count: half ? maxBatch * c.kvDim : 0)
        vNew = FloatBuffer(count: half ? maxBatch * c.kvDim : 0)
        x = FloatBuffer(count: maxBatch * c.hiddenSize)
        xn = FloatBuffer(count: maxBatch * c.hiddenSize)
        q = FloatBuffer(count: maxBatch * c.qDim)
        att = FloatBuffer(count: maxBatch * c.qDim)
        gate = FloatBuffer(count: maxBatch * c.intermediateSize)
        up = FloatBuffer(count: maxBatch * c.intermediateSize)
        tmp = FloatBuffer(count: c.hiddenSize)
        let scratchFloats = half ? qlm_attention_kv16_scratch_floats : qlm_attention_scratch_floats
        let s = max(scratchFloats(Int32(maxBatch), Int32(maxContext), Int32(c.numHeads), Int32(c.numKVHeads), Int32(c.headDim)),
                    scratchFloats(1, Int32(maxContext), Int32(c.numHeads), Int32(c.numKVHeads), Int32(c.headDim)))
        attnScratch = FloatBuffer(count: s)
        ropeCos = FloatBuffer(count: maxBatch * c.headDim / 2)
        ropeSin = FloatBuffer(count: maxBatch * c.headDim / 2)
        logits = FloatBuffer(count: c.vocabSize)
        qscratch = FloatBuffer(count: max(model.weights.allLinears.map(\.scratchFloats).max() ?? 0,
                                          (model.qkv + model.gateUp).map(\.scratchFloats).max() ?? 0))
        gemvOuts = .allocate(capacity: 3)
        gemvOuts.initialize(repeating: nil, count: 3)
    }

    deinit { gemvOuts.deallocate() }

    public func reset() { position = 0 }

    /// Drops cached positions after `n` (e.g. to rewind a conversation).
    public func truncate(to n: Int) { position = min(position, max(0, n)) }

    /// Bytes held by the KV cache and activation buffers.
    public var stateBytes: Int {
        (kcache + vcache + [kNew, vNew, x, xn, q, att, gate, up, tmp, attnScratch, ropeCos, ropeSin, qscratch, logits]).reduce(0) { $0 + $1.count * 4 }
            + (kcache16 + vcache16).reduce(0) { $0 + $1.count * 2 }
    }

    /// Runs `tokens` at the current position and appends them to the KV cache.
    /// - allHidden: require one batch so `hidden` holds every token's final-normed state (perplexity).
    /// - logits: compute the last token's logits into `logits`.
    public func forward(_ tokens: UnsafeBufferPointer<Int32>, logits wantLogits: Bool = true, allHidden: Bool = false) throws {
        let c = model.config
        guard position + tokens.count <= maxContext else {
            throw QLMError.invalidArgument("context full: \(position) + \(tokens.count) tokens exceed the \(maxContext)-token context")
        }
        guard !allHidden || tokens.count <= maxBatch else {
            throw QLMError.invalidArgument("allHidden needs all \(tokens.count) tokens in one batch (max \(maxBatch))")
        }
        for t in tokens where t < 0 || Int(t) >= c.vocabSize {
            throw QLMError.invalidArgument("token id \(t) outside the vocabulary (0..<\(c.vocabSize))")
        }
        var start = 0
        while start < tokens.count {
            let n = min(maxBatch, tokens.count - start)
            forwardChunk(UnsafeBufferPointer(rebasing: tokens[start..<start + n]))
            start += n
        }
        if wantLogits, tokens.count > 0 {
            model.weights.lmHead.gemv(xn.ptr + (lastChunkCount - 1) * c.hiddenSize, logits.ptr, scratch: qscratch.ptr)
        }
    }

    public func forward(_ tokens: [Int32], logits: Bool = true, allHidden: Bool = false) throws {
        try tokens.withUnsafeBufferPointer { try forward($0, logits: logits, allHidden: allHidden) }
    }

    /// Final-normed hidden states [T, d] of the last batch run (all tokens when `allHidden`).
    public var hidden: UnsafeMutablePointer<Float> { xn.ptr }
    private var lastChunkCount = 0

    private func forwardChunk(_ tokens: UnsafeBufferPointer<Int32>) {
        let m = model, c = m.config, w = m.weights
        let T = tokens.count, d = c.hiddenSize, kvd = c.kvDim, pos0 = position
        let eps = Float(c.rmsNormEps)
        let qs = qscratch.ptr

        qlm_rope_table(ropeCos.ptr, ropeSin.ptr, Int32(T), Int32(c.headDim / 2), Int32(pos0), m.invFreq.ptr)
        for (t, id) in tokens.enumerated() {
            w.embed.copyRow(Int(id), into: x.ptr + t * d)
        }
        for (l, L) in w.layers.enumerated() {
            // Prefill attention on the thread pool the layer's linears use (see qlm_attention; decode
            // steps never use it, so they skip the check).
            let ompTasks: Int32 = T > 1 && L.wq.gemmRunsOnOpenMP ? 1 : 0
            // Attention block. K and V go straight into their f32 cache rows (f16 cache: rounded in
            // once they are final).
            qlm_rmsnorm_rows(xn.ptr, x.ptr, L.attnNorm.ptr, Int32(T), Int32(d), eps)
            let half = kvCache == .f16
            let kRows = half ? kNew.ptr : kcache[l].ptr + pos0 * kvd
            let vRows = half ? vNew.ptr : vcache[l].ptr + pos0 * kvd
            if T == 1 {
                gemvOuts[0] = q.ptr; gemvOuts[1] = kRows; gemvOuts[2] = vRows
                m.qkv[l].gemv(xn.ptr, gemvOuts, scratch: qs)
            } else {
                L.wq.gemm(xn.ptr, q.ptr, T: T, scratch: qs)
                L.wk.gemm(xn.ptr, kRows, T: T, scratch: qs)
                L.wv.gemm(xn.ptr, vRows, T: T, scratch: qs)
            }
            qlm_rope(q.ptr, Int32(T), Int32(c.numHeads), Int32(c.headDim), ropeCos.ptr, ropeSin.ptr)
            qlm_rope(kRows, Int32(T), Int32(c.numKVHeads), Int32(c.headDim), ropeCos.ptr, ropeSin.ptr)
            if half {
                qlm_quant_f16(kRows, kcache16[l].ptr + pos0 * kvd, T * kvd)
                qlm_quant_f16(vRows, vcache16[l].ptr + pos0 * kvd, T * kvd)
                qlm_attention_kv16(q.ptr, kcache16[l].ptr, vcache16[l].ptr, att.ptr, Int32(T), Int32(pos0),
                                   Int32(c.numHeads), Int32(c.numKVHeads), Int32(c.headDim), attnScratch.ptr, ompTasks)
            } else {
                qlm_attention(q.ptr, kcache[l].ptr, vcache[l].ptr, att.ptr, Int32(T), Int32(pos0),
                              Int32(c.numHeads), Int32(c.numKVHeads), Int32(c.headDim), attnScratch.ptr, ompTasks)
            }
            addProjection(L.wo, input: att.ptr, T: T)

            // MLP block.
            qlm_rmsnorm_rows(xn.ptr, x.ptr, L.ffnNorm.ptr, Int32(T), Int32(d), eps)
            if T == 1 {
                gemvOuts[0] = gate.ptr; gemvOuts[1] = up.ptr
                m.gateUp[l].gemv(xn.ptr, gemvOuts, scratch: qs)
            } else {
                L.wGate.gemm(xn.ptr, gate.ptr, T: T, scratch: qs)
                L.wUp.gemm(xn.ptr, up.ptr, T: T, scratch: qs)
            }
            qlm_swiglu(gate.ptr, gate.ptr, up.ptr, T * c.intermediateSize)
            addProjection(L.wDown, input: gate.ptr, T: T)
        }
        position += T
        qlm_rmsnorm_rows(xn.ptr, x.ptr, w.norm.ptr, Int32(T), Int32(d), eps)
        lastChunkCount = T
    }

    /// x[T, d] += input[T, k] · Wᵀ: BLAS accumulates in place for batches; decode adds a GEMV result.
    @inline(__always)
    private func addProjection(_ W: Linear, input: UnsafeMutablePointer<Float>, T: Int) {
        if T == 1 {
            W.gemv(input, tmp.ptr, scratch: qscratch.ptr)
            let xp = x.ptr
            for i in 0..<W.rows { xp[i] += tmp.ptr[i] }
        } else {
            W.gemm(input, x.ptr, T: T, beta: 1, scratch: qscratch.ptr)
        }
    }
}
