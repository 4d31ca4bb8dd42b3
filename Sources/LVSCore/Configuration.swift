import LVSPacket

/// How a real server is reached. Raw values are the kernel's
/// `IP_VS_CONN_F_FWD_MASK` values; FULLNAT takes DPVS's.
public enum ForwardingMethod: UInt8, Sendable, Hashable, CaseIterable {
    case nat = 0
    case local = 1
    case tunnel = 2
    case directRouting = 3
    case fullNAT = 5

    /// The `-L` label.
    public var label: String {
        switch self {
        case .nat: "Masq"
        case .local: "Local"
        case .tunnel: "Tunnel"
        case .directRouting: "Route"
        case .fullNAT: "FullNat"
        }
    }

    /// Replies pass through the director only for these.
    public var seesReplies: Bool { self == .nat || self == .fullNAT }
}

public enum TransportProtocol: UInt8, Sendable, Hashable {
    case tcp = 6
    case udp = 17
    case sctp = 132
}

/// A virtual service: (protocol, VIP, port) or a firewall mark.
public enum ServiceKey: Sendable, Hashable, CustomStringConvertible {
    case address(TransportProtocol, IPAddress, UInt16)
    case firewallMark(UInt32, ipv6: Bool)

    public var isIPv6: Bool {
        switch self {
        case .address(_, let a, _): a.isIPv6
        case .firewallMark(_, let v6): v6
        }
    }

    public var description: String {
        switch self {
        case .address(let p, let a, let port):
            let proto = p == .tcp ? "TCP" : p == .udp ? "UDP" : "SCTP"
            return a.isIPv6 ? "\(proto)  [\(a)]:\(port)" : "\(proto)  \(a):\(port)"
        case .firewallMark(let m, _): return "FWM  \(m)"
        }
    }
}

/// The scheduler flags `-b`: IP_VS_SVC_F_SCHED1..3.
public struct SchedulerFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let flag1 = SchedulerFlags(rawValue: 0x0008)
    public static let flag2 = SchedulerFlags(rawValue: 0x0010)
    public static let flag3 = SchedulerFlags(rawValue: 0x0020)
    public static let shFallback = flag1
    public static let shPort = flag2
    public static let mhFallback = flag1
    public static let mhPort = flag2
    /// lvsd's own: mh's table in address order (the kernel leaves flag-3 unused for mh).
    public static let mhSorted = flag3
}

public enum TunnelType: UInt8, Sendable, Hashable {
    case ipip = 0
    case gue = 1
    case gre = 2
}

/// GUE's UDP checksum (`--tun-nocsum`, `--tun-csum`, `--tun-remcsum`); the
/// raw values are the indexes ipvsadm prints them by.
public enum TunnelChecksum: UInt8, Sendable, Hashable {
    case none = 0
    case checksum = 1
    /// Remote checksum offload: sent with a full UDP checksum, which every
    /// receiver accepts (the GUE private option is not generated).
    case remote = 2
}

public struct TunnelConfiguration: Sendable, Hashable {
    public var type: TunnelType
    public var port: UInt16
    public var checksum: TunnelChecksum
    public init(type: TunnelType = .ipip, port: UInt16 = 0, checksum: TunnelChecksum = .none) {
        self.type = type
        self.port = port
        self.checksum = checksum
    }
}

public struct RealServerConfiguration: Sendable, Hashable {
    public var address: IPAddress
    public var port: UInt16
    public var weight: Int32
    public var method: ForwardingMethod
    /// 0 means no threshold.
    public var upperThreshold: UInt32
    public var lowerThreshold: UInt32
    public var tunnel: TunnelConfiguration

    public init(
        address: IPAddress, port: UInt16, weight: Int32 = 1, method: ForwardingMethod = .directRouting,
        upperThreshold: UInt32 = 0, lowerThreshold: UInt32 = 0, tunnel: TunnelConfiguration = .init()
    ) {
        self.address = address
        self.port = port
        self.weight = weight
        self.method = method
        self.upperThreshold = upperThreshold
        self.lowerThreshold = lowerThreshold
        self.tunnel = tunnel
    }
}

/// PROXY protocol (DPVS's `--proxy-protocol`): each TCP connection's real
/// server receives a header naming the client ahead of the client's bytes.
public struct ProxyProtocol: Sendable, Hashable, Codable {
    public enum Version: UInt8, Sendable, Hashable {
        /// The text header (`PROXY TCP4 …\r\n`).
        case v1 = 1
        /// The binary header.
        case v2 = 2
    }
    public var version: Version
    /// DPVS's "insecure": a client whose first bytes are a header of this
    /// version keeps its own, which the real server then trusts; otherwise
    /// lvsd's header always comes first and a client's reaches the server as
    /// data, where it is no header at all.
    public var insecure: Bool

    public init(version: Version, insecure: Bool = false) {
        self.version = version
        self.insecure = insecure
    }

    /// DPVS's spelling: `v1`, `v2`, `v1-insecure`, `v2-insecure`; `disable` is nil.
    public init?(name: String) {
        switch name.lowercased() {
        case "v1": self.init(version: .v1)
        case "v2": self.init(version: .v2)
        case "v1-insecure": self.init(version: .v1, insecure: true)
        case "v2-insecure": self.init(version: .v2, insecure: true)
        default: return nil
        }
    }

    public var name: String { (version == .v1 ? "v1" : "v2") + (insecure ? "-insecure" : "") }

    /// As DPVS spells it: `"v2-insecure"`.
    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let pp = ProxyProtocol(name: name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "unknown PROXY protocol '\(name)'"))
        }
        self = pp
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
}

public struct VirtualServiceConfiguration: Sendable, Hashable {
    public var key: ServiceKey
    public var scheduler: String
    public var schedulerFlags: SchedulerFlags
    /// Persistence timeout in seconds, nil when not persistent.
    public var persistence: UInt32?
    /// Persistence granularity as a prefix length (`-M`): 32 / 128 by default.
    public var persistenceNetmask: Int
    /// One-packet scheduling (`-o`).
    public var onePacket: Bool
    /// Persistence engine (`--pe`): kept and listed; "sip" is the only one.
    public var persistenceEngine: String?
    /// Real servers in the order they were added.
    public var realServers: [RealServerConfiguration]
    /// FULLNAT local addresses (`--add-laddr`).
    public var localAddresses: [IPAddress]
    /// SYN proxy (DPVS's `-j enable`): TCP handshakes complete at the director first.
    public var synproxy: Bool
    /// PROXY protocol, nil when off; it takes the place of TOA.
    public var proxyProtocol: ProxyProtocol?

    public init(
        key: ServiceKey, scheduler: String = "wlc", schedulerFlags: SchedulerFlags = [], persistence: UInt32? = nil,
        persistenceNetmask: Int? = nil, onePacket: Bool = false, persistenceEngine: String? = nil,
        realServers: [RealServerConfiguration] = [], localAddresses: [IPAddress] = [], synproxy: Bool = false,
        proxyProtocol: ProxyProtocol? = nil
    ) {
        self.key = key
        self.scheduler = scheduler
        self.schedulerFlags = schedulerFlags
        self.persistence = persistence
        self.persistenceNetmask = persistenceNetmask ?? (key.isIPv6 ? 128 : 32)
        self.onePacket = onePacket
        self.persistenceEngine = persistenceEngine
        self.realServers = realServers
        self.localAddresses = localAddresses
        self.synproxy = synproxy
        self.proxyProtocol = proxyProtocol
    }
}

/// A firewall-mark service's key: the kernel keeps FWM 1 and FWM 1 IPv6 apart.
struct MarkServiceKey: Hashable, Sendable {
    var mark: UInt32
    var ipv6: Bool
}

/// One line of lvsd's firewall-mark classifier. AF_PACKET and XDP see a
/// frame before netfilter, so no mark reaches lvsd: it marks frames itself,
/// by the operator's nftables (and iptables-nft) rules compiled into these,
/// or by its own marks file. A rule whose sets list several values becomes
/// several lines with one `rule` number. The classifier runs as netfilter's
/// prerouting chains do: in order, every matching rule sets the mark (the
/// last one wins), and a verdict ends the chain it is in (`drop`: the frame
/// is no service's).
public struct FirewallMarkRule: Sendable, Hashable {
    public enum Verdict: Sendable, Hashable {
        /// The next rule runs.
        case next
        /// accept or return: the chain ends, later chains run.
        case endChain
        /// drop: the frame goes to no service.
        case drop
    }
    /// The mark the rule sets; nil: none (a rule that only ends the chain).
    public var mark: UInt32?
    public var verdict: Verdict
    /// Which netfilter chain and rule this line came from.
    public var chain: Int32
    public var rule: Int32
    /// nil matches both families.
    public var ipv6: Bool?
    /// nil matches any of TCP, UDP and SCTP.
    public var proto: TransportProtocol?
    /// nil matches any address.
    public var source: IPAddress?
    public var sourcePrefixLength: Int
    public var destination: IPAddress?
    public var destinationPrefixLength: Int
    public var sourcePorts: ClosedRange<UInt16>
    public var ports: ClosedRange<UInt16>
    /// The interface's index; 0 matches any.
    public var interface: UInt16

    public init(
        mark: UInt32?, verdict: Verdict = .next, chain: Int32 = 0, rule: Int32 = 0, ipv6: Bool? = nil, proto: TransportProtocol? = nil,
        destination: IPAddress? = nil, destinationPrefixLength: Int? = nil, source: IPAddress? = nil, sourcePrefixLength: Int? = nil,
        sourcePorts: ClosedRange<UInt16> = 0...65535, ports: ClosedRange<UInt16> = 0...65535, interface: UInt16 = 0
    ) {
        self.mark = mark
        self.verdict = verdict
        self.chain = chain
        self.rule = rule
        self.ipv6 = ipv6 ?? destination?.isIPv6 ?? source?.isIPv6
        self.proto = proto
        self.destination = destination
        self.destinationPrefixLength = destinationPrefixLength ?? (destination?.isIPv6 == true ? 128 : 32)
        self.source = source
        self.sourcePrefixLength = sourcePrefixLength ?? (source?.isIPv6 == true ? 128 : 32)
        self.sourcePorts = sourcePorts
        self.ports = ports
        self.interface = interface
    }
}

/// An interface the director transmits on.
public struct InterfaceConfiguration: Sendable, Hashable {
    public var index: UInt16
    public var mac: MACAddress
    public var mtu: Int
    /// Source addresses for tunnels, ARP requests and ICMP (the DIP).
    public var ipv4: IPv4Address?
    public var ipv6: IPv6Address?
    public init(index: UInt16, mac: MACAddress, mtu: Int = 1500, ipv4: IPv4Address? = nil, ipv6: IPv6Address? = nil) {
        self.index = index
        self.mac = mac
        self.mtu = mtu
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }
}

public struct Route: Sendable, Hashable {
    public var destination: IPAddress
    public var prefixLength: Int
    /// nil for an on-link route.
    public var gateway: IPAddress?
    public var interface: UInt16
    public init(destination: IPAddress, prefixLength: Int, gateway: IPAddress? = nil, interface: UInt16) {
        self.destination = destination
        self.prefixLength = prefixLength
        self.gateway = gateway
        self.interface = interface
    }
}

/// The whole desired state, published to workers as one immutable value.
public struct DirectorConfiguration: Sendable {
    public var services: [VirtualServiceConfiguration]
    public var timeouts: TimeoutTable
    public var markRules: [FirewallMarkRule]
    public var interfaces: [InterfaceConfiguration]
    public var routes: [Route]
    /// `expire_nodest_conn`: drop (0) or expire and reschedule (1) packets of
    /// connections whose real server was removed.
    public var expireNoDestinationConnections: Bool
    /// `expire_quiescent_template`.
    public var expireQuiescentTemplate: Bool
    /// `sloppy_sctp`: an SCTP packet of an association lvsd has not seen
    /// start (another director's, a multi-homed peer's other path) creates
    /// a connection, as INIT does.
    public var sloppySCTP = false
    /// `sloppy_tcp`: a TCP packet of a connection lvsd has not seen start
    /// (another director's, moved here by ECMP) is scheduled, as a SYN is,
    /// and its connection created (not for a FULLNAT service, whose real server
    /// knows the flow by another director's local address). With a
    /// consistent scheduler (`mh` with `mh-sorted`, `ch`) every director picks
    /// the same real server, so the flow survives the move.
    public var sloppyTCP = false
    /// A NAT real server's reply of a connection lvsd has not seen start
    /// (another director's: the real servers spread their replies over
    /// several directors) makes its connection, the VIP and port put back
    /// from the one NAT service with that real server and port
    /// (`FamilyPlane.takeNATReply`). lvsd's own; the kernel drops it.
    public var sloppyNAT = false
    /// Established IPv4 NAT and DR connections are forwarded by the kernel
    /// (a tc program the I/O keeps in step: `Director.kernelFlow`). lvsd's own.
    public var kernelForwarding = false
    /// The ports of TCP services whose NAT and FULLNAT connections the FTP
    /// helper reads, as `modprobe ip_vs_ftp ports=21` (its default); empty:
    /// none. Not on SYN-proxy or PROXY protocol services.
    public var ftpPorts: [UInt16] = [21]

    public init(
        services: [VirtualServiceConfiguration] = [], timeouts: TimeoutTable = .init(), markRules: [FirewallMarkRule] = [],
        interfaces: [InterfaceConfiguration] = [], routes: [Route] = [],
        expireNoDestinationConnections: Bool = false, expireQuiescentTemplate: Bool = false
    ) {
        self.services = services
        self.timeouts = timeouts
        self.markRules = markRules
        self.interfaces = interfaces
        self.routes = routes
        self.expireNoDestinationConnections = expireNoDestinationConnections
        self.expireQuiescentTemplate = expireQuiescentTemplate
    }
}
