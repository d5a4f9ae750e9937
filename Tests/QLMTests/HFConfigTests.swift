import Foundation
import Testing
@testable import QLM

private func parse(_ json: String) throws -> LlamaConfig {
    try LlamaConfig.fromHFConfig(data: Data(json.utf8), path: "test/config.json")
}

/// A minimal valid Llama config with `extra` spliced in (later keys win in our decoder's eyes only
/// if unique, so `extra` must not repeat a base key; use `without` to drop one).
private func config(_ extra: String = "", without: Set<String> = []) -> String {
    let base: [(String, String)] = [
        ("model_type", "\"llama\""), ("architectures", "[\"LlamaForCausalLM\"]"), ("hidden_size", "64"),
        ("intermediate_size", "128"), ("num_hidden_layers", "2"), ("num_attention_heads", "4"),
        ("vocab_size", "100"), ("rms_norm_eps", "1e-05"),
    ]
    var parts = base.filter { !without.contains($0.0) }.map { "\"\($0.0)\": \($0.1)" }
    if !extra.isEmpty { parts.append(extra) }
    return "{" + parts.joined(separator: ", ") + "}"
}

private func expectError(_ json: String, _ needles: [String], unsupported: Bool = false,
                         sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try parse(json)
        Issue.record("expected an error for \(json)", sourceLocation: sourceLocation)
    } catch let e as QLMError {
        for n in needles {
            #expect(e.description.contains(n), "'\(e)' should mention '\(n)'", sourceLocation: sourceLocation)
        }
        if unsupported {
            if case .unsupported = e {} else { Issue.record("expected .unsupported, got \(e)", sourceLocation: sourceLocation) }
        } else {
            if case .corrupt = e {} else { Issue.record("expected .corrupt, got \(e)", sourceLocation: sourceLocation) }
        }
    } catch {
        Issue.record("expected a QLMError, got \(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct HFConfigTests {
    @Test(.enabled(if: FileManager.default.fileExists(atPath: TestPaths.smolConfigJSON)))
    func smolLM2Config() throws {
        let c = try LlamaConfig.fromHFConfig(path: TestPaths.smolConfigJSON)
        #expect(c.hiddenSize == 576)
        #expect(c.intermediateSize == 1536)
        #expect(c.numLayers == 30)
        #expect(c.numHeads == 9)
        #expect(c.numKVHeads == 3)
        #expect(c.headDim == 64)
        #expect(c.ropeTheta == 100000)
        #expect(c.rmsNormEps == 1e-5)
        #expect(c.maxPositionEmbeddings == 8192)
        #expect(c.tieWordEmbeddings)
        #expect(c.ropeScaling == nil)
        #expect(c.vocabSize == 49152)
        #expect(c.bosTokenId == 1)
        #expect(c.eosTokenIds == [2])
        // A directory path finds its config.json.
        let dir = URL(fileURLWithPath: TestPaths.smolConfigJSON).deletingLastPathComponent().path
        #expect(try LlamaConfig.fromHFConfig(path: dir) == c)

        // Writing it back gives an equal config and the keys transformers needs.
        let json = c.hfConfigJSON(torchDtype: "bfloat16")
        #expect(try LlamaConfig.fromHFConfig(data: json, path: "rt") == c)
        let obj = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
        #expect(obj["architectures"] as? [String] == ["LlamaForCausalLM"])
        #expect(obj["model_type"] as? String == "llama")
        #expect(obj["torch_dtype"] as? String == "bfloat16")
        // Every key of the original is reproduced with the same value, where it is one we model.
        let orig = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: TestPaths.smolConfigJSON))) as? [String: Any])
        for k in ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "max_position_embeddings", "vocab_size", "bos_token_id", "eos_token_id"] {
            #expect(obj[k] as? Int == orig[k] as? Int, "\(k)")
        }
        for k in ["rms_norm_eps", "rope_theta"] { #expect(obj[k] as? Double == orig[k] as? Double, "\(k)") }
        #expect(obj["tie_word_embeddings"] as? Bool == true)
        #expect(obj["rope_scaling"] is NSNull)
    }

    @Test func roundTripVariants() throws {
        let variants: [LlamaConfig] = [
            LlamaConfig(vocabSize: 128256, hiddenSize: 2048, intermediateSize: 8192, numLayers: 16, numHeads: 32,
                        numKVHeads: 8, ropeTheta: 500000, rmsNormEps: 1e-5, maxPositionEmbeddings: 131072,
                        tieWordEmbeddings: true,
                        ropeScaling: RopeScaling(factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192),
                        bosTokenId: 128000, eosTokenIds: [128001, 128008, 128009]),
            LlamaConfig(vocabSize: 512, hiddenSize: 64, intermediateSize: 172, numLayers: 5, numHeads: 8, numKVHeads: 4,
                        headDim: 16, rmsNormEps: 1e-6, bosTokenId: nil, eosTokenIds: []),
            LlamaConfig(vocabSize: 32000, hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32,
                        numKVHeads: 32, ropeTheta: 10000.5, rmsNormEps: 1.234567e-7, bosTokenId: 1, eosTokenIds: [2]),
        ]
        for c in variants {
            for dt in ["float32", "float16", "bfloat16"] {
                let json = c.hfConfigJSON(torchDtype: dt)
                #expect(try LlamaConfig.fromHFConfig(data: json, path: "rt") == c)
                let obj = try #require(try JSONSerialization.jsonObject(with: json) as? [String: Any])
                #expect(obj["torch_dtype"] as? String == dt)
            }
        }
        // The file variant, via a temp file.
        let dir = TestPaths.tempDir("hfc"); defer { try? FileManager.default.removeItem(atPath: dir) }
        try variants[0].hfConfigJSON(torchDtype: "float32").write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect(try LlamaConfig.fromHFConfig(path: dir + "/config.json") == variants[0])
    }

    @Test func defaultsAndAlternatives() throws {
        let c = try parse(config())
        #expect(c.numKVHeads == 4)
        #expect(c.headDim == 16)
        #expect(c.ropeTheta == 10000)
        #expect(!c.tieWordEmbeddings)
        #expect(c.ropeScaling == nil)
        #expect(c.eosTokenIds == [] && c.bosTokenId == nil)
        #expect(try parse(config(#""eos_token_id": [5, 6], "bos_token_id": 3"#)).eosTokenIds == [5, 6])
        #expect(try parse(config(#""eos_token_id": null, "num_key_value_heads": null, "head_dim": null"#)).numKVHeads == 4)
        #expect(try parse(config(#""head_dim": 32, "num_key_value_heads": 2"#)).qDim == 128)
        #expect(try parse(config(#""rope_theta": 500000"#)).ropeTheta == 500000)
        #expect(try parse(config(#""rms_norm_eps": 1e-06"#, without: ["rms_norm_eps"])).rmsNormEps == 1e-6)
        // Old-style "type" key, and "default" meaning no scaling.
        let old = try parse(config(#""rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#))
        #expect(old.ropeScaling == RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192))
        #expect(try parse(config(#""rope_scaling": {"rope_type": "default"}"#)).ropeScaling == nil)
        // No model_type but a Llama architecture is accepted.
        #expect(try parse(config(without: ["model_type"])).hiddenSize == 64)
    }

    @Test func transformersV5RopeParameters() throws {
        // transformers 5.x saves `rope_parameters` (with rope_theta inside) and `dtype` instead of
        // `rope_theta`/`rope_scaling`/`torch_dtype`; this is its re-save of our own output.
        let v5 = """
        {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": null,
         "dtype": "float32", "eos_token_id": [5, 6], "head_dim": 64, "hidden_act": "silu", "hidden_size": 576,
         "initializer_range": 0.02, "intermediate_size": 1536, "max_position_embeddings": 8192, "mlp_bias": false,
         "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
         "pad_token_id": null, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
         "rope_parameters": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                             "original_max_position_embeddings": 8192, "rope_theta": 100000.0, "rope_type": "llama3"},
         "tie_word_embeddings": true, "transformers_version": "5.23.0", "use_cache": true, "vocab_size": 49152}
        """
        let c = try parse(v5)
        let want = LlamaConfig(vocabSize: 49152, hiddenSize: 576, intermediateSize: 1536, numLayers: 30, numHeads: 9,
                               numKVHeads: 3, headDim: 64, ropeTheta: 100000, rmsNormEps: 1e-5, maxPositionEmbeddings: 8192,
                               tieWordEmbeddings: true, ropeScaling: RopeScaling(factor: 32), bosTokenId: nil, eosTokenIds: [5, 6])
        #expect(c == want)
        let plain = try parse(config(#""rope_parameters": {"rope_theta": 250000.0, "rope_type": "default"}"#))
        #expect(plain.ropeTheta == 250000 && plain.ropeScaling == nil)
        expectError(config(#""rope_parameters": {"rope_theta": 1.0, "rope_type": "yarn", "factor": 4.0}"#), ["rope_parameters", "yarn"],
                    unsupported: true)
    }

    @Test func missingAndBadFields() throws {
        expectError(config(without: ["hidden_size"]), ["hidden_size", "test/config.json"])
        for k in ["intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"] {
            expectError(config(without: [k]), [k])
        }
        expectError(config(without: ["model_type", "architectures"]), ["model_type"])
        expectError(config(#""hidden_size": "big""#, without: ["hidden_size"]), ["hidden_size"])
        expectError(config(#""num_key_value_heads": 1.5"#), ["num_key_value_heads"])
        expectError(config(#""tie_word_embeddings": "yes""#), ["tie_word_embeddings"])
        expectError(config(#""eos_token_id": "x""#), ["eos_token_id"])
        expectError(config(#""num_key_value_heads": 3"#), ["num_key_value_heads"])       // 4 % 3 != 0 (validate)
        expectError(config(#""hidden_size": 0"#, without: ["hidden_size"]), ["hidden_size"])
        expectError(config(#""hidden_size": 66"#, without: ["hidden_size"]), ["hidden_size"])  // 66 / 4 heads
        expectError(config(#""rope_scaling": {"rope_type": "llama3", "factor": 8.0}"#), ["low_freq_factor", "rope_scaling"])
        expectError("not json at all", ["JSON"])
        expectError("[1, 2]", ["object"])
        expectError("", ["JSON"])
    }

    @Test func unsupportedArchitectures() throws {
        expectError(config(#""model_type": "gpt2""#, without: ["model_type"]), ["gpt2"], unsupported: true)
        expectError(config(#""model_type": "mistral""#, without: ["model_type"]), ["mistral"], unsupported: true)
        expectError(config(#""architectures": ["GPT2LMHeadModel"]"#, without: ["architectures"]), ["GPT2LMHeadModel"], unsupported: true)
        expectError(config(#""rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#), ["yarn"], unsupported: true)
        expectError(config(#""rope_scaling": {"type": "linear", "factor": 2.0}"#), ["linear"], unsupported: true)
        expectError(config(#""hidden_act": "gelu""#), ["gelu"], unsupported: true)
        expectError(config(#""attention_bias": true"#), ["attention_bias"], unsupported: true)
        expectError(config(#""mlp_bias": true"#), ["mlp_bias"], unsupported: true)
    }

    @Test func missingFileIsIOError() {
        do {
            _ = try LlamaConfig.fromHFConfig(path: "/nonexistent-qlm/config.json")
            Issue.record("expected an error")
        } catch let e as QLMError {
            if case .io = e {} else { Issue.record("expected .io, got \(e)") }
            #expect(e.description.contains("/nonexistent-qlm/config.json"))
        } catch { Issue.record("expected a QLMError, got \(error)") }
    }
}
