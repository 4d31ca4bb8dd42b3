import LVSCore
import LVSSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The connections a crashed or restarted lvsd left for the next one: a
/// file on tmpfs, mapped shared, whose slots the workers write as a sync
/// master would send their connections (`JournalRegion`). The pages are
/// the kernel's, so a `kill -9` loses nothing written.
///
/// A start reads the previous file (`path`) slot by slot, holes skipped,
/// and writes its own to `path.new`, renamed over `path` once the restored
/// connections are in it (`commit`): a crash while starting leaves the
/// previous file as it was. A lock (flock) keeps a second lvsd off the file.
@safe public final class StateFile: @unchecked Sendable {
    // @unchecked: after `open`, only `commit` changes anything (on the
    // thread that starts lvsd); the mapping is written by the workers
    // through their regions and is never unmapped.
    public let path: String
    public let header: StateFileHeader
    let file: FileDescriptor
    var previous: FileDescriptor?
    let base: UnsafeMutableRawPointer

    /// What the previous file held (emptied by `commit`).
    public private(set) var loaded = Loaded()

    /// A state file's records, checked slot by slot.
    public struct Loaded: Sendable {
        public var records: [JournalRecord] = []
        /// Slots whose checksum or fields are wrong, or that the file's end cuts.
        public var corrupt = 0
        /// Why the file was not read at all, if it was not.
        public var discarded: String?
    }

    /// `from`: where the previous lvsd kept its file, if not at `path` (a handover to other arguments).
    public init(path: String, from: String? = nil, workers: Int, slotsPerRegion: Int) throws(SystemError) {
        self.path = path
        let boot = Self.bootID()
        header = StateFileHeader(workers: workers, slotsPerRegion: slotsPerRegion, bootID: boot)
        previous = try? FileDescriptor.open(FilePath(from ?? path), .readOnly, options: .closeOnExec)
        if let old = previous {
            guard flock(old.rawValue, LOCK_EX | LOCK_NB) == 0 else {
                try? old.close()
                throw SystemError("lock \(path) (another lvsd uses it)", Errno(rawValue: Glibc.errno))
            }
        }
        let fresh = path + ".new"
        do {
            file = try FileDescriptor.open(
                FilePath(fresh), .readWrite, options: [.closeOnExec, .create, .truncate], permissions: [.ownerReadWrite])
        } catch {
            try? previous?.close()
            throw SystemError("open \(fresh)", error as? Errno ?? .ioError)
        }
        let size = header.fileSize
        guard flock(file.rawValue, LOCK_EX | LOCK_NB) == 0, ftruncate(file.rawValue, off_t(size)) == 0 else {
            let e = SystemError.last("size \(fresh) to \(size) bytes")
            try? file.close()
            try? previous?.close()
            throw e
        }
        // Shared, so that the pages outlive the process; never unmapped (see `JournalRegion.init`).
        let map = unsafe mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, file.rawValue, 0)
        guard let map = unsafe map, unsafe map != MAP_FAILED else {
            let e = SystemError.last("map \(fresh)")
            try? file.close()
            try? previous?.close()
            throw e
        }
        unsafe base = map
        // The header page is the mapping's first 4096 bytes, ours alone until the workers start.
        var page = unsafe MutableSpan<UInt8>(_unsafeStart: base.assumingMemoryBound(to: UInt8.self), count: StateFileHeader.size)
        header.encode(into: &page)
        if let old = previous { loaded = Self.load(old, bootID: boot) }
    }

    /// The slots of worker `worker`'s table of one family.
    public func region(worker: Int, ipv6: Bool) -> JournalRegion {
        precondition(worker >= 0 && worker < header.workers)
        let offset = header.regionOffset(worker * 2 + (ipv6 ? 1 : 0))
        // Inside the mapping of `header.fileSize` bytes, which stays mapped for the process's life.
        return unsafe JournalRegion(unsafeBase: base + offset, slots: header.slotsPerRegion)
    }

    /// Opens the state file for `plane`'s workers (slots for the larger of
    /// each worker's tables), gives each table its slots, restores the
    /// previous file's connections still within their timeout on the
    /// workers that own them, and makes this file the current one. Before
    /// the data plane starts: no frame meets a half-restored table.
    public static func attach(path: String, from: String? = nil, plane: ControlPlane) throws(SystemError) -> (StateFile, RestoreReport) {
        let engines = plane.engines
        let slots = engines.map { e in e.director.withLock { max($0.v4.table.capacity, $0.v6.table.capacity) } }.max() ?? 1
        let state = try StateFile(path: path, from: from, workers: engines.count, slotsPerRegion: slots)
        let now = MonotonicClock.milliseconds()
        for (k, e) in engines.enumerated() {
            e.director.withLock { $0.attachJournal(v4: state.region(worker: k, ipv6: false), v6: state.region(worker: k, ipv6: true), now: now) }
        }
        var report = plane.restore(state.loaded.records, now: now)
        report.corrupt = state.loaded.corrupt
        try state.commit()
        return (state, report)
    }

    /// Lets a successor take the file (a handover); the workers write it no more.
    public func release() { _ = flock(file.rawValue, LOCK_UN) }

    /// Takes it back after a handover that did not happen; false if someone else has it.
    public func relock() -> Bool { flock(file.rawValue, LOCK_EX | LOCK_NB) == 0 }

    /// Makes this file the one the next lvsd reads, and lets go of the previous one.
    public func commit() throws(SystemError) {
        guard unsafe rename(path + ".new", path) == 0 else { throw SystemError.last("rename \(path).new to \(path)") }
        try? previous?.close()
        previous = nil
        loaded.records = []
    }

    /// A file's records: its header checked, then every slot
    /// that holds data (holes are skipped with SEEK_DATA, never read into
    /// memory), however much of the file is left.
    public static func load(_ fd: FileDescriptor, bootID: [UInt8]) -> Loaded {
        var result = Loaded()
        var head = [UInt8](repeating: 0, count: StateFileHeader.size)
        let old: StateFileHeader
        do {
            let n = try unsafe head.withUnsafeMutableBytes { try unsafe fd.read(fromAbsoluteOffset: 0, into: $0) }
            old = try StateFileHeader.decode(head.span.extracting(0..<n), bootID: bootID)
        } catch let e as StateFileHeader.Problem {
            result.discarded = e.description
            return result
        } catch {
            result.discarded = "\(error)"
            return result
        }
        let end = Int(lseek(fd.rawValue, 0, SEEK_END))
        let chunk = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunk)
        for r in 0..<old.regions {
            let start = old.regionOffset(r)
            let stop = old.regionOffset(r + 1)
            var at = start
            while at < min(end, stop) {
                let data = Int(lseek(fd.rawValue, off_t(at), Self.seekData))
                guard data >= 0, data < stop else { break }
                // Whole slots: a data extent starts on a page, slots are 128 bytes.
                at = start + (data - start) / JournalSlot.size * JournalSlot.size
                let want = min(chunk, stop - at)
                let n: Int
                do {
                    n = try unsafe buffer.withUnsafeMutableBytes {
                        try unsafe fd.read(fromAbsoluteOffset: Int64(at), into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<want]))
                    }
                } catch {
                    break
                }
                guard n > 0 else { break }
                let slots = buffer.span.extracting(0..<n)
                var k = 0
                while k + JournalSlot.size <= n {
                    switch JournalSlot.decode(slots.extracting(k..<k + JournalSlot.size)) {
                    case .free: break
                    case .record(let rec): result.records.append(rec)
                    case .corrupt: result.corrupt += 1
                    }
                    k += JournalSlot.size
                }
                // The file ends here; a slot it cuts short counts as corrupt.
                if n < want {
                    if n % JournalSlot.size != 0 { result.corrupt += 1 }
                    return result
                }
                at += n
            }
        }
        return result
    }

    /// lseek's SEEK_DATA, which Glibc's module leaves out (it is _GNU_SOURCE).
    static let seekData: Int32 = 3

    /// /proc/sys/kernel/random/boot_id as 16 bytes.
    static func bootID() -> [UInt8] {
        let hex = Array((KernelFile.firstLine("/proc/sys/kernel/random/boot_id") ?? "").utf8.filter { $0 != UInt8(ascii: "-") })
        var bytes = [UInt8](repeating: 0, count: 16)
        for k in 0..<min(16, hex.count / 2) {
            bytes[k] = UInt8(String(decoding: hex[k * 2..<k * 2 + 2], as: UTF8.self), radix: 16) ?? 0
        }
        return bytes
    }
}
