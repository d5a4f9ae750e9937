import ArgumentParser
import Foundation
import QLM
import QLMKernels

struct Perplexity: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Perplexity on WikiText-2 / PTB test or a text file.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "wikitext2, ptb, or a path to a UTF-8 text file.") var dataset: String = "wikitext2"
    @Option(help: "Tokens per window.") var seqlen: Int = 2048
    @Option(help: "Evaluate only the first N windows.") var windows: Int?
    @Option(name: .customLong("protocol"), help: "gptq (score all L-1 positions) or llamacpp (second half only).")
    var proto: PerplexityProtocol = .gptq
    @Flag(help: "Evaluate token by token through the decode kernels (what generation runs: GEMV, integer activations where they apply) instead of batched prefill. Slow; for checking the decode path's accuracy.")
    var decodePath = false
    @Flag(help: "Print one JSON object and nothing else on stdout.") var json = false

    func run() throws {
        try QLMCommand.guarded {
            if let w = windows, w < 1 { throw QLMError.invalidArgument("--windows must be at least 1") }
            let m = try modelOptions.load(quiet: json)
            let (name, text) = try loadEvaluationText(dataset)
            let t0 = Date()
            let tokens = m.tokenizer.encode(text, parseSpecial: false)
            let nWin = min(tokens.count / max(seqlen, 1), windows ?? Int.max)
            if !json {
                print("dataset: \(name); \(tokens.count) tokens (tokenized in \(String(format: "%.1f", Date().timeIntervalSince(t0))) s, no BOS)")
                print("protocol: \(proto.rawValue): seqlen \(seqlen), \(nWin) non-overlapping windows from token 0, scoring \(proto.scoringDescription)")
            }
            let tty = stderrIsTTY && !json
            if !json && decodePath {
                print("path: token by token through the decode kernels (activations: \(qlm_qgemv_act() == QLM_ACT_I16 ? "int16 where a kernel exists" : "f32"))")
            }
            let r = try evaluatePerplexity(model: m.model, tokens: tokens, seqlen: seqlen, maxWindows: windows, protocol: proto,
                                           dataset: name, decodePath: decodePath) { done, total, res in
                guard tty else { return }
                let eta = res.seconds / Double(done) * Double(total - done)
                printErr(String(format: "\r[%d/%d] ppl %.4f  %.2f s/window  elapsed %@  ETA %@   ", done, total, res.ppl,
                                res.seconds / Double(done), formatDuration(res.seconds), formatDuration(eta)), terminator: "")
            }
            if tty { printErr("") }
            if json {
                print(jsonString(r))
            } else {
                print(String(format: "PPL = %.4f ± %.4f  (%d windows × %d, %d scored tokens, %.1f s, %.2f s/window)",
                             r.ppl, r.se, r.windows, r.seqlen, r.scoredTokens, r.seconds, r.seconds / Double(r.windows)))
            }
        }
    }
}

extension PerplexityProtocol: ExpressibleByArgument {}
