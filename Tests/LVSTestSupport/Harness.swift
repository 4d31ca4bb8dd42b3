import LVSCore
import LVSPacket

public let clientMAC: UInt64 = 0x02_00_00_00_00_AA
public let ifaceClientMAC = MACAddress(0x02_00_00_00_00_01)
public let ifaceRealMAC = MACAddress(0x02_00_00_00_00_02)
public let rsMAC = MACAddress(0x02_00_00_00_01_02)
public func ip(_ s: String) -> IPAddress { IPAddress(s)! }

/// A director between a client network (198.18.0.0/24, 2001:db8::/64) and a
/// real-server network (198.19.0.0/24, 2001:db8:1::/64), with a fake clock.
public struct Harness {
    public var director: Director
    public var now: UInt64 = 1_000_000
    public let builder = FrameBuilder(srcMAC: clientMAC, dstMAC: 0x02_00_00_00_00_01)

    public init(
        _ services: [VirtualServiceConfiguration], timeouts: TimeoutTable = .init(), capacity: Int = 1024, expireNoDest: Bool = false,
        sloppySCTP: Bool = false, sloppyTCP: Bool = false, sloppyNAT: Bool = false, kernelForwarding: Bool = false, markRules: [FirewallMarkRule] = [],
        ftpPorts: [UInt16] = [21]
    ) {
        var config = DirectorConfiguration(
            services: services, timeouts: timeouts, markRules: markRules,
            interfaces: [
                InterfaceConfiguration(index: 1, mac: ifaceClientMAC, ipv4: IPv4Address("198.18.0.1"), ipv6: IPv6Address("2001:db8::1")),
                InterfaceConfiguration(index: 2, mac: ifaceRealMAC, ipv4: IPv4Address("198.19.0.1"), ipv6: IPv6Address("2001:db8:1::1")),
            ],
            routes: [
                Route(destination: ip("198.18.0.0"), prefixLength: 24, interface: 1),
                Route(destination: ip("198.19.0.0"), prefixLength: 24, interface: 2),
                Route(destination: ip("2001:db8::"), prefixLength: 64, interface: 1),
                Route(destination: ip("2001:db8:1::"), prefixLength: 64, interface: 2),
            ],
            expireNoDestinationConnections: expireNoDest)
        config.sloppySCTP = sloppySCTP
        config.sloppyTCP = sloppyTCP
        config.sloppyNAT = sloppyNAT
        config.kernelForwarding = kernelForwarding
        config.ftpPorts = ftpPorts
        director = Director(configuration: config, capacity: capacity)
        for a in ["198.19.0.2", "198.19.0.3", "198.19.0.4", "2001:db8:1::2", "2001:db8:1::3", "198.18.0.100", "2001:db8::100"] {
            director.learnNeighbour(ip(a), mac: a.hasPrefix("198.18") || a.hasPrefix("2001:db8::") ? MACAddress(clientMAC) : rsMAC)
        }
    }

    /// Sends a frame in on `interface` as a batch of one, the way the data
    /// plane does (fast path first); returns the verdict and the bytes out.
    /// The slot leaves 128 bytes before the frame and 64 after it.
    public mutating func send(_ frame: [UInt8], interface: UInt16 = 1) -> (Verdict, [UInt8]) {
        let batch = FrameBatch(capacity: 1, slotSize: 128 + frame.count + 64, headroom: 128)
        precondition(batch.append(frame.span, interface: interface))
        director.process(batch, now: now)
        let d = batch.descriptors[0]
        return (d.verdict, batch.withSlot(0) { span in (d.bounds.start..<d.bounds.end).map { span[$0] } })
    }
}

extension Harness {
    /// Sends frames as one batch (the data plane's path, where tracing
    /// happens); returns each verdict and the bytes out.
    public mutating func sendBatch(_ frames: [(frame: [UInt8], interface: UInt16)]) -> [(Verdict, [UInt8])] {
        let batch = FrameBatch(capacity: frames.count + 8)  // room for frames the director adds
        for f in frames { _ = batch.append(f.frame.span, interface: f.interface) }
        director.process(batch, now: now)
        var out: [(Verdict, [UInt8])] = []
        for i in 0..<batch.count {
            let d = batch.descriptors[i]
            out.append((d.verdict, batch.withSlot(i) { s in (d.bounds.start..<d.bounds.end).map { s[$0] } }))
        }
        return out
    }
}

/// `n` bytes of a frame at `at`.
public func field(_ f: [UInt8], _ at: Int, _ n: Int) -> [UInt8] { Array(f[at..<(at + n)]) }
/// A big-endian 16-bit field of a frame.
public func be16(_ f: [UInt8], _ at: Int) -> UInt16 { UInt16(f[at]) << 8 | UInt16(f[at + 1]) }
