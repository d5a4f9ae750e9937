import ArgumentParser
import Foundation
import QLM

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Quantize a model into a packed qlm folder (RTN, GPTQ, LeanQuant, QuantEase, TesseraQ).")

    @Argument(help: "Full-precision model: GGUF file or Hugging Face folder.") var model: String
    @Option(name: .shortAndLong, help: "Output folder (must not exist, or be empty).") var output: String
    @Option(help: "rtn, gptq, leanquant, quantease or tesseraq.") var method: QuantMethod = .rtn
    @Option(help: "Bits per weight: 2, 3, 4 or 8.") var bits: Int = 4
    @Option(name: .customLong("group-size"), parsing: .unconditional, help: "32, 64, 128, or -1 for one group per row.") var groupSize: Int = 128
    @Flag(help: "Symmetric affine grid (zero fixed at 2^(bits-1)).") var sym = false
    @Option(help: "affine or lut (non-uniform per-row codebook; rtn and leanquant).") var format: String = "affine"
    @Option(help: "Fraction of weights kept exactly as sparse outliers, e.g. 0.01 (rtn, quantease).") var outliers: Double = 0
    @Flag(help: "Outliers as whole input columns (quantease).") var structured = false
    @Option(name: .customLong("head-bits"), help: "Embedding/output head: f16, 8, 4, 3 or 2.") var headBits: String = "8"
    @Option(name: .customLong("head-method"), help: "Embedding/output head: rtn, or gptq (calibrated methods: GPTQ on the final hidden states).") var headMethod: String = "rtn"
    @Option(help: "Calibration text: c4, wikipedia, groups_merged or a file (never the evaluation set).") var calib: String = "c4"
    @Option(help: "Calibration windows.") var nsamples: Int = 128
    @Option(help: "Tokens per calibration window.") var seqlen: Int = 512
    @Option(help: "Seed for drawing calibration windows.") var seed: UInt64 = 0
    @Option(help: "Hessian damping, fraction of mean(diag H).") var damp: Double = 0.01
    @Flag(name: .customLong("act-order"), help: "Quantize columns in order of decreasing Hessian diagonal.") var actOrder = false
    @Flag(name: .customLong("true-sequential"), help: "Re-collect inputs per sub-group (qkv → o → gate/up → down).") var trueSequential = false
    @Option(help: "LeanQuant exponent p in the weights U_jj^(-p).") var exponent: Double = 4
    @Option(help: "QuantEase iterations.") var iters: Int = 30
    @Option(help: "TesseraQ Adam steps per rounding round (20 rounds).") var steps: Int = 20
    @Option(name: .customLong("init"), help: "TesseraQ initial grids: clip (diag(H)-weighted range search) or minmax.") var gridInit: String = "clip"
    @Option(help: "Hessian Gram inputs: bf16 (f32 sums; default where the CPU has AVX-512 BF16) or f32.") var hessian: String?
    @Flag(help: "Continue a killed run from its last finished block (on the thread count it began with, unless --threads is given).") var resume = false
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "One JSON event per tensor, then a JSON summary.") var json = false

    func run() throws {
        try QLMCommand.guarded {
            qlm_set_threads_from(threads)
            guard let fmt = WeightFormat(rawValue: format), fmt != .f16 else { throw QLMError.invalidArgument("--format must be affine or lut") }
            let spec = QuantSpec(format: fmt, bits: bits, groupSize: groupSize == -1 ? nil : groupSize, sym: sym, outlierFraction: outliers)
            var job = QuantizeJob(modelPath: model, outDir: output, method: method, spec: spec, head: try headSpec(headBits, layer: spec))
            guard let hm = HeadMethod(rawValue: headMethod) else { throw QLMError.invalidArgument("--head-method must be rtn or gptq") }
            job.headMethod = hm
            job.solver.damp = damp; job.solver.actOrder = actOrder; job.solver.exponent = exponent
            job.solver.iters = iters; job.solver.structuredOutliers = structured; job.solver.tesseraSteps = steps
            guard gridInit == "clip" || gridInit == "minmax" else { throw QLMError.invalidArgument("--init must be clip or minmax") }
            job.solver.tesseraClip = gridInit == "clip"
            job.calibration.source = calib; job.calibration.nsamples = nsamples; job.calibration.seqlen = seqlen; job.calibration.seed = seed
            job.trueSequential = trueSequential; job.resume = resume
            if let hessian {
                guard let p = HessianPrecision(rawValue: hessian) else { throw QLMError.invalidArgument("--hessian must be bf16 or f32") }
                job.hessianPrecision = p
            }
            if method == .rtn && (actOrder || trueSequential || resume || hessian != nil) {
                throw QLMError.invalidArgument("--act-order, --true-sequential, --hessian and --resume apply to calibrated methods, not rtn")
            }
            try job.validate()
            if threads == nil, let t = job.checkpointThreads {
                // A resumed run continues on the thread count its checkpoint was computed on: BLAS may
                // round differently on another one, and the result should equal an uninterrupted run's.
                qlm_set_threads_from(t)
            }
            let tty = stderrIsTTY && !json
            var done = 0
            let total = 7 * 30  // refined by the first event
            let m = try quantizeModel(job, log: { line in
                if json { print(jsonString(["event": "log", "message": line])); fflush(stdout) }
                else { if tty { printErr("\r\u{1B}[K", terminator: "") }; printErr(line) }
            }, progress: { ev in
                done += 1
                if json { print(jsonString(ev)); fflush(stdout); return }
                guard tty else { return }
                let n = ev.blocks * 7 + (method == .rtn ? 1 : 0)
                let eta = ev.elapsed / Double(done) * Double(max(n, total) - done)
                let loss = ev.loss.map { String(format: "loss %.4g", $0) } ?? ""
                printErr(String(format: "\r\u{1B}[K[%3d/%d] block %2d/%d %-30@ %5.2f bpw %@  elapsed %@  ETA %@", done, n, ev.block + 1, ev.blocks,
                                ev.name.replacingOccurrences(of: "model.layers.", with: "") as NSString, ev.bitsPerWeight, loss,
                                formatDuration(ev.elapsed), formatDuration(eta)), terminator: "")
            })
            if tty { printErr("") }
            if json {
                var s: [String: String] = ["event": "summary", "output": output, "method": m.method, "spec": m.spec.label, "head": m.head.label,
                                           "layer_bpw": String(m.layerBitsPerWeight), "total_bpw": String(m.totalBitsPerWeight),
                                           "seconds": String(m.quantizeSeconds)]
                for (k, v) in m.timing ?? [:] { s["time_" + k] = String(v) }
                print(jsonString(s))
                return
            }
            printSummary(m)
        }
    }

    func printSummary(_ m: QuantizedManifest) {
        print("wrote \(output): \(m.method) \(m.spec.label), head \(m.head.label)")
        if let c = m.calibration { print("calibration: \(c)") }
        print(" tensor                              bpw      loss      s")
        for t in m.tensors where t.name.hasPrefix("model.layers.") {
            print(String(format: " %-34@ %6.3f  %9.4g  %5.2f", t.name.replacingOccurrences(of: "model.layers.", with: "") as NSString,
                         t.bitsPerWeight, t.loss ?? .nan, t.seconds ?? 0))
        }
        print(String(format: "bits per weight: %.4f (decoder linears), %.4f (all matrices incl. head)", m.layerBitsPerWeight, m.totalBitsPerWeight))
        if let t = m.timing {
            print(String(format: "time: total %.1f s = forward %.1f + hessians %.1f (%@) + solver %.1f + other %.1f; floor (one forward pass) %.1f s → %.2f× floor",
                         t["total"] ?? 0, t["forward"] ?? 0, t["hessian"] ?? 0, (m.options["hessian"] ?? "f32") as NSString,
                         t["solver"] ?? 0, t["other"] ?? 0, t["floor"] ?? 0,
                         (t["total"] ?? 0) / max(t["floor"] ?? 1, 1e-9)))
        } else {
            print(String(format: "time: %.1f s", m.quantizeSeconds))
        }
        if let r = m.peakRSSBytes { print(String(format: "peak memory (RSS): %.0f MB", Double(r) / 1e6)) }
    }
}

extension QuantMethod: ExpressibleByArgument {}
