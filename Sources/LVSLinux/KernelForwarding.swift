import CLVSLinux
import LVSCore
import LVSPacket
import LVSSystem
import SystemPackage

/// `lvsd --kernel-forwarding` in the kernel: the map of the connections
/// handed down (one entry per direction), the tc program on each served
/// interface that forwards their frames, and the filter that keeps those
/// frames off lvsd's rings (bpf/lvsd_forward.bpf.c). The workers write and
/// read the map, each for its own connections (`Worker.handDown`, `Worker.sweepKernelFlows`).
public final class KernelForwarding: Sendable {
    let map: FileDescriptor
    /// The tc programs, attached while they live (a BPF link each).
    let programs: [BPFProgram]
    /// The rings' filter (`lvs_ring_attach_filter`).
    public let filter: BPFProgram

    /// `interfaces`: kernel interface indexes to attach to (none: a map and
    /// programs for tests only); `capacity`: entries (two per NAT connection).
    public init(interfaces: [Int32], capacity: Int) throws(BPFError) {
        let fd = lvs_forward_map(UInt32(clamping: capacity))
        guard fd >= 0 else { throw BPFError(description: "kernel forwarding's map: \(Errno(rawValue: -fd))") }
        map = FileDescriptor(rawValue: fd)
        do {
            filter = try BPFProgram.forwarding(map: fd, attachTo: nil, filter: true)
            var attached: [BPFProgram] = []
            for i in interfaces { attached.append(try BPFProgram.forwarding(map: fd, attachTo: i, filter: false)) }
            programs = attached
        } catch {
            try? map.close()
            throw error
        }
    }

    deinit { try? map.close() }

    /// The forwarding program over this map, not attached: for BPF_PROG_TEST_RUN.
    public func unattachedProgram() throws(BPFError) -> BPFProgram {
        try BPFProgram.forwarding(map: map.rawValue, attachTo: nil, filter: false)
    }

    static func key(_ r: KernelFlowRule) -> lvs_forward_key {
        var k = lvs_forward_key()
        k.source = r.source.value.bigEndian
        k.destination = r.destination.value.bigEndian
        k.source_port = r.sourcePort.bigEndian
        k.destination_port = r.destinationPort.bigEndian
        k.protocol = r.proto
        return k
    }

    /// Hands one direction down (its counts start at 0).
    public func set(_ r: KernelFlowRule) throws(BPFError) {
        var k = Self.key(r)
        var f = lvs_forward_flow()
        f.source = r.newSource.value.bigEndian
        f.destination = r.newDestination.value.bigEndian
        f.source_port = r.newSourcePort.bigEndian
        f.destination_port = r.newDestinationPort.bigEndian
        f.ifindex = UInt32(r.interface)
        let d = r.destinationMAC.value
        let s = r.sourceMAC.value
        func o(_ mac: UInt64, _ i: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: mac >> (40 - 8 * i)) }
        f.macs = (o(d, 0), o(d, 1), o(d, 2), o(d, 3), o(d, 4), o(d, 5), o(s, 0), o(s, 1), o(s, 2), o(s, 3), o(s, 4), o(s, 5))
        // Both structs outlive the call, which reads them.
        let rc = unsafe lvs_forward_set(map.rawValue, &k, &f)
        guard rc == 0 else { throw BPFError(description: "kernel forwarding: \(r.source):\(r.sourcePort) → \(r.destination): \(Errno(rawValue: -rc))") }
    }

    /// Takes a connection back (both directions).
    public func remove(_ flow: KernelFlow) {
        for r in [flow.toReal] + (flow.toClient.map { [$0] } ?? []) {
            var k = Self.key(r)
            // The key outlives the call, which reads it.
            _ = unsafe lvs_forward_set(map.rawValue, &k, nil)
        }
    }

    /// What the kernel has counted of a direction since it was handed down: nil when the map has no such entry.
    public func read(_ r: KernelFlowRule) -> (packets: UInt64, bytes: UInt64)? {
        var k = Self.key(r)
        var f = lvs_forward_flow()
        // Both outlive the call, which reads the key and writes one struct into `f`.
        guard unsafe lvs_forward_get(map.rawValue, &k, &f) == 0 else { return nil }
        return (f.packets, f.bytes)
    }

    /// Every entry's counts, read in batches (a few calls for the whole map),
    /// by what its direction matches (`KernelFlowRule.match`). False when the
    /// kernel would not read in batches (then `read` reads each entry).
    public func readAll(into counts: inout [KernelFlowKey: (packets: UInt64, bytes: UInt64)]) -> Bool {
        counts.removeAll(keepingCapacity: true)
        let room = 1024
        var keys = [lvs_forward_key](repeating: lvs_forward_key(), count: room)
        var flows = [lvs_forward_flow](repeating: lvs_forward_flow(), count: room)
        var cursor: UInt64 = 0
        repeat {
            // Both arrays hold `room` entries, as many as the call writes at most.
            let n = unsafe keys.withUnsafeMutableBufferPointer { k in
                unsafe flows.withUnsafeMutableBufferPointer { f in
                    unsafe lvs_forward_read(map.rawValue, &cursor, k.baseAddress, f.baseAddress, UInt32(room))
                }
            }
            guard n >= 0 else { return false }
            for e in 0..<Int(n) {
                let k = keys[e]
                let key = KernelFlowKey(
                    proto: k.protocol, client: IPv4Address(UInt32(bigEndian: k.source)), clientPort: UInt16(bigEndian: k.source_port),
                    virtual: IPv4Address(UInt32(bigEndian: k.destination)), virtualPort: UInt16(bigEndian: k.destination_port))
                counts[key] = (flows[e].packets, flows[e].bytes)
            }
        } while cursor != 0
        return true
    }

    /// Frames the tc programs forwarded (a super-frame once), over all interfaces.
    public var forwardedFrames: UInt64 {
        programs.reduce(0) { $0 &+ $1.counters(Int(LVS_FORWARD_COUNTERS.rawValue))[Int(LVS_FORWARD_FORWARDED.rawValue)] }
    }
}
