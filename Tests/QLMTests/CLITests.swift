import Foundation
import Testing
@testable import QLM

/// Runs the built `qlm` binary the way a user would.
enum CLI {
    static var binary: String {
        // The test bundle sits in the products folder next to the executable.
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let cand = dir.appendingPathComponent("qlm").path
            if FileManager.default.isExecutableFile(atPath: cand) { return cand }
            dir = dir.deletingLastPathComponent()
        }
        for c in ["release", "debug"] {
            let p = TestPaths.repoRoot.appendingPathComponent(".build/\(c)/qlm").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return "qlm"
    }

    struct Result { var status: Int32; var out: String; var err: String }

    static func run(_ args: [String], stdin: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["QLM_SHARED"] = TestPaths.shared
        p.environment = env
        let o = Pipe(), e = Pipe(), i = Pipe()
        p.standardOutput = o; p.standardError = e; p.standardInput = i
        try p.run()
        if let s = stdin { i.fileHandleForWriting.write(s.data(using: .utf8)!) }
        try i.fileHandleForWriting.close()
        let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, out: String(decoding: od, as: UTF8.self), err: String(decoding: ed, as: UTF8.self))
    }

    static func json(_ s: String) -> [String: Any]? {
        guard let line = s.split(separator: "\n").last, let d = line.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: d) as? [String: Any]
    }
}

@Suite("qlm command line", .serialized)
struct CLITests {
    let model = TestPaths.smolGGUF

    @Test("generate --temp 0 --json gives the reference ids and text")
    func generate() throws {
        let r = try CLI.run(["generate", model, "-p", "The capital of France is", "-n", "30", "--temp", "0", "--json", "--threads", "2"])
        #expect(r.status == 0, "\(r.err)")
        let j = CLI.json(r.out)
        #expect((j?["ids"] as? [Int])?.prefix(8) == [7042, 30, 198, 198, 504, 2988, 314, 42])
        #expect(j?["text"] as? String == " Paris.\n\nThe answer is: 2018-01-22 12:12:53.<|im_end|>")
        let stream = try CLI.run(["generate", model, "-p", "The capital of France is", "-n", "5", "--temp", "0"])
        #expect(stream.out.hasPrefix("The capital of France is Paris."))
        #expect(stream.err.contains("decode:") && stream.err.contains("tok/s"))
    }

    @Test("perplexity --json reports the protocol fields and matches the reference window")
    func perplexity() throws {
        let r = try CLI.run(["perplexity", model, "--seqlen", "512", "--windows", "2", "--json", "--threads", "1"])
        #expect(r.status == 0, "\(r.err)")
        let j = try #require(CLI.json(r.out))
        for k in ["ppl", "se", "tokens", "seqlen", "windows", "protocol", "nll"] { #expect(j[k] != nil, "missing \(k)") }
        #expect(j["tokens"] as? Int == 304_978)
        let nll = j["nll"] as? [Double] ?? []
        #expect(nll.count == 2 && abs(nll[0] - 3.090241) < 1e-3)
        let text = try CLI.run(["perplexity", model, "--seqlen", "256", "--windows", "1", "--protocol", "llamacpp"])
        #expect(text.out.contains("PPL = ") && text.out.contains("llamacpp") && text.out.contains("304978 tokens"))
    }

    @Test("bench --json has every figure")
    func bench() throws {
        let r = try CLI.run(["bench", model, "-p", "32", "-n", "8", "-r", "1", "--json"])
        #expect(r.status == 0, "\(r.err)")
        let j = try #require(CLI.json(r.out))
        for k in ["prefill_tps", "decode_tps", "decode_ms_p50", "decode_ms_p99", "peak_rss_bytes", "weight_bytes_per_token"] {
            #expect((j[k] as? Double ?? 0) > 0, "\(k) = \(String(describing: j[k]))")
        }
    }

    @Test("chat keeps the conversation, answers /stats and /reset, exits on EOF")
    func chat() throws {
        let r = try CLI.run(["chat", model, "--temp", "0", "--max-tokens", "24"],
                            stdin: "What is the capital of France?\n/stats\n/reset\nSay hi.\n")
        #expect(r.status == 0, "\(r.err)")
        #expect(r.out.contains("Paris"))
        #expect(r.out.contains("context") && r.out.contains("conversation cleared"))
        #expect(!r.out.contains("<|im_end|>"))
    }

    @Test("bad input is a one-line error and exit code 1")
    func errors() throws {
        let missing = try CLI.run(["perplexity", "/nonexistent.gguf"])
        #expect(missing.status == 1 && missing.err.contains("error:") && missing.err.contains("no such file"))
        let garbage = writeTemp(Data("definitely not a model".utf8))
        let bad = try CLI.run(["generate", garbage, "-p", "x"])
        #expect(bad.status == 1 && bad.err.contains("not a GGUF file"))
        let flag = try CLI.run(["generate", model, "-p", "x", "--top-p", "2"])
        #expect(flag.status != 0 && flag.err.contains("top-p"))
        let out = try CLI.run(["convert", model, "--dtype", "f16", "/proc/forbidden/out"])
        #expect(out.status == 1 && out.err.contains("error:"))
        let hessian = try CLI.run(["quantize", model, "-o", NSTemporaryDirectory() + "qlm-never-written", "--method", "gptq", "--hessian", "f16"])
        #expect(hessian.status == 1 && hessian.err.contains("--hessian must be bf16 or f32"))
        let rtnHessian = try CLI.run(["quantize", model, "-o", NSTemporaryDirectory() + "qlm-never-written", "--hessian", "f32"])
        #expect(rtnHessian.status == 1 && rtnHessian.err.contains("--hessian"))
        let tqInit = try CLI.run(["quantize", model, "-o", NSTemporaryDirectory() + "qlm-never-written", "--method", "tesseraq", "--init", "awq"])
        #expect(tqInit.status == 1 && tqInit.err.contains("--init must be clip or minmax"))
        let tqLUT = try CLI.run(["quantize", model, "-o", NSTemporaryDirectory() + "qlm-never-written", "--method", "tesseraq",
                                 "--format", "lut", "--group-size", "-1"])
        #expect(tqLUT.status == 1 && tqLUT.err.contains("tesseraq"))
    }
}
