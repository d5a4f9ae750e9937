import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file. Weights stay in the page cache and are only copied
/// when dequantized, so opening a model costs no I/O until a tensor is touched.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    public let base: UnsafeRawPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw QLMError.io(path: path, detail: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw QLMError.io(path: path, detail: "cannot stat") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw QLMError.io(path: path, detail: "is a directory, expected a file") }
        size = Int(st.st_size)
        if size == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw QLMError.io(path: path, detail: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if size > 0 { munmap(UnsafeMutableRawPointer(mutating: base), size) }
        else { UnsafeMutableRawPointer(mutating: base).deallocate() }
    }

    /// Bytes [offset, offset+count) or a corrupt-file error naming what was being read.
    public func bytes(_ offset: Int, _ count: Int, what: String) throws -> UnsafeRawBufferPointer {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw QLMError.corrupt(path: path, detail: "\(what) at bytes \(offset)..<\(offset &+ count) lies outside the \(size)-byte file")
        }
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }
}

/// Writes `data` to `path` atomically: a temp file in the same directory, fsync, rename.
/// A killed run leaves either the old file or the new one, never half of one.
public func writeFileAtomically(_ path: String, _ write: (FileHandle) throws -> Void) throws {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    let tmp = dir + "/.\(url.lastPathComponent).tmp-\(getpid())"
    guard FileManager.default.createFile(atPath: tmp, contents: nil) else {
        throw QLMError.io(path: path, detail: "cannot create a file in \(dir) (missing or not writable)")
    }
    do {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp))
        try write(h)
        try h.synchronize()
        try h.close()
        guard rename(tmp, path) == 0 else {
            throw QLMError.io(path: path, detail: "rename failed: \(String(cString: strerror(errno)))")
        }
    } catch {
        unlink(tmp)
        if let e = error as? QLMError { throw e }
        throw QLMError.io(path: path, detail: "\(error)")
    }
}

/// Fails early unless `outDir` is absent or an empty folder (checked before any long work starts).
public func ensureFreshOutputFolder(_ outDir: String) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: outDir, isDirectory: &isDir) else { return }
    guard isDir.boolValue, (try? FileManager.default.contentsOfDirectory(atPath: outDir))?.isEmpty == true else {
        throw QLMError.io(path: outDir, detail: "already exists and is not an empty folder")
    }
}

/// Builds a folder under `<outDir>.partial-<pid>` and renames it into place when `fill` returns,
/// so a killed run never leaves a folder that loads; on error the temporary folder is removed.
public func writeFolderAtomically(_ outDir: String, _ fill: (_ tmp: String) throws -> Void) throws {
    try ensureFreshOutputFolder(outDir)
    let fm = FileManager.default
    let base = outDir.hasSuffix("/") ? String(outDir.dropLast()) : outDir
    let tmp = base + ".partial-\(getpid())"
    do { try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true) } catch {
        throw QLMError.io(path: outDir, detail: "cannot create the output folder: \(error.localizedDescription)")
    }
    do {
        try fill(tmp)
        if fm.fileExists(atPath: outDir) { try fm.removeItem(atPath: outDir) }
        guard rename(tmp, base) == 0 else { throw QLMError.io(path: outDir, detail: "rename failed: \(String(cString: strerror(errno)))") }
    } catch {
        try? fm.removeItem(atPath: tmp)
        throw error
    }
}
