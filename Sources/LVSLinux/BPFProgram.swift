import CLVSLinux
import LVSPacket
import LVSSystem
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A failure to load or attach a BPF program, with the loader's reason.
public struct BPFError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// A hash map of addresses to flags, shared by the programs that read it
/// (lvsd's XDP programs on every interface; the decapsulator's VIPs).
public final class BPFAddressMap: Sendable {
    public let descriptor: FileDescriptor

    public init(capacity: Int) throws(BPFError) {
        let fd = lvs_xdp_address_map(UInt32(clamping: capacity))
        guard fd >= 0 else { throw BPFError(description: "address map: \(Errno(rawValue: -fd))") }
        descriptor = FileDescriptor(rawValue: fd)
    }

    deinit { try? descriptor.close() }

    /// Sets an address's flags; 0 removes it.
    public func set(_ address: IPAddress, flags: UInt32) throws(BPFError) {
        let rc = unsafe lvs_xdp_address_set(descriptor.rawValue, address.mappedBytes, flags)
        guard rc == 0 else { throw BPFError(description: "address map: \(address): \(Errno(rawValue: -rc))") }
    }
}

/// One of swift-lvs's BPF programs (bpf/*.bpf.c), loaded from the object
/// embedded in the binary; attached to an interface, or not (then it only
/// runs in tests, through BPF_PROG_TEST_RUN). Unloaded, and detached, when
/// it goes: it hangs on a BPF link, so a process that dies leaves nothing.
@safe public final class BPFProgram: @unchecked Sendable {  // the handle is used by one owner at a time
    let handle: OpaquePointer
    /// How it is attached: "native", "generic (why not native)", "tc", or nil.
    public let attachment: String?

    /// `handle` is a program libbpf loaded for us; only `deinit` frees it.
    init(_ handle: OpaquePointer, attachment: String?) {
        unsafe self.handle = handle
        self.attachment = attachment
    }

    deinit { unsafe lvs_xdp_detach(handle) }

    /// Runs `load` with an error buffer; the program, or the reason it failed.
    static func make(attached: Bool, _ load: (inout Int32, UnsafeMutablePointer<CChar>, Int) -> OpaquePointer?) throws(BPFError) -> BPFProgram {
        var error = [CChar](repeating: 0, count: 512)
        var mode: Int32 = 0
        // The buffer outlives the call, which writes at most its length (with the NUL).
        let handle = unsafe error.withUnsafeMutableBufferPointer { unsafe load(&mode, $0.baseAddress!, $0.count) }
        let text = String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let handle = unsafe handle else { throw BPFError(description: text) }
        guard attached else { return unsafe BPFProgram(handle, attachment: nil) }
        let how =
            switch mode {
            case LVS_XDP_MODE_NATIVE: "native"
            case LVS_MODE_TC: "tc"
            default: "generic (\(text))"
            }
        return unsafe BPFProgram(handle, attachment: how)
    }

    /// lvsd's XDP program: lvsd's frames to the queue's AF_XDP socket, the rest to the kernel.
    public static func redirect(addresses: BPFAddressMap, queues: Int, attachTo interface: Int32? = nil) throws(BPFError) -> BPFProgram {
        let map = addresses.descriptor.rawValue
        return unsafe try make(attached: interface != nil) { mode, e, n in
            if let interface { return unsafe lvs_xdp_attach(interface, map, UInt32(queues), &mode, e, n) }
            return unsafe lvs_xdp_load(map, UInt32(queues), e, n)
        }
    }

    /// lvs-realserver's decapsulator, at tc ingress (`tc`) or in XDP.
    public static func decapsulator(vips: BPFAddressMap, guePort: UInt16, tc: Bool, attachTo interface: Int32? = nil) throws(BPFError) -> BPFProgram {
        let map = vips.descriptor.rawValue
        return unsafe try make(attached: interface != nil) { mode, e, n in
            if let interface { return unsafe lvs_decapsulator_attach(interface, map, guePort, tc ? 1 : 0, &mode, e, n) }
            return unsafe lvs_decapsulator_load(map, guePort, tc ? 1 : 0, e, n)
        }
    }

    /// lvsd's steering program for its workers' fanout groups (not attached
    /// here: each ring hands it to its group, `descriptor`).
    public static func steering(addresses: BPFAddressMap) throws(BPFError) -> BPFProgram {
        let map = addresses.descriptor.rawValue
        return unsafe try make(attached: false) { _, e, n in unsafe lvs_fanout_load(map, e, n) }
    }

    /// The program's descriptor (for PACKET_FANOUT_DATA); open while this object lives.
    public var descriptor: Int32 { unsafe lvs_bpf_program_fd(handle) }

    /// Sets one slot of the program's configuration array.
    public func set(_ slot: UInt32, _ value: UInt32) throws(BPFError) {
        let rc = unsafe lvs_bpf_setting(handle, slot, value)
        guard rc == 0 else { throw BPFError(description: "setting \(slot): \(Errno(rawValue: -rc))") }
    }

    /// The C handle, for the AF_XDP sockets that join its map; valid while this object lives.
    var raw: OpaquePointer { unsafe handle }

    /// The program's counters summed over the CPUs.
    public func counters(_ count: Int) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: count)
        // The array holds `count` slots, as many as the call fills.
        let rc = unsafe out.withUnsafeMutableBufferPointer { unsafe lvs_bpf_counters(handle, $0.baseAddress, UInt32(count)) }
        return rc == 0 ? out : [UInt64](repeating: 0, count: count)
    }

    /// Runs the program once over `frame` (BPF_PROG_TEST_RUN): its verdict
    /// and the frame as it left it.
    public func run(_ frame: [UInt8]) throws(BPFError) -> (verdict: Int32, frame: [UInt8]) {
        var out = [UInt8](repeating: 0, count: frame.count + 256)
        var length = UInt32(out.count)
        var verdict: UInt32 = 0
        // Both buffers outlive the call; the kernel writes at most `length` bytes into `out`.
        let rc = unsafe frame.withUnsafeBufferPointer { f in
            unsafe out.withUnsafeMutableBufferPointer { o in
                unsafe lvs_bpf_test_run(handle, f.baseAddress, UInt32(f.count), o.baseAddress, &length, &verdict)
            }
        }
        guard rc == 0 else { throw BPFError(description: "BPF_PROG_TEST_RUN: \(Errno(rawValue: -rc))") }
        return (Int32(bitPattern: verdict), Array(out.prefix(Int(length))))
    }
}
