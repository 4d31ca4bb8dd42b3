import CLVSLinux
import LVSCore
import LVSPacket
import LVSSystem
import SystemPackage

/// `lvsd --kernel-forwarding` in the kernel (bpf/lvsd_forward.bpf.c): the
/// tc program on each served interface's ingress that forwards the frames
/// of the connections handed down (lvsd's rings, bound to their protocols,
/// see a frame after it), the map of those connections (one entry per direction),
/// and each direction's counts, in an array mapped into lvsd's memory. The
/// workers write the map and read the counts, each for its own connections
/// and its own slots (`Worker.handDown`, `Worker.sweepKernelFlows`).
@safe public final class KernelForwarding: @unchecked Sendable {  // the handle's maps are written by their worker only, through system calls
    let handle: OpaquePointer
    /// Count slots (two per NAT connection), shared out among the workers.
    public let slots: Int

    /// `interfaces`: kernel interface indexes to attach to (none: for tests);
    /// `capacity`: connection directions the map holds, and as many slots.
    public init(interfaces: [Int32], capacity: Int) throws(BPFError) {
        var error = [CChar](repeating: 0, count: 512)
        let entries = UInt32(clamping: max(1, capacity))
        // The buffer outlives the call, which writes at most its length (with the NUL).
        let opened = unsafe error.withUnsafeMutableBufferPointer { unsafe lvs_forward_open(entries, entries, $0.baseAddress!, $0.count) }
        guard let opened = unsafe opened else {
            throw BPFError(description: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        unsafe handle = opened
        slots = Int(entries)
        for i in interfaces {
            let rc = unsafe lvs_forward_attach(handle, i)
            guard rc == 0 else {
                unsafe lvs_forward_close(handle)
                throw BPFError(description: "attaching to tc ingress (tcx) of interface \(i): \(Errno(rawValue: -rc))")
            }
        }
    }

    deinit { unsafe lvs_forward_close(handle) }

    static func key(_ r: KernelFlowRule) -> lvs_forward_key {
        var k = lvs_forward_key()
        k.source = r.source.value.bigEndian
        k.destination = r.destination.value.bigEndian
        k.source_port = r.sourcePort.bigEndian
        k.destination_port = r.destinationPort.bigEndian
        k.protocol = r.proto
        return k
    }

    /// Hands one direction down, counted in `slot`.
    public func set(_ r: KernelFlowRule, slot: UInt32) throws(BPFError) {
        var k = Self.key(r)
        var f = lvs_forward_flow()
        f.source = r.newSource.value.bigEndian
        f.destination = r.newDestination.value.bigEndian
        f.source_port = r.newSourcePort.bigEndian
        f.destination_port = r.newDestinationPort.bigEndian
        f.ifindex = UInt32(r.interface)
        f.slot = slot
        let d = r.destinationMAC.value
        let s = r.sourceMAC.value
        func o(_ mac: UInt64, _ i: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: mac >> (40 - 8 * i)) }
        f.macs = (o(d, 0), o(d, 1), o(d, 2), o(d, 3), o(d, 4), o(d, 5), o(s, 0), o(s, 1), o(s, 2), o(s, 3), o(s, 4), o(s, 5))
        // Both structs outlive the call, which reads them.
        let rc = unsafe lvs_forward_set(handle, &k, &f)
        guard rc == 0 else { throw BPFError(description: "kernel forwarding: \(r.source):\(r.sourcePort) → \(r.destination): \(Errno(rawValue: -rc))") }
    }

    /// Takes a connection back (both directions).
    public func remove(_ flow: KernelFlow) {
        for r in [flow.toReal] + (flow.toClient.map { [$0] } ?? []) {
            var k = Self.key(r)
            // The key outlives the call, which reads it.
            _ = unsafe lvs_forward_set(handle, &k, nil)
        }
    }

    /// What the program has counted in `slot` since lvsd started (the
    /// program adds to it; the caller keeps what it read last).
    public func count(_ slot: UInt32) -> (packets: UInt64, bytes: UInt64) {
        guard Int(slot) < slots else { return (0, 0) }
        // The mapping holds `slots` counts and lives as long as `handle`; the
        // kernel adds to them atomically, and an aligned 8-byte load sees either value.
        let c = unsafe lvs_forward_counts(handle)! + Int(slot)
        return unsafe (c.pointee.packets, c.pointee.bytes)
    }

    /// Frames the tc program forwarded (a super-frame once), over all interfaces.
    public var forwardedFrames: UInt64 {
        var total: UInt64 = 0
        // One counter, as the call writes.
        _ = unsafe lvs_forward_forwarded(handle, &total)
        return total
    }

    /// Runs the tc program once over `frame` (BPF_PROG_TEST_RUN): its verdict and the frame it leaves.
    public func run(_ frame: [UInt8]) throws(BPFError) -> (verdict: Int32, frame: [UInt8]) {
        var out = [UInt8](repeating: 0, count: frame.count + 256)
        var length = UInt32(out.count)
        var verdict: UInt32 = 0
        // Both buffers outlive the call; the kernel writes at most `length` bytes into `out`.
        let rc = unsafe frame.withUnsafeBufferPointer { f in
            unsafe out.withUnsafeMutableBufferPointer { o in
                unsafe lvs_forward_test_run(handle, f.baseAddress, UInt32(f.count), o.baseAddress, &length, &verdict)
            }
        }
        guard rc == 0 else { throw BPFError(description: "BPF_PROG_TEST_RUN: \(Errno(rawValue: -rc))") }
        return (Int32(bitPattern: verdict), Array(out.prefix(Int(length))))
    }
}
