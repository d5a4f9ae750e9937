import ArgumentParser
import Foundation
import QLM
import QLMKernels

@main
struct QLMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qlm",
        abstract: "Quantize, evaluate and run Llama-family models on the CPU.",
        subcommands: [Perplexity.self, Generate.self, Chat.self, Bench.self, Quantize.self, Convert.self, Info.self]
    )

    /// Runs a command body, turning a QLMError into a one-line message and exit code 1.
    static func guarded(_ body: () throws -> Void) throws {
        do { try body() } catch let e as QLMError {
            printErr("error: \(e.description)")
            throw ExitCode(1)
        }
    }
}

/// Flags every model-running command shares.
struct ModelOptions: ParsableArguments {
    @Argument(help: "A GGUF file or a Hugging Face model folder (config.json + *.safetensors + tokenizer.json).")
    var model: String

    @Option(help: "Threads for kernels and BLAS (default: all cores).")
    var threads: Int?

    func apply() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        qlm_set_threads_from(threads)
    }

    func load(quiet: Bool = false) throws -> LoadedModel {
        try apply()
        let t0 = Date()
        let m = try LoadedModel.load(model)
        if !quiet {
            let c = m.config
            printErr(String(format: "loaded %@ (%@): %d layers, d=%d, %d heads / %d kv, vocab %d, %.2f s, %d threads, %@",
                            model, m.checkpoint.format.rawValue, c.numLayers, c.hiddenSize, c.numHeads, c.numKVHeads,
                            c.vocabSize, Date().timeIntervalSince(t0), qlm_get_threads(), activeKernelPath()))
        }
        return m
    }
}

/// The KV cache precision of generate / chat / bench (perplexity always uses f32: it must match the
/// reference NLLs bit for bit).
struct KVCacheFlags: ParsableArguments {
    @Option(name: .customLong("kv-cache"), help: "KV cache precision: f16 (half the attention bytes per decoded token) or f32.")
    var kvCache: String = "f16"

    func validate() throws {
        guard KVCachePrecision(rawValue: kvCache) != nil else { throw ValidationError("--kv-cache must be f16 or f32, not '\(kvCache)'") }
    }

    var precision: KVCachePrecision { KVCachePrecision(rawValue: kvCache) ?? .f16 }
}

struct SamplingFlags: ParsableArguments {
    @Option(name: .customLong("temp"), help: "Temperature; 0 = greedy.") var temperature: Float = 0.8
    @Option(name: .customLong("top-k"), help: "Keep the k most likely tokens (0 = off).") var topK: Int = 40
    @Option(name: .customLong("top-p"), help: "Nucleus sampling mass (1 = off).") var topP: Float = 0.95
    @Option(name: .customLong("min-p"), help: "Drop tokens below min-p × p(top) (0 = off).") var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), help: "Penalty for tokens in the last 64 (1 = off).") var repeatPenalty: Float = 1.0
    @Option(help: "Random seed.") var seed: UInt64 = 0

    func validate() throws {
        guard temperature >= 0 else { throw ValidationError("--temp must be >= 0") }
        guard topK >= 0 else { throw ValidationError("--top-k must be >= 0") }
        guard topP > 0 && topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard minP >= 0 && minP < 1 else { throw ValidationError("--min-p must be in [0, 1)") }
        guard repeatPenalty > 0 else { throw ValidationError("--repeat-penalty must be > 0") }
    }

    var options: SamplingOptions {
        var o = SamplingOptions()
        o.temperature = temperature; o.topK = topK; o.topP = topP; o.minP = minP
        o.repeatPenalty = repeatPenalty; o.seed = seed
        return o
    }
}

func jsonString<T: Encodable>(_ v: T) -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys]
    enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return String(data: try! enc.encode(v), encoding: .utf8)!
}

/// Sizes the kernel and BLAS thread pools: n threads, or all cores when nil.
func qlm_set_threads_from(_ n: Int?) { qlm_set_threads(Int32(n ?? 0)) }
