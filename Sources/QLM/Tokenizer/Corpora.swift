import Foundation

/// WikiText-2 test text in the GPTQ / HF convention: rows are the lines of `wiki.test.raw`, each
/// keeping its "\n", with whitespace-only lines replaced by ""; the text is the rows joined by
/// "\n\n" (1,294,336 characters for the standard file).
public func wikitext2TestText(path: String) throws -> String {
    try readLines(path: path)
        .map { line in line.unicodeScalars.allSatisfy(isPythonSpace) ? "" : line }
        .joined(separator: "\n\n")
}

/// Penn Treebank test text in the GPTQ convention: each line stripped, joined by " ".
public func ptbTestText(path: String) throws -> String {
    try readLines(path: path).map(pythonStrip).joined(separator: " ")
}

/// The file's lines, each keeping its "\n", as Python's `for line in f` yields them.
private func readLines(path: String) throws -> [String] {
    let data: Data
    do {
        data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw QLMError.io(path: path, detail: "cannot read corpus: \(error.localizedDescription)")
    }
    guard let text = String(data: data, encoding: .utf8) else {
        throw QLMError.corrupt(path: path, detail: "not valid UTF-8")
    }
    // Split on scalars: as Characters, "\r\n" would be one grapheme and hide the "\n".
    var lines: [String] = []
    var current = String.UnicodeScalarView()
    for u in text.unicodeScalars {
        current.append(u)
        if u == "\n" {
            lines.append(String(current))
            current = String.UnicodeScalarView()
        }
    }
    if !current.isEmpty { lines.append(String(current)) }
    return lines
}

/// Python's `str.isspace` per character: Unicode White_Space plus the ASCII separators 0x1C-0x1F.
private func isPythonSpace(_ u: Unicode.Scalar) -> Bool {
    u.properties.isWhitespace || (0x1C...0x1F).contains(u.value)
}

/// Python's `str.strip()`.
private func pythonStrip(_ s: String) -> String {
    let u = s.unicodeScalars
    guard let first = u.firstIndex(where: { !isPythonSpace($0) }),
          let last = u.lastIndex(where: { !isPythonSpace($0) }) else { return "" }
    return String(u[first...last])
}
