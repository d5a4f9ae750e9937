import Foundation

/// Evaluation texts by name: `wikitext2` and `ptb` (test splits, GPTQ conventions) from the shared
/// data folder, or any UTF-8 text file by path.
public func loadEvaluationText(_ dataset: String) throws -> (name: String, text: String) {
    switch dataset {
    case "wikitext2", "wikitext-2", "wikitext":
        guard let shared = locateSharedDir() else {
            throw QLMError.io(path: "shared/data", detail: "cannot find the shared data folder for wikitext2; set QLM_SHARED or pass a file path")
        }
        return ("wikitext2 test (wiki.test.raw, \"\\n\\n\".join(rows))", try wikitext2TestText(path: shared + "/data/wikitext-2-raw/wiki.test.raw"))
    case "ptb":
        guard let shared = locateSharedDir() else {
            throw QLMError.io(path: "shared/data", detail: "cannot find the shared data folder for ptb; set QLM_SHARED or pass a file path")
        }
        return ("ptb test (\" \".join(sentences))", try ptbTestText(path: shared + "/data/ptb/ptb.test.txt"))
    default:
        guard let d = FileManager.default.contents(atPath: dataset) else {
            throw QLMError.io(path: dataset, detail: "not a dataset name (wikitext2, ptb) nor a readable file")
        }
        guard let s = String(data: d, encoding: .utf8) else { throw QLMError.corrupt(path: dataset, detail: "not valid UTF-8 text") }
        return (dataset, s)
    }
}
