import LVSConfiguration
import LVSCore
import LVSDaemon
import LVSFuzzDriver
import LVSPacket
import Logging
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The state file loader under arbitrary bytes: the input is a whole file
/// (header and slots), read as a new lvsd reads it (holes skipped) and its
/// records restored onto a director with NAT, FULLNAT, SYN-proxy and
/// persistent DR services. With the input's last byte odd, the header's
/// boot and every checksum are made right first, so that mutated fields
/// reach the checks behind them. None may trap.
let plane: ControlPlane = {
    let p = ControlPlane(capacity: 1024, workers: 2, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
    let rules = """
        -A -t 198.18.0.10:80 -s rr
        -a -t 198.18.0.10:80 -r 198.19.0.2:8080 -m
        -A -t 198.18.0.10:81 -s rr
        -a -t 198.18.0.10:81 -r 198.19.0.2:8080 -b
        --add-laddr -t 198.18.0.10:81 -z 198.19.0.100
        -A -t 198.18.0.10:82 -s rr -j enable
        -a -t 198.18.0.10:82 -r 198.19.0.2:8080 -m
        -A -t [2001:db8::10]:80 -s sh -p 60
        -a -t [2001:db8::10]:80 -r [2001:db8:1::2]:80 -g
        """
    try? p.apply((try? RulesFile.parse(rules, file: "fuzz"))?.flatMap(\.operations) ?? [])
    return p
}()

let boot = [UInt8](repeating: 0, count: 16)

/// A file that is never named again: each input is written over it.
let file: FileDescriptor = {
    let path = "/tmp/lvs-fuzz-state-\(getpid())"
    let fd = try! FileDescriptor.open(FilePath(path), .readWrite, options: [.create, .truncate], permissions: [.ownerReadWrite])
    // A path string of our own, removed from the directory while the descriptor keeps the file.
    unsafe unlink(path)
    return fd
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzState(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    // libFuzzer lends `size` readable bytes at `data` for the call; they are copied at once.
    var bytes = unsafe Array(UnsafeBufferPointer(start: data, count: size))
    if bytes.last.map({ $0 & 1 == 1 }) == true { seal(&bytes) }
    guard ftruncate(file.rawValue, 0) == 0, (try? file.writeAll(toAbsoluteOffset: 0, bytes)) != nil else { return 0 }
    let loaded = StateFile.load(file, bootID: boot)
    _ = plane.restore(loaded.records, now: 1_000_000)
    return 0
}

/// Gives the header this run's boot and a right checksum, and every slot past it a right checksum.
func seal(_ bytes: inout [UInt8]) {
    guard bytes.count >= 48 else { return }
    var span = bytes.mutableSpan
    for k in 0..<16 { span[28 + k] = boot[k] }
    span.setBE32(CRC32c.checksum(span.span, from: 0, count: 44), at: 44)
    var at = StateFileHeader.size
    while at + JournalSlot.size <= span.count {
        span.setBE32(CRC32c.checksum(span.span, from: at + 4, count: JournalSlot.size - 4), at: at)
        at += JournalSlot.size
    }
}

@main
struct Replay {
    // The driver lends each input as a pointer and a count, readable for the call.
    static func main() { unsafe runFuzzTarget { data, size in unsafe fuzzState(data, size) } }
}
