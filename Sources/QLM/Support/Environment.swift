import Foundation
import QLMKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Locates the project's shared data folder (`shared/`, a sibling of the repo): $QLM_SHARED,
/// else the first `shared` found next to the working directory, the executable, or their parents.
public func locateSharedDir() -> String? {
    if let env = ProcessInfo.processInfo.environment["QLM_SHARED"] { return env }
    let fm = FileManager.default
    var starts = [fm.currentDirectoryPath]
    let exe = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent().path
    starts.append(exe)
    for start in starts {
        var dir = URL(fileURLWithPath: start).standardizedFileURL
        for _ in 0..<8 {
            let cand = dir.appendingPathComponent("shared")
            if fm.fileExists(atPath: cand.appendingPathComponent("data").path) { return cand.path }
            dir = dir.deletingLastPathComponent()
        }
    }
    return nil
}

/// Peak resident set size of this process in bytes.
public func peakRSSBytes() -> Int {
    var ru = rusage()
    #if os(Linux)
    getrusage(Int32(truncatingIfNeeded: RUSAGE_SELF.rawValue), &ru)
    return Int(ru.ru_maxrss) * 1024
    #else
    getrusage(RUSAGE_SELF, &ru)
    return Int(ru.ru_maxrss)
    #endif
}

public var stderrIsTTY: Bool { isatty(STDERR_FILENO) != 0 }

/// Writes to standard error (progress, timings), keeping stdout clean for results.
public func printErr(_ s: String, terminator: String = "\n") {
    FileHandle.standardError.write((s + terminator).data(using: .utf8)!)
}

/// Formats seconds as m:ss or h:mm:ss for progress lines.
public func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "--:--" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}

/// The kernel path in use, as printed by `bench` and the "loaded" line: the ISA, plus "+i16" when
/// the decode GEMV runs with integer activations where a kernel exists (AVX-512 VNNI + VBMI + GFNI,
/// AVX2, or NEON with the dot product extension; `QLM_ACT`).
public func activeKernelPath() -> String {
    let isa = qlm_isa_active()
    let name = String(cString: qlm_isa_name(isa))
    return qlm_act_i16_supported_on(isa) == 1 && qlm_qgemv_act() == QLM_ACT_I16 ? name + "+i16" : name
}
