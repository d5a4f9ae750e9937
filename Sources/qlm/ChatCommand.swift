import ArgumentParser
import Foundation
import QLM

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat in the terminal. /reset clears the conversation, /stats shows speed, /quit or Ctrl-D exits.")

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var sampling: SamplingFlags
    @OptionGroup var kv: KVCacheFlags
    @Option(name: .customLong("chat-template"), help: "chatml, llama3 or llama2 (default: from the model).")
    var template: String?
    @Option(help: "System prompt.") var system: String?
    @Option(help: "Context length (tokens) kept in the KV cache.") var ctx: Int = 4096
    @Option(help: "Maximum tokens per reply.") var maxTokens: Int = 512

    func run() throws {
        try QLMCommand.guarded {
            let m = try modelOptions.load()
            let tpl: ChatTemplate
            if let t = template {
                guard let x = ChatTemplate(rawValue: t) else {
                    throw QLMError.invalidArgument("--chat-template must be one of \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                tpl = x
            } else {
                guard let x = m.chatTemplate else { throw QLMError.invalidArgument("the model names no chat template; pass --chat-template") }
                tpl = x
            }
            let session = m.model.makeSession(maxContext: min(ctx, m.config.maxPositionEmbeddings), kvCache: kv.precision)
            let gen = Generator(loaded: m, session: session)
            let bos = m.tokenizer.bosId.map { m.tokenizer.decode([$0]) } ?? ""
            var sampler = Sampler(options: sampling.options, vocabSize: m.config.vocabSize)
            var history: [Int32] = []
            var turns = 0
            var last: GenerationStats?
            printErr("chat (\(tpl.rawValue) template, \(session.maxContext)-token context). /reset, /stats, /quit; Ctrl-D exits.")
            while true {
                say("> ", terminator: "")
                guard let line = readLine(strippingNewline: true) else { say(""); break }
                let input = line.trimmingCharacters(in: .whitespaces)
                if input.isEmpty { continue }
                switch input {
                case "/quit", "/exit": return
                case "/reset":
                    session.reset(); history = []; turns = 0
                    say("(conversation cleared)"); continue
                case "/stats":
                    if let s = last {
                        say(String(format: "last reply: prompt %d tokens at %.1f tok/s, %d tokens at %.1f tok/s; context %d/%d",
                                     s.promptTokens, s.promptTPS, s.generatedTokens, s.decodeTPS, session.position, session.maxContext))
                    } else { say("context \(session.position)/\(session.maxContext); no reply yet") }
                    continue
                default: break
                }
                var text = ""
                if turns == 0, let sys = system { text += tpl.render(ChatMessage(role: "system", content: sys), isFirst: true, bos: bos) }
                text += tpl.render(ChatMessage(role: "user", content: input), isFirst: turns == 0 && system == nil, bos: bos)
                text += tpl.assistantPrefix
                let ids = m.tokenizer.encode(text, parseSpecial: true)
                if session.position + ids.count + 8 >= session.maxContext {
                    say("(context full: /reset to start over)"); continue
                }
                var detok = StreamingDetokenizer(tokenizer: m.tokenizer)
                let stops = m.stopIds
                let stats = try gen.generate(prompt: ids, maxTokens: min(maxTokens, session.maxContext - session.position - ids.count - 1),
                                             sampler: &sampler, stopIds: stops, history: &history) { id in
                    if stops.contains(id) { return false }
                    let piece = detok.push(id)
                    if !piece.isEmpty { FileHandle.standardOutput.write(piece.data(using: .utf8)!) }
                    return true
                }
                say(detok.flush())
                // The stop token was sampled but not fed (and a length cut leaves the turn open): close the
                // turn so the next one starts clean.
                do {
                    let close = m.tokenizer.encode(tpl.assistantSuffix, parseSpecial: true)
                    if session.position + close.count < session.maxContext { try session.forward(close, logits: false) }
                }
                last = stats
                turns += 1
            }
        }
    }
}

/// Unbuffered stdout, so prompts, streamed tokens and status lines appear in order.
private func say(_ s: String, terminator: String = "\n") {
    FileHandle.standardOutput.write((s + terminator).data(using: .utf8)!)
}
