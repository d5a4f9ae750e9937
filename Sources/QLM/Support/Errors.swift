import Foundation

/// Every failure a user can cause (bad file, bad flag, bad model) surfaces as one of these,
/// with the file and tensor named, so the CLI prints a sentence instead of crashing.
public enum QLMError: Error, CustomStringConvertible, Equatable {
    /// A file could not be opened, read, mapped or written.
    case io(path: String, detail: String)
    /// A file is readable but its contents are not a valid instance of its format.
    case corrupt(path: String, detail: String)
    /// A tensor is missing, unexpected, mis-shaped or points outside its file.
    case tensor(path: String, tensor: String, detail: String)
    /// Valid input that qlm does not support (tensor type, architecture, tokenizer model...).
    case unsupported(String)
    /// A bad flag value or a bad combination of options.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .io(path, detail): return "\(path): \(detail)"
        case let .corrupt(path, detail): return "\(path): corrupt or truncated file: \(detail)"
        case let .tensor(path, tensor, detail): return "\(path): tensor '\(tensor)': \(detail)"
        case let .unsupported(msg): return "unsupported: \(msg)"
        case let .invalidArgument(msg): return msg
        }
    }
}

extension QLMError: LocalizedError {
    public var errorDescription: String? { description }
}
