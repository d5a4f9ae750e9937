import ArgumentParser
import Foundation
import QLM
import QLMKernels

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Prefill and decode speed, latency percentiles, memory and bandwidth.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .short, help: "Prompt tokens to prefill.") var p: Int = 512
    @Option(name: .short, help: "Tokens to decode.") var n: Int = 128
    @Option(name: .short, help: "Timed repetitions (after one warm-up).") var r: Int = 5
    @OptionGroup var kv: KVCacheFlags
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        try QLMCommand.guarded {
            let m = try modelOptions.load(quiet: json)
            let res = try runBench(model: m.model, name: modelOptions.model, promptTokens: p, decodeTokens: n, repetitions: r, kvCache: kv.precision) { rep in
                if stderrIsTTY && !json { printErr("\r  repetition \(rep)/\(r)", terminator: "") }
            }
            if stderrIsTTY && !json { printErr("") }
            if json { print(jsonString(res)); return }
            print("model: \(res.model)  threads: \(res.threads)  isa: \(res.isa)  kv cache: \(res.kv_cache)  reps: \(res.repetitions) (+1 warm-up)")
            print(String(format: "prefill  %5d tokens   %8.1f ± %.1f tok/s", res.promptTokens, res.prefill_tps, res.prefill_tps_sd))
            print(String(format: "decode   %5d tokens   %8.1f ± %.1f tok/s", res.decodeTokens, res.decode_tps, res.decode_tps_sd))
            print(String(format: "decode latency         p50 %.2f ms  p90 %.2f ms  p99 %.2f ms", res.decode_ms_p50, res.decode_ms_p90, res.decode_ms_p99))
            print(String(format: "weights read / token   %.1f MB  →  %.1f GB/s at the decode rate", Double(res.weight_bytes_per_token) / 1e6, res.decode_weight_gbps))
            print(String(format: "peak RSS               %.1f MB", Double(res.peak_rss_bytes) / 1e6))
        }
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a model's configuration and tensors without loading weights.")
    @Argument(help: "A GGUF file or a Hugging Face model folder.") var model: String

    func run() throws {
        try QLMCommand.guarded {
            let ck = try openCheckpoint(model)
            print(jsonString(ck.config))
            print("format: \(ck.format.rawValue), \(ck.source.tensorNames.count) tensors")
            var byType: [String: Int] = [:]
            for n in ck.source.tensorNames { if let i = ck.source.info(n) { byType[i.dtype.rawValue, default: 0] += 1 } }
            print("tensor types: " + byType.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", "))
        }
    }
}

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a model as a Hugging Face folder (config, tokenizer, safetensors).")
    @Argument(help: "A GGUF file or a Hugging Face model folder.") var model: String
    @Option(help: "Output format (hf-safetensors).") var to: String = "hf-safetensors"
    @Option(help: "f16, bf16 or f32.") var dtype: String = "f16"
    @Argument(help: "Output folder (must not exist, or be empty).") var outDir: String
    @Option(help: "Threads (default: all cores).") var threads: Int?

    func run() throws {
        try QLMCommand.guarded {
            qlm_set_threads_from(threads)
            guard to == "hf-safetensors" else { throw QLMError.invalidArgument("--to must be hf-safetensors") }
            guard let dt = ["f16": TensorDType.f16, "bf16": .bf16, "f32": .f32][dtype] else {
                throw QLMError.invalidArgument("--dtype must be f16, bf16 or f32")
            }
            let t0 = Date()
            try convertToHF(modelPath: model, outDir: outDir, dtype: dt)
            printErr(String(format: "wrote %@ (%@) in %.1f s", outDir, dtype, Date().timeIntervalSince(t0)))
        }
    }
}
