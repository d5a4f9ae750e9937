import ArgumentParser
import Foundation
import QLM

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Continue a prompt, streaming tokens to stdout.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .shortAndLong, help: "Prompt text.") var prompt: String
    @Option(name: .short, help: "Tokens to generate.") var n: Int = 128
    @OptionGroup var sampling: SamplingFlags
    @OptionGroup var kv: KVCacheFlags
    @Flag(help: "Wrap the prompt as a user turn in the model's chat template.") var chat = false
    @Flag(help: "Print {ids, text, ...} as one JSON object instead of streaming.") var json = false

    struct Output: Encodable {
        var prompt_ids: [Int32]
        var ids: [Int32]
        var text: String
        var prompt_tps: Double
        var decode_tps: Double
    }

    func run() throws {
        try QLMCommand.guarded {
            guard n >= 1 else { throw QLMError.invalidArgument("-n must be at least 1") }
            let m = try modelOptions.load(quiet: json)
            var text = prompt
            if chat {
                guard let tpl = m.chatTemplate else { throw QLMError.invalidArgument("the model has no chat template; drop --chat") }
                text = tpl.prompt([ChatMessage(role: "user", content: prompt)], bos: m.tokenizer.bosId.map { m.tokenizer.decode([$0]) } ?? "")
            }
            var ids = m.tokenizer.encode(text, parseSpecial: chat)
            if m.tokenizer.addBOS, !chat, let b = m.tokenizer.bosId { ids.insert(b, at: 0) }
            let session = m.model.makeSession(maxContext: min(m.config.maxPositionEmbeddings, ids.count + n + 1), kvCache: kv.precision)
            var sampler = Sampler(options: sampling.options, vocabSize: m.config.vocabSize)
            var detok = StreamingDetokenizer(tokenizer: m.tokenizer)
            var out: [Int32] = []
            var history: [Int32] = []
            let stops = m.stopIds
            if !json { FileHandle.standardOutput.write(prompt.data(using: .utf8)!) }
            let stats = try Generator(loaded: m, session: session).generate(
                prompt: ids, maxTokens: n, sampler: &sampler, stopIds: stops, history: &history) { id in
                out.append(id)
                if !json && !stops.contains(id) {
                    let piece = detok.push(id)
                    if !piece.isEmpty { FileHandle.standardOutput.write(piece.data(using: .utf8)!) }
                }
                return true
            }
            if json {
                print(jsonString(Output(prompt_ids: ids, ids: out, text: m.tokenizer.decode(out),
                                        prompt_tps: stats.promptTPS, decode_tps: stats.decodeTPS)))
            } else {
                // Unbuffered like the streamed tokens, so the timing line on stderr comes after the text.
                FileHandle.standardOutput.write((detok.flush() + "\n").data(using: .utf8)!)
                printErr(String(format: "prompt: %d tokens, %.1f tok/s | decode: %d tokens, %.1f tok/s",
                                stats.promptTokens, stats.promptTPS, stats.generatedTokens, stats.decodeTPS))
            }
        }
    }
}
