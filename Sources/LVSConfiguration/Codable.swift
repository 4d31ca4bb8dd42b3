import LVSCore
import LVSPacket
import LVSSystem

// The control protocol and `--json` speak these: addresses as text, enums by
// name, so that the JSON reads well and survives reordering of Swift cases.

extension IPAddress: Codable {
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let a = IPAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad address \(text)"))
        }
        self = a
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

extension TransportProtocol: Codable {
    public var name: String { self == .tcp ? "tcp" : self == .udp ? "udp" : "sctp" }
    public init(from decoder: Decoder) throws {
        switch try decoder.singleValueContainer().decode(String.self) {
        case "tcp": self = .tcp
        case "udp": self = .udp
        case "sctp": self = .sctp
        case let other: throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad protocol \(other)"))
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
}

extension ForwardingMethod: Codable {
    public var name: String {
        switch self {
        case .nat: "nat"
        case .local: "local"
        case .tunnel: "tunnel"
        case .directRouting: "dr"
        case .fullNAT: "fullnat"
        }
    }
    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let m = ForwardingMethod.allCases.first(where: { $0.name == text }) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad method \(text)"))
        }
        self = m
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
}

extension ServiceKey: Codable {
    enum CodingKeys: String, CodingKey { case `protocol`, address, port, fwmark, ipv6 }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let mark = try c.decodeIfPresent(UInt32.self, forKey: .fwmark) {
            self = .firewallMark(mark, ipv6: try c.decodeIfPresent(Bool.self, forKey: .ipv6) ?? false)
        } else {
            self = .address(
                try c.decode(TransportProtocol.self, forKey: .protocol), try c.decode(IPAddress.self, forKey: .address),
                try c.decode(UInt16.self, forKey: .port))
        }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .address(let p, let a, let port):
            try c.encode(p, forKey: .protocol)
            try c.encode(a, forKey: .address)
            try c.encode(port, forKey: .port)
        case .firewallMark(let m, let v6):
            try c.encode(m, forKey: .fwmark)
            try c.encode(v6, forKey: .ipv6)
        }
    }
}

extension SchedulerFlags: Codable {
    public init(from decoder: Decoder) throws { self.init(rawValue: try decoder.singleValueContainer().decode(UInt32.self)) }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

extension TunnelType: Codable {}

extension TunnelConfiguration: Codable {
    enum CodingKeys: String, CodingKey { case type, port, checksum }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            type: try c.decode(TunnelType.self, forKey: .type), port: try c.decode(UInt16.self, forKey: .port),
            checksum: try c.decode(TunnelChecksum.self, forKey: .checksum))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(type, forKey: .type)
        try c.encode(port, forKey: .port)
        try c.encode(checksum, forKey: .checksum)
    }
}

extension TunnelChecksum: Codable {}

extension RealServerConfiguration: Codable {
    enum CodingKeys: String, CodingKey { case address, port, weight, method, upperThreshold, lowerThreshold, tunnel }
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            address: try c.decode(IPAddress.self, forKey: .address), port: try c.decode(UInt16.self, forKey: .port),
            weight: try c.decode(Int32.self, forKey: .weight), method: try c.decode(ForwardingMethod.self, forKey: .method),
            upperThreshold: try c.decode(UInt32.self, forKey: .upperThreshold), lowerThreshold: try c.decode(UInt32.self, forKey: .lowerThreshold),
            tunnel: try c.decode(TunnelConfiguration.self, forKey: .tunnel))
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(address, forKey: .address)
        try c.encode(port, forKey: .port)
        try c.encode(weight, forKey: .weight)
        try c.encode(method, forKey: .method)
        try c.encode(upperThreshold, forKey: .upperThreshold)
        try c.encode(lowerThreshold, forKey: .lowerThreshold)
        try c.encode(tunnel, forKey: .tunnel)
    }
}
