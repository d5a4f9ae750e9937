import Foundation
import QLMKernels

/// Where tests find the shared data (never committed): `../shared` next to the repo, or $QLM_SHARED.
enum TestPaths {
    static let repoRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    static let shared: String = ProcessInfo.processInfo.environment["QLM_SHARED"]
        ?? repoRoot.deletingLastPathComponent().appendingPathComponent("shared").path
    static var smolDir: String { shared + "/models/smollm2-135m-instruct" }
    static var smolGGUF: String { smolDir + "/SmolLM2-135M-Instruct.Q4_1.gguf" }
    static var smolTokenizerJSON: String { smolDir + "/tokenizer.json" }
    static var smolConfigJSON: String { smolDir + "/config.json" }
    static var stories260K: String { shared + "/models/stories260K/stories260K.bin" }
    static var wikiTestRaw: String { shared + "/data/wikitext-2-raw/wiki.test.raw" }
    static var ptbTest: String { shared + "/data/ptb/ptb.test.txt" }

    /// This test process's scratch root, $TMPDIR/qlm-tests/PID. Swift Testing has no global teardown,
    /// and several fixtures (quantized copies of the real model, ~500 MB per run; thousands of small
    /// GGUF files) live until the process ends, so each run first removes the roots of test processes
    /// that are gone: what a run leaves behind is bounded by one run.
    static let scratchRoot: String = {
        let fm = FileManager.default
        let base = NSTemporaryDirectory() + "qlm-tests"
        try? fm.createDirectory(atPath: base, withIntermediateDirectories: true)
        for name in (try? fm.contentsOfDirectory(atPath: base)) ?? [] {
            guard let pid = Int32(name), pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? fm.removeItem(atPath: base + "/" + name) }
        }
        let mine = base + "/\(getpid())"
        try? fm.createDirectory(atPath: mine, withIntermediateDirectories: true)
        return mine
    }()

    /// A fresh empty temp directory under scratchRoot (removed by the caller if it cares, else by the next run).
    static func tempDir(_ tag: String = "qlm") -> String {
        let p = scratchRoot + "/\(tag)-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }
}

/// Tests that force an ISA path or change the thread count hold this for their whole duration,
/// and so does every test that needs bit-reproducible kernels: a resume must equal a full run, two
/// loaders must give the same logits to 1e-5, greedy decoding must give the golden tokens, a solver
/// must give the same result twice. Those suites inherit HoldsKernelState.
/// A semaphore, not a lock: a suite's init and deinit may run on different threads.
let kernelStateGate = DispatchSemaphore(value: 1)

/// Suites that change global kernel state inherit from this: each test instance holds the gate.
class HoldsKernelState {
    init() { kernelStateGate.wait() }
    deinit {
        _ = qlm_isa_force(qlm_isa_best())
        qlm_set_threads(0)
        qlm_qgemv_set_act(qlm_act_i16_supported() == 1 ? QLM_ACT_I16 : QLM_ACT_F32)
        kernelStateGate.signal()
    }
}
