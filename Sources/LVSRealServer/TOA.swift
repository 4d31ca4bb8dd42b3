import LVSPacket
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The connection a real server sees: (peer, its port) as accept() reports
/// it under FULLNAT, i.e. the director's local address and port, and the
/// server's own address and port.
public struct ConnectionKey: Hashable, Sendable {
    public var peer: IPAddress
    public var peerPort: UInt16
    public var local: IPAddress
    public var localPort: UInt16
    public init(peer: IPAddress, peerPort: UInt16, local: IPAddress, localPort: UInt16) {
        self.peer = peer
        self.peerPort = peerPort
        self.local = local
        self.localPort = localPort
    }
}

public struct ClientAddress: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }
    public var description: String { address.isIPv6 ? "[\(address)]:\(port)" : "\(address):\(port)" }
}

/// What toa.ko does in the kernel, done from a capture: the director puts
/// the client's address in TCP option 254 (length 8: port + IPv4, length
/// 20: port + IPv6) on the connection's first ACK; this remembers it per
/// connection so that the server can ask who its peer really is.
public enum TOA {
    /// The client carried in a frame's TCP options, with the connection as
    /// the server sees it; nil when the frame is not TCP or has no TOA.
    public static func parse(frame: [UInt8]) -> (ConnectionKey, ClientAddress)? {
        let parsed: ParsedPacket
        do { parsed = try PacketParser.parse(frame.span, start: 0, end: frame.count) } catch { return nil }
        guard parsed.proto == IPProtocolNumber.tcp, parsed.fragment == .none, parsed.l4HeaderLength > 20 else { return nil }
        var o = parsed.l4Offset + 20
        let end = parsed.l4Offset + parsed.l4HeaderLength
        while o < end {
            let kind = frame[o]
            if kind == 0 { break }
            if kind == 1 {
                o += 1
                continue
            }
            guard o + 1 < end else { break }
            let length = Int(frame[o + 1])
            guard length >= 2, o + length <= end else { break }
            if kind == 254 && (length == 8 || length == 20) {
                let port = UInt16(frame[o + 2]) << 8 | UInt16(frame[o + 3])
                let client: IPAddress
                if length == 8 {
                    client = .v4(IPv4Address(frame[o + 4], frame[o + 5], frame[o + 6], frame[o + 7]))
                } else {
                    let high = frame[(o + 4)..<(o + 12)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    let low = frame[(o + 12)..<(o + 20)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    client = .v6(IPv6Address(high: high, low: low))
                }
                let s = frame.span
                let src: IPAddress = parsed.isIPv4 ? .v4(IPv4Address(s, at: parsed.sourceAddressOffset)) : .v6(IPv6Address(s, at: parsed.sourceAddressOffset))
                let dst: IPAddress =
                    parsed.isIPv4 ? .v4(IPv4Address(s, at: parsed.destinationAddressOffset)) : .v6(IPv6Address(s, at: parsed.destinationAddressOffset))
                let key = ConnectionKey(peer: src, peerPort: parsed.sourcePort, local: dst, localPort: parsed.destinationPort)
                return (key, ClientAddress(address: client, port: port))
            }
            o += length
        }
        return nil
    }
}

/// Connections and the clients TOA named for them; the oldest entries go
/// first when it is full.
public final class TOATable: Sendable {
    struct State {
        var entries: [ConnectionKey: ClientAddress] = [:]
        var order: [ConnectionKey] = []
        var head = 0
    }
    let state = Mutex(State())
    public let capacity: Int

    public init(capacity: Int = 1 << 16) { self.capacity = capacity }

    public func record(_ key: ConnectionKey, _ client: ClientAddress) {
        state.withLock { s in
            if s.entries.updateValue(client, forKey: key) == nil {
                s.order.append(key)
                if s.order.count - s.head > capacity {
                    s.entries[s.order[s.head]] = nil
                    s.head += 1
                    if s.head > capacity {
                        s.order.removeFirst(s.head)
                        s.head = 0
                    }
                }
            }
        }
    }

    /// The real client of a connection, by its peer (and local side when
    /// known); waits up to `milliseconds` for it to be recorded (a capture
    /// may see the ACK that carried it after the application saw the connection).
    public func client(
        peer: IPAddress, peerPort: UInt16, local: IPAddress? = nil, localPort: UInt16? = nil, waitingUpTo milliseconds: Int = 0
    ) -> ClientAddress? {
        var waited = 0
        while true {
            let found = state.withLock { s in
                if let local, let localPort { return s.entries[ConnectionKey(peer: peer, peerPort: peerPort, local: local, localPort: localPort)] }
                return s.entries.first { $0.key.peer == peer && $0.key.peerPort == peerPort }?.value
            }
            if found != nil || waited >= milliseconds { return found }
            usleep(1000)
            waited += 1
        }
    }
}

/// IPIP, IPv6-in-IPv4 and GUE as a real server receives them: the inner
/// packet, ready for a TUN device.
public enum Decapsulation {
    /// `packet` starts at an outer IPv4 header (a raw IPPROTO_IPIP or
    /// IPPROTO_IPV6 socket's view).
    public static func innerOfIPv4(_ packet: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard let first = packet.first, first >> 4 == 4 else { return nil }
        let ihl = Int(first & 0x0F) * 4
        guard ihl >= 20, packet.count > ihl else { return nil }
        return packet.dropFirst(ihl)
    }

    /// A GUE payload (the UDP data): a 4-byte header with `hlen` words of
    /// options, then the inner packet.
    public static func innerOfGUE(_ payload: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        guard payload.count > 4, let first = payload.first, first >> 6 == 0 else {
            // Version 1 GUE carries the IP packet directly.
            if let first = payload.first, first >> 6 == 1 { return payload }
            return nil
        }
        let options = Int(first & 0x1F) * 4
        guard payload.count > 4 + options else { return nil }
        return payload.dropFirst(4 + options)
    }
}
