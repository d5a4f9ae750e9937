import Foundation
import Testing
@testable import QLM
import QLMKernels

/// End-to-end model checks against the independent reference in shared/data/SOURCES.md.
@Suite("Real model: perplexity, conversion, generation", .serialized)
final class ModelTests: HoldsKernelState {
    static let wikiTokens: [Int32] = {
        let tok = try! loadTokenizerJSON(path: TestPaths.smolTokenizerJSON)
        return tok.encode(try! wikitext2TestText(path: TestPaths.wikiTestRaw), parseSpecial: false)
    }()

    @Test("WikiText-2 perplexity matches the reference NLLs (|ΔNLL| < 1e-3)")
    func perplexityMatchesReference() throws {
        let m = SmolModel.model
        let r512 = try evaluatePerplexity(model: m, tokens: Self.wikiTokens, seqlen: 512, maxWindows: 4, protocol: .gptq, dataset: "wikitext2")
        let ref512 = [3.090241, 3.590728, 3.471664, 3.578485]
        for (a, b) in zip(r512.nll, ref512) { #expect(abs(a - b) < 1e-3, "seqlen 512: \(r512.nll) vs \(ref512)") }
        #expect(r512.tokens == 304_978 && r512.windows == 4 && r512.scoredTokens == 4 * 511)

        let r2048 = try evaluatePerplexity(model: m, tokens: Self.wikiTokens, seqlen: 2048, maxWindows: 1, protocol: .gptq, dataset: "wikitext2")
        #expect(abs(r2048.nll[0] - 2.717780) < 1e-3, "seqlen 2048 window 0: \(r2048.nll[0])")
        #expect(abs(r2048.ppl - exp(r2048.nll[0])) < 1e-9)
    }

    @Test("An f16 KV cache tracks the f32 one: prefill + 24 decoded tokens, logits within 2%, same greedy tokens")
    func f16KVCache() throws {
        let m = SmolModel.model
        let prompt = Array(Self.wikiTokens[0..<200])  // > 16 tokens: the prefill takes the widening (BLAS) path
        let a = m.makeSession(maxContext: 256, kvCache: .f32), b = m.makeSession(maxContext: 256, kvCache: .f16)
        #expect(b.stateBytes < a.stateBytes)
        try a.forward(prompt); try b.forward(prompt)
        var worst: Float = 0
        for _ in 0..<24 {
            let la = a.logits.array, lb = b.logits.array
            let scale = la.map { abs($0) }.max()!
            worst = max(worst, zip(la, lb).map { abs($0 - $1) }.max()! / scale)
            let ta = Int32(la.indices.max { la[$0] < la[$1] }!), tb = Int32(lb.indices.max { lb[$0] < lb[$1] }!)
            #expect(ta == tb)
            try a.forward([ta]); try b.forward([ta])
        }
        #expect(worst < 0.02, "max |Δlogit| / max|logit| = \(worst)")
        #expect(worst > 0, "the f16 session must actually round the cache")
    }

    @Test("llama.cpp protocol scores only the second half of each window")
    func llamacppProtocol() throws {
        let r = try evaluatePerplexity(model: SmolModel.model, tokens: Self.wikiTokens, seqlen: 512, maxWindows: 2, protocol: .llamacpp, dataset: "wikitext2")
        #expect(r.scoredTokens == 2 * 255)
        #expect(r.ppl.isFinite && r.se > 0)
        let g = try evaluatePerplexity(model: SmolModel.model, tokens: Self.wikiTokens, seqlen: 512, maxWindows: 2, protocol: .gptq, dataset: "wikitext2")
        // Later positions see more context, so the second half is easier than the whole window.
        #expect(r.ppl < g.ppl)
    }

    @Test("GGUF and converted safetensors (f32) give identical logits; f16/bf16 stay close")
    func convertRoundTrip() throws {
        let dir = TestPaths.tempDir("convert")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prompt: [Int32] = [504, 3575, 282, 4649, 314]
        let ref = SmolModel.model.makeSession(maxContext: 16)
        try ref.forward(prompt)
        for (dtype, tol) in [(TensorDType.f32, Float(1e-5)), (.f16, 0.05), (.bf16, 0.5)] {
            let out = dir + "/hf-\(dtype.rawValue)"
            try convertToHF(modelPath: TestPaths.smolGGUF, outDir: out, dtype: dtype)
            let loaded = try LoadedModel.load(out)
            #expect(loaded.checkpoint.format == .hf)
            #expect(loaded.config.numLayers == 30 && loaded.config.tieWordEmbeddings)
            let s = loaded.model.makeSession(maxContext: 16)
            try s.forward(prompt)
            var maxDiff: Float = 0
            for i in 0..<49152 { maxDiff = max(maxDiff, abs(s.logits[i] - ref.logits[i])) }
            #expect(maxDiff <= tol, "\(dtype.rawValue): max |Δlogit| = \(maxDiff)")
            // The regenerated tokenizer.json tokenizes exactly like the original.
            let text = "Hello world! 12345 <|im_start|>user\n café 日本 "
            let orig = try loadTokenizerJSON(path: TestPaths.smolTokenizerJSON)
            #expect(loaded.tokenizer.encode(text, parseSpecial: true) == orig.encode(text, parseSpecial: true))
            #expect(loaded.chatTemplate == .chatml)
        }
        // Refuses to overwrite a non-empty folder.
        #expect(throws: QLMError.self) { try convertToHF(modelPath: TestPaths.smolGGUF, outDir: dir + "/hf-F32", dtype: .f32) }
    }

    @Test("Greedy generation through the tokenizer reproduces the reference text")
    func greedyText() throws {
        let loaded = try LoadedModel.load(TestPaths.smolGGUF)
        let ids = loaded.tokenizer.encode("The capital of France is", parseSpecial: false)
        #expect(ids == [504, 3575, 282, 4649, 314])
        var sampler = Sampler(options: { var o = SamplingOptions(); o.temperature = 0; return o }(), vocabSize: 49152)
        var out: [Int32] = [], hist: [Int32] = []
        let session = loaded.model.makeSession(maxContext: 64)
        try Generator(loaded: loaded, session: session).generate(prompt: ids, maxTokens: 40, sampler: &sampler,
                                                                  stopIds: loaded.stopIds, history: &hist) { out.append($0); return true }
        #expect(loaded.tokenizer.decode(out) == " Paris.\n\nThe answer is: 2018-01-22 12:12:53.<|im_end|>")
    }
}
