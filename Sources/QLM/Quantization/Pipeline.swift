import Foundation
import QLMKernels

public enum QuantMethod: String, Codable, Sendable, CaseIterable {
    case rtn, gptq, leanquant, quantease, tesseraq
}

/// How the embedding / output head is quantized.
public enum HeadMethod: String, Codable, Sendable, CaseIterable {
    /// Round to nearest at the head's own precision (no calibration).
    case rtn
    /// GPTQ on the Hessian of the head's inputs: the calibration tokens' final hidden states after
    /// the quantized blocks and the final norm (calibrated methods only).
    case gptq
}

/// Everything `qlm quantize` was asked to do.
public struct QuantizeJob: Sendable {
    public var modelPath: String
    public var outDir: String
    public var method: QuantMethod
    public var spec: QuantSpec
    public var head: QuantSpec
    public var headMethod = HeadMethod.rtn
    public var solver = SolverOptions()
    public var calibration = CalibrationOptions()
    public var trueSequential = false
    public var resume = false
    /// Inputs of the Hessian Gram products; nil: bf16 where the CPU has AVX-512 BF16, else f32.
    public var hessianPrecision: HessianPrecision? = nil
    /// The precision this run uses.
    public var resolvedHessianPrecision: HessianPrecision { hessianPrecision ?? .preferred }
    /// Tests: stop (as if killed) once this many blocks are checkpointed.
    var stopAfterBlocks: Int? = nil
    /// Where the per-block checkpoint lives while the run is unfinished.
    var checkpointPath: String { (outDir.hasSuffix("/") ? String(outDir.dropLast()) : outDir) + ".partial" }
    /// The thread count this job's checkpoint was computed on, if there is one for `--resume` to
    /// continue (so a resume can use the same count and stay byte-identical).
    public var checkpointThreads: Int? {
        guard resume else { return nil }
        return CheckpointDir(path: checkpointPath, fingerprint: fingerprint).state()?.threads
    }

    public init(modelPath: String, outDir: String, method: QuantMethod, spec: QuantSpec, head: QuantSpec) {
        self.modelPath = modelPath; self.outDir = outDir; self.method = method; self.spec = spec; self.head = head
    }

    /// Rejects combinations the methods do not define, before any work starts.
    public func validate() throws {
        try spec.validate(); try head.validate()
        switch method {
        case .rtn: break
        case .gptq:
            if spec.format == .lut { throw QLMError.invalidArgument("gptq quantizes onto affine grids; for --format lut use --method leanquant") }
            if spec.outlierFraction > 0 { throw QLMError.invalidArgument("--outliers is QuantEase's outlier-aware variant (or RTN); gptq has none") }
        case .leanquant:
            if spec.outlierFraction > 0 { throw QLMError.invalidArgument("--outliers is not part of LeanQuant; use --method quantease") }
        case .quantease:
            if spec.format == .lut { throw QLMError.invalidArgument("quantease uses affine grids; --format lut is LeanQuant's") }
        case .tesseraq:
            if spec.format == .lut { throw QLMError.invalidArgument("tesseraq learns roundings on affine grids; --format lut is LeanQuant's") }
            if spec.outlierFraction > 0 { throw QLMError.invalidArgument("--outliers is QuantEase's outlier-aware variant (or RTN); tesseraq has none") }
            if solver.actOrder { throw QLMError.invalidArgument("--act-order orders GPTQ's column sweep; tesseraq optimizes all columns at once") }
            guard solver.tesseraSteps >= 1 else { throw QLMError.invalidArgument("--steps must be at least 1") }
        }
        if headMethod == .gptq {
            if method == .rtn { throw QLMError.invalidArgument("--head-method gptq needs calibration data: use a calibrated --method (gptq, leanquant, quantease, tesseraq)") }
            if head.format == .f16 { throw QLMError.invalidArgument("--head-method gptq quantizes the head: pick --head-bits 8, 4, 3 or 2, not f16") }
        }
        if solver.structuredOutliers && spec.outlierFraction == 0 { throw QLMError.invalidArgument("--structured needs --outliers F > 0") }
        guard solver.damp >= 0 && solver.damp < 1 else { throw QLMError.invalidArgument("--damp must be in [0, 1)") }
        guard solver.iters >= 1 else { throw QLMError.invalidArgument("--iters must be at least 1") }
    }

    /// Identity of the run for --resume: a checkpoint from a different job is never reused.
    var fingerprint: String {
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        let parts = [modelPath, method.rawValue, String(decoding: (try? enc.encode(spec)) ?? Data(), as: UTF8.self),
                     String(decoding: (try? enc.encode(head)) ?? Data(), as: UTF8.self),
                     String(decoding: (try? enc.encode(calibration)) ?? Data(), as: UTF8.self),
                     "\(solver.damp) \(solver.actOrder) \(solver.blockSize) \(solver.exponent) \(solver.iters) \(solver.structuredOutliers) \(solver.tesseraSteps) \(solver.tesseraClip)",
                     "\(trueSequential)", resolvedHessianPrecision == .f32 ? "" : resolvedHessianPrecision.rawValue]
        return SHA256Digest.hash(Data(parts.joined(separator: "|").utf8))
    }
}

/// The seven linear layers of a block, in true-sequential order groups.
enum BlockLinear: Int, CaseIterable {
    case q, k, v, o, gate, up, down
    var name: String { ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"][rawValue] }
}

/// Calibration activations of every sample, flattened: [M = nsamples·seqlen, width].
final class ActivationBuffers {
    let M: Int
    let x, xn, q, k, v, att, gate, up: FloatBuffer
    let attnScratch, ropeCos, ropeSin: FloatBuffer
    init(M: Int, L: Int, c: LlamaConfig, invFreq: [Float]) {
        self.M = M
        x = FloatBuffer(count: M * c.hiddenSize); xn = FloatBuffer(count: M * c.hiddenSize)
        q = FloatBuffer(count: M * c.qDim); att = FloatBuffer(count: M * c.qDim)
        k = FloatBuffer(count: M * c.kvDim); v = FloatBuffer(count: M * c.kvDim)
        gate = FloatBuffer(count: M * c.intermediateSize); up = FloatBuffer(count: M * c.intermediateSize)
        attnScratch = FloatBuffer(count: qlm_attention_scratch_floats(Int32(L), Int32(L), Int32(c.numHeads), Int32(c.numKVHeads), Int32(c.headDim)))
        ropeCos = FloatBuffer(count: L * c.headDim / 2); ropeSin = FloatBuffer(count: L * c.headDim / 2)
        qlm_rope_table(ropeCos.ptr, ropeSin.ptr, Int32(L), Int32(c.headDim / 2), 0, invFreq)
    }
}

/// What the Hessian Gram products XᵀX multiply: the f32 activations (BLAS ssyrk), or the
/// activations rounded to bf16 with f32 sums (qlm_gram_bf16: twice the arithmetic rate on CPUs
/// with AVX-512 BF16; Hessians are ~30% of a calibrated run). Why bf16 inputs are enough: the
/// rounding is unbiased and independent per value, so an entry moves by ~2^-9/√N of its scale
/// (N ≥ 4096 products per chunk), ~300× below the 1% damping (qlm_gram.c; measured: README).
public enum HessianPrecision: String, Sendable, CaseIterable {
    case f32, bf16
    /// bf16 where it is fast (AVX-512 BF16 and the AVX-512 path not switched off by QLM_ISA), else f32.
    public static var preferred: HessianPrecision {
        qlm_gram_bf16_supported() != 0 && qlm_isa_active() == QLM_ISA_AVX512 ? .bf16 : .f32
    }
}

/// Accumulates H = (2/N) Σ x xᵀ over the rows of `X` [M, cols], N = number of calibration
/// sequences (GPTQ's convention). The Gram products run on chunks of 4096 rows with f32 sums and
/// the chunks are summed in f64: each f32 partial sums at most 4096 products (relative error ~1e-6
/// typical), far below the 1% damping every method adds, and the running total never loses
/// small chunks.
func accumulateHessian(_ X: UnsafePointer<Float>, rows M: Int, cols n: Int, nsamples: Int,
                       precision: HessianPrecision = .f32) -> [Double] {
    var H = [Double](repeating: 0, count: n * n)
    let part = FloatBuffer(count: n * n)
    let chunk = 4096
    let alpha = 2.0 / Float(nsamples)
    let scratch = precision == .bf16 ? UnsafeMutableRawPointer.allocate(byteCount: max(1, qlm_gram_bf16_scratch_bytes(Int32(n), Int32(min(chunk, M)))), alignment: 64) : nil
    defer { scratch?.deallocate() }
    var r = 0
    while r < M {
        let k = min(chunk, M - r)
        if let scratch {
            qlm_gram_bf16(Int32(n), Int32(k), alpha, X + r * n, Int32(n), part.ptr, Int32(n), scratch)
        } else {
            qlm_ssyrk_t(Int32(n), Int32(k), alpha, X + r * n, Int32(n), 0, part.ptr, Int32(n))
        }
        // Both fill the lower triangle: H[j][i] for i ≤ j, read row by row.
        H.withUnsafeMutableBufferPointer { h in
            for j in 0..<n { for i in 0...j { h[j * n + i] += Double(part.ptr[j * n + i]) } }
        }
        r += k
    }
    for j in 0..<n { for i in 0..<j { H[i * n + j] = H[j * n + i] } }
    return H
}

/// GPTQ-style sequential quantization: block i is quantized on the outputs of the already
/// quantized blocks 0..i-1. With true-sequential, each sub-group's Hessian is collected from
/// inputs computed with the sub-groups before it already quantized, in one pass per block.
public func quantizeModel(_ job: QuantizeJob, log: ((String) -> Void)? = nil,
                          progress: ((QuantizeEvent) -> Void)? = nil) throws -> QuantizedManifest {
    try job.validate()
    if job.method == .rtn {
        return try quantizeModelRTN(modelPath: job.modelPath, outDir: job.outDir, spec: job.spec, head: job.head,
                                    options: ["head_bits": job.head.label], progress: progress)
    }
    let t0 = Date()
    let hessianPrecision = job.resolvedHessianPrecision
    // A taken output folder is an error now, not after an hour of quantization (unless resuming,
    // where the final folder does not exist yet either).
    try ensureFreshOutputFolder(job.outDir)
    let loaded = try LoadedModel.load(job.modelPath)
    let ckpt = loaded.checkpoint
    guard ckpt.format != .qlm else { throw QLMError.invalidArgument("\(job.modelPath) is already quantized; quantize the full-precision model") }
    let c = loaded.config, w = loaded.model.weights
    if job.spec.outlierFraction > 0, max(c.hiddenSize, c.intermediateSize) > 65535 {
        throw QLMError.unsupported("outliers need matrices with at most 65535 columns")
    }
    let calib = try loadCalibration(job.calibration, tokenizer: loaded.tokenizer)
    log?("calibration: \(calib.description)")
    let sha = try ckpt.sourceSHA256()
    let L = job.calibration.seqlen, N = job.calibration.nsamples, M = N * L, d = c.hiddenSize
    let buf = ActivationBuffers(M: M, L: L, c: c, invFreq: loaded.model.invFreq.array)

    // Resume: the checkpoint folder holds the activations after the last finished block and the
    // quantized matrices of every finished block.
    let state = CheckpointDir(path: job.checkpointPath, fingerprint: job.fingerprint)
    var results: [(String, QuantizedMatrix)] = []
    var tensors: [QuantizedManifest.Tensor] = []
    var firstBlock = 0
    if job.resume, let done = try state.load(into: buf.x.ptr, count: M * d) {
        firstBlock = done.blocks
        results = done.matrices
        tensors = done.tensors
        log?("resuming after block \(firstBlock)/\(c.numLayers) from \(state.path)")
        if let t = done.threads, t != Int(qlm_get_threads()) {
            log?("note: the finished blocks ran on \(t) threads, the rest runs on \(qlm_get_threads()); BLAS may round differently " +
                 "on another thread count, so the result can differ in the last bits from an uninterrupted run " +
                 "(resume with --threads \(t) for a byte-identical one)")
        }
    } else {
        try state.reset()
        for (s, win) in calib.windows.enumerated() {
            for (t, id) in win.enumerated() { w.embed.copyRow(Int(id), into: buf.x.ptr + (s * L + t) * d) }
        }
    }

    // Checkpoints are written (and fsynced) in the background while the next block computes.
    let checkpointWriter = BackgroundCheckpointWriter(state, floats: M * d)
    defer { try? checkpointWriter.wait() }
    var tForward = 0.0, tHessian = 0.0, tSolver = 0.0
    func timed<T>(_ acc: inout Double, _ f: () throws -> T) rethrows -> T {
        let s = Date(); defer { acc += Date().timeIntervalSince(s) }; return try f()
    }
    let solve: (BlockLinear, Int, [Float], Int, Int, [Double]) throws -> SolverResult = { which, block, W, rows, cols, H in
        switch job.method {
        case .gptq: return try gptqQuantize(W, rows: rows, cols: cols, H: H, spec: job.spec, options: job.solver)
        case .leanquant: return try leanQuantize(W, rows: rows, cols: cols, H: H, spec: job.spec, options: job.solver)
        case .quantease: return try quantEase(W, rows: rows, cols: cols, H: H, spec: job.spec, options: job.solver)
        case .tesseraq: return try tesseraQuantize(W, rows: rows, cols: cols, H: H, spec: job.spec, options: job.solver)
        case .rtn: fatalError("handled above")
        }
    }

    for b in firstBlock..<c.numLayers {
        let Lw = w.layers[b]
        let original: [BlockLinear: Linear] = [.q: Lw.wq, .k: Lw.wk, .v: Lw.wv, .o: Lw.wo, .gate: Lw.wGate, .up: Lw.wUp, .down: Lw.wDown]
        var current: [BlockLinear: FloatBuffer] = [:]   // dense f32 weights the chain uses (quantized once done)
        for (k, lin) in original { current[k] = FloatBuffer(lin.denseF32()) }
        var blockResults: [(String, QuantizedMatrix)] = []
        var blockTensors: [QuantizedManifest.Tensor] = []

        /// Quantizes `group` with Hessian H and swaps in the dequantized weights.
        func quantizeGroup(_ group: [BlockLinear], H: [Double]) throws {
            for which in group {
                let lin = original[which]!
                let ts = Date()
                let W = lin.denseF32()
                let r = try timed(&tSolver) { try solve(which, b, W, lin.rows, lin.cols, H) }
                let pm = r.q.packed()
                current[which] = FloatBuffer(pm.dequantized())
                let name = "model.layers.\(b).\(which.name)"
                let secs = Date().timeIntervalSince(ts)
                blockResults.append((name, r.q))
                blockTensors.append(.init(name: name, r.q, packed: pm, loss: r.loss, seconds: secs))
                progress?(QuantizeEvent(block: b, blocks: c.numLayers, name: name, format: job.spec.label, bitsPerWeight: pm.bitsPerWeight,
                                        loss: r.loss, seconds: secs, elapsed: Date().timeIntervalSince(t0)))
            }
        }

        enum Mode { case trueSequential, record, apply }
        var recorded: [([BlockLinear], [Double])] = []
        let groups: [[BlockLinear]] = [[.k, .v, .q], [.o], [.up, .gate], [.down]]

        /// One pass of the block over all samples. Before each sub-group multiplies its input, the
        /// input's Hessian is either used at once (true-sequential: later sub-groups then see the
        /// quantized outputs) or recorded for later.
        func runBlock(_ mode: Mode) throws {
            let eps = Float(c.rmsNormEps)
            func mm(_ which: BlockLinear, _ X: UnsafePointer<Float>, _ Y: UnsafeMutablePointer<Float>, beta: Float = 0) {
                let lin = original[which]!
                qlm_sgemm_nt(Int32(M), Int32(lin.rows), Int32(lin.cols), X, Int32(lin.cols), current[which]!.ptr, Int32(lin.cols), Y, Int32(lin.rows), beta)
            }
            func inputs(_ g: Int, _ X: UnsafePointer<Float>, cols: Int) throws {
                guard mode != .apply else { return }
                let H = timed(&tHessian) { accumulateHessian(X, rows: M, cols: cols, nsamples: N, precision: hessianPrecision) }
                if mode == .trueSequential { try quantizeGroup(groups[g], H: H) } else { recorded.append((groups[g], H)) }
            }
            timed(&tForward) { qlm_rmsnorm_rows(buf.xn.ptr, buf.x.ptr, Lw.attnNorm.ptr, Int32(M), Int32(d), eps) }
            try inputs(0, buf.xn.ptr, cols: d)
            timed(&tForward) {
                mm(.q, buf.xn.ptr, buf.q.ptr); mm(.k, buf.xn.ptr, buf.k.ptr); mm(.v, buf.xn.ptr, buf.v.ptr)
                for s in 0..<N {
                    let qs = buf.q.ptr + s * L * c.qDim, ks = buf.k.ptr + s * L * c.kvDim, vs = buf.v.ptr + s * L * c.kvDim
                    qlm_rope(qs, Int32(L), Int32(c.numHeads), Int32(c.headDim), buf.ropeCos.ptr, buf.ropeSin.ptr)
                    qlm_rope(ks, Int32(L), Int32(c.numKVHeads), Int32(c.headDim), buf.ropeCos.ptr, buf.ropeSin.ptr)
                    qlm_attention(qs, ks, vs, buf.att.ptr + s * L * c.qDim, Int32(L), 0, Int32(c.numHeads), Int32(c.numKVHeads),
                                  Int32(c.headDim), buf.attnScratch.ptr, 0)  // the linears here are sgemm
                }
            }
            try inputs(1, buf.att.ptr, cols: c.qDim)
            timed(&tForward) {
                mm(.o, buf.att.ptr, buf.x.ptr, beta: 1)
                qlm_rmsnorm_rows(buf.xn.ptr, buf.x.ptr, Lw.ffnNorm.ptr, Int32(M), Int32(d), eps)
            }
            try inputs(2, buf.xn.ptr, cols: d)
            timed(&tForward) {
                mm(.gate, buf.xn.ptr, buf.gate.ptr); mm(.up, buf.xn.ptr, buf.up.ptr)
                qlm_swiglu(buf.gate.ptr, buf.gate.ptr, buf.up.ptr, M * c.intermediateSize)
            }
            try inputs(3, buf.gate.ptr, cols: c.intermediateSize)
            timed(&tForward) { mm(.down, buf.gate.ptr, buf.x.ptr, beta: 1) }
        }

        if job.trueSequential {
            try runBlock(.trueSequential)
        } else {
            // Plain GPTQ: every sub-layer's Hessian from the block with its original weights (on the
            // quantized chain's inputs), then the block output recomputed with all of it quantized.
            let saved = FloatBuffer(count: M * d)
            saved.ptr.update(from: buf.x.ptr, count: M * d)
            try runBlock(.record)
            for (g, H) in recorded { try quantizeGroup(g, H: H) }
            buf.x.ptr.update(from: saved.ptr, count: M * d)
            try runBlock(.apply)
        }
        results += blockResults
        tensors += blockTensors
        try checkpointWriter.save(blocks: b + 1, x: buf.x.ptr, count: M * d, blockMatrices: blockResults, tensors: tensors)
        if let stop = job.stopAfterBlocks, b + 1 >= stop {
            try checkpointWriter.wait()
            throw QLMError.invalidArgument("stopped after block \(b + 1) (test hook)")
        }
        log?(String(format: "block %d/%d: forward %.1f s, hessian %.1f s, solver %.1f s, elapsed %.1f s",
                    b + 1, c.numLayers, tForward, tHessian, tSolver, Date().timeIntervalSince(t0)))
    }

    try checkpointWriter.wait()

    // The embedding / output head: RTN, or (--head-method gptq) GPTQ on the Hessian of the head's
    // inputs, the final-normed hidden states of the calibration tokens after the quantized blocks.
    let heads: (matrices: [(String, QuantizedMatrix)], tensors: [QuantizedManifest.Tensor], rtnLoss: Double?)
    if job.headMethod == .gptq {
        qlm_rmsnorm_rows(buf.xn.ptr, buf.x.ptr, w.norm.ptr, Int32(M), Int32(d), Float(c.rmsNormEps))
        let H = timed(&tHessian) { accumulateHessian(buf.xn.ptr, rows: M, cols: d, nsamples: N, precision: hessianPrecision) }
        heads = try timed(&tSolver) { try quantizeHeads(w, spec: job.head, H: H, solver: job.solver, log: log) }
    } else {
        heads = try quantizeHeads(w, spec: job.head, H: nil, solver: job.solver, log: log)
    }
    results += heads.matrices
    tensors += heads.tensors
    let bpw = QuantizedManifest.bitsPerWeight
    let total = Date().timeIntervalSince(t0)
    var options: [String: String] = ["true_sequential": "\(job.trueSequential)", "act_order": "\(job.solver.actOrder)",
                                     "damp": "\(job.solver.damp)", "head": job.head.label, "hessian": hessianPrecision.rawValue,
                                     "head_method": job.headMethod.rawValue]
    if let r = heads.rtnLoss { options["head_rtn_loss"] = "\(r)" }
    if job.method == .leanquant { options["exponent"] = "\(job.solver.exponent)" }
    if job.method == .tesseraq { options["steps"] = "\(job.solver.tesseraSteps)"; options["init"] = job.solver.tesseraClip ? "clip" : "minmax" }
    if job.method == .quantease { options["iters"] = "\(job.solver.iters)"; options["structured"] = "\(job.solver.structuredOutliers)" }
    var manifest = QuantizedManifest(method: job.method.rawValue, spec: job.spec, head: job.head, sourcePath: job.modelPath, sourceSHA256: sha,
                                     tensors: tensors, layerBitsPerWeight: bpw(tensors.filter { $0.name.hasPrefix("model.layers.") }),
                                     totalBitsPerWeight: bpw(tensors), quantizeSeconds: total, options: options)
    manifest.calibration = calib.description
    // Floor: one forward pass of the calibration tokens through the model, i.e. the forward time
    // of a single-pass (true-sequential) run; a two-pass run measured it twice.
    let floor = job.trueSequential ? tForward : tForward / 2
    manifest.timing = ["forward": tForward, "hessian": tHessian, "solver": tSolver, "total": total, "floor": floor,
                       "other": total - tForward - tHessian - tSolver]
    manifest.peakRSSBytes = peakRSSBytes()
    try writeQuantizedFolder(outDir: job.outDir, source: ckpt, weights: w, matrices: results, manifest: manifest)
    try? state.remove()
    return manifest
}

/// Writes block checkpoints on a background queue from a snapshot of the activations, one at a time:
/// `save` waits for the previous write (rethrowing its error), copies x, and returns. A kill at any
/// moment leaves the last complete checkpoint (its state.json is written after its files).
final class BackgroundCheckpointWriter {
    private let dir: CheckpointDir
    private let snapshot: FloatBuffer
    private let queue = DispatchQueue(label: "qlm.checkpoint")
    private let group = DispatchGroup()
    private var failure: Error?   // set on the queue, read after group.wait()

    init(_ dir: CheckpointDir, floats: Int) {
        self.dir = dir
        snapshot = FloatBuffer(count: floats)
    }

    func save(blocks: Int, x: UnsafePointer<Float>, count: Int, blockMatrices: [(String, QuantizedMatrix)],
              tensors: [QuantizedManifest.Tensor]) throws {
        try wait()
        snapshot.ptr.update(from: x, count: count)
        let dir = self.dir, snap = snapshot
        queue.async(group: group) { [self] in
            do { try dir.save(blocks: blocks, x: snap.ptr, count: count, blockMatrices: blockMatrices, tensors: tensors) } catch { failure = error }
        }
    }

    /// Waits for the write in flight; throws its error, if any.
    func wait() throws {
        group.wait()
        if let e = failure { failure = nil; throw e }
    }
}

/// Per-block checkpoint for --resume: `<out>.partial/` with the job fingerprint, the number of
/// finished blocks, the activations after them, and their quantized matrices. Each file is
/// replaced atomically, and the state file is written last.
struct CheckpointDir {
    let path: String
    let fingerprint: String

    /// `threads`: the kernel thread count the finished blocks ran on (absent in older checkpoints).
    /// OpenBLAS's multi-threaded sgemm can round differently from its single-threaded one (measured:
    /// with OPENBLAS_CORETYPE=Haswell, 1 vs 2 threads differ in the last bits), so a byte-identical
    /// resume needs the same count.
    struct State: Codable { var fingerprint: String; var blocks: Int; var tensors: [QuantizedManifest.Tensor]; var threads: Int? }

    /// The checkpoint's state if there is one and it belongs to this job.
    func state() -> State? {
        guard let d = FileManager.default.contents(atPath: path + "/state.json") else { return nil }
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let st = try? dec.decode(State.self, from: d), st.fingerprint == fingerprint else { return nil }
        return st
    }

    func reset() throws {
        try? FileManager.default.removeItem(atPath: path)
        do { try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw QLMError.io(path: path, detail: "cannot create the checkpoint folder: \(error.localizedDescription)")
        }
    }
    func remove() throws { try FileManager.default.removeItem(atPath: path) }

    func save(blocks: Int, x: UnsafePointer<Float>, count: Int, blockMatrices: [(String, QuantizedMatrix)], tensors: [QuantizedManifest.Tensor]) throws {
        let w = QLMWeightsWriter()
        for (name, q) in blockMatrices { w.addMatrix(name, q) }
        try w.write(to: path + "/block-\(blocks - 1).qlmw")
        // Activations are versioned by block so a kill between these writes leaves the previous
        // state.json pointing at files that still exist.
        try writeFileAtomically(path + "/activations-\(blocks).f32") {
            try $0.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: x), count: count * 4, deallocator: .none))
        }
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let st = try enc.encode(State(fingerprint: fingerprint, blocks: blocks, tensors: tensors, threads: Int(qlm_get_threads())))
        try writeFileAtomically(path + "/state.json") { try $0.write(contentsOf: st) }
        try? FileManager.default.removeItem(atPath: path + "/activations-\(blocks - 1).f32")
    }

    /// Loads a matching checkpoint, or nil when there is none (or it belongs to another job).
    func load(into x: UnsafeMutablePointer<Float>, count: Int) throws -> (blocks: Int, matrices: [(String, QuantizedMatrix)], tensors: [QuantizedManifest.Tensor], threads: Int?)? {
        guard let st = state() else { return nil }
        let f = try MappedFile(path: path + "/activations-\(st.blocks).f32")
        guard f.size == count * 4 else { throw QLMError.corrupt(path: f.path, detail: "checkpoint activations have the wrong size") }
        x.update(from: f.base.assumingMemoryBound(to: Float.self), count: count)
        var out: [(String, QuantizedMatrix)] = []
        for b in 0..<st.blocks {
            let file = try QLMWeightsFile(path: path + "/block-\(b).qlmw")
            for t in st.tensors where t.name.hasPrefix("model.layers.\(b).") {
                out.append((t.name, QuantizedMatrix(unpacking: try file.matrix(t.name))))
            }
        }
        return (st.blocks, out, st.tensors, st.threads)
    }
}

extension QuantizedMatrix {
    /// Back from the packed form (exact: pack/unpack round-trips).
    init(unpacking p: PackedMatrix) {
        let m = p.m, meta = p.meta
        rows = meta.rows; cols = meta.cols; bits = meta.bits; groupSize = meta.groupSize
        format = WeightFormat(rawValue: meta.format) ?? .affine
        codes = []
        func arr<T>(_ ptr: UnsafePointer<T>?, _ n: Int) -> [T] { ptr.map { Array(UnsafeBufferPointer(start: $0, count: n)) } ?? [] }
        switch format {
        case .f16:
            halves = arr(UnsafeRawPointer(m.codes).map { $0.assumingMemoryBound(to: UInt16.self) }, rows * cols)
        case .affine, .lut:
            codes = [UInt8](repeating: 0, count: rows * cols)
            codes.withUnsafeMutableBufferPointer { qlm_unpack_codes(Int32(bits), m.codes, $0.baseAddress!, Int32(rows), Int32(cols)) }
            if format == .affine {
                scales = arr(m.scales, rows * nGroups); zeros = arr(m.zeros, rows * nGroups)
            } else {
                lut = arr(m.lut, rows << bits); scales = arr(m.scales, rows); zeros = arr(m.zeros, rows)
            }
        }
        if meta.permuted { perm = arr(m.perm, cols) }
        if meta.outliers > 0 {
            outRowPtr = arr(m.out_rowptr, rows + 1); outCol = arr(m.out_col, meta.outliers); outVal = arr(m.out_val, meta.outliers)
        }
    }
}

/// The embedding / output head at `spec`. Without `H`: RTN. With `H`, the Hessian of the head's
/// inputs (final-normed hidden states): GPTQ on it for the head — tied, the one matrix that is also
/// the embedding; untied, `lm_head`, while the embedding (a lookup table, no inputs) stays RTN. No
/// act-order: embedding rows are read as stored. `rtnLoss`: the RTN head's loss on H, to compare.
func quantizeHeads(_ w: LlamaWeights, spec: QuantSpec, H: [Double]?, solver: SolverOptions, log: ((String) -> Void)?) throws
    -> (matrices: [(String, QuantizedMatrix)], tensors: [QuantizedManifest.Tensor], rtnLoss: Double?) {
    var heads: [(String, Linear)] = [("model.embed_tokens", w.embed)]
    if !w.config.tieWordEmbeddings { heads.append(("lm_head", w.lmHead)) }
    var matrices: [(String, QuantizedMatrix)] = [], tensors: [QuantizedManifest.Tensor] = [], rtnLoss: Double? = nil
    for (name, lin) in heads {
        let ts = Date()
        let W = lin.denseF32()
        var q = try quantizeRTN(W, rows: lin.rows, cols: lin.cols, spec: spec)
        var loss: Double? = nil
        if let H, name == "lm_head" || w.config.tieWordEmbeddings {
            var o = solver; o.actOrder = false
            let r = try gptqQuantize(W, rows: lin.rows, cols: lin.cols, H: H, spec: spec, options: o)
            let rtn = layerLoss(W, q.dequantize(), rows: lin.rows, cols: lin.cols, H: H)
            log?(String(format: "head %@: gptq loss %.6g, rtn %.6g (%.2f×)", name, r.loss, rtn, r.loss / max(rtn, 1e-300)))
            q = r.q; loss = r.loss; rtnLoss = rtn
        }
        matrices.append((name, q))
        tensors.append(.init(name: name, q, packed: q.packed(), loss: loss, seconds: loss == nil ? nil : Date().timeIntervalSince(ts)))
    }
    return (matrices, tensors, rtnLoss)
}
