import CLVSLinux
import LVSPacket
import LVSSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// lvs-realserver's TOA in the kernel (bpf/lvs_toa.bpf.c): a sock_ops
/// program keeps the client a FULLNAT director carried in TCP option 254 per
/// socket, and getpeername programs answer with it, so that accept() and
/// getpeername() of the cgroup's applications report the real client. Held
/// by BPF links: detached when this goes, or when the process dies.
@safe public final class TOAPrograms: @unchecked Sendable {  // libbpf's handle: map reads only after loading
    let handle: OpaquePointer

    /// `handle` is what lvs_toa_load or lvs_toa_attach returned; only `deinit` frees it.
    init(_ handle: OpaquePointer) { unsafe self.handle = handle }

    deinit { unsafe lvs_toa_close(handle) }

    static func make(_ load: (UnsafeMutablePointer<CChar>, Int) -> OpaquePointer?) throws(BPFError) -> TOAPrograms {
        var error = [CChar](repeating: 0, count: 512)
        // The buffer outlives the call, which writes at most its length (with the NUL).
        let handle = unsafe error.withUnsafeMutableBufferPointer { unsafe load($0.baseAddress!, $0.count) }
        guard let handle = unsafe handle else {
            throw BPFError(description: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return unsafe TOAPrograms(handle)
    }

    /// Attached to the cgroup v2 directory `cgroup` (its sockets and its descendants').
    public static func attach(cgroup: String) throws(BPFError) -> TOAPrograms {
        unsafe try make { e, n in unsafe lvs_toa_attach(cgroup, e, n) }
    }

    /// Loaded and attached to nothing: for the parser's tests.
    public static func load() throws(BPFError) -> TOAPrograms {
        unsafe try make { e, n in unsafe lvs_toa_load(e, n) }
    }

    /// The client carried by the connection whose peer (as the server sees
    /// it: the director's local address and port) is this.
    public func client(peer: IPAddress, port: UInt16) -> (IPAddress, UInt16)? {
        var key = lvs_toa_peer()
        let bytes = peer.mappedBytes
        // The tuple is 16 bytes, written within its bounds.
        unsafe withUnsafeMutableBytes(of: &key.address) { raw in
            for k in 0..<16 { unsafe raw[k] = bytes[k] }
        }
        key.port = port.bigEndian
        var client = lvs_toa_client()
        guard unsafe lvs_toa_lookup(handle, &key, &client) == 0 else { return nil }
        return Self.decode(client)
    }

    static func decode(_ c: lvs_toa_client) -> (IPAddress, UInt16)? {
        // The tuple is 16 bytes, copied whole.
        let bytes = unsafe withUnsafeBytes(of: c.address) { unsafe Array($0) }
        let port = UInt16(bigEndian: c.port)
        switch c.family {
        case 4: return (.v4(IPv4Address(bytes[0], bytes[1], bytes[2], bytes[3])), port)
        case 6: return (.v6(IPv6Address(bytes.span, at: 0)), port)
        default: return nil
        }
    }

    /// Connections seen established with a TOA, without one, with a
    /// malformed one; and answers rewritten.
    public func counters() -> (found: UInt64, none: UInt64, malformed: UInt64, answered: UInt64) {
        var totals = [UInt64](repeating: 0, count: LVS_TOA_COUNTERS)
        // `totals` has room for the count asked.
        _ = unsafe totals.withUnsafeMutableBufferPointer { unsafe lvs_toa_counters(handle, $0.baseAddress, UInt32($0.count)) }
        return (
            totals[LVS_TOA_FOUND], totals[LVS_TOA_NONE], totals[LVS_TOA_MALFORMED],
            totals[LVS_TOA_ANSWERED]
        )
    }

    /// What the programs' option parser makes of a frame (Ethernet, IPv4 or
    /// IPv6, TCP), run in the kernel: the TOA's length (8, 20) and client,
    /// 0 for none, -1 for malformed.
    public func parse(frame: [UInt8]) throws(BPFError) -> (found: Int32, client: (IPAddress, UInt16)?) {
        var found: Int32 = 0
        var client = lvs_toa_client()
        // The frame outlives the call, which reads `count` bytes of it.
        let rc = unsafe frame.withUnsafeBufferPointer { unsafe lvs_toa_test_run(handle, $0.baseAddress, UInt32($0.count), &found, &client) }
        guard rc == 0 else { throw BPFError(description: "running the TOA parser: \(Errno(rawValue: -rc))") }
        return (found, found > 0 ? Self.decode(client) : nil)
    }
}
