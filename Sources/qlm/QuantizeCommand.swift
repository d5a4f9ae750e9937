import ArgumentParser
import Foundation
import QLM

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Quantize a model into a packed qlm folder.")

    @Argument(help: "Full-precision model: GGUF file or Hugging Face folder.") var model: String
    @Option(name: .shortAndLong, help: "Output folder (must not exist, or be empty).") var output: String
    @Option(help: "rtn (more methods follow).") var method: String = "rtn"
    @Option(help: "Bits per weight: 2, 3, 4 or 8.") var bits: Int = 4
    @Option(name: .customLong("group-size"), help: "32, 64, 128, or -1 for one group per row.") var groupSize: Int = 128
    @Flag(help: "Symmetric affine grid (zero fixed at 2^(bits-1)).") var sym = false
    @Option(help: "affine or lut (non-uniform per-row codebook).") var format: String = "affine"
    @Option(help: "Fraction of weights kept exactly as sparse outliers, e.g. 0.01.") var outliers: Double = 0
    @Option(name: .customLong("head-bits"), help: "Embedding/output head: f16, 8, 4, 3 or 2.") var headBits: String = "8"
    @Option(help: "Threads (default: all cores).") var threads: Int?
    @Flag(help: "One JSON event per tensor, then a JSON summary.") var json = false

    func run() throws {
        try QLMCommand.guarded {
            qlm_set_threads_from(threads)
            guard let fmt = WeightFormat(rawValue: format), fmt != .f16 else { throw QLMError.invalidArgument("--format must be affine or lut") }
            guard method == "rtn" else { throw QLMError.invalidArgument("--method \(method) is not available yet (rtn)") }
            let spec = QuantSpec(format: fmt, bits: bits, groupSize: groupSize == -1 ? nil : groupSize, sym: sym, outlierFraction: outliers)
            try spec.validate()
            let head = try headSpec(headBits, layer: spec)
            let tty = stderrIsTTY && !json
            var done = 0
            let m = try quantizeModelRTN(modelPath: model, outDir: output, spec: spec, head: head,
                                         options: ["head_bits": headBits]) { ev in
                done += 1
                if json { print(jsonString(ev)); fflush(stdout); return }
                if tty {
                    let total = ev.blocks * 7 + 1
                    let eta = ev.elapsed / Double(done) * Double(total - done)
                    printErr(String(format: "\r[%3d/%d] block %2d/%d %-34@ %5.2f bpw  elapsed %@  ETA %@ ", done, total, ev.block + 1, ev.blocks,
                                    ev.name as NSString, ev.bitsPerWeight, formatDuration(ev.elapsed), formatDuration(eta)), terminator: "")
                }
            }
            if tty { printErr("") }
            if json {
                print(jsonString(["event": "summary", "output": output, "method": m.method, "spec": m.spec.label,
                                  "head": m.head.label, "layer_bpw": String(m.layerBitsPerWeight),
                                  "total_bpw": String(m.totalBitsPerWeight), "seconds": String(m.quantizeSeconds)]))
            } else {
                print("wrote \(output): \(m.method) \(m.spec.label), head \(m.head.label)")
                print(String(format: "bits per weight: %.4f (decoder linears), %.4f (all matrices incl. head); %.1f s",
                             m.layerBitsPerWeight, m.totalBitsPerWeight, m.quantizeSeconds))
            }
        }
    }
}
