import Foundation

public struct ChatMessage: Sendable, Codable, Equatable {
    public var role: String   // system | user | assistant
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// The chat formats qlm knows. Jinja templates are recognised by their markers rather than
/// executed: the three families cover Llama-2, Llama-3 and every ChatML model (SmolLM2, Qwen...).
public enum ChatTemplate: String, Sendable, CaseIterable {
    case chatml, llama3, llama2

    /// Picks the family from a Jinja template string (GGUF `tokenizer.chat_template` or
    /// tokenizer_config.json `chat_template`); nil when unrecognised.
    public static func detect(jinja: String?) -> ChatTemplate? {
        guard let j = jinja else { return nil }
        if j.contains("<|im_start|>") { return .chatml }
        if j.contains("<|start_header_id|>") { return .llama3 }
        if j.contains("[INST]") { return .llama2 }
        return nil
    }

    /// The text for one message, so a conversation can be extended turn by turn in the KV cache.
    public func render(_ m: ChatMessage, isFirst: Bool, bos: String) -> String {
        switch self {
        case .chatml:
            return "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n"
        case .llama3:
            return (isFirst ? bos : "") + "<|start_header_id|>\(m.role)<|end_header_id|>\n\n\(m.content)<|eot_id|>"
        case .llama2:
            switch m.role {
            case "system": return "\(bos)[INST] <<SYS>>\n\(m.content)\n<</SYS>>\n\n"
            case "user": return (isFirst ? "\(bos)[INST] " : "") + "\(m.content) [/INST]"
            default: return " \(m.content) </s>\(bos)[INST] "
            }
        }
    }

    /// The prefix that asks the model for the assistant's reply.
    public var assistantPrefix: String {
        switch self {
        case .chatml: return "<|im_start|>assistant\n"
        case .llama3: return "<|start_header_id|>assistant<|end_header_id|>\n\n"
        case .llama2: return ""
        }
    }

    /// Text that closes the assistant turn when generation stopped on EOS (which is not fed back).
    public var assistantSuffix: String {
        switch self {
        case .chatml: return "<|im_end|>\n"
        case .llama3: return "<|eot_id|>"
        case .llama2: return " </s>"
        }
    }

    /// Renders a whole conversation ending with the assistant prefix.
    public func prompt(_ messages: [ChatMessage], bos: String) -> String {
        var s = ""
        for (i, m) in messages.enumerated() { s += render(m, isFirst: i == 0, bos: bos) }
        return s + assistantPrefix
    }
}
